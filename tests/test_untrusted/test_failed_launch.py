"""Issue 13.4: a failed launch moves nothing aside. BasicSR's make_exp_dirs renames an existing experiments/<name>
(results/<name>) to <name>_archived_<time> before the datasets and the model are built; every check the options
allow now runs before that (``basicsr_ext.preflight``).

One stock SRModel experiment is trained once; then each mistake is launched against it, through train.py (one
case, the CLI's one line) and through BasicSR's own ``train_pipeline`` / ``test_pipeline`` in this process (the
others): the experiment folder keeps its name and its files, nothing is archived.
"""
import copy
import os
import sys

import pytest

import basicsr_ext
from tests import harness
from tests.test_untrusted import stock

pytestmark = pytest.mark.e2e  # every test starts Python subprocesses (entry points, fresh interpreters)

NAME = 'launch'


def _snapshot(root):
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            p = os.path.join(folder, f)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


@pytest.fixture(scope='module')
def experiment(tmp_path_factory):
    work = tmp_path_factory.mktemp('launch')
    data = harness.make_paired_folders(str(work / 'data'), n=2, size=64)
    opt = stock.sr_options(data, NAME)
    path = harness.write_options(str(work / 'good.yml'), opt)
    out = stock.train(path, work)
    assert out.returncode == 0, out.stderr[-3000:]
    (work / 'results' / f'{NAME}_test').mkdir(parents=True)
    (work / 'results' / f'{NAME}_test' / 'keep.txt').write_text('earlier results')
    return {'work': work, 'opt': opt, 'data': data}


def _variant(opt, change):
    o = copy.deepcopy(opt)
    change(o)
    return o


MISTAKES = {
    'network_key': lambda o: o['network_g'].update(num_blocks=2),
    'model_type': lambda o: o.update(model_type='SRModle'),
    'loss_key': lambda o: o['train']['pixel_opt'].update(loss_weigth=1.0),
    'arch_type': lambda o: o['network_g'].update(type='RRDBNett'),
    'dataset_folder': lambda o: o['datasets']['train'].update(dataroot_lq='/nonexistent/lq'),
    'pretrain_missing': lambda o: o['path'].update(pretrain_network_g='/nonexistent/net_g.pth'),
    'dataset_key': lambda o: o['datasets']['train'].update(gt_sise=32),
}


def test_train_cli_mistyped_key_leaves_the_experiment(experiment):
    work = experiment['work']
    before = _snapshot(work / 'experiments')
    path = harness.write_options(str(work / 'typo.yml'), _variant(experiment['opt'], MISTAKES['network_key']))
    out = stock.train(path, work)
    stock.assert_refused(out, 'typo.yml', "'num_blocks' (did you mean 'num_block'?)")
    assert _snapshot(work / 'experiments') == before
    assert sorted(os.listdir(work / 'experiments')) == [NAME]


@pytest.mark.parametrize('mistake', sorted(MISTAKES))
def test_train_pipeline_checks_before_any_folder(experiment, mistake, monkeypatch):
    from basicsr.train import train_pipeline
    work = experiment['work']
    monkeypatch.chdir(work)
    before = _snapshot(work / 'experiments')
    path = harness.write_options(str(work / f'{mistake}.yml'), _variant(experiment['opt'], MISTAKES[mistake]))
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', path])
    with pytest.raises(basicsr_ext.USER_ERRORS) as e:
        train_pipeline(str(work))
    assert '\n' not in str(e.value)
    assert sorted(os.listdir(work / 'experiments')) == [NAME], mistake
    assert _snapshot(work / 'experiments') == before


def test_test_pipeline_checks_before_moving_results(experiment, monkeypatch):
    from basicsr.test import test_pipeline
    work = experiment['work']
    monkeypatch.chdir(work)
    opt = copy.deepcopy(experiment['opt'])
    val = dict(opt['datasets']['train'], name='val', dataroot_lq='/nonexistent/lq')
    for key in ('gt_size', 'use_hflip', 'use_rot', 'batch_size_per_gpu', 'dataset_enlarge_ratio', 'num_worker_per_gpu'):
        val.pop(key)
    opt.update(name=f'{NAME}_test', datasets={'test_1': val})
    opt['path']['pretrain_network_g'] = str(work / 'experiments' / NAME / 'models' / 'net_g_latest.pth')
    opt.pop('train')
    path = harness.write_options(str(work / 'test.yml'), opt)
    monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', path])
    with pytest.raises(basicsr_ext.USER_ERRORS, match='dataroot_lq'):
        test_pipeline(str(work))
    assert sorted(os.listdir(work / 'results')) == [f'{NAME}_test']
    assert (work / 'results' / f'{NAME}_test' / 'keep.txt').read_text() == 'earlier results'
