"""Issue 13.7: option-file mistakes are accepted when unambiguous, refused at parse time naming the key path when
not, and the error is the last line printed (the option dump goes to the log file only).

- ``lr: 1e-3`` (a string in YAML 1.1: stock BasicSR hands it to Adam and crashes) trains with lr 0.001;
- ``total_iter`` / ``batch_size_per_gpu`` / ``gt_size`` / ``scale`` / frequencies that cannot work are refused;
- an option file over 1 MB is refused with its size;
- a loss block key that the loss does not take is named with a did-you-mean (network blocks and model_type:
  tests/test_untrusted/test_failed_launch.py).
"""
import os
import sys

import pytest
import torch

import basicsr.train as btrain
from basicsr_ext.utils.options import OptionError
from tests import harness
from tests.test_untrusted import stock


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return harness.make_paired_folders(str(tmp_path_factory.mktemp('data')), n=2, size=64)


def _parse(tmp_path, monkeypatch, text, name='o.yml'):
    path = tmp_path / name
    path.write_text(text)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(path)])
    return btrain.parse_options(str(tmp_path), is_train=True)[0]


def _yaml(opt):
    import yaml
    return yaml.safe_dump(opt, sort_keys=False)


@pytest.mark.e2e
def test_yaml11_number_strings_become_numbers(tmp_path, data):
    """Written as users write them: PyYAML reads 1e-3 and 4e5 as strings."""
    opt = stock.sr_options(data, 'lr_string')
    text = _yaml(opt).replace('lr: 0.0002', 'lr: 1e-3').replace('milestones:\n    - 1000', 'milestones:\n    - 1e3')
    assert 'lr: 1e-3' in text and '- 1e3' in text
    path = tmp_path / 'o.yml'
    path.write_text(text)
    out = stock.train(str(path), tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    state = torch.load(tmp_path / 'experiments' / 'lr_string' / 'training_states' / '2.state', weights_only=True)
    assert state['optimizers'][0]['param_groups'][0]['lr'] == 1e-3
    assert state['schedulers'][0]['milestones'] == {1000: 1}


BAD = {
    'train:total_iter': [(0, 'positive'), (-5, 'positive'), (2.5, 'must be an integer'), ('abc', 'got str')],
    'datasets:train:batch_size_per_gpu': [(0, 'positive batch size'), (-2, 'positive batch size')],
    'datasets:train:gt_size': [(0, 'positive crop size'), (-32, 'positive crop size')],
    'scale': [(2.5, 'must be an integer'), ('4x', 'got str'), (0, 'upscaling factor >= 1')],
    'logger:print_freq': [(0, 'positive number of iterations')],
    'logger:save_checkpoint_freq': [(0, 'positive number of iterations')],
    'datasets:train:num_worker_per_gpu': [(-1, 'workers >= 0')],
}


@pytest.mark.parametrize('key_path,value,expected', [(k, v, e) for k, cases in BAD.items() for v, e in cases])
def test_impossible_numbers_refused_at_parse(tmp_path, data, monkeypatch, key_path, value, expected):
    opt = stock.sr_options(data, 'numbers')
    node = opt
    keys = key_path.split(':')
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    with pytest.raises(OptionError) as e:
        _parse(tmp_path, monkeypatch, _yaml(opt))
    msg = str(e.value)
    assert key_path in msg and expected in msg and 'o.yml' in msg and '\n' not in msg, msg
    assert not (tmp_path / 'experiments').exists()


def test_option_file_over_1_mb_refused_with_its_size(tmp_path, monkeypatch):
    text = 'name: big\ndatasets: {}\n' + '# padding\n' * 120_000
    with pytest.raises(OptionError, match=rf'o.yml: {len(text)} bytes, over the 1000000-byte \(1 MB\) limit'):
        _parse(tmp_path, monkeypatch, text)


@pytest.mark.e2e
def test_cli_refusals_are_the_last_line(tmp_path, data):
    opt = stock.sr_options(data, 'cli')
    opt['train']['total_iter'] = 0
    out = stock.train(harness.write_options(str(tmp_path / 'zero.yml'), opt), tmp_path)
    stock.assert_refused(out, 'zero.yml', 'train:total_iter', 'got 0')
    opt = stock.sr_options(data, 'cli')
    opt['train']['pixel_opt']['reductoin'] = 'mean'
    out = stock.train(harness.write_options(str(tmp_path / 'loss.yml'), opt), tmp_path)
    stock.assert_refused(out, 'loss.yml', 'train:pixel_opt (L1Loss)', "'reductoin' (did you mean 'reduction'?)")
    assert not (tmp_path / 'experiments').exists()


@pytest.mark.e2e
def test_option_dump_goes_to_the_log_file_only(tmp_path, data):
    """An error found after the logger started (weights that do not fit the network: found when the model loads
    them; unreadable or NaN weights are refused earlier, by the preflight) is the last line; the ~200-line option
    dump is in the log file, not on the console."""
    from basicsr.archs.rrdbnet_arch import RRDBNet
    sd = RRDBNet(3, 3, num_feat=16, num_block=1, num_grow_ch=8).state_dict()
    torch.save({'params': sd}, tmp_path / 'wide.pth')
    opt = stock.sr_options(data, 'dump')
    opt['path']['pretrain_network_g'] = str(tmp_path / 'wide.pth')
    out = stock.train(harness.write_options(str(tmp_path / 'o.yml'), opt), tmp_path)
    stock.assert_refused(out, 'wide.pth', 'does not fit', 'conv_first.weight')
    console = out.stdout + out.stderr
    assert 'dataset_enlarge_ratio' not in console and 'milestones' not in console
    log = next((tmp_path / 'experiments' / 'dump').glob('train_dump_*.log')).read_text()
    assert 'dataset_enlarge_ratio' in log and 'milestones' in log
    assert os.path.isfile(tmp_path / 'experiments' / 'dump' / 'o.yml')
