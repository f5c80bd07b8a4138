"""TVQ&RAP archs vs the official code: strict loading of the official key layout (manifests) and golden outputs.

Paper-default nets, synthetic weights from the fill rule (tests/golden_rule.py), the small golden inputs, all
through the public API. Floats within 1e-3 max-abs, code indices identical (tests/data/golden/README in /shared).
"""
import json

import pytest
import torch

from basicsr_ext.archs.patchgan_arch import TVQPatchGANDiscriminator
from basicsr_ext.archs.tvq_arch import TVQTokenizer
from basicsr_ext.archs.tvqrap_arch import OFFICIAL_LAYOUT, OFFICIAL_UNUSED_PREFIXES, TVQRAPNet
from tests.golden_rule import fill, load_golden, manifest_path

TOL = 1e-3


def _manifest(name):
    with open(manifest_path(name)) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def official_sd():
    """fill() of the official CodeFormer manifest (75M values, made once). Every tokenizer key is in it with the
    same shape, and a filled value depends only on key and shape, so the tokenizer's fill is a subset of it."""
    return fill('tvqrap_sr_stage3.json')


@pytest.fixture(scope='module')
def tokenizer_sd(official_sd):
    shapes = _manifest('tvqrap_tokenizer_stage1.json')['tensors']
    assert all(list(official_sd[k].shape) == v for k, v in shapes.items())
    return {k: official_sd[k] for k in shapes}


def _load_strict(net, sd):
    """Strict load, then check that every tensor of ours holds the value from the file."""
    net.load_state_dict(sd, strict=True)
    own = net.state_dict()
    assert set(own) == set(sd)
    for k, v in own.items():
        assert v.dtype == sd[k].dtype, k
        assert torch.equal(v, sd[k]), k
    return net


def _maxabs(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


# ---------------------------------------------------------------------------------------------- tokenizer
@pytest.fixture(scope='module')
def tokenizer_run(tokenizer_sd):
    case = load_golden('tvq_tokenizer')['cases'][0]
    net = _load_strict(TVQTokenizer().eval(), tokenizer_sd)
    with torch.no_grad():
        out = net(case['input_01'], case['lr8_01'])
        out['decoded_01'] = net.decode(indices=out['indices'], structure_latent=out['structure_latent'])
        out['lr8_internal'] = TVQTokenizer.downscale8(case['input_01'])
    return case, out


def test_tokenizer_default_matches_manifest_exactly():
    man = _manifest('tvqrap_tokenizer_stage1.json')
    net = TVQTokenizer()
    own = net.state_dict()
    assert list(own) == list(man['tensors'])  # same keys in the same order
    assert {k: list(v.shape) for k, v in own.items()} == man['tensors']
    assert sum(p.numel() for p in net.parameters()) == man['num_params']


TOKENIZER_FLOATS = {  # golden name -> (our key, map from our [0, 1] view to the official space)
    'structure_latent': ('structure_latent', None),
    'texture_skip_h8': ('texture_skip', None),
    'structure_feature_h8': ('structure_feature', None),
    'texture_feature_h8': ('texture_feature', None),
    'codebook_loss': ('codebook_loss', None),
    'reconstruction': ('reconstruction_raw', None),
    'reconstruction_01': ('reconstruction', None),
    'aux_latent': ('aux_latent', None),
    'aux_reconstruction': ('aux_reconstruction', lambda x: x * 2 - 1),
}


@pytest.mark.parametrize('name', list(TOKENIZER_FLOATS))
def test_tokenizer_golden_float(tokenizer_run, name):
    case, out = tokenizer_run
    key, to_official = TOKENIZER_FLOATS[name]
    ours = out[key] if to_official is None else to_official(out[key])
    assert _maxabs(ours, case[name]) <= TOL


def test_tokenizer_golden_indices(tokenizer_run):
    case, out = tokenizer_run
    assert out['indices'].dtype == torch.int64
    assert torch.equal(out['indices'], case['indices'])


def test_tokenizer_golden_decode_and_area_downscale(tokenizer_run):
    case, out = tokenizer_run
    assert _maxabs(out['decoded_01'], case['reconstruction_01']) <= TOL  # decode(indices, F^L) = forward
    assert _maxabs(out['lr8_internal'], case['lr8_01']) <= 1e-6  # our x8 area downscale = the golden one


# ---------------------------------------------------------------------------------------------- SR net
@pytest.fixture(scope='module')
def sr_run(official_sd):
    case = load_golden('tvqrap_sr')['cases'][0]
    sd, layout = TVQRAPNet.convert_official_state_dict(official_sd)
    assert layout == OFFICIAL_LAYOUT
    net = _load_strict(TVQRAPNet().eval(), sd)
    with torch.no_grad():
        pred = net.predict(case['input_01'])
        sr01 = net(case['input_01'])
    return case, pred, sr01


def test_sr_official_layout_strict_load(official_sd):
    full = official_sd
    sd, layout = TVQRAPNet.convert_official_state_dict(full)
    assert layout == OFFICIAL_LAYOUT
    again, layout2 = TVQRAPNet.convert_official_state_dict(sd)  # our own layout passes unchanged
    assert layout2 is None and list(again) == list(sd)
    dropped = set(full) - set(sd)
    assert dropped and all(k.startswith(OFFICIAL_UNUSED_PREFIXES) for k in dropped)
    assert not any(k.startswith(OFFICIAL_UNUSED_PREFIXES) for k in sd)
    net = TVQRAPNet()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    # anything else that mismatches still fails
    bad = dict(sd)
    bad['idx_pred_layer_low.1.bias'] = torch.zeros(1024)
    with pytest.raises(RuntimeError):
        net.load_state_dict(TVQRAPNet.convert_official_state_dict(bad)[0], strict=True)
    missing = dict(sd)
    missing.pop('exactor.blocks.0.conv1.weight')
    with pytest.raises(RuntimeError):
        net.load_state_dict(TVQRAPNet.convert_official_state_dict(missing)[0], strict=True)


def test_sr_golden_structure_latent_pred(sr_run):
    case, pred, _ = sr_run
    assert _maxabs(pred['structure_latent_pred'], case['structure_latent_pred']) <= TOL


def test_sr_golden_logits(sr_run):
    case, pred, _ = sr_run
    assert pred['logits'].shape == (1, 256, 1024)
    assert _maxabs(pred['logits'], case['logits']) <= TOL


def test_sr_golden_indices(sr_run):
    case, pred, _ = sr_run
    assert torch.equal(pred['logits'].argmax(-1).view(1, 16, 16), case['indices'])


def test_sr_golden_sr(sr_run):
    case, _, sr01 = sr_run
    assert _maxabs(sr01 * 2 - 1, case['sr']) <= TOL


def test_sr_golden_sr_01(sr_run):
    case, _, sr01 = sr_run
    assert _maxabs(sr01, case['sr_01']) <= TOL


# ---------------------------------------------------------------------------------------------- discriminator
def test_discriminator_golden_logit_map():
    case = load_golden('tvq_discriminator')['cases'][0]
    net = _load_strict(TVQPatchGANDiscriminator().eval(), fill('tvqrap_discriminator.json'))
    with torch.no_grad():
        out = net(case['input_01'])
    assert _maxabs(out, case['logit_map']) <= TOL
