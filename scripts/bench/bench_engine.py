"""Benchmarks of the training engine, measured in one run and printed as Markdown tables.

1. Step time of each model with the engine switches off vs on (CPU: channels_last, bf16 autocast; GPU: also
   fp16 and torch.compile), from its option file, on synthetic batches of the option's crop size.
2. Data-loader throughput of BasicSR's PairedImageDataset on the same sub-images from LMDB vs folder,
   compared with the model's step rate.

    python scripts/bench/bench_engine.py --options options/quickstart/aesop_rrdb.yml options/quickstart/tvqrap_rap.yml
    python scripts/bench/bench_engine.py --data quickstart_out/datasets --steps 10
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import tempfile
import time

import basicsr_ext  # noqa: F401
import torch

from basicsr_ext.scripting import markdown_table, timed_step, training_options
from basicsr_ext.utils.options import load_option_file


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


def time_model_steps(opt_path: str, switches: dict, steps: int, warmup: int, batch: int | None) -> float:
    """Median seconds per optimize_parameters() of the model in ``opt_path`` with ``switches`` in train:."""
    from basicsr.models import build_model
    with tempfile.TemporaryDirectory(prefix='bench_engine_') as work:
        opt = training_options(opt_path, work, num_gpu=1 if torch.cuda.is_available() else 0)
        opt['train'].update(switches)
        model = build_model(opt)
        data = _synthetic_batch(opt, batch or opt['datasets']['train'].get('batch_size_per_gpu', 2))
        times = [timed_step(model, {k: v.clone() for k, v in data.items()}, i + 1) for i in range(warmup + steps)]
    return statistics.median(times[warmup:])


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
    p.add_argument('--options', nargs='*', default=[], help='option files of models to time')
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
    step_rates = {}
    if args.options:
        print(f'## Step time ({device.type}, threads={torch.get_num_threads()})\n')
        print('| model | variant | s/step | speed-up vs fp32 |\n|---|---|---|---|')
        for path in args.options:
            base = None
            for label, switches in _variants(device):
                try:
                    t = time_model_steps(path, switches, args.steps, args.warmup, args.batch)
                except Exception as e:  # noqa: BLE001 - a variant the model/device cannot run is reported
                    print(f'| {osp.basename(path)} | {label} | failed: {type(e).__name__}: {str(e)[:80]} | |')
                    continue
                base = base or t
                batch = args.batch or load_batch(path)
                step_rates.setdefault(path, batch / t)  # samples/s the model consumes
                print(f'| {osp.basename(path)} | {label} | {t:.3f} | {base / t:.2f}x |')
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
