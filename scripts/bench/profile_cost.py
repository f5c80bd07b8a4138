"""Cost of a network from an option file: parameters, MACs, latency, peak memory, as a Markdown table.

    python scripts/bench/profile_cost.py -opt options/train_aesop_rrdb.yml --lr-size 64 256
    python scripts/bench/profile_cost.py -opt a.yml b.yml --lr-size 128 --device cuda --dtype bf16 --repeats 20
    python scripts/bench/profile_cost.py --arch RRDBNet --arch-opt num_in_ch=3 num_out_ch=3 --lr-size 64

MACs come from torch.utils.flop_counter (FLOPs / 2); see basicsr_ext.utils.profiler for what is counted.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

import basicsr_ext  # noqa: F401
import torch

from basicsr_ext.infer import build_sr_network, parse_arch_opts
from basicsr_ext.utils.options import OptionError, load_option_file
from basicsr_ext.utils.profiler import format_cost_table, profile_network


def _build(opt_path: str | None, key: str, arch: str | None, arch_opt: dict) -> tuple[str, torch.nn.Module]:
    if opt_path and key != 'network_g':
        from basicsr.archs import build_network
        opt = load_option_file(opt_path)
        if not isinstance(opt.get(key), dict):
            raise OptionError(f'{opt_path}: no {key} block')
        net_opt = dict(opt[key], **arch_opt)
        return f'{osp.basename(opt_path)}:{key} ({net_opt["type"]})', build_network(net_opt)
    net, _ = build_sr_network(arch, arch_opt, opt_path)
    name = f'{osp.basename(opt_path)} ({type(net).__name__})' if opt_path else type(net).__name__
    return name, net


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('-opt', '--opt', nargs='*', default=[], help='option files (their network block is profiled)')
    p.add_argument('--net', default='network_g', help='which block of the option file (network_g, network_d)')
    p.add_argument('--arch', help='registered arch type instead of an option file')
    p.add_argument('--arch-opt', nargs='*', default=[], metavar='KEY=VALUE', help='arch kwargs (YAML values)')
    p.add_argument('--lr-size', nargs='+', type=int, default=[64], help='input side(s), e.g. 64 256')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--dtype', default=None, help='fp32 (default), fp16, bf16')
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.opt and not args.arch:
        p.error('give -opt X.yml or --arch TYPE')
    rows = []
    try:
        arch_opt = parse_arch_opts(args.arch_opt)
        for opt_path in args.opt or [None]:
            name, net = _build(opt_path, args.net, args.arch, arch_opt)
            for size in args.lr_size:
                r = profile_network(net, size, args.device, args.dtype, args.repeats, args.warmup)
                rows.append(dict(r, name=name))
    except (OptionError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(format_cost_table(rows))
    print(f'\n{rows[0]["device"]}, {rows[0]["dtype"]}, median of {args.repeats} runs; peak memory: '
          f'{rows[0]["peak_mem_kind"]} (see basicsr_ext.utils.profiler)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
