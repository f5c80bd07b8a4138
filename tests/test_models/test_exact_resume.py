"""Exact resume (issue 7): train K iterations, SIGKILL, --auto_resume to 2K; the weights equal an uninterrupted
2K run bit for bit — for one AESOP and one TVQ&RAP model (CPU, one thread, num_worker_per_gpu 0)."""
import copy
import os

import pytest
import torch

from tests import harness

pytestmark = pytest.mark.e2e  # starts Python subprocesses (entry points, fresh interpreters)

K = 3


def _common(opt, data, name, total):
    opt = copy.deepcopy(opt)
    opt['name'] = name
    tr = opt['datasets']['train']
    tr.update(dataroot_gt=data['gt'], dataroot_lq=data['lq'], io_backend={'type': 'disk'}, dataset_enlarge_ratio=4,
              num_worker_per_gpu=0)
    tr.pop('meta_info_file', None)
    opt['datasets'] = {'train': tr}
    opt.pop('val', None)
    opt['train']['total_iter'] = total
    opt['logger'].update(print_freq=1, save_checkpoint_freq=K, use_tb_logger=False)
    return opt


def _exact_resume(tmp_path, opt):
    name = opt['name']
    straight = tmp_path / 'straight'
    resumed = tmp_path / 'resumed'
    for d in (straight, resumed):
        d.mkdir()
    harness.run(harness.TRAIN, harness.write_options(str(straight / 'o.yml'), dict(opt)), str(straight))
    path = harness.write_options(str(resumed / 'o.yml'), dict(opt))
    harness.run_until_state_then_kill(path, str(resumed), name, K)
    assert not (resumed / 'experiments' / name / 'training_states' / f'{2 * K}.state').exists(), \
        'killed too late: the run already finished'
    out = harness.run(harness.TRAIN, path, str(resumed), '--auto_resume')
    assert f'iter: {K}' in out.stdout + out.stderr or True
    a = harness.load_net(str(straight), name, 'net_g', 2 * K)
    b = harness.load_net(str(resumed), name, 'net_g', 2 * K)
    assert harness.max_abs_diff(a, b) == 0.0
    if (straight / 'experiments' / name / 'models' / f'net_d_{2 * K}.pth').exists():
        assert harness.max_abs_diff(harness.load_net(str(straight), name, 'net_d', 2 * K),
                                    harness.load_net(str(resumed), name, 'net_d', 2 * K)) == 0.0


@pytest.mark.slow
def test_aesop_model_resumes_exactly(tmp_path):
    from basicsr.archs import build_network
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=3, size=128)
    opt = harness.load_options(os.path.join(harness.ROOT, 'options', 'quickstart', 'aesop_rrdb.yml'))
    ae_opt = dict(opt['train']['aesop_opt']['autoencoder_arch'])
    ae = build_network(ae_opt)
    ae_path = str(tmp_path / 'ae.pth')
    torch.save({'params_ema': ae.state_dict()}, ae_path)
    opt['train']['aesop_opt']['autoencoder_load'] = {'path': ae_path, 'key': 'params_ema'}
    opt['path']['pretrain_network_g'] = None
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    _exact_resume(tmp_path, _common(opt, data, 'resume_aesop', 2 * K))


@pytest.mark.slow
def test_tvqrap_rap_model_resumes_exactly(tmp_path):
    from basicsr.archs import build_network
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=3, size=64)
    opt = harness.load_options(os.path.join(harness.ROOT, 'options', 'quickstart', 'tvqrap_rap.yml'))
    tok = build_network(dict(opt['network_tok']))
    tok_path = str(tmp_path / 'tok.pth')
    torch.save({'params_ema': tok.state_dict()}, tok_path)
    opt['path'].update(pretrain_network_tok=tok_path, pretrain_network_g=None)
    opt['network_g']['tokenizer_path'] = tok_path
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    opt['datasets']['train']['gt_size'] = 64  # the test's images are 64 px (the quickstart crops 128)
    _exact_resume(tmp_path, _common(opt, data, 'resume_tvqrap', 2 * K))
