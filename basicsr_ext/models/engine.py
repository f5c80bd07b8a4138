"""What every model of ours shares, as a mixin placed before a BasicSR model class.

    class MyModel(EngineMixin, SRModel): ...

- ``train:`` switches (all opt-in): ``use_amp`` + ``amp_dtype: bf16|fp16`` (GradScaler for fp16),
  ``channels_last``, ``compile`` (torch.compile of net_g), ``grad_clip`` (max gradient norm).
  Loss networks stay fp32: they run inside :meth:`fp32` blocks.
- Exact resume: the training state also holds the GradScaler, the RNG states of torch, numpy and python
  (per rank, as tensors so that ``weights_only=True`` loads them) and the iteration; the train sampler skips
  the samples already consumed in the interrupted epoch (``basicsr_ext.data.sampler``).
- Atomic checkpoints and states (temporary file + rename): a kill while saving never breaks ``--auto_resume``.
- NaN/inf guard: a non-finite loss term stops training naming the term and the iteration, before any step
  or save, so the last good checkpoint is untouched.
- Validation: sharded over ranks in DDP (no rank idles into a collective timeout), ``val.key_metric``
  saves ``net_g_best.pth`` when that metric improves.
- Official checkpoints: :meth:`load_network` is weights-only and lets an arch translate a released layout
  through ``arch.convert_official_state_dict(sd) -> (sd, layout_name | None)``.
"""
from __future__ import annotations

import contextlib
import math
import os
from copy import deepcopy
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, tensor2img

# exact resume on the data side (RNG states as tensors, the sampler that skips consumed samples) lives in data/
from basicsr_ext.data.sampler import (_PENDING_RESUME, ResumableEnlargedSampler, get_rng_state,  # noqa: F401
                                      set_rng_state)
from basicsr_ext.utils.checkpoint import (CheckpointError, atomic_save, load_network, load_weights_into,  # noqa: F401
                                          save_network)
from basicsr_ext.utils.training_state import resume_training, save_training_state
from basicsr_ext.utils.image_io import write_image_atomic
from basicsr_ext.utils.precision import fp32_region, inference_autocast, resolve_precision
from basicsr_ext.utils.tiling import arch_multiple, tiled_forward

ENGINE_TRAIN_KEYS = ('use_amp', 'amp_dtype', 'channels_last', 'compile', 'grad_clip')
#: ``train:`` keys that BasicSR's loop and base models read
BASICSR_TRAIN_KEYS = ('ema_decay', 'optim_g', 'optim_d', 'scheduler', 'total_iter', 'warmup_iter', 'net_d_iters',
                      'net_d_init_iters', 'pixel_opt', 'perceptual_opt', 'gan_opt')
_AMP_DTYPES = {'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16, 'fp16': torch.float16, 'float16': torch.float16}


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf."""


class ConfigError(ValueError):
    """An option that cannot work, found before the first iteration."""


# ----------------------------------------------------------------------------------------------------------
# the mixin
# ----------------------------------------------------------------------------------------------------------
class EngineMixin:
    """AMP / channels_last / compile / grad clip, exact resume, atomic saves, NaN guard, sharded validation."""

    # ---- switches ------------------------------------------------------------------------------------------
    #: extra ``train:`` keys a model reads (declared by each model; unknown keys fail at build)
    TRAIN_KEYS: tuple[str, ...] = ()

    def __init__(self, opt: dict) -> None:
        if opt.get('is_train'):
            self.check_options(opt)  # before any network or dataset work
        super().__init__(opt)

    @staticmethod
    def check_options(opt: Mapping[str, Any]) -> None:
        """Refuse inconsistent training options at model build (override; raise ConfigError naming the key)."""

    def check_train_keys(self) -> None:
        """Refuse unknown keys in ``train:`` (a typo silently ignored is a wasted run), naming key and file."""
        type(self).check_train_keys_of(self.opt)

    @classmethod
    def check_train_keys_of(cls, opt: Mapping[str, Any]) -> None:
        """:meth:`check_train_keys` on options, before the model exists (``basicsr_ext.preflight``)."""
        declared = set()
        for klass in cls.__mro__:
            declared.update(klass.__dict__.get('TRAIN_KEYS', ()))
        if not declared:
            return
        allowed = declared | set(ENGINE_TRAIN_KEYS) | set(BASICSR_TRAIN_KEYS)
        unknown = [k for k in (opt.get('train') or {}) if k not in allowed]
        if unknown:
            from basicsr_ext.utils.options import did_you_mean
            hints = [f'{k!r}{did_you_mean(k, allowed)}' for k in unknown]
            raise ConfigError(f"{opt.get('opt_path', 'option file')}: unknown key(s) in train: {', '.join(hints)}; "
                              f'{cls.__name__} reads: {", ".join(sorted(allowed))}')

    def setup_engine(self) -> None:
        """Read the ``train:`` switches; call from ``init_training_settings`` before building optimizers."""
        self.check_train_keys()
        train_opt = self.opt.get('train', {}) or {}
        self.use_amp = bool(train_opt.get('use_amp', False))
        dtype_name = str(train_opt.get('amp_dtype', 'bf16')).lower()
        if dtype_name not in _AMP_DTYPES:
            raise ConfigError(f"train.amp_dtype: {dtype_name!r} is not one of bf16, fp16")
        self.amp_dtype = _AMP_DTYPES[dtype_name]
        if self.use_amp and self.amp_dtype == torch.float16 and self.device.type == 'cpu':
            raise ConfigError('train.amp_dtype: fp16 autocast is for GPUs; use bf16 on CPU')
        self.grad_clip = train_opt.get('grad_clip')
        if self.grad_clip is not None and float(self.grad_clip) <= 0:
            raise ConfigError(f'train.grad_clip must be a positive max norm, got {self.grad_clip}')
        self.channels_last = bool(train_opt.get('channels_last', False))
        self.grad_scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.use_amp and self.amp_dtype == torch.float16)
        if self.channels_last:
            for name in self._network_names():
                setattr(self, name, getattr(self, name).to(memory_format=torch.channels_last))
        if train_opt.get('compile', False):
            self.net_g = torch.compile(self.net_g)

    def _network_names(self) -> list[str]:
        return [n for n in ('net_g', 'net_d', 'net_g_ema') if isinstance(getattr(self, n, None), torch.nn.Module)]

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
        """Unscale (fp16), clip to ``train.grad_clip`` and step; call :meth:`scaler_update` once per iteration."""
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

    def scaler_update(self) -> None:
        scaler = getattr(self, 'grad_scaler', None)
        if scaler is not None and scaler.is_enabled():
            scaler.update()

    def finish_iteration(self, loss_dict: Mapping[str, torch.Tensor]) -> None:
        """End of ``optimize_parameters``: GradScaler update, losses reduced over ranks for the log, EMA step."""
        self.scaler_update()
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

    # ---- networks ------------------------------------------------------------------------------------------
    def get_bare_model(self, net: torch.nn.Module) -> torch.nn.Module:
        net = super().get_bare_model(net)
        return getattr(net, '_orig_mod', net)  # torch.compile wrapper

    #: weights-only, finite, ``param_key`` → params_ema → params → raw dict, official layouts translated (the
    #: function patches.py also gives BasicSR's BaseModel)
    load_network = load_network

    #: BasicSR's layout, atomic, rank 0 (the function patches.py also gives BasicSR's BaseModel)
    save_network = save_network

    # ---- training state --------------------------------------------------------------------------------------
    #: optimizers, schedulers, GradScaler, RNG states of every rank, extra_training_state(); atomic; on resume the
    #: sampler is armed for an exact continuation (basicsr_ext.utils.training_state, BasicSR's BaseModel too)
    save_training_state = save_training_state
    resume_training = resume_training

    def extra_training_state(self) -> dict:
        """Model-specific tensors to keep across a resume (extend it; tensors/numbers only): here the
        Real-ESRGAN pair queue of a model that trains on ``self.pairs``."""
        return {'pair_queue': self.pairs.queue.state_dict()} if getattr(self, 'pairs', None) is not None else {}

    def load_extra_training_state(self, extra: Mapping) -> None:
        """Counterpart of :meth:`extra_training_state`."""
        if getattr(self, 'pairs', None) is not None:
            self.pairs.queue.load_state_dict(extra.get('pair_queue') or {})

    # ---- the one test path -------------------------------------------------------------------------------------
    #: what :meth:`test` feeds the network (auto-encoders: ``gt``) and its scale (None: the option ``scale``)
    TEST_INPUT, TEST_SCALE = 'lq', None

    def test(self) -> None:
        """EMA generator if any; input padded to :func:`arch_multiple`, tiles of ``val.tile_size`` (overlap
        ``val.tile_overlap``, default 80) when set, output cropped back to ``scale x`` the input."""
        val_opt = self.opt.get('val') or {}
        net = self.get_bare_model(self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g)
        was_training = net.training
        net.eval()
        scale = self.TEST_SCALE or int(self.opt.get('scale', 1))
        with torch.no_grad(), self._inference_context():
            out = tiled_forward(lambda x: self.net_forward(net, self.to_memory_format(x)), getattr(self, self.TEST_INPUT),
                                scale, int(val_opt.get('tile_size', 0) or 0), int(val_opt.get('tile_overlap', 80)),
                                arch_multiple(net))
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

    # ---- validation ------------------------------------------------------------------------------------------
    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        super().validation(dataloader, current_iter, tb_logger, save_img)
        self._save_best_by_key_metric(dataloader.dataset.opt['name'], current_iter)

    def _save_best_by_key_metric(self, dataset_name: str, current_iter: int) -> None:
        """``val.key_metric`` on ``val.key_dataset`` (default: the first validation set) → net_g_best.pth."""
        val_opt = self.opt.get('val') or {}
        key = val_opt.get('key_metric')
        if not key or not self.opt.get('is_train') or not hasattr(self, 'best_metric_results'):
            return
        val_names = [d.get('name') for phase, d in (self.opt.get('datasets') or {}).items() if phase.startswith('val')]
        key_dataset = val_opt.get('key_dataset') or (val_names[0] if val_names else dataset_name)
        if key_dataset not in val_names and val_names:
            raise ConfigError(f'val.key_dataset: {key_dataset!r} is not one of the validation sets {val_names}')
        if dataset_name != key_dataset:
            return
        record = self.best_metric_results.get(dataset_name, {}).get(key)
        if record is None:
            raise ConfigError(f"val.key_metric: {key!r} is not one of val.metrics ({list(self.opt['val']['metrics'])})")
        if record['iter'] == current_iter and self.opt.get('rank', 0) == 0:
            nets = [self.net_g_ema, self.net_g] if hasattr(self, 'net_g_ema') else self.net_g
            keys = ['params_ema', 'params'] if hasattr(self, 'net_g_ema') else 'params'
            self.save_network(nets, 'net_g', 'best', param_key=keys)
            get_root_logger().info(f'Saved net_g_best.pth: {key} = {record["val"]:.4f} at iter {current_iter}')

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """Every rank validates its share of the images; metric sums are all-reduced."""
        self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def extra_validation_metrics(self) -> dict[str, float]:
        """Model-specific metrics added to the validation log (override, e.g. codebook usage)."""
        return {}

    def validation_images(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(result, gt) as BasicSR uint8 images for the current batch; override for other visuals."""
        visuals = self.get_current_visuals()
        gt = tensor2img([visuals['gt']]) if 'gt' in visuals else None
        return tensor2img([visuals['result']]), gt

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        from basicsr_ext.metrics.fidelity_metric import metric_needs_lq  # metrics that want the LR (LR-PSNR)
        dataset_name = dataloader.dataset.opt['name']
        metrics_opt = (self.opt.get('val') or {}).get('metrics') or {}
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        if metrics_opt:
            self._initialize_best_metric_results(dataset_name)
        sums = torch.zeros(len(metrics_opt) + 1, dtype=torch.float64)
        use_pbar = self.opt['val'].get('pbar', False) and rank == 0
        pbar = None
        if use_pbar:
            from tqdm import tqdm
            pbar = tqdm(total=len(dataloader), unit='image')
        self.start_validation()
        for idx, val_data in enumerate(dataloader):
            if idx % world != rank:
                continue
            path = val_data.get('lq_path', val_data.get('gt_path'))[0]
            img_name = os.path.splitext(os.path.basename(path))[0]
            self.feed_data(val_data)
            self.test()
            sr_img, gt_img = self.validation_images()
            lq_img = tensor2img([self.lq]) if hasattr(self, 'lq') and any(
                metric_needs_lq(o) for o in metrics_opt.values()) else None  # e.g. LR-PSNR
            self.after_validation_image()
            if save_img:
                if self.opt['is_train']:
                    save_path = os.path.join(self.opt['path']['visualization'], img_name, f'{img_name}_{current_iter}.png')
                else:
                    suffix = self.opt['val'].get('suffix') or self.opt['name']
                    save_path = os.path.join(self.opt['path']['visualization'], dataset_name, f'{img_name}_{suffix}.png')
                write_image_atomic(save_path, sr_img, channel_order='bgr')  # uint8 BGR, as BasicSR's imwrite
            metric_data = {'img': sr_img} if gt_img is None else {'img': sr_img, 'img2': gt_img}
            for i, (name, opt_) in enumerate(metrics_opt.items()):
                data = metric_data
                if lq_img is not None and metric_needs_lq(opt_):
                    data = dict(metric_data, img_lq=lq_img)
                sums[i] += float(calculate_metric(data, deepcopy(opt_)))
            sums[-1] += 1
            if pbar is not None:
                pbar.update(world)
                pbar.set_description(f'Test {img_name}')
        if pbar is not None:
            pbar.close()
        if world > 1:
            dist.all_reduce(sums)
        extra = self.finish_validation()
        count = max(1.0, float(sums[-1]))
        self.metric_results = {name: float(sums[i]) / count for i, name in enumerate(metrics_opt)}
        for name, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, name, value, current_iter)
        if rank == 0 and (self.metric_results or extra):
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
            if extra:
                get_root_logger().info('\t'.join(f'# {k}: {v:.4f}' for k, v in extra.items()))
                if tb_logger:
                    for k, v in extra.items():
                        tb_logger.add_scalar(f'metrics/{dataset_name}/{k}', v, current_iter)

    def start_validation(self) -> None:
        """Hook before the validation loop (e.g. reset codebook counters)."""

    def after_validation_image(self) -> None:
        """Hook after each validation image; frees the batch by default."""
        for name in ('lq', 'gt', 'output'):
            if hasattr(self, name):
                delattr(self, name)

    def finish_validation(self) -> dict[str, float]:
        """Hook after the loop; returns extra metrics to log (all-reduce them yourself in DDP)."""
        return self.extra_validation_metrics()


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (identity without DDP)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def is_finite_number(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
