"""Issue 13.3, done-when: a kill -9 at any moment of a stock SRModel run, followed by ``--auto_resume``, continues
exactly.

A tiny stock SRModel (RRDBNet, 8 features) trains 6 iterations with a checkpoint at every one (3 iterations an
epoch, so states fall mid-epoch). One chain of processes, each started with ``--auto_resume``, is SIGKILLed at a
different moment: inside an optimizer step, half-way through writing a network file, half-way through writing a
training state, after a file is complete but before its rename, right after a complete save, right after a
resume; the last process runs to the end. Its weights must equal an uninterrupted run's bit for bit, every resume
must start from the newest complete state, no half file may ever sit under a final name (no fallback warning), and
each process removes the temporary file the previous kill left (one line with the count), so none is left at the
end.

The kill comes from inside the process (``os.kill(getpid(), SIGKILL)`` at the n-th call of ``torch.save``,
``os.replace`` or ``Adam.step``), so each moment is hit exactly rather than by timing.
"""
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests import harness
from tests.test_untrusted import stock

pytestmark = pytest.mark.e2e  # 9 training processes (about a minute on 2 cores)

KILLER = r'''
import io, os, signal, sys, runpy
mode, n = os.environ['KILL_AT'].rsplit(':', 1)
n = int(n)
calls = {'save': 0, 'replace': 0, 'step': 0}

def die():
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

import basicsr_ext  # noqa: F401  (the patches, as train.py applies them)
import torch

real_save, real_replace, real_step = torch.save, os.replace, torch.optim.Adam.step

def save(obj, f, *args, **kwargs):
    calls['save'] += 1
    if mode == 'save_half' and calls['save'] == n:  # killed half-way through writing the file
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        with open(f, 'wb') as fh:
            fh.write(data[:len(data) // 2]); fh.flush(); os.fsync(fh.fileno())
        die()
    return real_save(obj, f, *args, **kwargs)

def replace(src, dst, *args, **kwargs):
    if not str(dst).endswith(('.pth', '.state')):
        return real_replace(src, dst, *args, **kwargs)
    calls['replace'] += 1
    if mode == 'replace_before' and calls['replace'] == n:  # the file is complete, not yet renamed
        die()
    out = real_replace(src, dst, *args, **kwargs)
    if mode == 'replace_after' and calls['replace'] == n:  # renamed: the save is complete
        die()
    return out

def step(self, *args, **kwargs):
    calls['step'] += 1
    if mode == 'step' and calls['step'] == n:  # mid-iteration: gradients computed, weights not yet updated
        die()
    return real_step(self, *args, **kwargs)

torch.save, os.replace, torch.optim.Adam.step = save, replace, step
train = os.environ['TRAIN_SCRIPT']
sys.argv = [train] + sys.argv[1:]
runpy.run_path(train, run_name='__main__')
'''

ITERS = 6
#: (where the process is killed, the iteration it must have resumed from, the stale temporary files of the previous
#: kill it must have removed at its start); absolute iterations in the comments
CHAIN = [
    ('step:3', None, 0),             # fresh run, killed inside iteration 3's optimizer step (states 1, 2 complete)
    ('save_half:1', 2, 0),           # half of net_g_3's temporary file written
    ('replace_before:2', 2, 1),      # net_g_3.pth renamed, 3.state complete but not renamed
    ('save_half:2', 2, 1),           # half of 3.state's temporary file written
    ('replace_after:4', 2, 1),       # 4.state renamed: iterations 3 and 4 saved completely, killed right after
    ('step:1', 4, 0),                # killed at the first step after loading the state of iteration 4
    ('replace_before:1', 4, 0),      # net_g_5.pth complete, not renamed
    (None, 4, 1),                    # runs to the end
]


def _opt(data):
    return stock.sr_options(data, 'sweep', iters=ITERS, save_freq=1, dataset_enlarge_ratio=3)


def _stale_removed(text):
    counts = [int(line.split()[1]) for line in text.splitlines() if ' stale temporary file' in line]
    assert len(counts) <= 1, text[-3000:]  # one line
    return counts[0] if counts else 0


def _resumed_from(text):
    marks = [line.split('iter: ')[1].split('.')[0] for line in text.splitlines() if 'Resuming training from' in line]
    return int(marks[-1]) if marks else None


def test_kill_9_at_any_moment_then_auto_resume_continues_exactly(tmp_path):
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=2, size=64)
    straight, swept = tmp_path / 'straight', tmp_path / 'swept'
    straight.mkdir()
    swept.mkdir()
    reference = subprocess.Popen(  # the uninterrupted run, alongside the chain
        [sys.executable, harness.TRAIN, '-opt', harness.write_options(str(straight / 'o.yml'), _opt(data))],
        cwd=str(straight), env=harness.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    opt_path = harness.write_options(str(swept / 'o.yml'), _opt(data))
    killer = tmp_path / 'killer.py'
    killer.write_text(KILLER)
    for kill_at, resumed, stale in CHAIN:
        env = dict(harness.env(), TRAIN_SCRIPT=harness.TRAIN)
        if kill_at:
            env['KILL_AT'] = kill_at
            cmd = [sys.executable, str(killer), '-opt', opt_path, '--auto_resume']
        else:
            cmd = [sys.executable, harness.TRAIN, '-opt', opt_path, '--auto_resume']
        out = subprocess.run(cmd, cwd=str(swept), env=env, capture_output=True, text=True, timeout=300)
        text = out.stdout + out.stderr
        expected_rc = -signal.SIGKILL if kill_at else 0
        assert out.returncode == expected_rc, (kill_at, out.returncode, text[-3000:])
        assert _resumed_from(text) == resumed, (kill_at, text[-3000:])
        assert _stale_removed(text) == stale, (kill_at, text[-3000:])
        assert 'warning: --auto_resume' not in text, (kill_at, text[-3000:])  # never a half file under its name
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    models = 'experiments/sweep/models'
    for name in ('net_g_latest.pth', f'net_g_{ITERS}.pth'):
        a = torch.load(straight / models / name, weights_only=True)['params']
        b = torch.load(swept / models / name, weights_only=True)['params']
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    first = torch.load(straight / models / 'net_g_1.pth', weights_only=True)['params']
    assert not all(torch.equal(a[k], first[k]) for k in a)  # it did train
    assert sorted(os.listdir(swept / 'experiments')) == ['sweep']  # nothing archived along the way
    for sub in ('models', 'training_states'):  # no temporary file of an interrupted save is left
        assert not [f for f in os.listdir(swept / 'experiments' / 'sweep' / sub) if f.endswith('.tmp')], sub
