"""Two-process torchrun on CPU (gloo): BasicSR's loop with our patches completes and checkpoints."""
import os
import subprocess
import sys

import pytest

from tests import harness

pytestmark = pytest.mark.e2e  # starts Python subprocesses (entry points, fresh interpreters)


def _sr_options(data, name, iters=6):
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'train', 'type': 'PairedImageDataset', 'dataroot_gt': data['gt'],
                      'dataroot_lq': data['lq'], 'io_backend': {'type': 'disk'}, 'filename_tmpl': '{}',
                      'gt_size': 32, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                      'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 10},
            'val': {'name': 'val', 'type': 'PairedImageDataset', 'dataroot_gt': data['gt'],
                    'dataroot_lq': data['lq'], 'io_backend': {'type': 'disk'}}},
        'network_g': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'num_grow_ch': 8},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 2e-4},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                  'total_iter': iters, 'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'val': {'val_freq': 3, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True}}},
        'logger': {'print_freq': 3, 'save_checkpoint_freq': 3, 'use_tb_logger': False},
    }


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=4, size=64)
    opt = harness.write_options(str(tmp_path / 'ddp.yml'), _sr_options(data, 'ddp_sr'))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29633',
           harness.TRAIN, '-opt', opt, '--launcher', 'pytorch']
    out = subprocess.run(cmd, cwd=tmp_path, env=harness.env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    models = tmp_path / 'experiments' / 'ddp_sr' / 'models'
    assert (models / 'net_g_6.pth').exists() and (models / 'net_g_latest.pth').exists()
    log = next((tmp_path / 'experiments' / 'ddp_sr').glob('train_*.log')).read_text()
    assert "'world_size': 2" in log or 'world_size: 2' in log


def test_auto_resume_continues_from_saved_iteration(tmp_path):
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=4, size=64)
    opt = _sr_options(data, 'resume_sr', iters=3)
    path = harness.write_options(str(tmp_path / 'r.yml'), opt)
    harness.run(harness.TRAIN, path, str(tmp_path))
    out = harness.run(harness.TRAIN, path, str(tmp_path), '--auto_resume', '--force_yml', 'train:total_iter=6')
    log = next(p for p in sorted((tmp_path / 'experiments' / 'resume_sr').glob('train_*.log'))
               if 'Resuming training from epoch' in p.read_text()).read_text()
    assert 'iter: 3.' in log
    assert (tmp_path / 'experiments' / 'resume_sr' / 'models' / 'net_g_6.pth').exists()


def _deterministic(opt, data, name, batch, iters=2):
    """Same samples on 1 process (batch 2B) and on 2 processes (B each): no random crop/flip, full images."""
    import copy
    opt = copy.deepcopy(opt)
    opt['name'] = name
    tr = opt['datasets']['train']
    tr.update(dataroot_gt=data['gt'], dataroot_lq=data['lq'], io_backend={'type': 'disk'}, use_hflip=False,
              use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=batch, dataset_enlarge_ratio=4)
    tr.pop('meta_info_file', None)
    opt['datasets'] = {'train': tr}
    opt.pop('val', None)
    opt['train']['total_iter'] = iters
    # fp32 (the option file's memory format kept): bf16 rounds a batch of 2 and two batches of 1 differently
    opt['train']['use_amp'] = False
    opt['logger'].update(print_freq=1, save_checkpoint_freq=iters, use_tb_logger=False)
    return opt


def _ddp_matches_single(tmp_path, opt_file, size, prepare):
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=4, size=size)
    base = harness.load_options(os.path.join(harness.ROOT, 'options', 'quickstart', opt_file))
    base['datasets']['train']['gt_size'] = size
    prepare(base, tmp_path)
    single, multi = tmp_path / 'single', tmp_path / 'multi'
    single.mkdir(), multi.mkdir()
    harness.run(harness.TRAIN, harness.write_options(str(single / 'o.yml'), _deterministic(base, data, 'm', 2)),
                str(single))
    path = harness.write_options(str(multi / 'o.yml'), _deterministic(base, data, 'm', 1))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29647',
           harness.TRAIN, '-opt', path, '--launcher', 'pytorch']
    out = subprocess.run(cmd, cwd=multi, env=harness.env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    # the losses (all-reduced over ranks) agree at every iteration
    assert _losses(single) == pytest.approx(_losses(multi), rel=2e-3)
    a, b = harness.load_net(str(single), 'm', 'net_g', 2), harness.load_net(str(multi), 'm', 'net_g', 2)
    # Adam turns float noise in near-zero gradients (e.g. a conv bias right before a GroupNorm) into steps of up
    # to lr each, on either side: weights (raw and EMA) agree to 2 * iters * lr
    bound = 2 * 2 * float(base['train']['optim_g']['lr']) * 1.05
    for key in a:
        assert harness.max_abs_diff({'p': a[key]}, {'p': b[key]}) <= bound, key


def _losses(run_dir):
    import re
    log = next((run_dir / 'experiments' / 'm').glob('train_*.log')).read_text()
    values = []
    for line in log.splitlines():
        if 'iter:' in line and ' l_' in line:
            values += [float(v) for v in re.findall(r' l_\w+: ([-+0-9.e]+)', line)]
    assert values, 'no losses logged'
    return values


@pytest.mark.slow
def test_aesop_autoencoder_ddp_matches_single_process(tmp_path):
    """With ``channels_last`` (the engine converts before DDP wraps: converted after, the all-reduced gradients
    differed by up to 0.033 per weight after one step, and the losses by 12 %)."""
    _ddp_matches_single(tmp_path, 'aesop_autoencoder.yml', 64, lambda opt, tmp: opt['train'].update(channels_last=True))


@pytest.mark.slow
def test_tvqrap_stage2_ddp_matches_single_process(tmp_path):
    import torch
    from basicsr.archs import build_network

    def prepare(opt, tmp):
        tok = build_network(dict(opt['network_tok']))
        torch.save({'params_ema': tok.state_dict()}, str(tmp / 'tok.pth'))
        opt['path'].update(pretrain_network_tok=str(tmp / 'tok.pth'), pretrain_network_g=None)
    _ddp_matches_single(tmp_path, 'tvqrap_stage2.yml', 64, prepare)
