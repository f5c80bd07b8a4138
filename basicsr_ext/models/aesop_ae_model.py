"""Pretraining of the AESOP auto-encoder (aesop.md §2, official ``AEModel``).

GT goes through the AE; ``pixel_opt`` (L1) compares the reconstruction with GT and the optional
``pixel_at_lr_opt`` (L1, "LR recon"; the official spelling ``pixel_at_LR_opt`` is accepted) compares the
LR-size bottleneck with the dataset's bicubic LR. The decoder can start from a PSNR RRDB checkpoint
(``path.pretrain_network_decoder`` + ``path.param_key_decoder``) and stay frozen for the first
``train.freeze_decoder`` iterations (0: never frozen; more than ``total_iter``: always).
Validation reports reconstruction metrics (``val.metrics``) and the bottleneck-vs-LR PSNR.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch.nn import functional as F
from basicsr.losses import build_loss
from basicsr.metrics.psnr_ssim import calculate_psnr
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_ext.models.engine import ConfigError, EngineMixin
from basicsr_ext.utils.tiling import crop_to

_LR_KEYS = ('pixel_at_lr_opt', 'pixel_at_LR_opt')


@MODEL_REGISTRY.register()
class AESOPAutoEncoderModel(EngineMixin, SRModel):
    """Trains ``AESOPAutoEncoder`` (network_g) by reconstruction; see the module docstring for the keys."""

    TRAIN_KEYS = ('freeze_decoder',) + _LR_KEYS

    @staticmethod
    def check_options(opt: Mapping[str, Any]) -> None:
        train = opt.get('train') or {}
        path = opt.get('path') or {}
        if int(opt.get('scale', 4)) != 4:
            raise ConfigError(f"scale: {opt.get('scale')}: the AESOP auto-encoder is x4 only")
        for key in ('perceptual_opt', 'gan_opt'):
            if train.get(key):
                raise ConfigError(f'train.{key} is not supported by AESOPAutoEncoderModel: the AE is trained with '
                                  'pixel losses only (a pixel-loss AE keeps the fidelity-bias part, aesop.md §1)')
        if not train.get('pixel_opt'):
            raise ConfigError('train.pixel_opt (L1 reconstruction of the HR image) is required')
        if all(train.get(k) for k in _LR_KEYS):
            raise ConfigError('give one of train.pixel_at_lr_opt / train.pixel_at_LR_opt')
        if path.get('pretrain_network_decoder') and path.get('pretrain_network_g') and not path.get('resume_state'):
            raise ConfigError('path.pretrain_network_decoder cannot be combined with path.pretrain_network_g: '
                              'the decoder would be loaded twice; keep one')
        freeze = train.get('freeze_decoder', 0) or 0
        if not isinstance(freeze, int) or freeze < 0:
            raise ConfigError(f'train.freeze_decoder must be an iteration count >= 0, got {freeze!r}')
        if freeze and opt.get('dist') and not opt.get('find_unused_parameters'):
            raise ConfigError('train.freeze_decoder > 0 under DDP needs find_unused_parameters: true (the frozen '
                              'decoder parameters get no gradient)')

    # ---- setup -----------------------------------------------------------------------------------------------
    def init_training_settings(self) -> None:
        path = self.opt['path']
        if path.get('pretrain_network_decoder') and not path.get('resume_state'):
            # before SRModel copies net_g into net_g_ema
            self.load_network(self.get_bare_model(self.net_g).decoder, path['pretrain_network_decoder'],
                              path.get('strict_load_decoder', True), path.get('param_key_decoder', 'params_ema'))
        train_opt = self.opt['train']
        self.freeze_decoder = int(train_opt.get('freeze_decoder', 0) or 0)
        self._decoder_trainable = True
        super().init_training_settings()  # EMA, pixel loss, optimizers (all parameters), schedulers
        lr_opt = next((train_opt[k] for k in _LR_KEYS if train_opt.get(k)), None)
        self.cri_pix_lr = build_loss(dict(lr_opt)).to(self.device) if lr_opt else None
        if self.freeze_decoder:
            get_root_logger().info(f'AESOP AE: decoder frozen for iterations 1..{self.freeze_decoder}')

    def _set_decoder_trainable(self, trainable: bool) -> None:
        if trainable != self._decoder_trainable:
            for p in self.get_bare_model(self.net_g).decoder.parameters():
                p.requires_grad_(trainable)
            self._decoder_trainable = trainable

    # ---- data ------------------------------------------------------------------------------------------------
    def feed_data(self, data: Mapping[str, torch.Tensor]) -> None:
        """``gt`` is the AE input and target; ``lq`` the bicubic LR reference of the bottleneck.

        A dataset without ``gt`` (e.g. HR folders read as ``lq``, as the official AE test config does) feeds
        ``lq`` as the AE input, without an LR reference.
        """
        lq = data.get('lq') if 'gt' in data else None
        self.gt = (data['gt'] if 'gt' in data else data['lq']).to(self.device)
        if lq is not None:
            self.lq = lq.to(self.device)
        elif hasattr(self, 'lq'):
            del self.lq

    # ---- training --------------------------------------------------------------------------------------------
    def optimize_parameters(self, current_iter: int) -> None:
        self._set_decoder_trainable(not (self.freeze_decoder and current_iter <= self.freeze_decoder))
        self.optimizer_g.zero_grad(set_to_none=True)
        x = self.to_memory_format(self.gt)
        with self.autocast():
            output, bottleneck = self.net_g(x, return_bottleneck=True)
        self.output, self.bottleneck = output.float(), bottleneck.float()
        loss_dict = OrderedDict()
        loss_dict['l_pix'] = self.cri_pix(self.output, self.gt)
        l_total = loss_dict['l_pix']
        if self.cri_pix_lr is not None:
            if getattr(self, 'lq', None) is None:
                raise ConfigError('train.pixel_at_lr_opt needs a paired dataset (lq = bicubic LR of gt)')
            loss_dict['l_pix_lr'] = self.cri_pix_lr(self.bottleneck, self.lq)
            l_total = l_total + loss_dict['l_pix_lr']
        self.check_finite(loss_dict, current_iter)
        self.backward(l_total)
        self.optimizer_step(self.optimizer_g, self.net_g)
        self.finish_iteration(loss_dict)

    # ---- validation ------------------------------------------------------------------------------------------
    TEST_INPUT, TEST_SCALE = 'gt', 1  # the engine's test() reconstructs gt

    def net_forward(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction + the bottleneck as 3 more channels (nearest x4), so that tiles blend both alike."""
        output, bottleneck = net(x, return_bottleneck=True)
        return torch.cat([output, F.interpolate(bottleneck, scale_factor=4, mode='nearest')], dim=1)

    def set_test_output(self, out: torch.Tensor) -> None:
        self.output, self.bottleneck = out[:, :3], out[:, 3:, ::4, ::4]  # bottleneck: ceil(H/4) x ceil(W/4)

    def get_current_visuals(self) -> OrderedDict:
        out = OrderedDict(result=self.output.detach().cpu(), gt=self.gt.detach().cpu(),
                          bottleneck=self.bottleneck.detach().cpu())
        if getattr(self, 'lq', None) is not None:
            out['lq'] = self.lq.detach().cpu()
        return out

    def start_validation(self) -> None:
        self._lr_psnr = torch.zeros(2, dtype=torch.float64)  # sum, count

    def after_validation_image(self) -> None:
        """Accumulate PSNR(bottleneck, bicubic LR) on 8-bit RGB, no crop (both cut to the common size)."""
        if getattr(self, 'lq', None) is not None and hasattr(self, 'bottleneck'):
            h = min(self.lq.shape[-2], self.bottleneck.shape[-2])
            w = min(self.lq.shape[-1], self.bottleneck.shape[-1])
            z = tensor2img([crop_to(self.bottleneck.detach().cpu(), h, w)])
            lr = tensor2img([crop_to(self.lq.detach().cpu(), h, w)])
            self._lr_psnr += torch.tensor([float(calculate_psnr(z, lr, crop_border=0)), 1.0], dtype=torch.float64)
        if hasattr(self, 'bottleneck'):
            del self.bottleneck
        super().after_validation_image()

    def finish_validation(self) -> dict[str, float]:
        extra = dict(super().finish_validation())
        sums = self._lr_psnr.clone()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sums)
        if sums[1] > 0:
            extra['bottleneck_lr_psnr'] = float(sums[0] / sums[1])
        return extra
