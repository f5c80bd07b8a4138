"""Engine pieces that every model shares: RNG state, resumable sampler, atomic saves, NaN guard, AMP helpers."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from basicsr_ext.data import sampler
from basicsr_ext.models import engine
from basicsr_ext.utils.checkpoint import atomic_save, load_checkpoint
from basicsr_ext.utils.training_state import get_rng_state, set_rng_state


def test_rng_state_round_trips_through_weights_only(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.randn(), torch.randn(1)
    atomic_save({'rng': [get_rng_state()]}, str(tmp_path / 's.state'))
    expect = (random.random(), float(np.random.randn()), float(torch.randn(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(str(tmp_path / 's.state'))['rng'][0])
    assert (random.random(), float(np.random.randn()), float(torch.randn(1))) == expect


def test_resumable_sampler_continues_the_interrupted_epoch():
    data = list(range(10))
    full = sampler.ResumableEnlargedSampler(data, num_replicas=1, rank=0, ratio=2)
    full.set_epoch(1)
    order = list(full)  # 20 indices, 5 batches of 4 per epoch
    batch, per_epoch = 4, 5
    resumed = sampler.ResumableEnlargedSampler(data, num_replicas=1, rank=0, ratio=2, resume={
        'epoch': 1, 'iter': per_epoch + 3, 'batch_size': batch, 'rng': None})
    resumed.set_epoch(1)
    assert list(resumed) == order[3 * batch:]
    assert list(resumed) == order  # used once only
    assert resumed.resume is None


def test_ddp_ranks_get_distinct_samples():
    data = list(range(16))
    parts = []
    for rank in range(2):
        s = sampler.ResumableEnlargedSampler(data, num_replicas=2, rank=rank, ratio=1)
        s.set_epoch(0)
        parts.append(list(s))
    assert not set(parts[0]) & set(parts[1]) and len(parts[0]) == len(parts[1]) == 8


def test_check_finite_names_term_and_iteration():
    engine.EngineMixin.check_finite({'l_pix': torch.tensor(1.0)}, 3)
    with pytest.raises(engine.NonFiniteLossError, match=r"'l_aesop'.*iteration 7"):
        engine.EngineMixin.check_finite({'l_pix': torch.tensor(1.0), 'l_aesop': torch.tensor(float('nan'))}, 7)


def test_fp32_block_disables_autocast():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16
        with engine.EngineMixin.fp32():
            assert lin(x.float()).dtype == torch.float32


@pytest.mark.e2e
def test_kill_during_atomic_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / 'net_g_latest.pth'
    atomic_save({'params': {'w': torch.ones(3)}}, str(path))
    code = ('import sys, torch; sys.path.insert(0, %r)\n'
            'from basicsr_ext.utils.checkpoint import atomic_save\n'
            'import time\n'
            'def slow_save(obj, p):\n'
            '    torch.save(obj, p); open(%r, "w").close(); time.sleep(30)\n'
            'atomic_save({"params": {"w": torch.zeros(3_000_000)}}, %r, save_fn=slow_save)\n'
            % (os.getcwd(), str(tmp_path / 'writing'), str(path)))
    proc = subprocess.Popen([sys.executable, '-c', code])
    deadline = time.time() + 60
    while not (tmp_path / 'writing').exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert torch.equal(load_checkpoint(str(path))['params']['w'], torch.ones(3))


@pytest.mark.e2e
def test_unknown_train_key_fails_before_training_with_a_suggestion(tmp_path):
    from tests import harness
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=2, size=64)
    opt = harness.load_options(os.path.join(harness.ROOT, 'options', 'quickstart', 'aesop_autoencoder.yml'))
    opt['datasets']['train'].update(dataroot_gt=data['gt'], dataroot_lq=data['lq'], io_backend={'type': 'disk'})
    opt['datasets']['val'].update(dataroot_gt=data['gt'], dataroot_lq=data['lq'])
    opt['train']['use_ampp'] = True
    path = harness.write_options(str(tmp_path / 'typo.yml'), opt)
    out = subprocess.run([sys.executable, harness.TRAIN, '-opt', path], cwd=tmp_path, env=harness.env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "'use_ampp' (did you mean 'use_amp'?)" in out.stderr and 'typo.yml' in out.stderr
    assert not list((tmp_path / 'experiments').glob('*/models/*.pth'))


@pytest.mark.e2e
def test_forced_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    from tests import harness
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=2, size=64)
    opt = harness.load_options(os.path.join(harness.ROOT, 'options', 'quickstart', 'aesop_autoencoder.yml'))
    opt['name'] = 'nan_guard'
    opt['datasets']['train'].update(dataroot_gt=data['gt'], dataroot_lq=data['lq'], io_backend={'type': 'disk'})
    opt['datasets'].pop('val')
    opt.pop('val')
    opt['train']['total_iter'] = 2
    opt['logger'].update(save_checkpoint_freq=2, print_freq=1)
    path = harness.write_options(str(tmp_path / 'o.yml'), opt)
    harness.run(harness.TRAIN, path, str(tmp_path))
    models = tmp_path / 'experiments' / 'nan_guard' / 'models'
    good = harness.load_net(str(tmp_path), 'nan_guard', 'net_g', 2)
    out = subprocess.run([sys.executable, harness.TRAIN, '-opt', path, '--auto_resume', '--force_yml',
                          'train:total_iter=4', 'train:pixel_opt:loss_weight=.nan'],
                         cwd=tmp_path, env=harness.env(), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert 'NonFiniteLossError' in out.stderr and 'iteration 3' in out.stderr and "'l_" in out.stderr
    assert sorted(p.name for p in models.glob('*.pth')) == ['net_g_2.pth', 'net_g_latest.pth']
    assert harness.max_abs_diff(good, harness.load_net(str(tmp_path), 'nan_guard', 'net_g', 2)) == 0.0
