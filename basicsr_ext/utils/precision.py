"""Inference precision and memory format: the one place that decides fp32 / bf16 / fp16 and channels_last.

Used by ``basicsr-ext-infer --precision``, by validation/test (``val.precision``) and by the benchmarks.

- :func:`resolve_precision` turns ``auto|fp32|bf16|fp16`` into a concrete precision for a device.
  ``auto``: **bf16** on a CPU whose ``/proc/cpuinfo`` flags include ``amx_bf16`` or ``avx512_bf16`` (oneDNN runs
  bf16 convolutions and matmuls natively there), **fp16** on CUDA (as the official TVQ&RAP test does), **fp32**
  everywhere else. A CPU without those flags (e.g. AVX2-only AMD EPYC Zen 3) emulates bf16 with conversions and is
  *slower* in bf16 than in fp32, so ``auto`` keeps fp32 there. fp16 on a CPU is refused with one clear line.
- :func:`resolve_training_amp`: ``train.use_amp: auto`` (autocast where the device computes it natively).
- :func:`inference_autocast` is ``torch.autocast`` for bf16/fp16 and a ``nullcontext`` for fp32.
- :func:`prefers_channels_last`, :func:`to_channels_last`, :func:`channels_last_input`: the memory-format
  policy. With bf16 on an AMX/avx512_bf16 CPU, oneDNN convolutions on NCHW inputs reorder every activation to
  a blocked layout and back; in NHWC (channels_last) they run directly (issue 17: 2.14x -> 3.59x over fp32 at
  64² LR for TVQ&RAP). On CUDA, fp16/bf16 tensor-core convolutions are NHWC kernels.
- :func:`cast_matmul_weights` stores conv / Linear weights in the low precision once, for inference: autocast
  would otherwise re-cast them at every call (bit-identical results, less memory traffic).
- :func:`fp32_region` switches autocast off (every device type where it is on): loss networks (VGG, LPIPS, the
  AESOP auto-encoder) and the VQ nearest-code distances / the TVQ&RAP code argmax stay fp32 so codes do not flip.
- :func:`warm_up` and the set-up cost of a new input shape: oneDNN creates (JIT-compiles) a primitive per
  convolution shape, data type and layout the first time it sees it and keeps it in its primitive cache
  (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, default 1024 primitives per process: enough for every layer of these
  networks at a few input sizes). A folder of same-size images therefore pays the set-up once, on the first image,
  as long as the network, its memory format and the precision stay the same objects across images (the CLI
  builds them once); benchmarks call :func:`warm_up` to keep that cost out of their timings.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterable

import torch

PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')
_ALIASES = {'auto': 'auto', 'fp32': 'fp32', 'float32': 'fp32', 'float': 'fp32', 'full': 'fp32',
            'bf16': 'bf16', 'bfloat16': 'bf16', 'fp16': 'fp16', 'float16': 'fp16', 'half': 'fp16'}
_DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
#: CPU flags (``/proc/cpuinfo``) meaning the CPU computes bf16 dot products natively (oneDNN's bf16 ISA).
BF16_CPU_FLAGS = ('amx_bf16', 'avx512_bf16')


class PrecisionError(ValueError):
    """An unknown precision name, or one the device cannot run (message: one line, naming the choice)."""


@functools.lru_cache(maxsize=4)
def cpu_flags(path: str = '/proc/cpuinfo') -> frozenset[str]:
    """The feature flags of the first CPU in ``path`` (Linux ``/proc/cpuinfo``); empty when unreadable."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() in ('flags', 'Features'):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16(flags: Iterable[str] | None = None) -> bool:
    """True when the CPU reports AMX-BF16 or AVX512-BF16 (``flags`` defaults to :func:`cpu_flags`)."""
    flags = cpu_flags() if flags is None else set(flags)
    return any(f in flags for f in BF16_CPU_FLAGS)


def cpu_description(flags: Iterable[str] | None = None) -> str:
    """One line for benchmark tables: the CPU model and its bf16 units (or their absence)."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    model = ''
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.partition(':')[2].strip()
                    break
    except OSError:
        pass
    bf16 = [f for f in (*BF16_CPU_FLAGS, 'avx512_fp16') if f in flags]
    isa = 'avx512' if 'avx512f' in flags else 'avx2' if 'avx2' in flags else 'no avx2'
    units = f"bf16 units: {', '.join(bf16)}" if bf16 else 'no bf16 units (bf16 is emulated: slower than fp32)'
    return f'{model or "unknown CPU"}, {isa}, {units}'


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(device)


def resolve_precision(name: str | None, device: str | torch.device | None = None,
                      flags: Iterable[str] | None = None) -> str:
    """``auto|fp32|bf16|fp16`` (also ``float32``, ``bfloat16``, ``half``...; None = fp32) -> ``'fp32'``,
    ``'bf16'`` or ``'fp16'`` for ``device`` (default: cuda when available, else cpu).

    ``auto``: bf16 on a CPU with :data:`BF16_CPU_FLAGS` (``flags`` overrides ``/proc/cpuinfo``, for tests), fp16 on
    CUDA, fp32 elsewhere. Raises :class:`PrecisionError` for an unknown name or fp16 on a CPU.
    """
    dev = _device(device)
    key = _ALIASES.get(str(name).strip().lower()) if name is not None else 'fp32'
    if key is None:
        raise PrecisionError(f'precision {name!r}: expected one of {", ".join(PRECISIONS)}')
    if key == 'auto':
        if dev.type == 'cuda':
            return 'fp16'
        if dev.type == 'cpu' and cpu_has_bf16(flags):
            return 'bf16'
        return 'fp32'
    if key == 'fp16' and dev.type == 'cpu':
        raise PrecisionError('precision fp16 needs a CUDA device (fp16 on a CPU is slow or unsupported): '
                             'use bf16 (fast on AMX / avx512_bf16 CPUs), fp32 or auto')
    return key


def precision_dtype(precision: str) -> torch.dtype:
    """``'fp32'|'bf16'|'fp16'`` (resolved) -> the torch dtype."""
    try:
        return _DTYPES[precision]
    except KeyError:
        raise PrecisionError(f'precision {precision!r}: resolve it first (one of fp32, bf16, fp16)') from None


def inference_autocast(device: str | torch.device | None, precision: str):
    """The context to run a network in: ``torch.autocast(device.type, dtype)`` for bf16/fp16, a
    ``nullcontext`` for fp32. ``precision`` must be resolved (:func:`resolve_precision`)."""
    dtype = precision_dtype(precision)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(_device(device).type, dtype=dtype)


def fp32_region():
    """Autocast off on every device type where it is on now (loss networks, VQ distances, code argmax);
    a ``nullcontext`` when autocast is off. Callers cast their inputs with ``.float()``."""
    on = [t for t in ('cpu', 'cuda') if torch.is_autocast_enabled(t)]
    if not on:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    for t in on:
        stack.enter_context(torch.autocast(t, enabled=False))
    return stack


def prefers_channels_last(device: str | torch.device | None, precision: str) -> bool:
    """The channels_last policy ("whenever it helps"; figures from ``scripts/bench/bench_infer.py``): on for CPUs
    and CUDA in every precision, off elsewhere (MPS...). bf16/fp16: oneDNN on AMX / avx512_bf16 CPUs and CUDA
    tensor cores run NHWC directly (TVQ&RAP 64² bf16 2.14x -> 3.59x over fp32 on an AMX Xeon). fp32 on a CPU:
    1.10x on that Xeon; 1.05-1.4x for TVQ&RAP and 0.9-1.3x for RRDBNet on a 2-core AVX2 EPYC (noisy, shared
    cores), 1.6x for a single 128-channel 3x3 convolution. A network whose code cannot take a channels_last
    input (``.view`` on a 4-D map) falls back to NCHW in :class:`basicsr_ext.infer.Upscaler`."""
    return _device(device).type in ('cpu', 'cuda')


def to_channels_last(net: torch.nn.Module) -> torch.nn.Module:
    """The network with its 4-D parameters (convolution weights) in channels_last; in place, returned."""
    return net.to(memory_format=torch.channels_last)


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """A 4-D input as a channels_last tensor (a no-op copy-free view when it already is one)."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def slow_precision_warning(device: str | torch.device | None, precision: str,
                           flags: Iterable[str] | None = None) -> str | None:
    """One line when ``precision`` will be much slower than fp32 on ``device`` (bf16 on a CPU without bf16 units:
    oneDNN and the BLAS fall back to emulation, measured 7x (channels_last convolutions) to 70x (matmuls) slower
    than fp32 on an AVX2 EPYC), else None."""
    if precision == 'bf16' and _device(device).type == 'cpu' and not cpu_has_bf16(flags):
        return ('bf16 on this CPU is emulated (no amx_bf16 / avx512_bf16 in /proc/cpuinfo) and runs several times '
                'slower than fp32; --precision auto picks fp32 here')
    return None


def slow_training_precision_warning(device: str | torch.device | None, use_amp: bool,
                                    amp_dtype: torch.dtype | str | None,
                                    flags: Iterable[str] | None = None) -> str | None:
    """One line when a training run asks for bf16 autocast (``train.use_amp: true``, ``amp_dtype: bf16``) on a CPU
    whose flags (``flags`` defaults to :func:`cpu_flags`) list neither ``amx_bf16`` nor ``avx512_bf16``, else None.
    There oneDNN has no bf16 kernels and PyTorch runs its reference convolution (``aten::_slow_conv2d``): measured
    on an AVX2-only AMD EPYC, one 128-channel 3x3 convolution at 64² took 27 ms in fp32 and 5178 ms in bf16 (~190x),
    and bf16 training steps ran 4-25x slower than fp32. Unknown flags (no ``/proc/cpuinfo``): None, nothing to say."""
    if not use_amp or _device(device).type != 'cpu':
        return None
    if amp_dtype is None or (amp_dtype != torch.bfloat16 and _ALIASES.get(str(amp_dtype).lower()) != 'bf16'):
        return None
    flags = cpu_flags() if flags is None else frozenset(flags)
    if not flags or cpu_has_bf16(flags):
        return None
    return ('train.use_amp with amp_dtype bf16 on a CPU without bf16 units (its flags list neither amx_bf16 nor '
            'avx512_bf16): PyTorch falls back to its reference convolution, measured ~100x slower per convolution '
            'than fp32 (bf16 training steps 4-25x slower); train in fp32 here (use_amp: false), bf16 pays off on '
            'AMX / avx512_bf16 CPUs and GPUs')


def resolve_training_amp(use_amp: object, device: str | torch.device | None, amp_dtype: torch.dtype,
                         flags: Iterable[str] | None = None) -> bool:
    """``train.use_amp`` -> whether the training step runs under autocast. ``true``/``false`` as given; ``auto``:
    on where ``amp_dtype`` is computed natively, so autocast is a speed-up and never a slow-down: a CUDA device
    (bf16 only where ``torch.cuda.is_bf16_supported()``), a CPU with bf16 units (:func:`cpu_has_bf16`; ``flags``
    overrides ``/proc/cpuinfo``, for tests) for bf16. Anything else raises :class:`PrecisionError` naming the key."""
    if isinstance(use_amp, bool):
        return use_amp
    if use_amp is None:
        return False
    if not (isinstance(use_amp, str) and use_amp.strip().lower() == 'auto'):
        raise PrecisionError(f'train.use_amp: {use_amp!r} is not one of true, false, auto')
    dev = _device(device)
    if dev.type == 'cuda':
        return amp_dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    return dev.type == 'cpu' and amp_dtype == torch.bfloat16 and cpu_has_bf16(flags)


def warn_slow_training_precision(device: str | torch.device | None, use_amp: bool,
                                 amp_dtype: torch.dtype | str | None, flags: Iterable[str] | None = None) -> str | None:
    """Log :func:`slow_training_precision_warning` (when there is one) as a warning on BasicSR's root logger, once
    per call: the engine calls it once, when it sets up the training precision. Returns the message or None."""
    msg = slow_training_precision_warning(device, use_amp, amp_dtype, flags)
    if msg:
        from basicsr.utils import get_root_logger  # lazy: this module imports only torch at its top
        get_root_logger().warning(msg)
    return msg


#: modules whose weights autocast casts to the low precision at every call (matmul-like ops).
_MATMUL_MODULES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d,
                   torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d, torch.nn.Linear)


def cast_matmul_weights(net: torch.nn.Module, precision: str) -> int:
    """Store the weights and biases of convolutions and Linear layers in ``precision`` (bf16/fp16), in place;
    returns the number of tensors cast. For inference under :func:`inference_autocast` only.

    Autocast casts these fp32 weights to the low precision at every call (and caches the cast only for
    trainable leaf tensors, only until the context exits): ~0.3 GB of memory traffic per image for the 54M
    parameters of TVQ&RAP, a sizeable part of a 64² bf16 forward. Cast once here, the results are bit-identical
    (the same round-to-nearest cast) and the per-call cost is gone. Normalisation layers, embeddings (the VQ
    codebook) and every other parameter stay fp32. The network then needs autocast to run."""
    dtype = precision_dtype(precision)
    if dtype == torch.float32:
        return 0
    n = 0
    for mod in net.modules():
        if isinstance(mod, _MATMUL_MODULES):
            for name, p in list(mod.named_parameters(recurse=False)):
                if p.dtype == torch.float32:
                    p.data = p.data.to(dtype)
                    n += 1
    return n


def warm_up(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, passes: int = 1) -> None:
    """Run ``fn`` ``passes`` times on ``x`` (in the caller's precision context, under no_grad) and drop the
    results: the one-time costs of a new input shape (oneDNN primitive creation, CUDA kernel selection) are
    paid here, not in a timed call. The CLI does not call it: there the first image of a size is the warm-up
    and every later image of that size reuses the cached primitives."""
    with torch.no_grad():
        for _ in range(int(passes)):
            fn(x)
    if x.device.type == 'cuda':
        torch.cuda.synchronize(x.device)
