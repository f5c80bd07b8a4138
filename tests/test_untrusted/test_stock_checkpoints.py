"""Issue 13.1/13.6: stock BasicSR models load ``path.pretrain_network_g`` weights-only, whatever
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says, and refuse NaN/inf weights naming the tensor (stock SRModel, train.py)."""
import os

import pytest
import torch

from tests import harness
from tests.test_untrusted import stock

pytestmark = pytest.mark.e2e  # starts Python subprocesses (entry points, fresh interpreters)


def _tiny(tmp_path, name, pretrain):
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=2, size=64)
    opt = stock.sr_options(data, name)
    opt['path']['pretrain_network_g'] = str(pretrain)
    return harness.write_options(str(tmp_path / f'{name}.yml'), opt)


def _no_weights_written(tmp_path, name):
    models = tmp_path / 'experiments' / name / 'models'
    assert not models.exists() or not os.listdir(models)


def test_pickle_payload_in_pretrain_network_never_runs(tmp_path):
    from basicsr.archs.rrdbnet_arch import RRDBNet
    sentinel = tmp_path / 'SENTINEL'
    weights = tmp_path / 'downloaded.pth'
    net = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=8)
    torch.save({'params': net.state_dict(), 'info': stock.Payload(sentinel)}, weights)
    opt = _tiny(tmp_path, 'payload', weights)
    out = stock.train(opt, tmp_path, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    last = stock.assert_refused(out, weights, 'CheckpointError')
    assert 'unpickling' in last
    assert not sentinel.exists(), 'the payload ran'
    _no_weights_written(tmp_path, 'payload')
    # the control: this file does run its payload in a loader that is not weights-only
    torch.load(weights, weights_only=False)
    assert sentinel.exists()


def test_nan_weights_refused_naming_the_tensor(tmp_path):
    from basicsr.archs.rrdbnet_arch import RRDBNet
    net = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=8)
    sd = net.state_dict()
    sd['conv_up1.weight'][0, 0, 0, 0] = float('inf')
    weights = tmp_path / 'diverged.pth'
    torch.save({'params': sd}, weights)
    out = stock.train(_tiny(tmp_path, 'nan', weights), tmp_path)
    last = stock.assert_refused(out, weights, 'conv_up1.weight')
    assert '1 inf' in last
    _no_weights_written(tmp_path, 'nan')


def test_missing_or_truncated_pretrain_refused(tmp_path):
    from basicsr.archs.rrdbnet_arch import RRDBNet
    net = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=8)
    good = tmp_path / 'good.pth'
    torch.save({'params': net.state_dict()}, good)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    for name, path in (('missing', tmp_path / 'nowhere.pth'), ('cut', cut)):
        out = stock.train(_tiny(tmp_path, name, path), tmp_path)
        stock.assert_refused(out, path)
        _no_weights_written(tmp_path, name)
