"""Benchmark of :class:`~basicsr_ext.archs.tvq_blocks.ChannelAffine` (``norm_groups: 0``): forward + backward of
the per-channel scale and shift broadcast over a channels_last map vs the row-tiled layout it takes below 32
channels, on the quickstart tokenizer's map sizes (batch 2 of 128^2 crops), fp32 and bf16, one table.

    python scripts/bench/bench_channel_affine.py [--threads 1] [--reps 50]
"""
from __future__ import annotations

import argparse
import time

import basicsr_ext  # noqa: F401
import torch

from basicsr_ext.archs.tvq_blocks import ChannelAffine
from basicsr_ext.scripting import markdown_table
from basicsr_ext.utils.precision import cpu_description

SHAPES = ((2, 16, 128, 128), (2, 32, 64, 64), (2, 32, 16, 16))


def broadcast(norm: ChannelAffine, x: torch.Tensor) -> torch.Tensor:
    """The baseline: one addcmul broadcast over (1, C, 1, 1)."""
    w, b = norm.weight.to(x.dtype).view(1, -1, 1, 1), norm.bias.to(x.dtype).view(1, -1, 1, 1)
    return torch.addcmul(b, x, w)


def fwd_bwd_ms(fn, norm: ChannelAffine, x0: torch.Tensor, reps: int) -> float:
    x = x0.clone(memory_format=torch.channels_last).requires_grad_()
    for i in range(reps + 3):
        if i == 3:
            t0 = time.perf_counter()
        y = fn(norm, x)
        y.backward(torch.ones_like(y))
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--reps', type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for shape in SHAPES:
            norm = ChannelAffine(shape[1])
            x0 = torch.randn(shape).to(dtype)
            base = fwd_bwd_ms(broadcast, norm, x0, a.reps)
            ours = fwd_bwd_ms(lambda n, x: n(x), norm, x0, a.reps)
            same = torch.equal(norm(x0.contiguous(memory_format=torch.channels_last)).contiguous(),
                               broadcast(norm, x0))
            rows.append([str(dtype).split('.')[-1], 'x'.join(map(str, shape)), f'{base:.3f}', f'{ours:.3f}',
                         f'{base / ours:.2f}x', 'yes' if same else 'NO'])
    print(f'{cpu_description()}, {a.threads} thread(s), channels_last, forward + backward, ms')
    print(markdown_table(['dtype', 'map', 'broadcast', 'ChannelAffine', 'speed-up', 'same values'], rows))


if __name__ == '__main__':
    main()
