"""Issue 13.4 (checkpoints): a corrupt ``path.pretrain_network_g`` is refused before BasicSR's ``make_exp_dirs``
archives ``experiments/<name>`` (``basicsr_ext.preflight``, which now reads the file weights-only and checks its
weights finite, not only that it exists).

Each corrupt file is launched, through BasicSR's own ``train_pipeline`` in this process, against an existing
experiment folder: a CheckpointError of one line naming the option key and the file, the folder keeps its name and
its files, nothing is archived, a pickle payload never runs. One case goes through ``train.py`` (exit code, the
last line printed, no traceback).
"""
import os
import sys

import pytest
import torch

from basicsr_ext.utils.checkpoint import CheckpointError
from tests.test_untrusted import stock

NAME = 'keep'


def _net_state():
    from basicsr.archs.rrdbnet_arch import RRDBNet
    return RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=8).state_dict()


def _truncated(tmp_path, sentinel):
    good = tmp_path / 'good.pth'
    torch.save({'params': _net_state()}, good)
    data = good.read_bytes()
    (tmp_path / 'w.pth').write_bytes(data[:len(data) - 64 * 1024 if len(data) > 128 * 1024 else len(data) // 2])


def _random(tmp_path, sentinel):
    (tmp_path / 'w.pth').write_bytes(os.urandom(50_000))


def _payload(tmp_path, sentinel):
    torch.save({'params': _net_state(), 'info': stock.Payload(sentinel)}, tmp_path / 'w.pth')


def _nan(tmp_path, sentinel):
    sd = _net_state()
    sd['conv_first.weight'][0, 0, 0, 0] = float('nan')
    torch.save({'params': sd}, tmp_path / 'w.pth')


def _text(tmp_path, sentinel):
    (tmp_path / 'w.pth').write_text('<html>404 Not Found</html>')  # what a failed download often saves


CORRUPT = {'truncated': (_truncated, 'truncated or corrupt'), 'random_bytes': (_random, ''),
           'pickle_payload': (_payload, 'arbitrary unpickling'), 'nan_weights': (_nan, "'conv_first.weight'"),
           'html_page': (_text, '')}


def _experiment(tmp_path):
    exp = tmp_path / 'experiments' / NAME
    (exp / 'models').mkdir(parents=True)
    (exp / 'models' / 'net_g_100.pth').write_bytes(b'earlier weights')
    (exp / 'train_keep.log').write_text('earlier log')
    return exp


def _snapshot(root):
    return sorted((os.path.relpath(os.path.join(d, f), root), os.path.getsize(os.path.join(d, f)))
                  for d, _, files in os.walk(root) for f in files)


def _options(tmp_path):
    from tests import harness
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=2, size=64)
    opt = stock.sr_options(data, NAME)
    opt['path']['pretrain_network_g'] = str(tmp_path / 'w.pth')
    return harness.write_options(str(tmp_path / 'o.yml'), opt)


@pytest.mark.parametrize('case', sorted(CORRUPT))
def test_corrupt_pretrain_refused_before_any_folder(tmp_path, monkeypatch, case):
    from basicsr.train import train_pipeline
    make, detail = CORRUPT[case]
    sentinel = tmp_path / 'SENTINEL'
    make(tmp_path, sentinel)
    exp = _experiment(tmp_path)
    before = _snapshot(tmp_path / 'experiments')
    path = _options(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', path])
    with pytest.raises(CheckpointError) as e:
        train_pipeline(str(tmp_path))
    msg = str(e.value)
    assert '\n' not in msg and 'o.yml, path:pretrain_network_g' in msg and str(tmp_path / 'w.pth') in msg, msg
    assert detail in msg, msg
    assert _snapshot(tmp_path / 'experiments') == before, 'the experiment folder was touched'
    assert sorted(os.listdir(tmp_path / 'experiments')) == [NAME] and exp.is_dir()
    assert not (tmp_path / 'tb_logger').exists()
    assert not sentinel.exists(), 'the payload ran'


@pytest.mark.e2e
def test_corrupt_pretrain_through_train_py_is_one_line(tmp_path):
    _truncated(tmp_path, None)
    _experiment(tmp_path)
    before = _snapshot(tmp_path / 'experiments')
    out = stock.train(_options(tmp_path), tmp_path)
    stock.assert_refused(out, 'CheckpointError', 'path:pretrain_network_g', str(tmp_path / 'w.pth'))
    assert _snapshot(tmp_path / 'experiments') == before
