"""Stage I of TVQ&RAP: train the texture-VQ tokenizer (paper notes §2 "Stage I losses", §4).

Also holds what stages I and III share (``VQGANTrainingMixin``): the PatchGAN discriminator, the hinge GAN
term of the generator with the VQGAN adaptive weight, the discriminator step, and saving net_d.

Losses of stage I (option keys under ``train:``; paper values in brackets):
    pixel_opt       MSE(X̂, X) [MSELoss, 1.0]; computed on [-1, 1] tensors, as the official code (4x the [0,1] MSE)
    perceptual_opt  LPIPS-VGG(X̂, X) [LPIPSLoss, 1.0]
    gan_opt         hinge GAN [GANLoss hinge, loss_weight 1.0], times the adaptive weight at the decoder's last
                    conv, clamped to [0, adaptive_weight_max (1e4)], times disc_weight [0.75]
    disc_weight     also scales the discriminator loss: disc_weight * 0.5 * (hinge_real + hinge_fake)
    disc_start_iter GAN term and D updates start after this iteration [0 = from the first iteration; the paper
                    does not say; VQGAN-style recipes often delay it]
    codebook_loss_weight / aux_recon_loss_weight / align_loss_weight   [1.0 each]
    dead_code_reinit_iters  not in the paper, off by default (0): every N iterations, codes unused during the
                    last N iterations are re-initialised to random texture features of the current batch
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.distributed as dist
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_ext.losses.vq_loss import adaptive_gan_weight
from basicsr_ext.models.engine import ConfigError, EngineMixin


def codebook_weight(net: torch.nn.Module) -> torch.Tensor:
    """The (K, D) codebook parameter of a tokenizer (its ``codebook`` is a tensor or an Embedding)."""
    cb = net.codebook
    return cb.weight if isinstance(cb, torch.nn.Module) else cb


def build_optimizer_params(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable parameters; frozen ones are summarised in one log line (not one line each)."""
    params = [p for p in net.parameters() if p.requires_grad]
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    if frozen:
        get_root_logger().info(f'{sum(p.numel() for p in params):,} trainable parameters; {frozen:,} frozen '
                               'parameters are not optimized.')
    return params


class VQGANTrainingMixin:
    """What BasicSR's SRModel / SRGANModel lack for VQGAN-style training (stages I and III), each for one reason:

    - :meth:`setup_gan`, :meth:`setup_optimizers`, :meth:`save`: ``net_d`` is optional (no GAN in stage II, nor
      in stage I before it is wanted); SRGANModel always builds one. SRModel's optimizer also logs one warning
      per frozen tensor (hundreds for TVQ&RAP's frozen decoder): here one line.
    - :meth:`build_ema`: SRModel builds the EMA only inside its ``init_training_settings``, which needs a pixel or
      perceptual loss (stage II has neither).
    - :meth:`model_ema`: frozen parameters are copied, not averaged (``x * d + x * (1 - d)`` drifts by rounding).
    - :meth:`reconstruction_loss`: the fp32 image loss of stages I and III (pixel on [-1, 1] + LPIPS on [0, 1]).
    - :meth:`generator_gan_term`, :meth:`discriminator_step`: the hinge GAN with VQGAN's adaptive weight;
      :meth:`generator_step` runs them around the generator's update (stages I and III alike).
    """

    TRAIN_KEYS = ('disc_weight', 'adaptive_weight_max', 'disc_start_iter')

    def setup_gan(self) -> None:
        """Build ``net_d`` (+ ``path.pretrain_network_d``) and ``cri_gan`` from ``network_d`` / ``train.gan_opt``."""
        train_opt = self.opt['train']
        self.cri_gan = build_loss(train_opt['gan_opt']).to(self.device) if train_opt.get('gan_opt') else None
        if self.cri_gan is not None and getattr(self.cri_gan, 'gan_type', 'hinge') != 'hinge':
            raise ConfigError(f"train.gan_opt.gan_type must be 'hinge' (VQGAN), got {self.cri_gan.gan_type!r}")
        self.disc_weight = float(train_opt.get('disc_weight', 0.75))
        self.adaptive_weight_max = float(train_opt.get('adaptive_weight_max', 1e4))
        self.disc_start_iter = int(train_opt.get('disc_start_iter', 0))
        if self.cri_gan is None:
            return
        if 'network_d' not in self.opt:
            raise ConfigError('train.gan_opt is set but network_d is missing (e.g. type: TVQPatchGANDiscriminator)')
        self.net_d = self.model_to_device(build_network(self.opt['network_d']))
        self.print_network(self.net_d)
        load_path = self.opt['path'].get('pretrain_network_d')
        if load_path is not None:
            self.load_network(self.net_d, load_path, self.opt['path'].get('strict_load_d', True),
                              self.opt['path'].get('param_key_d', 'params'))
        self.net_d.train()

    def setup_optimizers(self) -> None:
        optim_g = dict(self.opt['train']['optim_g'])
        self.optimizer_g = self.get_optimizer(optim_g.pop('type'), build_optimizer_params(self.net_g), **optim_g)
        self.optimizers.append(self.optimizer_g)
        if getattr(self, 'net_d', None) is not None:
            optim_d = dict(self.opt['train']['optim_d'])
            self.optimizer_d = self.get_optimizer(optim_d.pop('type'), self.net_d.parameters(), **optim_d)
            self.optimizers.append(self.optimizer_d)

    def save(self, epoch: int, current_iter: int) -> None:
        if getattr(self, 'net_d', None) is not None:
            self.save_network(self.net_d, 'net_d', current_iter)
        super().save(epoch, current_iter)  # SRModel: net_g (params, params_ema), then the training state

    def build_ema(self) -> None:
        """``net_g_ema`` (``train.ema_decay``), loaded from ``params_ema`` of pretrain_network_g or copied."""
        self.ema_decay = float(self.opt['train'].get('ema_decay', 0) or 0)
        if self.ema_decay <= 0:
            return
        get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
        self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is not None:
            self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
        else:
            self.model_ema(0)
        self.net_g_ema.eval()
        for p in self.net_g_ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def model_ema(self, decay: float = 0.999) -> None:
        """BasicSR's parameter EMA (``ema * decay + p * (1 - decay)``, the same two ops per tensor), except that
        frozen parameters (the SR net's codebook and decoder) are copied. Done with ``torch._foreach_*`` over
        parameter lists built once (:meth:`ema_pairs`): walking ``named_parameters()`` and updating the quickstart
        tokenizer's 566 small tensors one by one took 3.7 ms per iteration, now 1.2 ms (1 thread, EPYC)."""
        (ema_avg, src_avg), (ema_copy, src_copy) = self.ema_pairs()
        if ema_avg:
            torch._foreach_mul_(ema_avg, decay)
            torch._foreach_add_(ema_avg, src_avg, alpha=1 - decay)
        if ema_copy:
            torch._foreach_copy_(ema_copy, src_copy)

    def ema_pairs(self) -> tuple[tuple[list, list], tuple[list, list]]:
        """((EMA tensors, net_g tensors) averaged, (EMA tensors, net_g tensors) copied), matched by parameter name.
        Built on the first call and rebuilt when a parameter's ``requires_grad`` changes (load_state_dict works in
        place, so the tensors themselves stay valid)."""
        cached = getattr(self, '_ema_pairs_cache', None)
        if cached is not None and all(p.requires_grad for p in cached[0][1]) \
                and not any(p.requires_grad for p in cached[1][1]):
            return cached
        ema = dict(self.net_g_ema.named_parameters())
        params = list(self.get_bare_model(self.net_g).named_parameters())
        groups = ([(ema[n], p) for n, p in params if p.requires_grad],
                  [(ema[n], p) for n, p in params if not p.requires_grad])
        self._ema_pairs_cache = tuple(([e for e, _ in g], [p for _, p in g]) for g in groups)
        return self._ema_pairs_cache

    def reconstruction_loss(self, raw: torch.Tensor, loss_dict: OrderedDict) -> torch.Tensor | int:
        """``cri_pix`` on [-1, 1] (as the official code) + ``cri_perceptual`` (LPIPS) on [0, 1] of the fp32 output
        ``raw`` against ``self.gt``, in fp32 (paper notes §2 "Stage I losses", §4); logs ``l_pix`` / ``l_lpips``.
        0 when neither loss is set."""
        l_rec = 0
        with self.fp32():
            if self.cri_pix is not None:
                loss_dict['l_pix'] = self.cri_pix(raw, self.gt * 2 - 1)
                l_rec = l_rec + loss_dict['l_pix']
            if self.cri_perceptual is not None:
                loss_dict['l_lpips'] = self.cri_perceptual((raw + 1) / 2, self.gt)
                l_rec = l_rec + loss_dict['l_lpips']
        return l_rec

    def gan_active(self, current_iter: int) -> bool:
        return self.cri_gan is not None and current_iter > self.disc_start_iter

    def generator_gan_term(self, rec_loss: torch.Tensor, fake01: torch.Tensor, last_layer: torch.Tensor,
                           loss_dict: OrderedDict) -> torch.Tensor:
        """adaptive_weight * hinge_G(D(fake)); logs ``l_g_gan`` and ``d_weight``. D's params are frozen here."""
        for p in self.net_d.parameters():
            p.requires_grad_(False)
        with self.autocast():
            fake_pred = self.net_d(self.to_memory_format(fake01))
        l_g_gan = self.cri_gan(fake_pred.float(), True, is_disc=False)
        d_weight = adaptive_gan_weight(rec_loss, l_g_gan, last_layer, max_weight=self.adaptive_weight_max,
                                       scale=self.disc_weight)
        loss_dict['l_g_gan'] = l_g_gan
        loss_dict['d_weight'] = d_weight
        return d_weight * l_g_gan

    def generator_step(self, l_total: torch.Tensor, l_rec: torch.Tensor, fake01: torch.Tensor,
                       loss_dict: OrderedDict, current_iter: int) -> None:
        """The generator update of a VQGAN step: ``l_total`` (+ the adaptive GAN term of ``fake01`` once the GAN is
        active), finite check, backward, optimizer step; then the discriminator step on ``self.gt`` vs ``fake01``."""
        use_gan = self.gan_active(current_iter)
        if use_gan:
            last_layer = self.get_bare_model(self.net_g).get_last_layer()
            l_total = l_total + self.generator_gan_term(l_rec, fake01, last_layer, loss_dict)
        self.check_finite(loss_dict, current_iter)
        self.backward(l_total)
        self.optimizer_step(self.optimizer_g, self.net_g)
        if use_gan:
            self.discriminator_step(self.gt, fake01, loss_dict, current_iter)

    def discriminator_step(self, real01: torch.Tensor, fake01: torch.Tensor, loss_dict: OrderedDict,
                           current_iter: int) -> None:
        """disc_weight * 0.5 * (hinge(D(real)) + hinge(-D(fake))), one Adam step."""
        for p in self.net_d.parameters():
            p.requires_grad_(True)
        self.optimizer_d.zero_grad(set_to_none=True)
        with self.autocast():
            real_pred = self.net_d(self.to_memory_format(real01))
            fake_pred = self.net_d(self.to_memory_format(fake01.detach()))
        l_d_real = self.cri_gan(real_pred.float(), True, is_disc=True)
        l_d_fake = self.cri_gan(fake_pred.float(), False, is_disc=True)
        l_d = self.disc_weight * 0.5 * (l_d_real + l_d_fake)
        d_terms = OrderedDict(l_d_real=l_d_real, l_d_fake=l_d_fake)
        self.check_finite(d_terms, current_iter)
        self.backward(l_d)
        self.optimizer_step(self.optimizer_d, self.net_d)
        loss_dict.update(d_terms)
        loss_dict['out_d_real'] = real_pred.detach().float().mean()
        loss_dict['out_d_fake'] = fake_pred.detach().float().mean()


@MODEL_REGISTRY.register()
class TVQTokenizerModel(EngineMixin, VQGANTrainingMixin, SRModel):
    """Stage I: GT-only training of ``TVQTokenizer`` (or the vanilla-VQ baseline, ``structure: false``).

    Data: ``{'gt'}`` in [0, 1] (e.g. ``GTOnlyDataset``); X↓8 for the auxiliary AE is the 8x area average of the
    GT (= cv2 INTER_AREA for an integer factor). Validation: reconstruction of the GT (the engine's test(): padded
    to the tokenizer's multiple, cropped back) scored by ``val.metrics``, plus codebook usage over the whole
    validation set (``codebook_perplexity`` = exp(entropy of code frequencies), ``codebook_usage`` = fraction of
    codes used; with ``val.tile_size``, the codes of each tile).
    """

    TRAIN_KEYS = ('codebook_loss_weight', 'aux_recon_loss_weight', 'align_loss_weight', 'dead_code_reinit_iters')

    def init_training_settings(self) -> None:
        train_opt = self.opt['train']
        self.net_g.train()
        self.build_ema()
        self.cri_pix = build_loss(train_opt['pixel_opt']).to(self.device) if train_opt.get('pixel_opt') else None
        self.cri_perceptual = (build_loss(train_opt['perceptual_opt']).to(self.device)
                               if train_opt.get('perceptual_opt') else None)
        if self.cri_pix is None and self.cri_perceptual is None:
            raise ConfigError('train: stage I needs pixel_opt and/or perceptual_opt')
        self.setup_gan()
        self.codebook_loss_weight = float(train_opt.get('codebook_loss_weight', 1.0))
        self.aux_recon_loss_weight = float(train_opt.get('aux_recon_loss_weight', 1.0))
        self.align_loss_weight = float(train_opt.get('align_loss_weight', 1.0))
        self.dead_code_reinit_iters = int(train_opt.get('dead_code_reinit_iters', 0) or 0)
        num_codes = codebook_weight(self.get_bare_model(self.net_g)).shape[0]
        self.train_code_counts = torch.zeros(num_codes, dtype=torch.float64, device=self.device)
        self.setup_optimizers()
        self.setup_schedulers()

    # ---- data ----------------------------------------------------------------------------------------------
    def feed_data(self, data: dict) -> None:
        self.gt = data['gt'].to(self.device)

    # ---- training ------------------------------------------------------------------------------------------
    def optimize_parameters(self, current_iter: int) -> None:
        bare = self.get_bare_model(self.net_g)
        gt = self.to_memory_format(self.gt)
        lr8 = bare.downscale8(self.gt)  # X↓8 (INTER_AREA for factor 8)
        self.optimizer_g.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.net_g(gt, lr8)
        rec_raw = out['reconstruction_raw'].float()
        rec01 = (rec_raw + 1) / 2
        loss_dict = OrderedDict()
        l_rec = self.reconstruction_loss(rec_raw, loss_dict)
        l_total = l_rec
        for key, weight in (('codebook_loss', self.codebook_loss_weight),
                            ('aux_recon_loss', self.aux_recon_loss_weight), ('align_loss', self.align_loss_weight)):
            value = out.get(key)
            if value is not None and weight:
                loss_dict[f'l_{key[:-5]}'] = value.float()
                l_total = l_total + weight * value.float()
        self.generator_step(l_total, l_rec, rec01, loss_dict, current_iter)
        with torch.no_grad():
            counts = torch.bincount(out['indices'].flatten(), minlength=self.train_code_counts.numel())
            self.train_code_counts += counts.to(self.train_code_counts)
        if self.dead_code_reinit_iters and current_iter % self.dead_code_reinit_iters == 0:
            loss_dict['n_reinit_codes'] = torch.tensor(float(self.reinit_dead_codes(out['texture_feature'])),
                                                       device=self.device)
        self.finish_iteration(loss_dict)

    @torch.no_grad()
    def reinit_dead_codes(self, texture_feature: torch.Tensor) -> int:
        """Codes unused since the last re-initialisation get random texture vectors T of the current batch
        (rank 0's choice broadcast in DDP); their Adam moments are reset. Returns how many were replaced."""
        counts = self.train_code_counts.clone()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(counts)
        weight = codebook_weight(self.get_bare_model(self.net_g))
        dead = (counts == 0).nonzero().flatten()
        self.train_code_counts.zero_()
        if dead.numel() == 0:
            return 0
        feats = texture_feature.detach().float().permute(0, 2, 3, 1).reshape(-1, weight.shape[1])
        pick = torch.randint(0, feats.shape[0], (dead.numel(),), device=feats.device)
        new = feats[pick].to(weight)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(new, 0)
        weight.data[dead] = new
        state = self.optimizer_g.state.get(weight, {})
        for key in ('exp_avg', 'exp_avg_sq'):
            if key in state:
                state[key][dead] = 0
        return int(dead.numel())

    def extra_training_state(self) -> dict:
        return dict(super().extra_training_state(), train_code_counts=self.train_code_counts.cpu())

    def load_extra_training_state(self, extra) -> None:
        super().load_extra_training_state(extra)
        if 'train_code_counts' in extra and extra['train_code_counts'].shape == self.train_code_counts.shape:
            self.train_code_counts.copy_(extra['train_code_counts'].to(self.train_code_counts))

    # ---- validation ------------------------------------------------------------------------------------------
    TEST_INPUT, TEST_SCALE = 'gt', 1  # the engine's test() reconstructs gt

    def net_forward(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction in [0, 1]; the codes of the image (of each tile when tiled) are counted for codebook usage."""
        out = net(x, net.downscale8(x))
        if getattr(self, 'val_code_counts', None) is not None:
            h, w = self.gt.shape[-2:]  # the codes of the padding are not counted
            indices = out['indices'][:, :math.ceil(h / 8), :math.ceil(w / 8)]
            self.val_code_counts += torch.bincount(indices.flatten(), minlength=self.val_code_counts.numel()).to(
                self.val_code_counts)
        return out['reconstruction'].clamp(0, 1)

    def get_current_visuals(self) -> OrderedDict:
        out = OrderedDict(result=self.output.detach().cpu())
        if hasattr(self, 'gt'):
            out['gt'] = self.gt.detach().cpu()
        return out

    def start_validation(self) -> None:
        num_codes = codebook_weight(self.get_bare_model(self.net_g)).shape[0]
        self.val_code_counts = torch.zeros(num_codes, dtype=torch.float64, device=self.device)

    def finish_validation(self) -> dict[str, float]:
        counts = self.val_code_counts
        self.val_code_counts = None
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(counts)
        return codebook_usage(counts)


def codebook_usage(counts: torch.Tensor) -> dict[str, float]:
    """``codebook_perplexity`` = exp(entropy of the code frequencies) (K when uniform, 1 when one code) and
    ``codebook_usage`` = fraction of codes used at least once."""
    total = float(counts.sum())
    if total <= 0:
        return {'codebook_perplexity': 0.0, 'codebook_usage': 0.0}
    p = counts[counts > 0].double() / total
    return {'codebook_perplexity': float(torch.exp(-(p * p.log()).sum())),
            'codebook_usage': float((counts > 0).double().mean())}

