"""What every model of ours shares, as a mixin placed before a BasicSR model class: ``M(EngineMixin, SRModel)``.

One training-step skeleton: ``optimize_parameters`` runs the networks under :meth:`autocast` (loss networks
under :meth:`fp32`), calls :meth:`check_finite` before :meth:`backward` and :meth:`optimizer_step`, and ends
with :meth:`finish_iteration` (GradScaler update, losses reduced over ranks for the log, EMA step). The ``train:``
switches (``use_amp`` + ``amp_dtype: bf16|fp16``, ``channels_last``, ``compile``, ``grad_clip``) are applied in
one place, :meth:`setup_engine`, when every network and optimizer exists.

- Exact resume and atomic saves: ``basicsr_ext.utils.training_state`` / ``utils.checkpoint`` (the functions
  BasicSR's BaseModel gets too); :meth:`extra_training_state` adds a model's own tensors.
- NaN/inf guard: a non-finite loss term stops training naming the term and the iteration, before any step or
  save, so the last good checkpoint is untouched.
- One :meth:`test` for every model: padded to the arch's multiple, optional ``val.tile_size`` tiles, cropped
  back, ``val.precision``; the validation loop around it is ``basicsr_ext.models.validation``.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from basicsr.utils import get_root_logger

from basicsr_ext.models.validation import ValidationMixin
from basicsr_ext.utils.checkpoint import load_network, save_network
from basicsr_ext.utils.options import ConfigError, did_you_mean
from basicsr_ext.utils.precision import (PrecisionError, fp32_region, inference_autocast, resolve_precision,
                                         resolve_training_amp, warn_slow_training_precision)
from basicsr_ext.utils.tiling import TILE_NORMS, arch_multiple, tiled_forward
from basicsr_ext.utils.training_state import resume_training, save_training_state

ENGINE_TRAIN_KEYS = ('use_amp', 'amp_dtype', 'channels_last', 'compile', 'grad_clip')
#: ``train:`` keys that BasicSR's loop and base models read
BASICSR_TRAIN_KEYS = ('ema_decay', 'optim_g', 'optim_d', 'scheduler', 'total_iter', 'warmup_iter', 'net_d_iters',
                      'net_d_init_iters', 'pixel_opt', 'perceptual_opt', 'gan_opt')
_AMP_DTYPES = {'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16, 'fp16': torch.float16, 'float16': torch.float16}


def tile_norm_of(opt: Mapping[str, Any]) -> str:
    """``val.tile_norm`` (``global``, the default: GroupNorm statistics of the whole image; ``tile``: per tile)."""
    value = (opt.get('val') or {}).get('tile_norm', 'global')
    if value not in TILE_NORMS:
        raise ConfigError(f"{opt.get('opt_path', 'option file')}: val.tile_norm: {value!r} is not one of "
                          f"{', '.join(TILE_NORMS)}")
    return value


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf."""


class EngineMixin(ValidationMixin):
    """Training-step skeleton, exact resume, atomic saves, NaN guard, the one test path (validation loop:
    :class:`~basicsr_ext.models.validation.ValidationMixin`)."""

    #: extra ``train:`` keys a model reads (declared by each model; unknown keys fail at build)
    TRAIN_KEYS: tuple[str, ...] = ()
    #: what :meth:`test` feeds the network (auto-encoders: ``gt``) and its scale (None: the option ``scale``)
    TEST_INPUT, TEST_SCALE = 'lq', None

    def __init__(self, opt: dict) -> None:
        tile_norm_of(opt)
        if opt.get('is_train'):  # before any network or dataset work
            type(self).check_train_keys_of(opt)
            self.check_options(opt)
        super().__init__(opt)

    @staticmethod
    def check_options(opt: Mapping[str, Any]) -> None:
        """Refuse inconsistent training options at model build (override; raise ConfigError naming the key)."""

    @classmethod
    def check_train_keys_of(cls, opt: Mapping[str, Any]) -> None:
        """Refuse unknown keys in ``train:`` (a typo silently ignored is a wasted run), naming key and file."""
        declared = {k for klass in cls.__mro__ for k in klass.__dict__.get('TRAIN_KEYS', ())}
        if not declared:
            return
        allowed = declared | set(ENGINE_TRAIN_KEYS) | set(BASICSR_TRAIN_KEYS)
        unknown = [k for k in (opt.get('train') or {}) if k not in allowed]
        if unknown:
            hints = [f'{k!r}{did_you_mean(k, allowed)}' for k in unknown]
            raise ConfigError(f"{opt.get('opt_path', 'option file')}: unknown key(s) in train: {', '.join(hints)}; "
                              f'{cls.__name__} reads: {", ".join(sorted(allowed))}')

    # ---- set-up, once: every init_training_settings ends with setup_optimizers (then schedulers) ------------
    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        """BasicSR's ``model_to_device`` with ``train.channels_last`` applied first. DDP lays out its gradient
        buckets from the parameters when it wraps a network; a layout changed afterwards corrupts the all-reduced
        gradients (measured: one plain-gradient step of the quickstart AESOP auto-encoder on 2 processes differed
        from 1 process by up to 0.033 per weight when converted after wrapping, 1e-5 in NCHW)."""
        if self.channels_last_for(net):
            net = net.to(memory_format=torch.channels_last)
        return super().model_to_device(net)

    def channels_last_for(self, net: torch.nn.Module) -> bool:
        """Whether ``train.channels_last`` applies to ``net`` (override to keep a network NCHW)."""
        return bool(self.opt.get('is_train') and (self.opt.get('train') or {}).get('channels_last'))

    def setup_optimizers(self) -> None:
        super().setup_optimizers()
        self.setup_engine()

    def setup_engine(self) -> None:
        """Apply the ``train:`` switches to every network (built by now) and create the GradScaler."""
        train_opt = self.opt.get('train', {}) or {}
        dtype_name = str(train_opt.get('amp_dtype', 'bf16')).lower()
        if dtype_name not in _AMP_DTYPES:
            raise ConfigError(f"train.amp_dtype: {dtype_name!r} is not one of bf16, fp16")
        self.amp_dtype = _AMP_DTYPES[dtype_name]
        try:  # true | false | auto (on where the device computes amp_dtype natively)
            self.use_amp = resolve_training_amp(train_opt.get('use_amp', False), self.device, self.amp_dtype)
        except PrecisionError as err:
            raise ConfigError(str(err)) from None
        if str(train_opt.get('use_amp')).lower() == 'auto':
            get_root_logger().info(f'train.use_amp: auto -> {"on" if self.use_amp else "off"} '
                                   f'({dtype_name} autocast on {self.device.type})')
        if self.use_amp and self.amp_dtype == torch.float16 and self.device.type == 'cpu':
            raise ConfigError('train.amp_dtype: fp16 autocast is for GPUs; use bf16 on CPU')
        warn_slow_training_precision(self.device, self.use_amp, self.amp_dtype)  # bf16 on a CPU without bf16 units
        self.grad_clip = train_opt.get('grad_clip')
        if self.grad_clip is not None and float(self.grad_clip) <= 0:
            raise ConfigError(f'train.grad_clip must be a positive max norm, got {self.grad_clip}')
        self.channels_last = bool(train_opt.get('channels_last', False))
        self.grad_scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.use_amp and self.amp_dtype == torch.float16)
        for name in ('net_g', 'net_d', 'net_g_ema'):  # what model_to_device converted is a no-op here; this catches
            net = getattr(self, name, None)            # the EMA copy, which BasicSR builds without model_to_device
            if isinstance(net, torch.nn.Module) and self.channels_last_for(self.get_bare_model(net)):
                setattr(self, name, net.to(memory_format=torch.channels_last))  # parameters keep their identity
        if train_opt.get('compile', False):
            self.net_g = torch.compile(self.net_g)

    # ---- the training step -------------------------------------------------------------------------------------
    def to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, 'channels_last', False) and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self):
        """Mixed precision for the generator and discriminator forward passes (no-op when use_amp is off)."""
        return torch.autocast(self.device.type, dtype=getattr(self, 'amp_dtype', torch.bfloat16),
                              enabled=getattr(self, 'use_amp', False))

    #: loss networks (VGG, LPIPS, the AESOP AE) and VQ distances run in fp32 even inside autocast
    fp32 = staticmethod(fp32_region)

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        scaler = getattr(self, 'grad_scaler', None)
        (scaler.scale(loss) if scaler is not None and scaler.is_enabled() else loss).backward(retain_graph=retain_graph)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, net: torch.nn.Module | None = None) -> None:
        """Unscale (fp16), clip to ``train.grad_clip`` and step."""
        scaler = getattr(self, 'grad_scaler', None)
        scaling = scaler is not None and scaler.is_enabled()
        if getattr(self, 'grad_clip', None) and net is not None:
            if scaling:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.grad is not None], float(self.grad_clip))
        if scaling:
            scaler.step(optimizer)
        else:
            optimizer.step()

    def finish_iteration(self, loss_dict: Mapping[str, torch.Tensor]) -> None:
        """The tail of every ``optimize_parameters``: GradScaler update, losses reduced for the log, EMA step."""
        scaler = getattr(self, 'grad_scaler', None)
        if scaler is not None and scaler.is_enabled():
            scaler.update()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if getattr(self, 'ema_decay', 0) > 0:
            self.model_ema(decay=self.ema_decay)

    @staticmethod
    def check_finite(loss_dict: Mapping[str, torch.Tensor], current_iter: int) -> None:
        """Stop on a NaN/inf loss term, naming it, before anything is stepped or saved."""
        for name, value in loss_dict.items():
            if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value.detach()).all()):
                raise NonFiniteLossError(
                    f'loss term {name!r} is {value.detach().float().mean().item()} at iteration {current_iter}; '
                    'training stopped before the optimizer step, and the last saved checkpoint is intact '
                    '(try a lower learning rate, train.grad_clip, or use_amp: false)')

    # ---- networks and states (one implementation, shared with BasicSR's BaseModel via basicsr_ext.patches) ----
    def get_bare_model(self, net: torch.nn.Module) -> torch.nn.Module:
        net = super().get_bare_model(net)
        return getattr(net, '_orig_mod', net)  # torch.compile wrapper

    load_network, save_network = load_network, save_network
    save_training_state, resume_training = save_training_state, resume_training

    def extra_training_state(self) -> dict:
        """Model-specific tensors to keep across a resume (extend it; tensors/numbers only): here the
        Real-ESRGAN pair queue of a model that trains on ``self.pairs``."""
        return {'pair_queue': self.pairs.queue.state_dict()} if getattr(self, 'pairs', None) is not None else {}

    def load_extra_training_state(self, extra: Mapping) -> None:
        """Counterpart of :meth:`extra_training_state`."""
        if getattr(self, 'pairs', None) is not None:
            self.pairs.queue.load_state_dict(extra.get('pair_queue') or {})

    # ---- the one test path -------------------------------------------------------------------------------------
    def test(self) -> None:
        """EMA generator if any; input padded to :func:`arch_multiple`, tiles of ``val.tile_size`` (overlap
        ``val.tile_overlap``, default 80) when set, output cropped back to ``scale x`` the input. Tiled, every
        GroupNorm normalises with whole-image statistics unless ``val.tile_norm: tile``."""
        val_opt = self.opt.get('val') or {}
        net = self.get_bare_model(self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g)
        was_training = net.training
        net.eval()
        scale = self.TEST_SCALE or int(self.opt.get('scale', 1))
        with torch.no_grad(), self._inference_context():
            out = tiled_forward(lambda x: self.net_forward(net, self.to_memory_format(x)),
                                getattr(self, self.TEST_INPUT), scale, int(val_opt.get('tile_size', 0) or 0),
                                int(val_opt.get('tile_overlap', 80)), arch_multiple(net),
                                norm_net=net if tile_norm_of(self.opt) == 'global' else None)
        self.set_test_output(out.float())
        net.train(was_training)

    def net_forward(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The network on one padded input: the whole image, or one tile (override to record more)."""
        return net(x)

    def set_test_output(self, out: torch.Tensor) -> None:
        """Keep the cropped, blended result of :meth:`net_forward` (override to unpack more)."""
        self.output = out

    def _inference_context(self):
        """The one precision switch of :meth:`test`: ``val.precision`` (auto|fp32|bf16|fp16, resolved by
        ``basicsr_ext.utils.precision``); without it, as training (``train.use_amp`` autocast)."""
        name = (self.opt.get('val') or {}).get('precision')
        if name is None:
            return self.autocast()
        return inference_autocast(self.device, resolve_precision(name, self.device))
