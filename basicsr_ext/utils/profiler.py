"""Cost of a network at a given LR size: parameters, MACs, latency and peak memory.

- MACs: ``torch.utils.flop_counter.FlopCounterMode`` counts FLOPs of the aten ops (conv, matmul, attention...);
  MACs = FLOPs / 2. Elementwise ops (activations, additions) are not counted, as in thop/ptflops.
- Latency: median wall time of ``repeats`` forward passes after ``warmup`` passes, under ``no_grad``
  (CUDA synchronised).
- Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during one forward (parameters included); on CPU
  the peak of live tensor storage (parameters + input + activations) tracked per aten op. Choice: CPU has no
  allocator statistics; this count excludes op-internal workspaces (e.g. a convolution's im2col buffer), so it
  is a lower bound.
"""
from __future__ import annotations

import statistics
import time
import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

_DTYPES = {None: None, 'fp32': torch.float32, 'float32': torch.float32, 'fp16': torch.float16,
           'float16': torch.float16, 'half': torch.float16, 'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16}


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages produced by aten ops while they are alive; keeps the peak."""

    def __init__(self, baseline: int = 0) -> None:
        super().__init__()
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.current = self.peak = baseline

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.current -= self.sizes.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if key == 0 or nbytes == 0:
                continue
            if key not in self.refs:
                self.refs[key] = 0
                self.sizes[key] = nbytes
                self.current += nbytes
                self.peak = max(self.peak, self.current)
            self.refs[key] += 1
            weakref.finalize(t, self._release, key)
        return out


def _resolve_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() not in _DTYPES:
        raise ValueError(f'unknown dtype {dtype!r}; use one of fp32, fp16, bf16')
    return _DTYPES[str(dtype).lower()]


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def profile_network(net: torch.nn.Module, lr_size: int | tuple[int, int], device: str | torch.device = 'cpu',
                    dtype: Any = None, repeats: int = 10, warmup: int = 2, in_channels: int | None = None,
                    batch: int = 1) -> dict[str, Any]:
    """Parameters, MACs, median latency (ms) and peak memory (MB) of ``net`` on a (batch, C, h, w) input.

    Args:
        net: the network (moved to ``device``/``dtype``, put in eval mode).
        lr_size: input side ``s`` (s x s) or ``(h, w)``.
        device: ``'cpu'``, ``'cuda'``...
        dtype: ``None`` (fp32) or ``'fp16'``/``'bf16'``/a torch dtype: net and input are cast.
        repeats, warmup: timed and untimed forward passes.
        in_channels: input channels (default: the first conv's ``in_channels``, else 3).

    Returns:
        ``{'lr_size': (h, w), 'params': int, 'macs': int, 'flops': int, 'latency_ms': float,
        'peak_mem_mb': float, 'peak_mem_kind': 'cuda_allocated' | 'cpu_live_tensors', 'output_shape': tuple}``.
    """
    device = torch.device(device)
    torch_dtype = _resolve_dtype(dtype)
    h, w = (lr_size, lr_size) if isinstance(lr_size, int) else tuple(lr_size)
    if in_channels is None:
        first = next((m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))), None)
        in_channels = getattr(first, 'in_channels', 3) if isinstance(first, torch.nn.Conv2d) else 3
    net = net.to(device).eval()
    if torch_dtype is not None:
        net = net.to(torch_dtype)
    x = torch.rand(batch, in_channels, h, w, device=device, dtype=torch_dtype or torch.float32)
    params = sum(p.numel() for p in net.parameters())

    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            y = net(x)
        flops = int(counter.get_total_flops())
        out_shape = tuple(y.shape) if isinstance(y, torch.Tensor) else None
        del y

        for _ in range(max(0, warmup)):
            net(x)
        times = []
        for _ in range(max(1, repeats)):
            _sync(device)
            t0 = time.perf_counter()
            net(x)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1000.0)

        if device.type == 'cuda':
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            net(x)
            _sync(device)
            peak, kind = torch.cuda.max_memory_allocated(device), 'cuda_allocated'
        else:
            baseline = sum(p.untyped_storage().nbytes() for p in net.parameters())
            baseline += sum(b.untyped_storage().nbytes() for b in net.buffers()) + x.untyped_storage().nbytes()
            tracker = _LiveTensorBytes(baseline)
            with tracker:
                out = net(x)
            del out
            peak, kind = tracker.peak, 'cpu_live_tensors'
    return {'lr_size': (h, w), 'params': params, 'macs': flops // 2, 'flops': flops,
            'latency_ms': statistics.median(times), 'peak_mem_mb': peak / 2**20, 'peak_mem_kind': kind,
            'output_shape': out_shape, 'device': str(device), 'dtype': str(torch_dtype or torch.float32)}


def format_cost_table(rows: list[dict[str, Any]], name_key: str = 'name') -> str:
    """A Markdown table of :func:`profile_network` results (one row each)."""
    lines = ['| network | LR size | params (M) | GMACs | latency (ms) | peak mem (MB) |',
             '|---|---|---:|---:|---:|---:|']
    for r in rows:
        h, w = r['lr_size']
        lines.append(f"| {r.get(name_key, '-')} | {h}x{w} | {r['params'] / 1e6:.3f} | {r['macs'] / 1e9:.3f} | "
                     f"{r['latency_ms']:.2f} | {r['peak_mem_mb']:.1f} |")
    return '\n'.join(lines)
