"""Two-process torchrun on CPU (gloo): BasicSR's loop with our patches completes and checkpoints."""
import os
import subprocess
import sys

import pytest

from tests import harness


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
