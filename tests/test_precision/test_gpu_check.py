"""scripts/bench/gpu_check.py: without CUDA it is skipped cleanly (one line, exit 0), as CI runs it; its CPU dry run
of a training step and of a golden comparison works (the CUDA-only parts are the same code on another device)."""
import os
import subprocess
import sys

from tests.harness import ROOT, load_script

SCRIPT = os.path.join(ROOT, 'scripts', 'bench', 'gpu_check.py')


def test_skips_cleanly_without_cuda():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    proc = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('gpu_check: skipped, no CUDA device')


def test_dry_run_pieces_on_cpu():
    import torch
    gc = load_script('bench/gpu_check')
    ok, detail = gc.train_step_check('tvqrap_stage2.yml', torch.device('cpu'), {'channels_last': True})
    assert ok and 'weights moved' in detail
    name, build, run = [c for c in gc.golden_cases() if c[0] == 'PatchGAN D'][0]
    ok, detail = gc.golden_check(build, run, torch.device('cpu'), 'fp32')
    assert ok and detail.startswith('logit_map')
    rep = gc.Report(budget_s=0)
    rep.run('x', 'y', lambda: (True, ''), min_left=1)  # past the budget: not run, counted as a failure
    assert rep.failed == 1 and rep.rows[0][2] == 'NOT RUN'
