"""BasicSR's own entry points and a BasicSR-based fork train and test our methods, through the autoload hook.

Each run is a fresh interpreter (no PYTHONPATH to this repository): `python -m basicsr.train` / `basicsr.test`
with pip's basicsr, a BasicSR clone's `python basicsr/train.py`, and a fork's `train.py` calling
`basicsr.train.train_pipeline`. Tiny option files derived from options/quickstart (2 iterations, CPU).
"""
import os
import shutil
import uuid

import pytest
import torch

import basicsr
from tests import harness
from tests.test_plugin.children import ROOT, run_ok

pytestmark = pytest.mark.e2e  # every test starts Python subprocesses (entry points, fresh interpreters)

QUICKSTART = os.path.join(ROOT, 'options', 'quickstart')
SITE = os.path.dirname(os.path.dirname(os.path.abspath(basicsr.__file__)))


def _tiny_training(opt: dict, data: dict, name: str, gt_size: int) -> dict:
    opt['name'] = name
    train = opt['datasets']['train']
    train.update(dataroot_gt=data['gt'], dataroot_lq=data['lq'], io_backend={'type': 'disk'}, gt_size=gt_size,
                 batch_size_per_gpu=2, dataset_enlarge_ratio=4, num_worker_per_gpu=0)
    train.pop('meta_info_file', None)
    opt['datasets'] = {'train': train}
    opt.pop('val', None)
    opt['train']['total_iter'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    return opt


def aesop_options(tmp, data, name: str, network_g: dict | None = None) -> dict:
    """options/quickstart/aesop_rrdb.yml, tiny: a random AESOP auto-encoder checkpoint, a UNet discriminator (any
    crop size; the quickstart's VGG-style one needs 128), 32-pixel crops."""
    from basicsr.archs import build_network
    opt = harness.load_options(os.path.join(QUICKSTART, 'aesop_rrdb.yml'))
    ae = build_network(dict(opt['train']['aesop_opt']['autoencoder_arch']))
    ae_path = str(tmp / 'ae.pth')
    torch.save({'params_ema': ae.state_dict()}, ae_path)
    opt['train']['aesop_opt']['autoencoder_load'] = {'path': ae_path, 'key': 'params_ema'}
    opt['path']['pretrain_network_g'] = None
    opt['network_d'] = {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 8}
    if network_g is not None:
        opt['network_g'] = network_g
    return _tiny_training(opt, data, name, gt_size=32)


def tvqrap_options(tmp, data, name: str) -> dict:
    """options/quickstart/tvqrap_rap.yml (TVQRAPModel, stage III), tiny: a random stage-I tokenizer checkpoint."""
    from basicsr.archs import build_network
    opt = harness.load_options(os.path.join(QUICKSTART, 'tvqrap_rap.yml'))
    tok = build_network(dict(opt['network_tok']))
    tok_path = str(tmp / 'tok.pth')
    torch.save({'params_ema': tok.state_dict()}, tok_path)
    opt['path'].update(pretrain_network_tok=tok_path, pretrain_network_g=None)
    opt['network_g']['tokenizer_path'] = tok_path
    return _tiny_training(opt, data, name, gt_size=64)


def _exp(cwd, name, *parts) -> str:
    return os.path.join(str(cwd), 'experiments', name, *parts)


def _assert_resumed(out, name: str) -> None:
    text = out.stdout + out.stderr
    assert 'Resuming training from epoch' in text and 'iter: 2.' in text, text[-3000:]
    assert 'End of training' in text


@pytest.fixture(scope='module')
def aesop_run(tmp_path_factory):
    """`python -m basicsr.train` (pip's basicsr) on an AESOPESRGANModel option file: 2 iterations, then
    --auto_resume to 3."""
    work = tmp_path_factory.mktemp('aesop_stock')
    data = harness.make_paired_folders(str(work / 'data'), n=3, size=64)
    name = f'plugin_aesop_{uuid.uuid4().hex[:8]}'
    opt = aesop_options(work, data, name)
    opt['logger']['use_tb_logger'] = True  # tb_logger/ must land in the working directory too
    opt_path = harness.write_options(str(work / 'train.yml'), opt)
    first = run_ok(['-m', 'basicsr.train', '-opt', opt_path], work)
    second = run_ok(['-m', 'basicsr.train', '-opt', opt_path, '--auto_resume', '--force_yml',
                     'train:total_iter=3'], work)
    return {'work': work, 'data': data, 'name': name, 'opt': opt, 'first': first, 'second': second}


@pytest.mark.slow
def test_stock_train_module_trains_and_resumes_aesop(aesop_run):
    work, name = aesop_run['work'], aesop_run['name']
    assert os.path.isfile(_exp(work, name, 'models', 'net_g_2.pth'))
    assert os.path.isfile(_exp(work, name, 'training_states', '2.state'))
    assert 'l_g_aesop' in aesop_run['first'].stdout + aesop_run['first'].stderr  # our model, our loss
    _assert_resumed(aesop_run['second'], name)
    assert os.path.isfile(_exp(work, name, 'models', 'net_g_latest.pth'))
    assert os.path.isdir(os.path.join(str(work), 'tb_logger', name))
    for folder in ('experiments', 'tb_logger'):  # never into site-packages (BasicSR's root_path there)
        assert not os.path.exists(os.path.join(SITE, folder, name))


@pytest.mark.slow
def test_stock_test_module_evaluates(aesop_run):
    work, name = aesop_run['work'], aesop_run['name']
    test_name = f'{name}_test'
    opt = {
        'name': test_name, 'model_type': 'AESOPESRGANModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': aesop_run['data']['gt'],
                                'dataroot_lq': aesop_run['data']['lq'], 'io_backend': {'type': 'disk'}}},
        'network_g': aesop_run['opt']['network_g'],
        'path': {'pretrain_network_g': _exp(work, name, 'models', 'net_g_latest.pth'), 'param_key_g': 'params_ema',
                 'strict_load_g': True},
        'val': {'save_img': True, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4,
                                                       'test_y_channel': True}}},
    }
    opt_path = harness.write_options(str(work / 'test.yml'), opt)
    out = run_ok(['-m', 'basicsr.test', '-opt', opt_path], work)
    text = out.stdout + out.stderr
    assert '# psnr:' in text and 'tiny' in text
    results = os.path.join(str(work), 'results', test_name)
    assert len(os.listdir(os.path.join(results, 'visualization', 'tiny'))) == 3
    assert not os.path.exists(os.path.join(SITE, 'results', test_name))


@pytest.mark.slow
def test_clone_train_script_and_module_train_tvqrap_and_resume(tmp_path):
    """A BasicSR clone (a copy of the basicsr package in a folder): `python basicsr/train.py` trains TVQRAPModel
    2 iterations, `python -m basicsr.train --auto_resume` (the clone's, run from its root) continues."""
    clone = tmp_path / 'BasicSR'
    shutil.copytree(os.path.dirname(os.path.abspath(basicsr.__file__)), clone / 'basicsr',
                    ignore=shutil.ignore_patterns('__pycache__'))
    version = clone / 'basicsr' / 'version.py'  # the log's "BasicSR: <version>" then says which one ran
    version.write_text(version.read_text().replace("__version__ = '1.4.2'", "__version__ = '1.4.2+clone'"))
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=3, size=64)
    name = f'plugin_tvqrap_{uuid.uuid4().hex[:8]}'
    opt_path = harness.write_options(str(clone / 'train_tvqrap.yml'), tvqrap_options(tmp_path, data, name))
    first = run_ok([os.path.join('basicsr', 'train.py'), '-opt', opt_path], clone, PYTHONPATH=str(clone))
    assert 'BasicSR: 1.4.2+clone' in first.stdout + first.stderr
    assert os.path.isfile(_exp(clone, name, 'models', 'net_g_2.pth'))  # the clone's root, as BasicSR does
    assert 'TVQRAPNet' in open(_exp(clone, name, 'train_tvqrap.yml')).read()
    second = run_ok(['-m', 'basicsr.train', '-opt', opt_path, '--auto_resume', '--force_yml', 'train:total_iter=3'],
                    clone)
    _assert_resumed(second, name)
    assert 'BasicSR: 1.4.2+clone' in second.stdout + second.stderr
    assert os.path.isfile(_exp(clone, name, 'models', 'net_g_latest.pth'))


FORK_ARCH = '''import torch
from torch import nn
from basicsr.utils.registry import ARCH_REGISTRY


@ARCH_REGISTRY.register()
class {cls}(nn.Module):
    """The fork's own x4 generator."""

    def __init__(self, num_feat=8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, num_feat, 3, 1, 1), nn.LeakyReLU(0.2, True),
                                  nn.Conv2d(num_feat, 3 * 16, 3, 1, 1), nn.PixelShuffle(4))

    def forward(self, x):
        return self.body(x) + nn.functional.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False)
'''

FORK_ARCHS_INIT = '''import importlib
from os import path as osp

from basicsr.utils import scandir

_folder = osp.dirname(osp.abspath(__file__))
_modules = [importlib.import_module(f'{pkg}.archs.{{osp.splitext(f)[0]}}') for f in scandir(_folder)
            if f.endswith('_arch.py')]
'''

FORK_TRAIN = '''import os.path as osp

import {pkg}.archs  # noqa: F401  (registers the fork's archs)
from basicsr.train import train_pipeline

if __name__ == '__main__':
    root_path = osp.abspath(osp.join(__file__, osp.pardir, osp.pardir))
    train_pipeline(root_path)
'''


@pytest.mark.slow
def test_fork_trains_its_own_generator_with_aesop_loss(tmp_path):
    """A BasicSR-based fork in the Real-ESRGAN layout: its own `*_arch.py` registered into ARCH_REGISTRY and a
    `train.py` calling basicsr.train.train_pipeline. It never imports basicsr_ext, yet trains its generator with
    our AESOPESRGANModel and AESOPLoss from its option file."""
    tag = uuid.uuid4().hex[:8]
    pkg, cls = f'myfork_{tag}', f'ForkSRNet{tag}'
    root = tmp_path / 'fork'
    (root / pkg / 'archs').mkdir(parents=True)
    (root / pkg / '__init__.py').write_text('')
    (root / pkg / 'archs' / '__init__.py').write_text(FORK_ARCHS_INIT.format(pkg=pkg))
    (root / pkg / 'archs' / 'fork_arch.py').write_text(FORK_ARCH.format(cls=cls))
    (root / pkg / 'train.py').write_text(FORK_TRAIN.format(pkg=pkg))
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=3, size=64)
    name = f'plugin_fork_{tag}'
    opt = aesop_options(tmp_path, data, name, network_g={'type': cls, 'num_feat': 8})
    opt_path = harness.write_options(str(root / 'train_fork.yml'), opt)
    out = run_ok([os.path.join(pkg, 'train.py'), '-opt', opt_path], root, PYTHONPATH=str(root))
    assert 'l_g_aesop' in out.stdout + out.stderr
    weights = torch.load(_exp(root, name, 'models', 'net_g_2.pth'), weights_only=True)['params']
    assert sorted(weights) == ['body.0.bias', 'body.0.weight', 'body.2.bias', 'body.2.weight']
