"""Benchmark of :class:`~basicsr_ext.archs.tvq_blocks.ChannelAffine` (``norm_groups: 0``) and of the quickstart
tokenizer's training step, two tables:

1. forward + backward of the per-channel scale and shift broadcast over a channels_last map vs the row-tiled layout
   it takes below 32 channels in bf16, on the quickstart tokenizer's map sizes (batch 2 of 128^2 crops), fp32 and
   bf16 (alternated, best of 3);
2. the whole step of that tokenizer (``options/quickstart/tvq_tokenizer.yml``: its network, bf16 autocast +
   channels_last, MSE + codebook + align + aux losses, backward, Adam) with the broadcast or the tiled
   ChannelAffine and torch's default or ``fused`` Adam, the four variants alternated round by round (median).

    python scripts/bench/bench_channel_affine.py [--threads 1] [--reps 50] [--steps 10] [--rounds 3]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import basicsr_ext  # noqa: F401
import torch

from basicsr_ext.archs.tvq_arch import TVQTokenizer
from basicsr_ext.archs.tvq_blocks import ChannelAffine
from basicsr_ext.scripting import markdown_table, option_file
from basicsr_ext.utils.options import load_option_file
from basicsr_ext.utils.precision import cpu_description

SHAPES = ((2, 16, 128, 128), (2, 32, 64, 64), (2, 32, 16, 16))


@contextlib.contextmanager
def row_tiling(enabled: bool):
    """ChannelAffine with its row-tiled path (as shipped) or without it (the baseline: one addcmul broadcast over
    (1, C, 1, 1), what every map outside the tiled case takes)."""
    shipped = ChannelAffine.TILE_BELOW_CHANNELS
    ChannelAffine.TILE_BELOW_CHANNELS = shipped if enabled else 0
    try:
        yield
    finally:
        ChannelAffine.TILE_BELOW_CHANNELS = shipped


def fwd_bwd_ms(norm: ChannelAffine, x0: torch.Tensor, reps: int, tiled: bool) -> float:
    x = x0.clone(memory_format=torch.channels_last).requires_grad_()
    with row_tiling(tiled):
        for i in range(reps + 3):
            if i == 3:
                t0 = time.perf_counter()
            y = norm(x)
            y.backward(torch.ones_like(y))
    return (time.perf_counter() - t0) / reps * 1e3


def tokenizer_step_table(steps: int, rounds: int) -> str:
    """Seconds per training step of the quickstart tokenizer, four variants alternated (see the module doc)."""
    net_opt = dict(load_option_file(option_file('quickstart', 'tvq_tokenizer.yml'))['network_g'])
    net_opt.pop('type')
    torch.manual_seed(0)
    x = torch.rand(2, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    variants = [(tiled, fused) for tiled in (False, True) for fused in (False, True)]
    nets = {}
    for v in variants:
        torch.manual_seed(0)
        net = TVQTokenizer(**net_opt).to(memory_format=torch.channels_last)
        nets[v] = (net, torch.optim.Adam(net.parameters(), 1e-4, fused=v[1]))
    times = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            net, optim = nets[v]
            with row_tiling(v[0]):
                for i in range(steps + 2):
                    if i == 2:
                        t0 = time.perf_counter()
                    with torch.autocast('cpu', torch.bfloat16):
                        out = net(x)
                        loss = (torch.mean((out['reconstruction_raw'].float() - (x * 2 - 1)) ** 2)
                                + out['codebook_loss'] + out['align_loss'] + out['aux_recon_loss'])
                    optim.zero_grad()
                    loss.backward()
                    optim.step()
            times[v].append((time.perf_counter() - t0) / steps)
    base = statistics.median(times[(False, False)])
    rows = [['row-tiled' if tiled else 'broadcast', 'fused' if fused else 'default',
             f'{statistics.median(times[(tiled, fused)]) * 1e3:.1f}',
             f'{base / statistics.median(times[(tiled, fused)]):.2f}x'] for tiled, fused in variants]
    return markdown_table(['ChannelAffine', 'Adam', 'ms / step', 'speed-up'], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--reps', type=int, default=50)
    ap.add_argument('--steps', type=int, default=10, help='tokenizer steps per variant and round')
    ap.add_argument('--rounds', type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for shape in SHAPES:
            norm = ChannelAffine(shape[1])
            x0 = torch.randn(shape).to(dtype)
            timed = {False: [], True: []}
            for _ in range(3):  # alternated, best of 3: the first runs of a shape pay allocator warm-up
                for tiled in (False, True):
                    timed[tiled].append(fwd_bwd_ms(norm, x0, a.reps, tiled))
            base, ours = min(timed[False]), min(timed[True])
            x_cl = x0.contiguous(memory_format=torch.channels_last)
            with row_tiling(False):
                ref = norm(x_cl)
            same = torch.equal(norm(x_cl), ref)
            rows.append([str(dtype).split('.')[-1], 'x'.join(map(str, shape)), f'{base:.3f}', f'{ours:.3f}',
                         f'{base / ours:.2f}x', 'yes' if same else 'NO'])
    print(f'{cpu_description()}, {a.threads} thread(s), channels_last, forward + backward, ms')
    print(markdown_table(['dtype', 'map', 'broadcast', 'ChannelAffine', 'speed-up', 'same values'], rows))
    print(f'\nquickstart tokenizer step (batch 2 of 128^2, bf16 autocast + channels_last), median of {a.rounds} '
          f'rounds of {a.steps} steps')
    print(tokenizer_step_table(a.steps, a.rounds))


if __name__ == '__main__':
    main()
