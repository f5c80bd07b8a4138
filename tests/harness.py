"""Helpers for end-to-end tests: tiny paired data from scikit-image photos, option files, train/test subprocesses."""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from typing import Any

import cv2
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, 'basicsr_ext', 'train.py')
TEST = os.path.join(ROOT, 'basicsr_ext', 'test.py')


def load_script(relpath: str):
    """Import ``scripts/<relpath>.py`` (e.g. ``'eval/benchmark'``) as a module, without touching sys.path."""
    import importlib.util
    name = 'script_' + relpath.replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'scripts', f'{relpath}.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def make_paired_folders(root: str, n: int = 4, size: int = 64, scale: int = 4) -> dict[str, str]:
    """n GT crops (size x size) from bundled photos + bicubic x4 LR (BasicSR's MATLAB imresize)."""
    from basicsr.utils.matlab_functions import imresize

    from basicsr_ext.scripting import load_photo
    photos = [load_photo(name) for name in
              ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'hubble_deep_field')]
    gt_dir, lq_dir = os.path.join(root, 'HR'), os.path.join(root, 'LRx4')
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(lq_dir, exist_ok=True)
    for i in range(n):
        img = photos[i % len(photos)]
        y, x = (i // len(photos)) * size, 40
        crop = np.ascontiguousarray(img[y + 40:y + 40 + size, x:x + size])  # BGR
        cv2.imwrite(os.path.join(gt_dir, f'{i:03d}.png'), crop)
        lq = imresize(crop.astype(np.float64) / 255.0, 1 / scale)
        cv2.imwrite(os.path.join(lq_dir, f'{i:03d}.png'), (np.clip(lq, 0, 1) * 255).round().astype(np.uint8))
    return {'gt': gt_dir, 'lq': lq_dir}


def write_options(path: str, opt: dict[str, Any]) -> str:
    import yaml

    def plain(o):
        if isinstance(o, dict):
            return {k: plain(v) for k, v in o.items()}
        if isinstance(o, list):
            return [plain(v) for v in o]
        return o
    with open(path, 'w') as f:
        yaml.safe_dump(plain(opt), f, sort_keys=False)
    return path


def load_options(path: str) -> dict:
    from basicsr_ext.utils.options import load_option_file
    return copy.deepcopy(load_option_file(path))


def env() -> dict[str, str]:
    e = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    return e


def run(script: str, opt_path: str, cwd: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, script, '-opt', opt_path, *args], cwd=cwd, env=env(),
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f'{script} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}')
    return out


def run_until_state_then_kill(opt_path: str, cwd: str, name: str, kill_iter: int, timeout: int = 300) -> None:
    """Start training, SIGKILL it as soon as training_states/<kill_iter>.state exists."""
    state = os.path.join(cwd, 'experiments', name, 'training_states', f'{kill_iter}.state')
    proc = subprocess.Popen([sys.executable, TRAIN, '-opt', opt_path], cwd=cwd, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not os.path.exists(state):
        if proc.poll() is not None:
            raise AssertionError(f'training ended before iteration {kill_iter}: {proc.stderr.read()[-3000:]}')
        if time.time() > deadline:
            proc.kill()
            raise AssertionError('timeout waiting for the training state')
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def load_net(cwd: str, name: str, label: str = 'net_g', it: str | int = 'latest') -> dict:
    from basicsr_ext.utils.checkpoint import load_checkpoint
    return load_checkpoint(os.path.join(cwd, 'experiments', name, 'models', f'{label}_{it}.pth'))


def max_abs_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for key in a:
        for k, v in a[key].items():
            if v.is_floating_point():
                worst = max(worst, float((v - b[key][k]).abs().max()))
            else:
                assert torch.equal(v, b[key][k]), k
    return worst
