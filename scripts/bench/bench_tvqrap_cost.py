"""Cost of the TVQ&RAP SR network (paper size) vs ESRGAN's RRDBNet (23 RRDBs), x4, at several LR sizes.

Parameters, MACs (``torch.utils.flop_counter.FlopCounterMode``; MACs = FLOPs / 2, element-wise ops not
counted), median latency and peak memory, measured by ``basicsr_ext.utils.profiler.profile_network`` with
random weights (the cost does not depend on them), batch 1, under ``no_grad``; then TVQ&RAP / RRDB ratios.
TVQ&RAP's parameter count is its inference path (LR encoder, structure regressor, predictor, frozen codebook,
structure path and decoder: ~53.8M; the paper's 57M also counts the tokenizer's texture head, tvqrap.md §3).
On CUDA the networks are also timed under fp16 and bf16 autocast (the official inference runs fp16 autocast;
the paper reports 38 ms at 64x64 on an RTX 3090).

    python scripts/bench/bench_tvqrap_cost.py [--sizes 64 256] [--device cpu|cuda] [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys

import basicsr_ext  # noqa: F401  (compat first)
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet

from basicsr_ext.archs.tvqrap_arch import TVQRAPNet
from basicsr_ext.scripting import markdown_table
from basicsr_ext.utils.profiler import format_cost_table, profile_network


class Autocast(torch.nn.Module):
    """Runs ``net`` under ``torch.autocast`` (fp32 input and weights, as in mixed-precision inference)."""

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.net(x)


def networks() -> dict[str, torch.nn.Module]:
    """Paper-size TVQ&RAP (official options) and ESRGAN's RRDBNet (64 features, 23 blocks, growth 32)."""
    return {'TVQ&RAP': TVQRAPNet(), 'RRDBNet (ESRGAN)': RRDBNet(3, 3, num_feat=64, num_block=23, num_grow_ch=32)}


def ratio_table(rows: list[dict]) -> str:
    out = []
    for size, prec in sorted({(r['lr_size'], r['precision']) for r in rows}):
        pair = {r['name']: r for r in rows if (r['lr_size'], r['precision']) == (size, prec)}
        a, b = pair.get('TVQ&RAP'), pair.get('RRDBNet (ESRGAN)')
        if a is not None and b is not None:
            out.append([f'{size[0]}x{size[1]}', prec, f"{a['params'] / b['params']:.2f}",
                        f"{a['macs'] / b['macs']:.2f}", f"{a['latency_ms'] / b['latency_ms']:.2f}"])
    return markdown_table(['LR size', 'precision', 'params ratio', 'MACs ratio', 'latency ratio'], out, align='llrrr')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--sizes', type=int, nargs='+', default=[64, 256], help='LR sides (%(default)s)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--repeats', type=int, default=3, help='timed forward passes (median) (%(default)s)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed forward passes (%(default)s)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    parser.add_argument('--no-autocast', action='store_true', help='on CUDA, time fp32 only')
    args = parser.parse_args(argv)
    if any(s % 32 for s in args.sizes):
        parser.error('LR sizes must be multiples of 32 (TVQ&RAP size_multiple)')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precisions: list[tuple[str, torch.dtype | None]] = [('fp32', None)]
    if device.type == 'cuda' and not args.no_autocast:
        precisions += [('fp16 autocast', torch.float16), ('bf16 autocast', torch.bfloat16)]
    rows = []
    torch.manual_seed(0)
    nets = networks()
    for size in args.sizes:
        for prec, dtype in precisions:
            for name, net in nets.items():
                wrapped = net if dtype is None else Autocast(net, dtype)
                r = profile_network(wrapped, size, device=device, repeats=args.repeats, warmup=args.warmup,
                                    in_channels=3)
                r.update(name=name, precision=prec)
                rows.append(r)
                print(f'{name:18s} {size}x{size} {prec:14s} {r["latency_ms"]:10.1f} ms', flush=True)
    dev_name = (torch.cuda.get_device_name(device) if device.type == 'cuda'
                else f'CPU, {torch.get_num_threads()} threads')
    print(f'\nx4 SR cost, batch 1, {dev_name}, median of {args.repeats} runs:\n')
    for prec, _ in precisions:
        print(f'**{prec}**\n')
        print(format_cost_table([r for r in rows if r['precision'] == prec]))
        print()
    print('TVQ&RAP / RRDBNet:\n')
    print(ratio_table(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
