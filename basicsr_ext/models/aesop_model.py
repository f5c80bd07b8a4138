"""AESOP perceptual SR training (aesop.md §1, §3): ESRGAN + LDL artifact loss, with L_AESOP in place of L1.

Synthetic (``AESOPESRGANModel``, official ``AesopESRGANArtifactsDisModel``):
    L_G = aesop_opt * L_AESOP + artifacts * L_LDL + perceptual * L_VGG19 + gan * L_RaGAN
with the paper weights 1 / 1 / 1 / 0.005. ``pixel_opt`` is still accepted: 0.01 * L1 instead of ``aesop_opt``
is the LDL baseline. Real-world (``AESOPRealESRGANModel``, official ``AesopRealESRGANArtifactsDisModel``):
Real-ESRGAN's on-the-fly degradation (``basicsr_ext.data.realesrgan_degradation``), L_G = L_AESOP (plain GT)
+ L_VGG19 (USM GT) + 0.1 * vanilla GAN (plain GT) with ``UNetDiscriminatorSN``.

Precision: the generator and the discriminator run under ``train.use_amp`` autocast; the AESOP AE and VGG run
in fp32. Validation: the engine's test() (padded to the arch's multiple, e.g. SwinIR's window; optional tiles).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import torch
from basicsr.losses import build_loss
from basicsr.losses.loss_util import get_refined_artifact_map
from basicsr.models.esrgan_model import ESRGANModel
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_ext.data.realesrgan_degradation import RealESRGANPairs
from basicsr_ext.models.engine import ConfigError, EngineMixin

#: the LDL artifact map's local window (LDL and AESOP use 7)
ARTIFACT_KSIZE = 7


def check_discriminator_size(opt: Mapping[str, Any]) -> None:
    """A ``VGGStyleDiscriminator`` only accepts ``input_size`` inputs: it must equal the GT crop size."""
    net_d = opt.get('network_d') or {}
    if net_d.get('type') != 'VGGStyleDiscriminator':
        return
    train_set = (opt.get('datasets') or {}).get('train') or {}
    gt_size = train_set.get('gt_size', opt.get('gt_size'))
    input_size = net_d.get('input_size', 128)
    if gt_size is not None and int(gt_size) != int(input_size):
        raise ConfigError(f'network_d.input_size ({input_size}) must equal datasets.train.gt_size ({gt_size}): '
                          'VGGStyleDiscriminator only accepts inputs of its input_size (128 or 256; the '
                          'official RRDB256/SwinIR runs use VGGStyleDiscriminator256)')


@MODEL_REGISTRY.register()
class AESOPESRGANModel(EngineMixin, ESRGANModel):
    """ESRGAN (relativistic GAN) + LDL artifact loss + AESOP loss (``train.aesop_opt``).

    New ``train`` keys: ``aesop_opt`` (an ``AESOPLoss`` block), ``artifacts_opt`` (official LDL name; BasicSR's
    ``ldl_opt`` is the same thing, give one of them), plus the engine switches. The artifact loss needs the EMA
    generator (``ema_decay > 0``).
    """

    TRAIN_KEYS = ('aesop_opt', 'artifacts_opt', 'ldl_opt')

    # ---- options -----------------------------------------------------------------------------------------
    @staticmethod
    def check_options(opt: Mapping[str, Any]) -> None:
        """Refuse, at model build, option combinations that cannot train as the paper does."""
        train = opt.get('train') or {}
        if train.get('aesop_opt') and int(opt.get('scale', 4)) != 4:
            raise ConfigError(f"scale: {opt.get('scale')} is not supported with train.aesop_opt: the AESOP "
                              'auto-encoder is x4 only (two PixelUnshuffle(2) and an RRDBNet x4 decoder)')
        if train.get('ldl_opt') and train.get('artifacts_opt'):
            raise ConfigError('train.ldl_opt and train.artifacts_opt are the same LDL artifact loss: give one')
        if (train.get('ldl_opt') or train.get('artifacts_opt')) and not float(train.get('ema_decay', 0) or 0) > 0:
            raise ConfigError('train.ema_decay must be > 0 with the LDL artifact loss (artifacts_opt/ldl_opt): the '
                              'artifact map compares the output with the EMA generator output (paper: 0.999)')
        if not train.get('gan_opt'):
            raise ConfigError('train.gan_opt is required (vanilla GANLoss, loss_weight 0.005 in the paper)')
        if not opt.get('network_d'):
            raise ConfigError('network_d is required (VGGStyleDiscriminator or UNetDiscriminatorSN)')
        check_discriminator_size(opt)

    def init_training_settings(self) -> None:
        super().init_training_settings()  # EMA, net_d, pixel/ldl/perceptual/gan losses, optimizers
        train_opt = self.opt['train']
        if train_opt.get('artifacts_opt'):
            self.cri_ldl = build_loss(dict(train_opt['artifacts_opt'])).to(self.device)
        self.cri_aesop = build_loss(dict(train_opt['aesop_opt'])).to(self.device) if train_opt.get('aesop_opt') \
            else None
        if self.cri_aesop is not None and self.channels_last:  # the frozen AE takes the generator's NHWC output
            self.cri_aesop.autoencoder.to(memory_format=torch.channels_last)

    #: discriminators whose forward cannot take channels_last features (a flatten by ``.view``): kept NCHW
    NCHW_DISCRIMINATORS = ('VGGStyleDiscriminator',)

    def channels_last_for(self, net: torch.nn.Module) -> bool:
        return super().channels_last_for(net) and type(net).__name__ not in self.NCHW_DISCRIMINATORS

    def setup_engine(self) -> None:
        """The engine's switches; with ``train.channels_last`` the generator (and its EMA) as the engine sets them
        and the frozen AESOP AE (in :meth:`init_training_settings`, built after this) are channels_last; the
        discriminator only when it can take it: ``VGGStyleDiscriminator``'s flatten is a ``.view``, which fails on
        channels_last features, so it stays NCHW and is fed contiguous inputs (:meth:`d_input`)."""
        super().setup_engine()
        self.d_channels_last = self.channels_last_for(self.get_bare_model(self.net_d))

    # ---- training ----------------------------------------------------------------------------------------
    def loss_targets(self) -> dict[str, torch.Tensor]:
        """Which GT each loss compares with (synthetic: the plain GT for all)."""
        gt = self.to_memory_format(self.gt)
        return {'pix': gt, 'aesop': gt, 'ldl': gt, 'percep': gt, 'gan': self.d_input(self.gt)}

    def generator_losses(self, lq: torch.Tensor, targets: Mapping[str, torch.Tensor],
                         loss_dict: OrderedDict) -> torch.Tensor:
        """Pixel, AESOP, LDL artifact and perceptual terms on the fp32 output (GAN term separate)."""
        out = self.output.float()
        total = out.new_zeros(())
        if self.cri_pix:
            loss_dict['l_g_pix'] = self.cri_pix(out, targets['pix'])
            total = total + loss_dict['l_g_pix']
        if self.cri_aesop:
            with self.fp32():
                loss_dict['l_g_aesop'] = self.cri_aesop(out, targets['aesop'])
            total = total + loss_dict['l_g_aesop']
        if self.cri_ldl:
            with torch.no_grad(), self.autocast():
                output_ema = self.net_g_ema(lq)
            gt = targets['ldl']
            # LDL: the map is not detached (as in the original); it is 0 where the EMA output is closer to GT
            weight = get_refined_artifact_map(gt, out, output_ema.float(), ARTIFACT_KSIZE)
            loss_dict['l_g_ldl'] = self.cri_ldl(weight * out, weight * gt)
            total = total + loss_dict['l_g_ldl']
        if self.cri_perceptual:
            with self.fp32():
                l_percep, l_style = self.cri_perceptual(out, targets['percep'])
            if l_percep is not None:
                loss_dict['l_g_percep'] = l_percep
                total = total + l_percep
            if l_style is not None:
                loss_dict['l_g_style'] = l_style
                total = total + l_style
        return total

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        """Discriminator input in the discriminator's memory format (SwinIR outputs are not contiguous)."""
        return self.to_memory_format(x) if getattr(self, 'd_channels_last', False) else x.contiguous()

    def generator_gan_loss(self, gan_gt: torch.Tensor, loss_dict: OrderedDict) -> torch.Tensor:
        """Relativistic average GAN (ESRGAN) with BasicSR's GANLoss (vanilla in the paper)."""
        with self.autocast():
            with torch.no_grad():
                real_d_pred = self.net_d(gan_gt).float()
            fake_g_pred = self.net_d(self.d_input(self.output)).float()
        l_g_real = self.cri_gan(real_d_pred - torch.mean(fake_g_pred), False, is_disc=False)
        l_g_fake = self.cri_gan(fake_g_pred - torch.mean(real_d_pred), True, is_disc=False)
        loss_dict['l_g_gan'] = (l_g_real + l_g_fake) / 2
        return loss_dict['l_g_gan']

    def discriminator_step(self, gan_gt: torch.Tensor, loss_dict: OrderedDict, current_iter: int) -> None:
        """ESRGAN's D step: real and fake halves x0.5, separate backward passes, one optimizer step."""
        fake = self.d_input(self.output.detach())
        with self.autocast():
            with torch.no_grad():
                fake_d_pred = self.net_d(fake).float()
            real_d_pred = self.net_d(gan_gt).float()
        l_d_real = self.cri_gan(real_d_pred - torch.mean(fake_d_pred), True, is_disc=True) * 0.5
        self.check_finite({'l_d_real': l_d_real}, current_iter)
        self.backward(l_d_real)
        with self.autocast():
            fake_d_pred = self.net_d(fake).float()
        l_d_fake = self.cri_gan(fake_d_pred - torch.mean(real_d_pred.detach()), False, is_disc=True) * 0.5
        self.check_finite({'l_d_fake': l_d_fake}, current_iter)
        self.backward(l_d_fake)
        self.optimizer_step(self.optimizer_d, self.net_d)
        loss_dict['l_d_real'] = l_d_real
        loss_dict['l_d_fake'] = l_d_fake
        loss_dict['out_d_real'] = torch.mean(real_d_pred.detach())
        loss_dict['out_d_fake'] = torch.mean(fake_d_pred.detach())

    def optimize_parameters(self, current_iter: int) -> None:
        targets = self.loss_targets()
        lq = self.to_memory_format(self.lq)
        for p in self.net_d.parameters():
            p.requires_grad = False
        self.optimizer_g.zero_grad(set_to_none=True)
        with self.autocast():
            self.output = self.net_g(lq)
        loss_dict = OrderedDict()
        if current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters:
            l_g_total = self.generator_losses(lq, targets, loss_dict)
            l_g_total = l_g_total + self.generator_gan_loss(targets['gan'], loss_dict)
            self.check_finite(loss_dict, current_iter)
            self.backward(l_g_total)
            self.optimizer_step(self.optimizer_g, self.net_g)
        for p in self.net_d.parameters():
            p.requires_grad = True
        self.optimizer_d.zero_grad(set_to_none=True)
        self.discriminator_step(targets['gan'], loss_dict, current_iter)
        self.finish_iteration(loss_dict)


@MODEL_REGISTRY.register()
class AESOPRealESRGANModel(AESOPESRGANModel):
    """Real-world AESOP: Real-ESRGAN's on-the-fly degradation and pair queue (``RealESRGANPairs``, the module
    TVQ&RAP trains with too: any device, queue kept in the training state), non-relativistic vanilla GAN
    (``UNetDiscriminatorSN``). Which GT each loss sees (top-level keys): ``aesop_gt_usm`` (default false, new),
    ``percep_gt_usm`` (true), ``gan_gt_usm`` (false), ``l1_gt_usm`` (true) - the official real-world setting.
    """

    @staticmethod
    def check_options(opt: Mapping[str, Any]) -> None:
        AESOPESRGANModel.check_options(opt)
        batch = (opt.get('datasets') or {}).get('train', {}).get('batch_size_per_gpu', 1)
        if int(opt.get('queue_size', 180)) % int(batch):
            raise ConfigError(f"queue_size ({opt.get('queue_size', 180)}) must be divisible by "
                              f'datasets.train.batch_size_per_gpu ({batch})')

    def init_training_settings(self) -> None:
        super().init_training_settings()
        self.pairs = RealESRGANPairs(self.opt, self.opt['scale'], self.opt.get('queue_size', 180)).to(self.device)

    @torch.no_grad()
    def feed_data(self, data: Mapping[str, torch.Tensor]) -> None:
        """A batch with ``lq`` (validation, paired data) as it is; a GT-only batch with kernels becomes a
        Real-ESRGAN pair. ``gt_usm``, the USM-sharpened GT, is made after the queue (as BasicSR does)."""
        if 'lq' in data:
            super().feed_data(data)
        else:
            self.lq, self.gt = self.pairs(data, self.device)
        if self.is_train and 'gt' in data:
            self.gt_usm = self.pairs.usm(self.gt)

    def loss_targets(self) -> dict[str, torch.Tensor]:
        gt, usm = self.to_memory_format(self.gt), self.to_memory_format(self.gt_usm)

        def pick(key: str, default: bool) -> torch.Tensor:
            return usm if self.opt.get(key, default) else gt
        return {'pix': pick('l1_gt_usm', True), 'aesop': pick('aesop_gt_usm', False), 'ldl': gt,
                'percep': pick('percep_gt_usm', True), 'gan': self.d_input(pick('gan_gt_usm', False))}

    def generator_gan_loss(self, gan_gt: torch.Tensor, loss_dict: OrderedDict) -> torch.Tensor:
        with self.autocast():
            fake_g_pred = self.net_d(self.d_input(self.output)).float()
        loss_dict['l_g_gan'] = self.cri_gan(fake_g_pred, True, is_disc=False)
        return loss_dict['l_g_gan']

    def discriminator_step(self, gan_gt: torch.Tensor, loss_dict: OrderedDict, current_iter: int) -> None:
        with self.autocast():
            real_d_pred = self.net_d(gan_gt).float()
        l_d_real = self.cri_gan(real_d_pred, True, is_disc=True)
        self.check_finite({'l_d_real': l_d_real}, current_iter)
        self.backward(l_d_real)
        with self.autocast():
            fake_d_pred = self.net_d(self.d_input(self.output.detach()).clone()).float()
        l_d_fake = self.cri_gan(fake_d_pred, False, is_disc=True)
        self.check_finite({'l_d_fake': l_d_fake}, current_iter)
        self.backward(l_d_fake)
        self.optimizer_step(self.optimizer_d, self.net_d)
        loss_dict.update(l_d_real=l_d_real, l_d_fake=l_d_fake, out_d_real=torch.mean(real_d_pred.detach()),
                         out_d_fake=torch.mean(fake_d_pred.detach()))
