"""Issue 13.1 (the rest of BasicSR): every ``torch.load`` inside BasicSR is weights-only whatever
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says (patch ``safe_basicsr_loads``), and a refusal is one CheckpointError naming
the file: VGGFeatureExtractor's ``VGG_PRETRAIN_PATH`` and torchvision's cached VGG file (PerceptualLoss), SpyNet's
``load_path`` (BasicVSR, EDVR-style models), the FID Inception's ``load_url``. A VGG file missing offline names the
file and the folder to put it in.

The payload files are tiny (the loader refuses them before any weight is needed); no network is used (the
download is monkeypatched to fail as it does offline)."""
import os
import sys
import urllib.error

import pytest
import torch

from basicsr_ext.utils import checkpoint
from basicsr_ext.utils.checkpoint import CheckpointError
from tests import harness
from tests.test_untrusted import stock

VGG19 = 'vgg19-dcbb9e9d.pth'


@pytest.fixture
def unsafe_env(tmp_path, monkeypatch):
    """A working directory and TORCH_HOME of their own, the variable that turns torch.load's default off, and a
    download that fails as offline."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    calls = []

    def offline(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    return {'sentinel': tmp_path / 'SENTINEL', 'calls': calls, 'hub': tmp_path / 'torch_home' / 'hub' / 'checkpoints'}


def _payload_file(path, sentinel):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({'params': {'w': torch.zeros(1)}, 'x': stock.Payload(sentinel)}, path)
    return path


def test_payload_at_vgg_pretrain_path_never_runs(unsafe_env):
    from basicsr.archs.vgg_arch import VGG_PRETRAIN_PATH, VGGFeatureExtractor
    _payload_file(VGG_PRETRAIN_PATH, unsafe_env['sentinel'])
    with pytest.raises(CheckpointError) as e:
        VGGFeatureExtractor(['relu1_1'], vgg_type='vgg19')
    msg = str(e.value)
    assert VGG_PRETRAIN_PATH in msg and 'arbitrary unpickling' in msg and '\n' not in msg, msg
    assert not unsafe_env['sentinel'].exists(), 'the payload ran'
    # the control: this file runs its payload in a loader that is not weights-only
    torch.load(VGG_PRETRAIN_PATH, weights_only=False)
    assert unsafe_env['sentinel'].exists()


def test_payload_in_torch_hub_vgg_file_never_runs(unsafe_env):
    from basicsr.archs.vgg_arch import VGGFeatureExtractor
    cached = _payload_file(str(unsafe_env['hub'] / VGG19), unsafe_env['sentinel'])
    with pytest.raises(CheckpointError) as e:
        VGGFeatureExtractor(['relu1_1'], vgg_type='vgg19')  # no VGG_PRETRAIN_PATH: torchvision's pretrained file
    assert cached in str(e.value) and 'arbitrary unpickling' in str(e.value)
    assert not unsafe_env['sentinel'].exists(), 'the payload ran'
    assert unsafe_env['calls'] == []  # the cached file was used, nothing downloaded


def test_vgg_missing_offline_names_the_file_and_the_folders(unsafe_env):
    from basicsr.archs.vgg_arch import VGG_PRETRAIN_PATH, VGGFeatureExtractor
    with pytest.raises(CheckpointError) as e:
        VGGFeatureExtractor(['relu1_1'], vgg_type='vgg19')
    msg = str(e.value)
    assert '\n' not in msg and f'weights file {VGG19} is not on disk' in msg, msg
    assert f'put {VGG19} in {unsafe_env["hub"]}' in msg and 'URLError' in msg, msg
    assert os.path.abspath(VGG_PRETRAIN_PATH) in msg, msg
    assert unsafe_env['calls'] == [f'https://download.pytorch.org/models/{VGG19}']
    assert not os.path.exists(unsafe_env['hub'] / VGG19)  # no partial file left under the final name


def test_vgg_pretrained_loads_the_released_file_weights_only(monkeypatch):
    """The wiring of a good file (a tiny stand-in for torchvision's VGG19, whose real weights are 548 MB): the net
    is built without weights, then gets the file's weights; pretrained=False never reads a file."""
    import basicsr.archs.vgg_arch as vgg_arch
    from basicsr_ext.patches import _SafePretrainedVGG
    tiny = lambda weights=None: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))  # noqa: E731
    released = tiny().state_dict()
    loads = []

    def load(url, **kwargs):
        loads.append((url, kwargs['check_hash']))
        return released

    fake = _SafePretrainedVGG(type('vgg', (), {'vgg19': staticmethod(tiny), '__name__': 'vgg', '__doc__': ''}),
                              load)
    net = fake.vgg19(pretrained=True)
    assert all(torch.equal(net.state_dict()[k], released[k]) for k in released)
    assert loads == [(f'https://download.pytorch.org/models/{VGG19}', True)]
    fake.vgg19(pretrained=False)
    assert len(loads) == 1
    assert isinstance(vgg_arch.vgg, _SafePretrainedVGG)  # what VGGFeatureExtractor calls


def test_spynet_load_path_payload_and_nan_refused(unsafe_env, tmp_path):
    from basicsr.archs.spynet_arch import SpyNet
    bad = _payload_file(str(tmp_path / 'spynet.pth'), unsafe_env['sentinel'])
    with pytest.raises(CheckpointError, match='spynet.pth.*arbitrary unpickling'):
        SpyNet(load_path=bad)
    assert not unsafe_env['sentinel'].exists(), 'the payload ran'
    sd = SpyNet().state_dict()
    sd['basic_module.0.basic_module.0.weight'][0, 0, 0, 0] = float('inf')
    torch.save({'params': sd}, tmp_path / 'spynet_inf.pth')
    with pytest.raises(CheckpointError, match=r"spynet_inf.pth: tensor 'basic_module.0.basic_module.0.weight'"):
        SpyNet(load_path=str(tmp_path / 'spynet_inf.pth'))
    with pytest.raises(CheckpointError, match='not found'):
        SpyNet(load_path=str(tmp_path / 'nowhere.pth'))
    good = {k: v for k, v in SpyNet().state_dict().items() if k not in ('mean', 'std')}  # loaded before buffers
    torch.save({'params': good}, tmp_path / 'spynet_ok.pth')
    net = SpyNet(load_path=str(tmp_path / 'spynet_ok.pth'))  # a good file loads
    assert torch.equal(net.state_dict()['basic_module.0.basic_module.0.weight'],
                       good['basic_module.0.basic_module.0.weight'])


def test_fid_inception_load_url_is_weights_only(unsafe_env):
    import basicsr.archs.inception as inception
    assert inception.load_url is checkpoint.load_hub_weights
    cached = _payload_file(str(unsafe_env['hub'] / os.path.basename(inception.FID_WEIGHTS_URL)),
                           unsafe_env['sentinel'])
    with pytest.raises(CheckpointError, match='arbitrary unpickling'):
        inception.load_url(inception.FID_WEIGHTS_URL, progress=True)
    assert cached and not unsafe_env['sentinel'].exists()


def _basicsr_modules_calling_torch_load():
    import basicsr
    root = os.path.dirname(os.path.abspath(basicsr.__file__))
    found = []
    for folder, _, files in os.walk(root):
        for f in files:
            path = os.path.join(folder, f)
            if f.endswith('.py') and 'torch.load(' in open(path, encoding='utf-8').read():
                rel = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, '.')
                found.append(rel[:-len('.__init__')] if rel.endswith('.__init__') else rel)
    return sorted(found)


def test_every_basicsr_module_calling_torch_load_is_covered():
    import importlib

    import basicsr.train as btrain
    from basicsr.models.base_model import BaseModel
    found = _basicsr_modules_calling_torch_load()
    assert 'basicsr.archs.vgg_arch' in found and len(found) >= 7, found
    # the two callers whose function is replaced whole (patches safe_load_network, resume_cpu)
    assert BaseModel.load_network is checkpoint.load_network
    assert getattr(btrain.load_resume_state, '_basicsr_ext', False)
    for name in found:
        if name in ('basicsr.models.base_model', 'basicsr.train'):
            continue
        module = importlib.import_module(name)
        assert module.torch.load is checkpoint.weights_only_load, name
        assert module.torch.nn is torch.nn and module.torch.Tensor is torch.Tensor  # the rest is torch's own


@pytest.mark.e2e
def test_perceptual_loss_with_payload_vgg_file_through_train_py(tmp_path):
    """Stock SRModel with BasicSR's PerceptualLoss (VGG19) through train.py: the payload placed at
    VGG_PRETRAIN_PATH never runs; one line naming the file, non-zero exit."""
    from basicsr.archs.vgg_arch import VGG_PRETRAIN_PATH
    sentinel = tmp_path / 'SENTINEL'
    _payload_file(str(tmp_path / VGG_PRETRAIN_PATH), sentinel)
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=2, size=64)
    opt = stock.sr_options(data, 'perceptual')
    opt['train']['perceptual_opt'] = {'type': 'PerceptualLoss', 'layer_weights': {'conv1_2': 1.0},
                                      'vgg_type': 'vgg19', 'perceptual_weight': 1.0, 'style_weight': 0}
    out = stock.train(harness.write_options(str(tmp_path / 'o.yml'), opt), tmp_path,
                      TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1', TORCH_HOME=str(tmp_path / 'torch_home'))
    stock.assert_refused(out, 'CheckpointError', VGG_PRETRAIN_PATH, 'arbitrary unpickling')
    assert not sentinel.exists(), 'the payload ran'


def test_no_other_process_state_leaks():
    assert sys.modules['basicsr.archs.vgg_arch'].torch.load is checkpoint.weights_only_load
