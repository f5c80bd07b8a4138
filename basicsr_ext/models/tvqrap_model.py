"""Stages II and III of TVQ&RAP: the index predictor (code-level) and its RAP fine-tuning (paper notes §3-§4).

One model, switched by ``train.stage``:

- ``code`` (stage II): ``entropy_loss_weight`` x CE(logits, idx_gt) [0.5] + ``feat_loss_weight`` x
  MSE(F̂^L, F^L_gt) [1.0]. Targets come on the fly from the frozen stage-I tokenizer ``net_tok`` run on the
  un-sharpened GT (no cached latents). Logs ``l_ce``, ``l_feat`` and ``index_acc``.
- ``rap`` (stage III, Reconstruction-Aware Prediction): ``forward_ste`` (hard one-hot forward, softmax backward)
  through the frozen codebook and decoder; ``pixel_opt`` MSE [1.0, on [-1, 1] tensors as the official code]
  + ``perceptual_opt`` LPIPS [1.0] + hinge GAN with the VQGAN adaptive weight taken at the predictor's final
  Linear (``net_g.get_last_layer()``) x ``disc_weight`` [0.75], fresh ``TVQPatchGANDiscriminator``.
  ``ce_weight_rap`` [0] adds the CE term: the released stage-III code has none, the paper text is ambiguous.

Options beyond BasicSR's:
    network_tok                 the stage-I ``TVQTokenizer`` (same kwargs as its training run)
    path.pretrain_network_tok   its checkpoint (required for training); ``path.tok_param_key`` [params_ema]
                                (deliberately not ``param_key_tok``: BasicSR's resume rewrites every
                                ``param_key*`` to ``params``). Also list ``network_tok`` in
                                ``path.ignore_resume_networks``: BasicSR's resume otherwise points
                                ``pretrain_network_tok`` at a ``net_tok_<iter>.pth`` that is never written.
    train.stage                 code | rap
    degradation (option root)   BasicSR's Real-ESRGAN keys + ``second_order_prob`` [0.5], ``queue_size``
                                (224 stage II, 184 stage III; kept in the training state), ``gt_size`` (crop
                                after degradation; optional): ``basicsr_ext.data.realesrgan_degradation``.
                                Used when a batch has no ``lq`` (``GTOnlyDataset`` with ``return_kernels``);
                                with paired data (``lq`` in the batch) the LR is used as is.
    val.tile_size / val.tile_overlap   tiled test on the LR (the engine's, every model; official 768 / 80)

Validation: PSNR/SSIM etc. from ``val.metrics`` and, when ``net_tok`` exists and the GT is known, ``index_acc``
= fraction of H/8 positions where the argmax index equals the tokenizer's index of the GT.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict

import torch
import torch.distributed as dist
from torch.nn import functional as F
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_ext.data.realesrgan_degradation import RealESRGANPairs
from basicsr_ext.models.engine import ConfigError, EngineMixin
from basicsr_ext.models.tvq_model import VQGANTrainingMixin, codebook_weight
from basicsr_ext.utils.tiling import arch_multiple, pad_to_multiple

STAGES = ('code', 'rap')


class _MethodDispatch(torch.nn.Module):
    """Routes ``predict`` / ``forward_ste`` through ``forward`` so that DDP (which only synchronises gradients of
    work done inside its own forward) can wrap them; unwrapped again by :meth:`TVQRAPModel.get_bare_model`."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *args, method: str = 'forward', **kwargs):
        return getattr(self.net, method)(*args, **kwargs)


@MODEL_REGISTRY.register()
class TVQRAPModel(EngineMixin, VQGANTrainingMixin, SRModel):
    """TVQ&RAP stages II (``train.stage: code``) and III (``train.stage: rap``); inference for tests."""

    TRAIN_KEYS = ('stage', 'entropy_loss_weight', 'feat_loss_weight', 'ce_weight_rap')

    def __init__(self, opt: dict) -> None:
        self.net_tok = None
        super().__init__(opt)
        if not self.is_train and opt.get('network_tok') and opt['path'].get('pretrain_network_tok'):
            self.build_tokenizer()

    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        if self.opt.get('dist') and hasattr(net, 'forward_ste'):
            net = _MethodDispatch(net)
        return super().model_to_device(net)

    def get_bare_model(self, net: torch.nn.Module) -> torch.nn.Module:
        net = super().get_bare_model(net)
        return net.net if isinstance(net, _MethodDispatch) else net

    def call_g(self, method: str, *args):
        """``net_g.<method>(*args)`` through DDP's forward when distributed."""
        if isinstance(self.net_g, torch.nn.parallel.DistributedDataParallel):
            return self.net_g(*args, method=method)
        return getattr(self.get_bare_model(self.net_g), method)(*args)

    # ---- tokenizer (targets) -----------------------------------------------------------------------------
    def build_tokenizer(self) -> None:
        """Frozen stage-I tokenizer ``net_tok`` (fp32, eval) from ``network_tok`` + ``path.pretrain_network_tok``."""
        if not self.opt.get('network_tok'):
            raise ConfigError('network_tok is missing: stages II/III need the stage-I TVQTokenizer options')
        path = self.opt['path'].get('pretrain_network_tok')
        if not path:
            raise ConfigError('path.pretrain_network_tok is missing: set it to the stage-I checkpoint '
                              '(e.g. experiments/<stage I>/models/net_g_latest.pth)')
        if not os.path.isfile(path):
            hint = ''
            if self.opt['path'].get('resume_state') and os.path.basename(path).startswith('net_tok_'):
                hint = (' (BasicSR resume rewrote it; add `ignore_resume_networks: [network_tok]` under `path:` '
                        'and set pretrain_network_tok back to the stage-I checkpoint)')
            raise ConfigError(f'path.pretrain_network_tok: file not found: {path}{hint}')
        net = build_network(self.opt['network_tok']).to(self.device)
        if not getattr(net, 'structure', True):
            raise ConfigError('network_tok.structure must be true: TVQRAPNet regresses the structure latent')
        self.load_network(net, path, True, self.opt['path'].get('tok_param_key', 'params_ema'))
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net_tok = net
        bare = self.get_bare_model(self.net_g)
        k_tok, k_g = codebook_weight(net).shape[0], bare.get_last_layer().shape[0]
        if k_tok != k_g:
            raise ConfigError(f'network_tok.codebook_size ({k_tok}) != the predictor head size of network_g ({k_g})')
        g_tok, g_g = getattr(net, 'norm_groups', 32), getattr(bare, 'norm_groups', 32)
        if g_tok != g_g:
            raise ConfigError(f'network_tok.norm_groups ({g_tok}) != network_g.norm_groups ({g_g}): the frozen '
                              'structure path and decoder must be built as in the stage-I run')
        if tuple(codebook_weight(net).shape) != tuple(codebook_weight(bare).shape):
            raise ConfigError(f'network_tok codebook {tuple(codebook_weight(net).shape)} != network_g codebook '
                              f'{tuple(codebook_weight(bare).shape)}: their tokenizer options differ')

    @torch.no_grad()
    def tokenizer_targets(self, gt: torch.Tensor) -> dict:
        """indices (B, h, w) and F^L of the GT from the frozen tokenizer, in fp32."""
        with self.fp32():
            return self.net_tok.encode(gt.float())

    # ---- setup -------------------------------------------------------------------------------------------
    def init_training_settings(self) -> None:
        train_opt = self.opt['train']
        self.stage = train_opt.get('stage')
        if self.stage not in STAGES:
            raise ConfigError(f"train.stage must be one of {STAGES} (code = stage II, rap = stage III), "
                              f'got {self.stage!r}')
        self.build_tokenizer()
        bare = self.get_bare_model(self.net_g)
        if self.opt['path'].get('pretrain_network_g') is None:
            bare.load_tokenizer(self.net_tok.state_dict(), None)
            get_root_logger().info('network_g: codebook, structure path and decoder copied from net_tok.')
        else:
            self._check_frozen_parts_match(bare)
        self.net_g.train()
        self.build_ema()
        if self.stage == 'code':
            self.entropy_loss_weight = float(train_opt.get('entropy_loss_weight', 0.5))
            self.feat_loss_weight = float(train_opt.get('feat_loss_weight', 1.0))
            for key in ('pixel_opt', 'perceptual_opt', 'gan_opt'):
                if train_opt.get(key):
                    raise ConfigError(f'train.{key} is set but train.stage is code (stage II uses CE + feature MSE '
                                      'only); remove it or use stage: rap')
            self.cri_pix = self.cri_perceptual = self.cri_gan = None
        else:
            self.cri_pix = build_loss(train_opt['pixel_opt']).to(self.device) if train_opt.get('pixel_opt') else None
            self.cri_perceptual = (build_loss(train_opt['perceptual_opt']).to(self.device)
                                   if train_opt.get('perceptual_opt') else None)
            if self.cri_pix is None and self.cri_perceptual is None:
                raise ConfigError('train.stage rap needs pixel_opt and/or perceptual_opt')
            self.ce_weight_rap = float(train_opt.get('ce_weight_rap', 0.0))
            self.setup_gan()
        self.pairs = None
        if self.opt.get('resize_prob') is not None:
            self.pairs = RealESRGANPairs(self.opt, self.opt['scale'], int(self.opt.get('queue_size', 0) or 0)).to(
                self.device)
        self.setup_optimizers()
        self.setup_schedulers()

    def _check_frozen_parts_match(self, bare: torch.nn.Module) -> None:
        """net_g loaded from a checkpoint: warn when its frozen codebook is not the tokenizer's."""
        if not torch.equal(codebook_weight(bare).detach().cpu(), codebook_weight(self.net_tok).detach().cpu()):
            get_root_logger().warning('network_g codebook differs from net_tok: targets come from a different '
                                      'tokenizer than the frozen decoder of network_g')

    # ---- data --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def feed_data(self, data: dict) -> None:
        """Paired batch (``lq`` given) as is; GT-only batch with kernels -> Real-ESRGAN LR (from the USM-sharpened
        GT; the losses use the un-sharpened GT) and the training-pair queue."""
        if 'lq' in data or not self.is_train:
            self.lq = data['lq'].to(self.device)
            if 'gt' in data:
                self.gt = data['gt'].to(self.device)
            return
        if self.pairs is None:
            raise ConfigError('the training batch has no lq and the Real-ESRGAN degradation options (resize_prob, '
                              '...) are missing at the option root')
        self.lq, self.gt = self.pairs(data, self.device)

    # ---- training ----------------------------------------------------------------------------------------
    def optimize_parameters(self, current_iter: int) -> None:
        # RAP needs the tokenizer's indices only for the optional CE term and for logging index_acc
        print_freq = int((self.opt.get('logger') or {}).get('print_freq', 1) or 1)
        need_targets = self.stage == 'code' or self.ce_weight_rap or current_iter % print_freq == 0
        targets = self.tokenizer_targets(self.gt) if need_targets else None
        idx_gt = targets['indices'].flatten(1) if need_targets else None
        lq = self.to_memory_format(self.lq)
        loss_dict = OrderedDict()
        self.optimizer_g.zero_grad(set_to_none=True)
        if self.stage == 'code':
            with self.autocast():
                pred = self.call_g('predict', lq)
            logits = pred['logits'].float()
            with self.fp32():
                l_ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx_gt.reshape(-1))
                l_feat = F.mse_loss(pred['structure_latent_pred'].float(), targets['structure_latent'].float())
            loss_dict['l_ce'], loss_dict['l_feat'] = l_ce, l_feat
            l_total = self.entropy_loss_weight * l_ce + self.feat_loss_weight * l_feat
            self.check_finite(loss_dict, current_iter)
            self.backward(l_total)
            self.optimizer_step(self.optimizer_g, self.net_g)
        else:
            with self.autocast():
                out = self.call_g('forward_ste', lq)
            sr_raw = out['sr_raw'].float()
            sr01 = (sr_raw + 1) / 2
            logits = out['logits'].float()
            l_rec = self.reconstruction_loss(sr_raw, loss_dict)
            l_total = l_rec
            with self.fp32():
                if self.ce_weight_rap:
                    loss_dict['l_ce'] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx_gt.reshape(-1))
                    l_total = l_total + self.ce_weight_rap * loss_dict['l_ce']
            self.generator_step(l_total, l_rec, sr01, loss_dict, current_iter)
        if idx_gt is not None:
            loss_dict['index_acc'] = (logits.detach().argmax(-1) == idx_gt).float().mean()
        self.finish_iteration(loss_dict)

    # ---- inference / validation --------------------------------------------------------------------------
    def net_forward(self, net: torch.nn.Module, lq: torch.Tensor) -> torch.Tensor:
        """SR in [0, 1] of one padded input; on the whole image with a GT and ``net_tok``, also the index accuracy (the
        argmax codes against the tokenizer's codes of the GT, on the H/8 cells of the image, padding excluded)."""
        whole = lq.shape[-2] >= self.lq.shape[-2] and lq.shape[-1] >= self.lq.shape[-1]
        if not whole or self.net_tok is None or getattr(self, 'gt', None) is None or \
                getattr(self, 'val_index_hits', None) is None:
            return net(lq).clamp(0, 1)
        out = net.forward_ste(lq)
        gt, _ = pad_to_multiple(self.gt, arch_multiple(self.net_tok))
        idx_gt = self.tokenizer_targets(gt)['indices']
        hv, wv = (math.ceil(s * int(self.opt.get('scale', 4)) / 8) for s in self.lq.shape[-2:])
        hits = out['indices'][:, :hv, :wv] == idx_gt[:, :hv, :wv]
        self.val_index_hits += hits.sum().double()
        self.val_index_total += hits.numel()
        return out['sr01'].clamp(0, 1)

    def start_validation(self) -> None:
        self.val_index_hits = torch.zeros((), dtype=torch.float64, device=self.device)
        self.val_index_total = torch.zeros((), dtype=torch.float64, device=self.device)

    def finish_validation(self) -> dict[str, float]:
        counts = torch.stack([self.val_index_hits, self.val_index_total])
        self.val_index_hits = self.val_index_total = None
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(counts)
        if counts[1] <= 0:
            return {}
        return {'index_acc': float(counts[0] / counts[1])}

    def get_current_visuals(self) -> OrderedDict:
        out = OrderedDict(lq=self.lq.detach().cpu(), result=self.output.detach().cpu())
        if hasattr(self, 'gt'):
            out['gt'] = self.gt.detach().cpu()
        return out
