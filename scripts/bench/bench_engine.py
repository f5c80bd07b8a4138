"""Benchmarks of the training engine, measured in one run and printed as Markdown tables.

1. Step time of each model with the engine switches off vs on (CPU: channels_last, bf16 autocast; GPU: also
   fp16 and torch.compile), from its option file, on synthetic batches of the option's crop size. Random weights
   (the frozen AESOP auto-encoder and TVQ tokenizer too, ``scripting.random_frozen_checkpoints``): the cost does
   not depend on them. The header names the CPU and whether it has bf16 units: bf16 autocast pays off only on a
   CPU with AMX / avx512_bf16 (oneDNN's native bf16); elsewhere bf16 convolutions and matmuls are emulated.
2. ``--profile``: where each variant's step spends its time (``torch.profiler``, one step after the warm-up), by
   category (convolution, matmul, GroupNorm, dtype casts and copies, the rest) and the top operators.
3. Data-loader throughput of BasicSR's PairedImageDataset on the same sub-images from LMDB vs folder,
   compared with the model's step rate.

    python scripts/bench/bench_engine.py                      # AESOP, TVQ tokenizer, stage II, RAP (quickstart)
    python scripts/bench/bench_engine.py --options options/quickstart/aesop_rrdb.yml --profile --steps 3
    python scripts/bench/bench_engine.py --data quickstart_out/datasets --steps 10
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import statistics
import tempfile
import time

import basicsr_ext  # noqa: F401
import torch

from basicsr_ext.scripting import (markdown_table, option_file, random_frozen_checkpoints, timed_step,
                                   training_options)
from basicsr_ext.utils.options import load_option_file
from basicsr_ext.utils.precision import cpu_description

DEFAULT_OPTIONS = [option_file('quickstart', f) for f in
                   ('aesop_rrdb.yml', 'tvq_tokenizer.yml', 'tvqrap_stage2.yml', 'tvqrap_rap.yml')]
#: profiler categories: (name, substrings of aten op names)
CATEGORIES = (('convolution', ('conv', 'mkldnn_convolution')), ('matmul', ('mm', 'linear', 'matmul', 'bmm')),
              ('GroupNorm', ('group_norm',)), ('dtype casts / copies', ('aten::to', '_to_copy', 'copy_', 'contiguous',
                                                                        'clone')))


def _variants(device: torch.device) -> list[tuple[str, dict]]:
    base = [('baseline (fp32)', {}), ('channels_last', {'channels_last': True}),
            ('bf16 autocast', {'use_amp': True, 'amp_dtype': 'bf16'}),
            ('bf16 + channels_last', {'use_amp': True, 'amp_dtype': 'bf16', 'channels_last': True})]
    if device.type == 'cuda':
        base += [('fp16 + GradScaler', {'use_amp': True, 'amp_dtype': 'fp16'}),
                 ('bf16 + compile', {'use_amp': True, 'amp_dtype': 'bf16', 'compile': True})]
    return base


def _synthetic_batch(opt: dict, batch: int) -> dict:
    train = opt['datasets']['train']
    gt_size = int(train.get('gt_size', 64))
    scale = int(opt.get('scale', 4))
    gt = torch.rand(batch, 3, gt_size, gt_size)
    data = {'gt': gt}
    if train.get('type') != 'GTOnlyDataset':
        data['lq'] = torch.nn.functional.interpolate(gt, scale_factor=1 / scale, mode='bicubic',
                                                     antialias=True).clamp(0, 1)
    return data


def time_model_steps(opt_path: str, switches: dict, steps: int, warmup: int, batch: int | None,
                     profile: list | None = None) -> float:
    """Median seconds per optimize_parameters() of the model in ``opt_path`` with ``switches`` in train:; with a
    ``profile`` list, one more step runs under ``torch.profiler`` and its key averages are appended to it."""
    from basicsr.models import build_model
    with tempfile.TemporaryDirectory(prefix='bench_engine_') as work:
        opt = training_options(opt_path, work, num_gpu=1 if torch.cuda.is_available() else 0, pretrained=False)
        random_frozen_checkpoints(opt, work)
        opt['train'].update(switches)
        model = build_model(opt)
        data = _synthetic_batch(opt, batch or opt['datasets']['train'].get('batch_size_per_gpu', 2))
        times = [timed_step(model, {k: v.clone() for k, v in data.items()}, i + 1) for i in range(warmup + steps)]
        if profile is not None:
            from torch.profiler import ProfilerActivity, profile as torch_profile
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            with torch_profile(activities=acts) as prof:
                timed_step(model, {k: v.clone() for k, v in data.items()}, warmup + steps + 1)
            profile.append(prof.key_averages())
    return statistics.median(times[warmup:])


def categorize(averages) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """(seconds of self CPU time per category, top operators) of one profiled step."""
    cats = {name: 0.0 for name, _ in CATEGORIES}
    cats['other'] = 0.0
    ops = []
    for ev in averages:
        t = ev.self_cpu_time_total / 1e6
        if t <= 0:
            continue
        ops.append((ev.key, t))
        name = next((c for c, keys in CATEGORIES if any(k in ev.key for k in keys)), 'other')
        cats[name] += t
    return cats, sorted(ops, key=lambda o: -o[1])


def load_batch(opt_path: str) -> int:
    return int(load_option_file(opt_path)['datasets']['train'].get('batch_size_per_gpu', 1))


def loader_throughput(dataset_opt: dict, batches: int, workers: int) -> float:
    """Samples per second through BasicSR's dataloader for ``dataset_opt``."""
    from basicsr.data import build_dataloader, build_dataset
    ds = build_dataset(dataset_opt)
    dataset_opt = dict(dataset_opt, num_worker_per_gpu=workers)
    loader = build_dataloader(ds, dataset_opt, num_gpu=0, dist=False, sampler=None, seed=0)
    it = iter(loader)
    next(it)
    n, t = 0, time.perf_counter()
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        n += b['gt'].shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--options', nargs='*', default=None,
                   help='option files of models to time (default: the quickstart AESOP, tokenizer, stage II, RAP; '
                        'none with --data alone)')
    p.add_argument('--variants', nargs='*', default=None, help='only these variant labels (default: all)')
    p.add_argument('--profile', action='store_true', help='profile one step of each variant (categories, top ops)')
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--batch', type=int, default=None, help='override batch_size_per_gpu')
    p.add_argument('--data', default=None,
                   help='folder with train_HR.lmdb, train_LRx4.lmdb and their sub-image folders '
                        '(the quickstart layout)')
    p.add_argument('--gt-size', type=int, default=64)
    p.add_argument('--workers', type=int, default=0)
    args = p.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    options = args.options if args.options is not None else ([] if args.data else DEFAULT_OPTIONS)
    step_rates = {}
    profiles = []
    if options:
        hw = torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_description()
        print(f'## Step time ({device.type}: {hw}; threads={torch.get_num_threads()}; '
              f'load average {os.getloadavg()[0]:.1f})\n')
        print('| model | variant | s/step | speed-up vs fp32 |\n|---|---|---|---|')
        for path in options:
            base = None
            for label, switches in _variants(device):
                if args.variants and label not in args.variants:
                    continue
                prof = [] if args.profile else None
                try:
                    t = time_model_steps(path, switches, args.steps, args.warmup, args.batch, prof)
                except Exception as e:  # noqa: BLE001 - a variant the model/device cannot run is reported
                    print(f'| {osp.basename(path)} | {label} | failed: {type(e).__name__}: {str(e)[:80]} | |')
                    continue
                base = base or t
                batch = args.batch or load_batch(path)
                step_rates.setdefault(path, batch / t)  # samples/s the model consumes
                print(f'| {osp.basename(path)} | {label} | {t:.3f} | {base / t:.2f}x |', flush=True)
                if prof:
                    profiles.append((osp.basename(path), label, *categorize(prof[0])))
        print()
    if profiles:
        names = [c for c, _ in CATEGORIES] + ['other']
        print('## Where a step goes (self CPU seconds of one profiled step)\n')
        print(markdown_table(['model', 'variant', *names, 'top operators'],
                             [[m, v, *(f'{cats[n]:.2f}' for n in names),
                               '; '.join(f'{k} {t:.2f}' for k, t in top[:4])] for m, v, cats, top in profiles]))
        print()
    if args.data:
        root = args.data
        common = dict(type='PairedImageDataset', name='bench', phase='train', scale=4, gt_size=args.gt_size,
                      use_hflip=True, use_rot=True, batch_size_per_gpu=8, dataset_enlarge_ratio=1,
                      filename_tmpl='{}')
        lmdb_opt = dict(common, dataroot_gt=osp.join(root, 'train_HR.lmdb'),
                        dataroot_lq=osp.join(root, 'train_LRx4.lmdb'), io_backend={'type': 'lmdb'})
        disk_gt, disk_lq = osp.join(root, 'train_HR'), osp.join(root, 'train_LRx4')
        if not osp.isdir(disk_gt):  # the quickstart keeps its sub-image folders under build/
            disk_gt, disk_lq = osp.join(root, 'build', 'train_HR_sub'), osp.join(root, 'build', 'train_LRx4_sub')
        rows = [('lmdb', loader_throughput(lmdb_opt, 30, args.workers))]
        if osp.isdir(disk_gt) and osp.isdir(disk_lq):
            disk_opt = dict(common, dataroot_gt=disk_gt, dataroot_lq=disk_lq, io_backend={'type': 'disk'})
            rows.append(('folder', loader_throughput(disk_opt, 30, args.workers)))
        print(f'## Data loader throughput (gt_size {args.gt_size}, workers {args.workers})\n')
        print(markdown_table(['backend', 'samples/s', 'ratio vs lmdb'] + [f'headroom vs {osp.basename(k)}'
                                                                        for k in step_rates],
                             [[name, f'{rate:.1f}', f'{rate / rows[0][1]:.2f}'] + [f'{rate / r:.1f}x'
                                                                                  for r in step_rates.values()]
                              for name, rate in rows]))


if __name__ == '__main__':
    main()
