"""Shared by the issue-13 tests: a tiny stock SRModel option file, a training subprocess that may fail, and the
one check every refusal must pass (non-zero exit, one clear last line naming the file or key, no traceback)."""
from __future__ import annotations

import os
import subprocess
import sys

from tests import harness


class Payload:
    """Unpickling this runs ``touch <sentinel>`` (in any loader that is not weights-only)."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return os.system, (f'touch {self.sentinel}', )


def sr_options(data: dict, name: str, iters: int = 2, save_freq: int = 2, **train_set) -> dict:
    """Stock SRModel + RRDBNet (8 features, 1 block), PairedImageDataset on disk, CPU, no validation."""
    train = {'name': 'train', 'type': 'PairedImageDataset', 'dataroot_gt': data['gt'], 'dataroot_lq': data['lq'],
             'io_backend': {'type': 'disk'}, 'filename_tmpl': '{}', 'gt_size': 32, 'use_hflip': True,
             'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 2}
    train.update(train_set)
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': train},
        'network_g': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'num_grow_ch': 8},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 2e-4},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                  'total_iter': iters, 'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False},
    }


def run(script: str, args: list[str], cwd, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    """``python <script> *args`` in ``cwd`` (the repository on PYTHONPATH, one thread, offline); never raises."""
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=str(cwd), env=dict(harness.env(), **env),
                          capture_output=True, text=True, timeout=timeout)


def train(opt_path, cwd, *args: str, **env) -> subprocess.CompletedProcess:
    return run(harness.TRAIN, ['-opt', opt_path, *args], cwd, **env)


def assert_refused(out: subprocess.CompletedProcess, *names: str) -> str:
    """Non-zero exit, no traceback, and the last line printed (stderr) is one ``error:`` line naming ``names``."""
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert 'Traceback' not in text, text[-5000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines, out.stdout[-3000:]
    last = lines[-1]
    assert last.startswith('error:'), text[-3000:]
    for name in names:
        assert str(name) in last, (name, last)
    return last
