"""Issue 13.7 (stock entry points): BasicSR's own ``python -m basicsr.train`` / ``basicsr.test`` and a clone's
``python basicsr/train.py`` (our plugin autoloaded, no PYTHONPATH) end a user error with one ``error:`` line
naming the file or key and a non-zero exit, no traceback, as ``basicsr-ext-train`` does (patch ``script_errors``):
a mistyped network key, a missing dataset folder, a checkpoint that does not fit the network (found when the model
loads it), a corrupt checkpoint (found in preflight)."""
import os
import shutil

import pytest
import torch

import basicsr
from tests import harness
from tests.test_plugin.children import run_python
from tests.test_untrusted import stock

pytestmark = pytest.mark.e2e  # fresh interpreters through BasicSR's own entry points


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp('stock_entry')
    data = harness.make_paired_folders(str(work / 'data'), n=2, size=64)
    return {'work': work, 'data': data}


def _options(work, name, change):
    opt = stock.sr_options(work['data'], name)
    change(opt)
    return harness.write_options(str(work['work'] / f'{name}.yml'), opt)


def _wrong_shape(opt):
    from basicsr.archs.rrdbnet_arch import RRDBNet
    path = str(opt['_work'] / 'wide.pth')
    torch.save({'params': RRDBNet(3, 3, num_feat=16, num_block=1, num_grow_ch=8).state_dict()}, path)
    opt['path']['pretrain_network_g'] = path


def _truncated(opt):
    from basicsr.archs.rrdbnet_arch import RRDBNet
    path = opt['_work'] / 'cut.pth'
    torch.save({'params': RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=8).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    opt['path']['pretrain_network_g'] = str(path)


CASES = {
    'network_key': (lambda o: o['network_g'].update(num_blocks=2),
                    ('network_key.yml', "'num_blocks' (did you mean 'num_block'?)")),
    'dataset_folder': (lambda o: o['datasets']['train'].update(dataroot_lq='/nonexistent/lq'),
                       ('DatasetError', "dataroot_lq '/nonexistent/lq' does not exist")),
    'wrong_shape_checkpoint': (_wrong_shape, ('CheckpointError', 'wide.pth', 'does not fit')),
    'truncated_checkpoint': (_truncated, ('CheckpointError', 'truncated_checkpoint.yml', 'path:pretrain_network_g',
                                          'cut.pth')),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_python_m_basicsr_train_user_error_is_one_line(work, case):
    change, names = CASES[case]

    def apply(o):
        o['_work'] = work['work']
        change(o)
        o.pop('_work')

    path = _options(work, case, apply)
    out = run_python(['-m', 'basicsr.train', '-opt', path], work['work'])
    stock.assert_refused(out, *names)
    assert out.returncode == 1


def test_python_m_basicsr_test_missing_folder_is_one_line(work):
    opt = stock.sr_options(work['data'], 'stock_test')
    val = {'name': 'val', 'type': 'PairedImageDataset', 'dataroot_gt': work['data']['gt'],
           'dataroot_lq': '/nonexistent/lq', 'io_backend': {'type': 'disk'}}
    opt.update(datasets={'test_1': val})
    opt.pop('train')
    path = harness.write_options(str(work['work'] / 'stock_test.yml'), opt)
    out = run_python(['-m', 'basicsr.test', '-opt', path], work['work'])
    stock.assert_refused(out, 'DatasetError', '/nonexistent/lq')


def test_clone_train_script_user_error_is_one_line(work, tmp_path):
    clone = tmp_path / 'BasicSR'
    shutil.copytree(os.path.dirname(os.path.abspath(basicsr.__file__)), clone / 'basicsr',
                    ignore=shutil.ignore_patterns('__pycache__'))
    path = _options(work, 'clone_key', lambda o: o['train']['pixel_opt'].update(loss_weigth=1.0))
    out = run_python([os.path.join('basicsr', 'train.py'), '-opt', path], clone, PYTHONPATH=str(clone))
    stock.assert_refused(out, 'clone_key.yml', "'loss_weigth'")
