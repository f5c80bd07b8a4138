"""Issue 13.4 (loss weights): the weights a loss block of ``train:`` loads when the model is built are checked in
``parse_options`` (``basicsr_ext.preflight.check_loss_weights``), before BasicSR's ``make_exp_dirs`` moves
``experiments/<name>`` aside: BasicSR's ``PerceptualLoss`` (``VGG_PRETRAIN_PATH`` or torchvision's VGG file in torch
hub's cache, fetched there when missing), our ``LPIPSLoss`` (VGG16 + LPIPS heads) and ``AESOPLoss`` (the AE).

No network is used: ``torch.hub.download_url_to_file`` is replaced by a fake that fails as offline (after writing
part of the file, as a dropped connection does) or writes a stand-in file. The stand-in VGG files have the real
names and shapes but hold one number per tensor (expanded views: a few KB on disk).
"""
import os
import sys
import urllib.error

import pytest
import torch

from basicsr_ext.preflight import check_before_folders, check_loss_weights
from basicsr_ext.utils.checkpoint import CheckpointError
from basicsr_ext.utils.options import OptionError
from tests import harness
from tests.test_untrusted import stock

NAME = 'keep'
VGG19 = 'vgg19-dcbb9e9d.pth'
VGG19_URL = f'https://download.pytorch.org/models/{VGG19}'
PERCEPTUAL = {'type': 'PerceptualLoss', 'layer_weights': {'conv1_2': 1.0}, 'vgg_type': 'vgg19',
              'perceptual_weight': 1.0, 'style_weight': 0}


class Reached(Exception):
    """Raised in place of ``make_exp_dirs``: the launch got past every check."""


def _shaped_state(module_fn, value=0.01, first=None):
    """The state dict of ``module_fn()`` (built on the meta device) with every tensor one number, expanded."""
    with torch.device('meta'):
        ref = module_fn().state_dict()
    out = {k: torch.full((1, ), value).expand(v.shape) for k, v in ref.items()}
    if first is not None:
        k = next(iter(out))
        out[k] = torch.full((1, ), first).expand(ref[k].shape)
    return out


def _vgg19_state(**kw):
    import torchvision.models
    return _shaped_state(lambda: torchvision.models.vgg19(weights=None), **kw)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A working directory and TORCH_HOME of their own, an existing experiment, a recording download (offline
    unless ``env['serve']`` maps a URL to the state to write) and ``make_exp_dirs`` replaced by :class:`Reached`."""
    import basicsr.train
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    state = {'calls': [], 'serve': {}, 'hub': tmp_path / 'torch_home' / 'hub' / 'checkpoints', 'tmp': tmp_path}

    def download(url, dst, *args, **kwargs):
        final = os.path.join(str(state['hub']), os.path.basename(url))
        state['calls'].append((url, os.path.dirname(dst), os.path.basename(dst), os.path.exists(final)))
        if url not in state['serve']:
            with open(dst, 'wb') as f:
                f.write(b'PK\x03\x04 the first bytes of a file')  # a connection dropped mid-file
            raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
        torch.save(state['serve'][url], dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)

    def reached(opt):
        raise Reached(opt['path']['experiments_root'])

    monkeypatch.setattr(basicsr.train, 'make_exp_dirs', reached)
    exp = tmp_path / 'experiments' / NAME
    (exp / 'models').mkdir(parents=True)
    (exp / 'models' / 'net_g_100.pth').write_bytes(b'earlier weights')
    state['before'] = _snapshot(exp)
    return state


def _snapshot(root):
    return sorted((os.path.relpath(os.path.join(d, f), root), os.path.getsize(os.path.join(d, f)))
                  for d, _, files in os.walk(root) for f in files)


def _launch(env, monkeypatch, **train):
    """BasicSR's own train_pipeline on a stock SRModel whose ``train:`` gets ``train``."""
    from basicsr.train import train_pipeline
    data = harness.make_paired_folders(str(env['tmp'] / 'data'), n=2, size=64)
    opt = stock.sr_options(data, NAME)
    opt['train'].update(train)
    path = harness.write_options(str(env['tmp'] / 'o.yml'), opt)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', path])
    train_pipeline(str(env['tmp']))


def _assert_untouched(env):
    assert _snapshot(env['tmp'] / 'experiments' / NAME) == env['before'], 'the experiment folder was touched'
    assert set(os.listdir(env['tmp'] / 'experiments')) <= {NAME, 'pretrained_models'}  # nothing archived
    assert not (env['tmp'] / 'tb_logger').exists()


def test_vgg_missing_offline_is_one_line_before_any_folder(env, monkeypatch):
    from basicsr.archs.vgg_arch import VGG_PRETRAIN_PATH
    with pytest.raises(CheckpointError) as e:
        _launch(env, monkeypatch, perceptual_opt=dict(PERCEPTUAL))
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith(f'{env["tmp"] / "o.yml"}, train:perceptual_opt (PerceptualLoss): ')
    assert f'weights file {VGG19} is not on disk and could not be downloaded from {VGG19_URL}' in msg, msg
    assert f'put {VGG19} in {env["hub"]}' in msg and os.path.abspath(VGG_PRETRAIN_PATH) in msg, msg
    _assert_untouched(env)
    # the download went to a hidden temporary name in the hub folder; the part written is gone with it
    assert [(c[0], c[1]) for c in env['calls']] == [(VGG19_URL, str(env['hub']))]
    assert env['calls'][0][2].startswith(f'.{VGG19}.') and env['calls'][0][2].endswith('.tmp')
    assert os.listdir(env['hub']) == []


def test_vgg_fetched_atomically_then_the_launch_goes_on(env, monkeypatch):
    env['serve'][VGG19_URL] = _vgg19_state()
    with pytest.raises(Reached):
        _launch(env, monkeypatch, perceptual_opt=dict(PERCEPTUAL))
    (url, folder, tmp_name, final_existed), = env['calls']
    assert url == VGG19_URL and folder == str(env['hub']) and not final_existed  # written under a temporary name
    assert tmp_name.startswith(f'.{VGG19}.') and tmp_name.endswith('.tmp')
    assert os.listdir(env['hub']) == [VGG19]  # renamed; nothing else left
    got = torch.load(env['hub'] / VGG19, weights_only=True)
    assert got.keys() == env['serve'][VGG19_URL].keys()
    with pytest.raises(Reached):  # a second launch reads the cached file: no download
        _launch(env, monkeypatch, perceptual_opt=dict(PERCEPTUAL))
    assert len(env['calls']) == 1


@pytest.mark.parametrize('case', ['nan', 'payload', 'vgg16_type'])
def test_bad_vgg_file_refused_before_any_folder(env, monkeypatch, case):
    from basicsr.archs.vgg_arch import VGG_PRETRAIN_PATH
    sentinel = env['tmp'] / 'SENTINEL'
    os.makedirs(os.path.dirname(VGG_PRETRAIN_PATH), exist_ok=True)  # under the working directory
    block = dict(PERCEPTUAL)
    if case == 'nan':
        torch.save(_vgg19_state(first=float('nan')), VGG_PRETRAIN_PATH)
        detail = "tensor 'features.0.weight'"
    elif case == 'payload':
        monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
        torch.save({'features.0.weight': torch.zeros(1), 'x': stock.Payload(sentinel)}, VGG_PRETRAIN_PATH)
        detail = 'arbitrary unpickling'
    else:  # BasicSR loads VGG_PRETRAIN_PATH (VGG19) whatever vgg_type says: it would fail at build
        torch.save(_vgg19_state(), VGG_PRETRAIN_PATH)
        block['vgg_type'] = 'vgg16'
        detail = "torchvision's vgg16"
    with pytest.raises(CheckpointError) as e:
        _launch(env, monkeypatch, perceptual_opt=block)
    msg = str(e.value)
    assert '\n' not in msg and 'train:perceptual_opt (PerceptualLoss)' in msg and VGG_PRETRAIN_PATH in msg, msg
    assert detail in msg, msg
    _assert_untouched(env)
    assert env['calls'] == [] and not sentinel.exists()


def test_vgg_pretrain_path_that_fits_is_used_without_download(env, monkeypatch):
    from basicsr.archs.vgg_arch import VGG_PRETRAIN_PATH
    os.makedirs(os.path.dirname(VGG_PRETRAIN_PATH), exist_ok=True)
    torch.save(_vgg19_state(), VGG_PRETRAIN_PATH)
    with pytest.raises(Reached):
        _launch(env, monkeypatch, perceptual_opt=dict(PERCEPTUAL))
    assert env['calls'] == []


@pytest.mark.parametrize('change, pattern', [
    ({'vgg_type': 'vgg91'}, r"vgg_type 'vgg91' is not a VGG BasicSR knows \(did you mean 'vgg19'\?\)"),
    ({'layer_weights': {'conv5_5': 1.0}}, r"layer_weights: unknown vgg19 layer\(s\) 'conv5_5' \(did you mean 'conv5_4'\?\)"),
])
def test_vgg_option_mistakes_named_before_any_file(env, change, pattern):
    opt = {'is_train': True, 'train': {'perceptual_opt': {**PERCEPTUAL, **change}}}
    with pytest.raises(OptionError, match=r'o\.yml, train:perceptual_opt \(PerceptualLoss\): ' + pattern):
        check_loss_weights(opt, 'o.yml')
    assert env['calls'] == []


def _lpips_files():
    from basicsr_ext.losses import vq_loss
    trunk = {f'features.{k}': v for k, v in _shaped_state(vq_loss._vgg16_features).items()}
    with torch.device('meta'):
        lins = vq_loss.LPIPSVGG().lins
    heads = {f'lin{i}.model.1.weight': torch.full((1, ), 0.5).expand(lin.weight.shape) for i, lin in enumerate(lins)}
    return {vq_loss.VGG16_URL: trunk, vq_loss.LPIPS_VGG_URL: heads}


def test_lpips_weights(env):
    from basicsr_ext.losses import vq_loss
    opt = {'is_train': True, 'train': {'perceptual_opt': {'type': 'LPIPSLoss', 'loss_weight': 1.0}}}
    with pytest.raises(vq_loss.LPIPSWeightsMissing) as e:  # download: false (the default): nothing fetched
        check_loss_weights(opt, 'o.yml')
    msg = str(e.value)
    assert msg.startswith('o.yml, train:perceptual_opt (LPIPSLoss): LPIPSLoss(pretrained=True) needs weight files')
    assert vq_loss.VGG16_URL in msg and vq_loss.LPIPS_VGG_URL in msg and str(env['hub']) in msg, msg
    assert env['calls'] == []
    opt['train']['perceptual_opt']['download'] = True  # offline: one line naming the file, its URL, the folders
    with pytest.raises(vq_loss.LPIPSWeightsMissing) as e:
        check_loss_weights(opt, 'o.yml')
    msg = str(e.value)
    assert '\n' not in msg and f'weights file {vq_loss.VGG16_FILE} is not on disk' in msg, msg
    assert vq_loss.VGG16_URL in msg and str(env['hub']) in msg and str(env['hub'].parent / 'pyiqa') in msg, msg
    assert os.listdir(env['hub']) == []
    env['serve'].update(_lpips_files())  # online: both fetched under temporary names, renamed
    check_loss_weights(opt, 'o.yml')
    assert sorted(os.listdir(env['hub'])) == sorted([vq_loss.VGG16_FILE, vq_loss.LPIPS_VGG_FILE])
    assert all(c[2].startswith('.') and c[2].endswith('.tmp') and not c[3] for c in env['calls'][1:])
    heads = env['serve'][vq_loss.LPIPS_VGG_URL]
    heads['lin2.model.1.weight'] = torch.zeros(1, 7, 1, 1)
    torch.save(heads, env['hub'] / vq_loss.LPIPS_VGG_FILE)
    with pytest.raises(CheckpointError, match=r'LPIPS_v0.1_vgg-a78928a0.pth does not fit LPIPS-VGG: .*2.weight'):
        check_loss_weights(opt, 'o.yml')
    opt['train']['perceptual_opt']['pretrained'] = False  # random weights: nothing needed
    check_loss_weights(opt, 'o.yml')


def test_aesop_autoencoder_checkpoint(env, tmp_path):
    block = {'type': 'AESOPLoss', 'loss_weight': 1.0, 'autoencoder_load': {'path': str(tmp_path / 'AE.pth')}}
    opt = {'is_train': True, 'train': {'aesop_opt': block}}
    with pytest.raises(CheckpointError, match=r"o.yml, train:aesop_opt \(AESOPLoss\): AESOP auto-encoder "
                                              r"\(autoencoder_load: path .*AE.pth, key 'params_ema'\): .*not found"):
        check_loss_weights(opt, 'o.yml')
    torch.save({'params_ema': {'w': torch.tensor([1.0, float('inf')])}}, tmp_path / 'AE.pth')
    with pytest.raises(CheckpointError, match=r"AE.pth: tensor 'w' \(2,\) holds non-finite values"):
        check_loss_weights(opt, 'o.yml')
    torch.save({'params_ema': {'w': torch.ones(2)}}, tmp_path / 'AE.pth')
    check_loss_weights(opt, 'o.yml')
    with pytest.raises(CheckpointError, match='autoencoder_load.path is required'):
        check_loss_weights({'is_train': True, 'train': {'aesop_opt': {'type': 'AESOPLoss'}}}, 'o.yml')


def test_losses_are_not_checked_for_testing(env):
    """test.py builds no loss: a missing VGG file does not stop it."""
    opt = {'is_train': False, 'train': {'perceptual_opt': dict(PERCEPTUAL)}}
    check_before_folders(opt, 'o.yml')
    assert env['calls'] == []
