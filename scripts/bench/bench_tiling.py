"""Tiled inference of the TVQ nets: untiled vs independent tiles (``tile_norm: tile``) vs lock-step tiles with
whole-image GroupNorm statistics (``tile_norm: global``, the default): wall time, peak memory and PSNR against the
untiled output, on random weights (seed 0) and a photo crop.

Each run is its own process, so the CPU peak is the process's peak RSS above what it held before the run (network,
image; one malloc arena, ``MALLOC_ARENA_MAX=1``, so that the tile threads do not each keep their own free memory);
on CUDA it is ``torch.cuda.max_memory_allocated`` above the same point.

    python scripts/bench/bench_tiling.py --net tvqrap-tiny --size 256 --tile 96 --overlap 32
    python scripts/bench/bench_tiling.py --net tvqrap --size 256 --tile 128 --overlap 64 --device cuda
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import basicsr_ext  # noqa: F401  (compat first)
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from basicsr_ext.scripting import markdown_table, option_file, photo_rgb01
from basicsr_ext.utils.options import load_option_file
from basicsr_ext.utils.tiling import arch_multiple, tiled_forward

#: name: (option file and key of the network or None for the paper-size default, scale, what the input is)
NETS = {
    'tvqrap-tiny': (('quickstart', 'tvqrap_rap.yml'), 'network_g', 4),
    'tvqrap': (None, 'TVQRAPNet', 4),
    'tokenizer-tiny': (('quickstart', 'tvqrap_rap.yml'), 'network_tok', 1),
}
MODES = ('untiled', 'tile', 'global')


def build(name: str) -> tuple[torch.nn.Module, int]:
    path, key, scale = NETS[name]
    torch.manual_seed(0)
    if path is None:
        return ARCH_REGISTRY.get(key)().eval(), scale
    opt = copy.deepcopy(load_option_file(option_file(*path))[key])
    return ARCH_REGISTRY.get(opt.pop('type'))(**opt).eval(), scale


def run_one(args: argparse.Namespace, mode: str, out_path: str) -> None:
    """One mode in this process: prints 'seconds peak_bytes' and saves the output."""
    device = torch.device(args.device)
    net, scale = build(args.net)
    net = net.to(device)
    fn = net if scale > 1 else (lambda x: net(x, net.downscale8(x))['reconstruction'])
    img = photo_rgb01('astronaut')[:args.size, :args.size]
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None].to(device)
    tile = 0 if mode == 'untiled' else args.tile
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    with torch.inference_mode():
        y = tiled_forward(fn, x, scale, tile, args.overlap, arch_multiple(net),
                          norm_net=net if mode == 'global' else None)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    seconds = time.perf_counter() - start
    torch.save(y.float().cpu(), out_path)
    print(f'{seconds} {peak}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--net', choices=NETS, default='tvqrap-tiny')
    parser.add_argument('--size', type=int, default=256, help='input side (LR for TVQ&RAP, HR for the tokenizer)')
    parser.add_argument('--tile', type=int, default=96, help='tile side, input pixels (%(default)s)')
    parser.add_argument('--overlap', type=int, default=32, help='tile overlap, input pixels (%(default)s)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES))
    parser.add_argument('--run-one', nargs=2, metavar=('MODE', 'OUT'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        run_one(args, *args.run_one)
        return 0
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            out = os.path.join(tmp, f'{mode}.pt')
            cmd = [sys.executable, os.path.abspath(__file__), '--net', args.net, '--size', str(args.size), '--tile',
                   str(args.tile), '--overlap', str(args.overlap), '--device', args.device, '--run-one', mode, out]
            env = dict(os.environ, MALLOC_ARENA_MAX='1')
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            seconds, peak = map(float, res.stdout.split()[-2:])
            outputs[mode] = torch.load(out, weights_only=True)
            rows.append([mode, seconds, peak])
            print(f'{mode}: {seconds:.2f} s', flush=True)
    ref = outputs.get('untiled')
    table = []
    for mode, seconds, peak in rows:
        mse = float(((outputs[mode] - ref) ** 2).mean()) if ref is not None else float('nan')
        db = 'ref' if mode == 'untiled' else ('inf' if mse == 0 else f'{10 * math.log10(1 / mse):.1f}')
        table.append([mode, f'{seconds:.2f}', f'{peak / 2**20:.0f}', db])
    print(f'\n{args.net}, input {args.size}x{args.size}, tile {args.tile}, overlap {args.overlap}, {args.device}:\n')
    print(markdown_table(['run', 'wall (s)', 'peak memory (MB)', 'PSNR vs untiled (dB)'], table, align='lrrr'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
