"""Inference speed by precision and memory format, side by side in one process (issue 17).

For TVQ&RAP at paper width (``options/test_tvqrap.yml``'s network) and ESRGAN's RRDBNet (23 blocks), random
weights (speed does not depend on them), batch 1, a real photo (astronaut) area-downscaled to each LR size:

    fp32 (the reference)  |  fp32 + channels_last  |  bf16  |  bf16 + channels_last  |
    bf16 + channels_last + weights cast once (= what ``basicsr-ext-infer --precision bf16`` runs)  |
    the same with torch.compile (``--compile``); on CUDA the fp16 rows too.

The paths of one (net, size) are timed round-robin (load from other processes hits them alike). Columns:
median latency, speed-up vs the fp32 reference (median of the ratios within each round), GMAC/s (MACs from
``FlopCounterMode`` at the smallest size, scaled by the pixel count: every op of both nets is linear in the
pixels), PSNR of the SR vs the fp32 SR (clamped to [0, 1]) and, for TVQ&RAP, the share of code indices equal to
fp32's (argmax of the predictor logits).

``--cli`` also times ``basicsr-ext-infer`` (a subprocess, a folder of 3 same-size images, ``done in`` / 3) and its
in-process ``Upscaler`` (warm, per image; and paired with direct calls of its own prepared network: the CLI's
overhead) against the best path. ``--tiled-8k`` runs a 2048² LR (-> 8192²) through
the CLI with ``--tile`` and reports wall time and peak memory (host RSS; on CUDA also the GPU peak) -- slow on a CPU.

On a CPU without bf16 units (no ``amx_bf16`` / ``avx512_bf16``, e.g. an AVX2 AMD EPYC) bf16 is emulated: a
paper-width bf16 forward takes many minutes, so those rows are skipped unless ``--force-bf16``.

    python scripts/bench/bench_infer.py --threads 2                       # 64² and 128², both nets
    python scripts/bench/bench_infer.py --sizes 64 128 256 --compile --cli --tiled-8k
    python scripts/bench/bench_infer.py --device cuda --sizes 64 128 256 --compile --cli
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import basicsr_ext  # noqa: F401  (compat first)
import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from basicsr_ext.infer import Upscaler, build_sr_network
from basicsr_ext.scripting import REPO_ROOT, fmt, markdown_table, option_file, photo_rgb01
from basicsr_ext.utils import precision as P
from basicsr_ext.utils.checkpoint import atomic_save

# the CLI (basicsr_ext.infer.main, what the basicsr-ext-infer console script runs) in a subprocess that reports
# its own peak resident memory on exit
_CLI_WITH_PEAK = ('import resource, sys\nfrom basicsr_ext import infer\nrc = infer.main(sys.argv[1:])\n'
                  'print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n'
                  'sys.exit(rc)')

# reduced nets for smoke tests (same code paths, seconds instead of minutes)
TINY_TVQRAP = dict(lq_ch=[32, 32], emb_dim=64, low_ch=32, structure_ch=32, struct_mid_ch=32, dec_ch=[32, 32, 32],
                   codebook_size=64, lq_depths=[2], fuse_depth=2, ft_depths=[2], gen_depth=2, num_heads=2,
                   window_size=4, img_size=16)
NETS: dict[str, tuple[str, dict[str, Any] | None, str | None]] = {
    # key: (label, --arch-opt style network_g, option file)
    'tvqrap': ('TVQ&RAP (paper width)', None, option_file('test_tvqrap.yml')),
    'rrdb': ('RRDBNet-23 (ESRGAN)', dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23,
                                         num_grow_ch=32), None),
    'tvqrap-tiny': ('TVQ&RAP (tiny)', dict(type='TVQRAPNet', **TINY_TVQRAP), None),
    'rrdb-tiny': ('RRDBNet (tiny)', dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1,
                                         num_grow_ch=8), None),
}


def build(key: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(net, network_g options) of ``key`` in :data:`NETS`, random weights (seed 0), eval mode."""
    _, opt, path = NETS[key]
    torch.manual_seed(0)
    if path:
        from basicsr_ext.utils.options import load_option_file
        opt = dict(load_option_file(path)['network_g'])
        opt.pop('tokenizer_path', None)
    net, _ = build_sr_network(opt['type'], {k: v for k, v in opt.items() if k != 'type'})
    return net.eval(), opt


def paths(device: torch.device, compile_: bool) -> list[dict[str, Any]]:
    """The rows of one (net, size) block; the first is the fp32 reference."""
    low = ['bf16'] + (['fp16'] if device.type == 'cuda' else [])
    out = [dict(name='fp32', precision='fp32', cl=False, cast=False),
           dict(name='fp32 + channels_last', precision='fp32', cl=True, cast=False)]
    for p in low:
        out += [dict(name=p, precision=p, cl=False, cast=False),
                dict(name=f'{p} + channels_last', precision=p, cl=True, cast=False),
                dict(name=f'{p} + channels_last + cast weights (CLI)', precision=p, cl=True, cast=True)]
    if compile_:
        out += [dict(name='fp32 + channels_last + compile', precision='fp32', cl=True, cast=False, compile=True)]
        out += [dict(name=f'{p} + channels_last + cast + compile', precision=p, cl=True, cast=True, compile=True)
                for p in low]
    return out


def lr_photo(size: int, device: torch.device) -> torch.Tensor:
    """The astronaut photo, centre square, area-downscaled to ``size`` x ``size`` (1, 3, size, size) in [0, 1]."""
    img = photo_rgb01('astronaut')
    s = min(img.shape[:2])
    sq = np.ascontiguousarray(img[:s, (img.shape[1] - s) // 2:(img.shape[1] - s) // 2 + s])
    lr = cv2.resize(sq, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(lr).permute(2, 0, 1)[None].contiguous().to(device)


def count_macs(net: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops()) // 2


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class IndexProbe:
    """Keeps the code indices (argmax of ``idx_pred_layer_low``'s logits) of the last TVQ&RAP forward."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.indices = None
        head = getattr(net, 'idx_pred_layer_low', None)
        if head is not None:
            head.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.indices = output.float().argmax(-1)


class TimedPath:
    """One path on a private copy of ``base``, warmed up on ``x`` (output, indices and first-call time kept);
    :meth:`time_once` adds one timed call. The paths of a block are timed round-robin, so that load from other
    processes hits them alike and the paired ratios stay meaningful on a shared machine."""

    def __init__(self, base: torch.nn.Module, x: torch.Tensor, spec: dict[str, Any], warmup: int) -> None:
        self.spec, self.device = spec, x.device
        net = copy.deepcopy(base)
        probe = IndexProbe(net)
        if spec['cl']:
            P.to_channels_last(net)
        if spec['cast']:
            P.cast_matmul_weights(net, spec['precision'])
        self.fn = torch.compile(net) if spec.get('compile') else net
        self.x = P.channels_last_input(x) if spec['cl'] else x
        with torch.inference_mode(), P.inference_autocast(self.device, spec['precision']):
            t0 = time.perf_counter()
            for _ in range(max(1, warmup)):  # at least one: the first call pays primitive creation / compilation
                y = self.fn(self.x)
            _sync(self.device)
        self.setup = time.perf_counter() - t0
        self.out, self.indices = y.float().clamp(0, 1), probe.indices
        self.times: list[float] = []

    def time_once(self) -> float:
        with torch.inference_mode(), P.inference_autocast(self.device, self.spec['precision']):
            _sync(self.device)
            t = time.perf_counter()
            self.fn(self.x)
            _sync(self.device)
        self.times.append(time.perf_counter() - t)
        return self.times[-1]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float('inf') if mse == 0 else 10 * math.log10(1.0 / mse)


def bench_net(key: str, sizes: list[int], device: torch.device, args: argparse.Namespace,
              log=print) -> tuple[list[list[str]], dict[int, float]]:
    """Rows of the table for one net; also the best latency per size (for the CLI comparison)."""
    label = NETS[key][0]
    base, _ = build(key)
    base.to(device)
    macs_small = count_macs(base, lr_photo(min(sizes), device))
    rows, best = [], {}
    for size in sizes:
        x = lr_photo(size, device)
        macs = macs_small * (size / min(sizes)) ** 2
        block: list[tuple[str, TimedPath | str]] = []
        for spec in paths(device, args.compile):
            if P.slow_precision_warning(device, spec['precision']) and not args.force_bf16:
                block.append((spec['name'], 'skipped: bf16 emulated on this CPU (--force-bf16)'))
                continue
            try:
                block.append((spec['name'], TimedPath(base, x, spec, args.warmup)))
            except Exception as e:  # noqa: BLE001 - e.g. torch.compile without a working toolchain: one row says so
                first = str(e).splitlines()[0][:80] if str(e) else ''
                block.append((spec['name'], f'failed: {type(e).__name__}: {first}'))
                log(f'{label} {size}² {spec["name"]}: failed ({type(e).__name__})')
        timed = [p for _, p in block if isinstance(p, TimedPath)]
        for rep in range(max(1, args.reps)):  # round-robin, starting one further each round
            for k in range(len(timed)):
                timed[(rep + k) % len(timed)].time_once()
        ref = timed[0] if timed and timed[0].spec['name'] == 'fp32' else None
        for name, p in block:
            if not isinstance(p, TimedPath):
                rows.append([label, f'{size}²', name, p, '', '', '', ''])
                continue
            lat = statistics.median(p.times)
            best[size] = min(best.get(size, math.inf), lat)  # the fastest path that ran, any precision
            speedup = statistics.median(r / t for r, t in zip(ref.times, p.times)) if ref else math.nan
            agree = (fmt(100 * float((p.indices == ref.indices).float().mean()), '.2f', unit=' %')
                     if ref is not None and p.indices is not None and ref.indices is not None else '')
            quality = 'ref' if p is ref else fmt(psnr(p.out, ref.out), '.1f') if ref else 'n/a'
            rows.append([label, f'{size}²', name, fmt(1000 * lat, '.0f'), fmt(speedup, '.2f', unit='x'),
                         fmt(macs / lat / 1e9, '.1f'), fmt(1000 * p.setup, '.0f'),
                         quality + (f' / {agree}' if agree else '')])
            log(f'{label} {size}² {name}: {1000 * lat:.0f} ms (first call {1000 * p.setup:.0f} ms)')
        del block, timed, ref
    return rows, best


def _write_photos(folder: str, size: int, n: int) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, name in enumerate(('astronaut', 'coffee', 'chelsea', 'rocket')[:n]):
        img = photo_rgb01(name)
        lr = cv2.resize(img[:min(img.shape[:2]), :min(img.shape[:2])], (size, size), interpolation=cv2.INTER_AREA)
        cv2.imwrite(osp.join(folder, f'{i}_{name}.png'), np.round(lr[..., ::-1] * 255).astype(np.uint8))


def _env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE='1')
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    return env


def run_cli(key: str, size: int, precision: str, device: torch.device, workdir: str, threads: int | None,
            n: int = 3, tile: int = 0) -> dict[str, Any]:
    """``basicsr-ext-infer`` on ``n`` same-size photos: its ``done in`` time and the process peak RSS."""
    net, opt = build(key)
    weights = osp.join(workdir, f'{key}.pth')
    if not osp.exists(weights):
        atomic_save({'params': net.state_dict()}, weights)
    src = osp.join(workdir, f'in_{size}')
    if not osp.isdir(src):
        _write_photos(src, size, n)
    arch = [f'{k}={v}' for k, v in opt.items() if k != 'type']
    cmd = [sys.executable, '-c', _CLI_WITH_PEAK, '-i', src, '-o', osp.join(workdir, f'out_{key}_{size}_{precision}'),
           '--arch', opt['type'], '--arch-opt', *arch, '--weights', weights, '--no-progress', '--overwrite',
           '--precision', precision, '--device', str(device)]
    if tile:
        cmd += ['--tile', str(tile)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads), cwd=REPO_ROOT)
    wall = time.perf_counter() - t0
    m = re.search(r'done in ([0-9.]+)s: (\d+) written', proc.stderr)
    peak = re.search(r'PEAK_RSS_KB (\d+)', proc.stderr)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f'basicsr-ext-infer exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}')
    return dict(done=float(m.group(1)), images=int(m.group(2)), wall=wall,
                peak_rss_mb=int(peak.group(1)) / 1024 if peak else math.nan)


def upscaler_latency(key: str, size: int, precision: str, device: torch.device, reps: int
                     ) -> tuple[float, float, float]:
    """(first call, warm median, median paired ratio vs its own network called directly) seconds per image of
    the CLI's :class:`Upscaler` on a photo; the direct calls use the same prepared network and precision,
    interleaved with the Upscaler's, so the ratio is the CLI's own overhead even on a loaded machine."""
    net, _ = build(key)
    up = Upscaler(net, scale=4, device=device, precision=precision)
    x = lr_photo(size, device)
    img = x[0].permute(1, 2, 0).cpu().numpy()
    xin = P.channels_last_input(x) if up.channels_last else x

    def direct() -> float:
        with torch.inference_mode(), P.inference_autocast(device, up.precision):
            _sync(device)
            t = time.perf_counter()
            up.net(xin)
            _sync(device)
        return time.perf_counter() - t

    t = time.perf_counter()
    up(img)
    first = time.perf_counter() - t
    direct()
    times, ratios = [], []
    for _ in range(max(1, reps)):
        t = time.perf_counter()
        up(img)
        times.append(time.perf_counter() - t)
        ratios.append(times[-1] / direct())
    return first, statistics.median(times), statistics.median(ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--nets', nargs='+', choices=list(NETS), default=['tvqrap', 'rrdb'])
    parser.add_argument('--sizes', type=int, nargs='+', default=[64, 128], help='LR sides (%(default)s)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--warmup', type=int, default=1, help='untimed passes per path (>= 1) (%(default)s)')
    parser.add_argument('--reps', type=int, default=3, help='timed passes per path, median (%(default)s)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (and OMP_NUM_THREADS of the CLI)')
    parser.add_argument('--compile', action='store_true', help='add torch.compile rows (slow to compile on a CPU)')
    parser.add_argument('--force-bf16', action='store_true', help='run bf16 rows even where bf16 is emulated')
    parser.add_argument('--cli', action='store_true', help='time basicsr-ext-infer vs the best path')
    parser.add_argument('--cli-sizes', type=int, nargs='+', default=None,
                        help='LR sides of the CLI comparison (default: all --sizes)')
    parser.add_argument('--tiled-8k', action='store_true', help='2048² -> 8192² through the CLI with --tile')
    parser.add_argument('--tile', type=int, default=512, help='tile side of --tiled-8k (%(default)s)')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if any(s % 16 for s in args.sizes):
        parser.error('--sizes: LR sides must be multiples of 16 (paper TVQ&RAP pads to 64 anyway)')
    if args.threads:
        torch.set_num_threads(args.threads)
    hw = (torch.cuda.get_device_name(device) if device.type == 'cuda'
          else f'{P.cpu_description()}; {torch.get_num_threads()} threads')
    load0 = os.getloadavg()
    print(f'torch {torch.__version__}, {device}: {hw}', flush=True)
    print(f'load average before: {load0[0]:.2f} (other processes compete for the cores when it exceeds the '
          f'threads)', flush=True)
    rows, best = [], {}
    for key in args.nets:
        r, b = bench_net(key, args.sizes, device, args, log=lambda s: print('  ' + s, flush=True))
        rows += r
        best[key] = b
    print(f'\n### Inference, batch 1, x4, {hw}; median of {args.reps} after {args.warmup} warm-up\n')
    print(markdown_table(['net', 'LR', 'path', 'latency (ms)', 'vs fp32', 'GMAC/s', 'first call (ms)',
                          'PSNR vs fp32 (dB) / index agreement'], rows, align='lllrrrrl'))
    if args.cli:
        cli_rows = []
        auto = P.resolve_precision('auto', device)
        precisions = sorted({auto, 'fp32'} | ({'bf16'} if device.type == 'cuda' or P.cpu_has_bf16() else set()))
        with tempfile.TemporaryDirectory(prefix='bench_infer_') as work:
            for key in args.nets:
                for size in [s for s in (args.cli_sizes or args.sizes) if s in best[key]]:
                    for prec in precisions:
                        first, warm, own = upscaler_latency(key, size, prec, device, args.reps)
                        cli = run_cli(key, size, prec, device, work, args.threads)
                        per = cli['done'] / cli['images']
                        ref = best[key][size]
                        cli_rows.append([NETS[key][0], f'{size}²', prec + (' (auto)' if prec == auto else ''),
                                         fmt(1000 * warm, '.0f'), fmt(own, '.2f', unit='x'),
                                         fmt(1000 * first, '.0f'), fmt(1000 * per, '.0f'),
                                         fmt(1000 * ref, '.0f'), fmt(per / ref, '.2f', unit='x')])
                        print(f'  CLI {key} {size}² {prec}: {per:.2f} s/image', flush=True)
        print('\n### basicsr-ext-infer vs the best path (3 same-size photos per run)\n')
        print(markdown_table(['net', 'LR', 'precision', 'Upscaler warm (ms)', 'Upscaler / its net (paired)',
                              'Upscaler first (ms)', 'CLI per image (ms)', 'best path (ms)', 'CLI / best'], cli_rows,
                             align='lllrrrrrr'))
    if args.tiled_8k:
        tiled = []
        with tempfile.TemporaryDirectory(prefix='bench_infer_8k_') as work:
            for key in args.nets:
                prec = P.resolve_precision('auto', device)
                if device.type == 'cuda':
                    torch.cuda.reset_peak_memory_stats(device)
                    net, _ = build(key)
                    up = Upscaler(net, scale=4, tile=args.tile, device=device, precision=prec)
                    img = np.random.default_rng(0).random((2048, 2048, 3), dtype=np.float32)
                    t = time.perf_counter()
                    up(img)
                    wall = time.perf_counter() - t
                    gpu = torch.cuda.max_memory_allocated(device) / 2 ** 20
                    tiled.append([NETS[key][0], prec, str(args.tile), fmt(wall, '.1f'), '', fmt(gpu, '.0f')])
                    del up, net
                    torch.cuda.empty_cache()
                else:
                    cli = run_cli(key, 2048, prec, device, work, args.threads, n=1, tile=args.tile)
                    tiled.append([NETS[key][0], prec, str(args.tile), fmt(cli['wall'], '.1f'),
                                  fmt(cli['peak_rss_mb'], '.0f'), ''])
                print(f'  tiled 8K {key}: done', flush=True)
        print('\n### Tiled 2048² -> 8192²\n')
        print(markdown_table(['net', 'precision', 'tile', 'wall (s)', 'peak host RSS (MB)', 'peak GPU (MB)'],
                             tiled, align='lllrrr'))
    load1 = os.getloadavg()
    print(f'\nload average after: {load1[0]:.2f} (1-min); with more runnable processes than cores, latencies '
          f'are inflated and ratios are the figures to read')
    return 0


if __name__ == '__main__':
    sys.exit(main())
