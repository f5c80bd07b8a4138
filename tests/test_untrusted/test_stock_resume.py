"""Issue 13.3: stock BasicSR models save atomically and resume exactly (stock SRModel through train.py, CPU,
num_worker_per_gpu 0).

- a run stopped at iteration 4 whose newest state is the 0-byte file and whose newest network is the half file a
  kill during BasicSR's own torch.save leaves, resumed with --auto_resume, skips them with a warning, resumes
  from iteration 2 and ends with the weights of an uninterrupted 6-iteration run, bit for bit;
- when no state is usable, --auto_resume is one line naming the folder and moves nothing aside.
"""
import os

import pytest
import torch

from tests import harness
from tests.test_untrusted import stock

pytestmark = pytest.mark.e2e  # starts Python subprocesses (entry points, fresh interpreters)


def _opt(data, name, iters):
    # 2 images x enlarge 3 / batch 2: 3 iterations an epoch, so the states at 2 and 4 are mid-epoch
    return stock.sr_options(data, name, iters=iters, save_freq=2, dataset_enlarge_ratio=3)


def _net(cwd, name, it):
    return torch.load(os.path.join(str(cwd), 'experiments', name, 'models', f'net_g_{it}.pth'),
                      weights_only=True)['params']


def test_killed_while_saving_auto_resume_falls_back_and_resumes_exactly(tmp_path):
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=2, size=64)
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    straight.mkdir()
    resumed.mkdir()
    out = stock.train(harness.write_options(str(straight / 'o.yml'), _opt(data, 'sr', 6)), straight)
    assert out.returncode == 0, out.stderr[-3000:]
    path = harness.write_options(str(resumed / 'o.yml'), _opt(data, 'sr', 4))
    out = stock.train(path, resumed)
    assert out.returncode == 0, out.stderr[-3000:]
    exp = resumed / 'experiments' / 'sr'
    assert not [f for f in os.listdir(exp / 'models') + os.listdir(exp / 'training_states') if f.startswith('.')]
    # what a kill -9 inside BasicSR's own torch.save leaves under the final names
    (exp / 'training_states' / '4.state').write_bytes(b'')
    net4 = exp / 'models' / 'net_g_4.pth'
    net4.write_bytes(net4.read_bytes()[:net4.stat().st_size // 2])
    out = stock.train(path, resumed, '--auto_resume', '--force_yml', 'train:total_iter=6')
    assert out.returncode == 0, out.stderr[-3000:]
    warnings = [line for line in out.stderr.splitlines() if line.startswith('warning: --auto_resume')]
    assert len(warnings) == 2 and '4.state' in warnings[0] and '2.state' in warnings[1], out.stderr[-2000:]
    a, b = _net(straight, 'sr', 6), _net(resumed, 'sr', 6)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], _net(straight, 'sr', 2)[k]) for k in a)  # it did train


def test_no_usable_state_is_one_line_and_moves_nothing(tmp_path):
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=2, size=64)
    path = harness.write_options(str(tmp_path / 'o.yml'), _opt(data, 'sr', 2))
    out = stock.train(path, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    states = tmp_path / 'experiments' / 'sr' / 'training_states'
    (states / '2.state').write_bytes(b'')
    before = sorted(os.listdir(tmp_path / 'experiments'))
    out = stock.train(path, tmp_path, '--auto_resume')
    stock.assert_refused(out, str(states), 'none of the 1 training states')
    assert sorted(os.listdir(tmp_path / 'experiments')) == before  # not archived, not recreated
