"""Every user path for the released weights, fed checkpoints written in the released layout (issue 9, items 3-5).

A "released" file here is ``{'params_ema': fill(manifest)}`` (tests/golden_rule.py): the official key names and
shapes with the synthetic values for which the official code produced tests/data/golden. Paths covered:

1. ``options/test_tvqrap.yml`` and ``options/test_aesop_autoencoder.yml`` -> BasicSR ``build_model`` (options
   prepared by ``parse_options`` as ``basicsr_ext/test.py`` does) -> net_g / the model's test() give the golden
   outputs; the AESOP generator test options and the CLI ``--opt`` load the released RRDBNet / SwinIR layouts.
2. The AESOP loss block of ``options/train_aesop_rrdb.yml`` (``autoencoder_load: {path, key}``); the tokenizer
   checkpoint of stages II/III (``path.pretrain_network_tok`` -> ``net_tok``, ``network_g.tokenizer_path``).
3. The inference CLI ``--arch TVQRAPNet --weights <released file>`` on PNG inputs, one log line for the layout.
4. Variants of released files: ``params`` only, trimmed of the unused CodeFormer subtrees (accepted); a missing
   or unknown key, a wrong shape, a truncated file, a pickle payload (refused, naming the file and the keys).

Floats within 1e-3 of the golden tensors, code indices identical (golden README). The paper-size state dicts and
files are made once per module (the SR file is ~300 MB); the refusal cases use tiny nets of the same classes.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models import build_model

from basicsr_ext.archs.aesop_arch import AESOPAutoEncoder
from basicsr_ext.archs.tvq_arch import TVQTokenizer
from basicsr_ext.archs.tvqrap_arch import (
    OFFICIAL_LAYOUT,
    OFFICIAL_UNUSED_PREFIXES,
    TOKENIZER_PREFIXES,
    TVQRAPNet,
)
from basicsr_ext.losses.aesop_loss import load_frozen_autoencoder
from basicsr_ext.utils.checkpoint import CheckpointError, atomic_save, load_weights_into
from basicsr_ext.utils.image_io import read_image, write_image_atomic
from basicsr_ext.utils.options import load_option_file, parse_options
from tests.golden_rule import checksum, fill, load_golden, manifest_path
from tests.harness import write_options
from tests.test_archs.tvq_tiny import TINY_SR, TINY_TOKENIZER

TOL = 1e-3
ROOT = pathlib.Path(__file__).resolve().parents[2]
OPTIONS = ROOT / 'options'
TVQRAP_TEST_OPT = OPTIONS / 'test_tvqrap.yml'
AE_TEST_OPT = OPTIONS / 'test_aesop_autoencoder.yml'
AESOP_TRAIN_OPT = OPTIONS / 'train_aesop_rrdb.yml'
# the released file names (README "Using the released weights")
SR_FILE, TOK_FILE, AE_FILE = 'tvqrap_sr_stage3_model.pth', 'tvqrap_tok_model.pth', 'AE_RRDBdecoder_100K.pth'


class ListHandler(logging.Handler):
    """Collects log messages (BasicSR's root logger and the CLI logger)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return (a.float() - b.float()).abs().max().item()


def _layout_lines(messages: list[str]) -> list[str]:
    return [m for m in messages if 'recognised' in m]


def _mismatch_lines(messages: list[str]) -> list[str]:
    return [m for m in messages if any(w in m for w in ('missing keys', 'unexpected keys', 'skip ', 'different'))]


# ------------------------------------------------------------------------------------------------ released files
@pytest.fixture(scope='module')
def released(tmp_path_factory):
    """The three released files (official layout, key ``params_ema``), written once; removed afterwards."""
    folder = tmp_path_factory.mktemp('pretrained_models')
    sr_sd = fill('tvqrap_sr_stage3')
    with open(manifest_path('tvqrap_tokenizer_stage1')) as f:
        tok_keys = json.load(f)['tensors']
    # a filled value depends only on key and shape, and every tokenizer key is in the CodeFormer manifest with the
    # same shape: the subset *is* fill('tvqrap_tokenizer_stage1') (checked against the golden checksum below)
    tok_sd = {k: sr_sd[k] for k in tok_keys}
    assert all(list(tok_sd[k].shape) == s for k, s in tok_keys.items())
    ae_sd = fill('aesop_autoencoder_rrdbnet')
    ns = SimpleNamespace(dir=folder, sr_sd=sr_sd, tok_sd=tok_sd, ae_sd=ae_sd,
                         sr=str(folder / SR_FILE), tok=str(folder / TOK_FILE), ae=str(folder / AE_FILE))
    atomic_save({'params_ema': sr_sd}, ns.sr)
    atomic_save({'params_ema': tok_sd}, ns.tok)
    atomic_save({'params_ema': ae_sd}, ns.ae)
    yield ns
    shutil.rmtree(folder, ignore_errors=True)


def test_released_files_hold_the_golden_weights(released):
    assert checksum(released.tok_sd) == pytest.approx(load_golden('tvq_tokenizer')['weights_checksum'], abs=1e-6)
    assert checksum(released.sr_sd) == pytest.approx(load_golden('tvqrap_sr')['weights_checksum'], abs=1e-6)
    assert checksum(released.ae_sd) == pytest.approx(load_golden('aesop_ae')['weights_checksum'], abs=1e-6)


def _parsed_test_options(opt: dict, root: pathlib.Path) -> dict:
    """Write ``opt`` to a YAML file and prepare it with ``parse_options`` exactly as ``basicsr_ext/test.py``."""
    root.mkdir(parents=True, exist_ok=True)
    path = write_options(str(root / 'opt.yml'), opt)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, 'argv', ['test.py', '-opt', path])
        parsed, _ = parse_options(str(root), is_train=False)
    assert parsed['is_train'] is False and parsed['dist'] is False and parsed['rank'] == 0
    assert parsed['path']['results_root'] == str(root / 'results' / parsed['name'])
    return parsed


def _build_model_logged(opt: dict):
    from basicsr.utils import get_root_logger
    logger = get_root_logger()
    handler, level = ListHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # as test_pipeline's get_root_logger(log_file=...) does
    try:
        model = build_model(opt)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return model, handler.messages


# ------------------------------------------------------------------------------------------------ 1. test options
@pytest.fixture(scope='module')
def tvqrap_model(released, tmp_path_factory):
    """options/test_tvqrap.yml with the released SR file as net_g and the released tokenizer as net_tok."""
    opt = load_option_file(str(TVQRAP_TEST_OPT))
    assert opt['model_type'] == 'TVQRAPModel' and opt['network_g']['type'] == 'TVQRAPNet'
    opt['path'].update(pretrain_network_g=released.sr, param_key_g='params_ema', strict_load_g=True)
    # stages II/III read the tokenizer through path.pretrain_network_tok; the test config may carry it (index_acc)
    opt.setdefault('network_tok', {'type': 'TVQTokenizer'})
    opt['path'].update(pretrain_network_tok=released.tok, tok_param_key='params_ema')
    model, messages = _build_model_logged(_parsed_test_options(opt, tmp_path_factory.mktemp('tvqrap_test')))
    return model, messages


def test_tvqrap_test_options_load_the_released_file_with_one_log_line(tvqrap_model, released):
    model, messages = tvqrap_model
    net = model.get_bare_model(model.net_g)
    assert isinstance(net, TVQRAPNet)
    lines = _layout_lines(messages)
    assert len([m for m in lines if OFFICIAL_LAYOUT in m and released.sr in m]) == 1, lines
    assert not _mismatch_lines(messages), _mismatch_lines(messages)
    own = net.state_dict()
    for k, v in own.items():  # every tensor of the net holds the value from the file
        assert torch.equal(v, released.sr_sd[k]), k
    assert all(k.startswith(OFFICIAL_UNUSED_PREFIXES) for k in set(released.sr_sd) - set(own))


@torch.no_grad()
def _unpadded_sr(net: TVQRAPNet, lr01: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """TVQRAPNet.forward without its padding (input sides multiples of 32): (predict dict, indices, SR [0, 1])."""
    pred = net.predict(lr01)
    b, _, h, w = pred['structure_feature'].shape
    indices = pred['logits'].argmax(-1).view(b, h, w)
    return pred, indices, (net.decode_features(pred['structure_feature'], net.quantize.lookup(indices)) + 1) / 2


def test_tvqrap_test_options_reproduce_the_golden_sr(tvqrap_model):
    """net_g (and net_g_ema if any) of the test options on the golden LR: indices identical, SR within 1e-3.

    Through ``predict`` + argmax lookup + decoder, i.e. ``forward`` without its padding: test_tvqrap.yml sets
    ``pad_multiple: 64`` (the official test script's padding), which turns this 32x32 input into a 64x64 one
    (another computation than the golden one); the CLI test below runs the whole ``forward`` (pad 32 = none).
    """
    model, _ = tvqrap_model
    case = load_golden('tvqrap_sr')['cases'][0]
    for wrapped in [model.net_g] + ([model.net_g_ema] if hasattr(model, 'net_g_ema') else []):
        net = model.get_bare_model(wrapped).eval()
        pred, indices, sr01 = _unpadded_sr(net, case['input_01'])
        assert torch.equal(indices, case['indices'])
        assert _maxabs(pred['logits'], case['logits']) <= TOL
        assert _maxabs(pred['structure_latent_pred'], case['structure_latent_pred']) <= TOL
        assert _maxabs(sr01, case['sr_01']) <= TOL


@pytest.fixture(scope='module')
def ae_model(released, tmp_path_factory):
    opt = load_option_file(str(AE_TEST_OPT))
    assert opt['model_type'] == 'AESOPAutoEncoderModel' and opt['network_g']['type'] == 'AESOPAutoEncoder'
    opt['path'].update(pretrain_network_g=released.ae, param_key_g='params_ema', strict_load_g=True)
    return _build_model_logged(_parsed_test_options(opt, tmp_path_factory.mktemp('ae_test')))


def test_aesop_autoencoder_test_options_reproduce_the_golden_outputs(ae_model, released):
    model, messages = ae_model
    net = model.get_bare_model(model.net_g)
    assert isinstance(net, AESOPAutoEncoder)
    assert not _mismatch_lines(messages), _mismatch_lines(messages)
    for k, v in net.state_dict().items():
        assert torch.equal(v, released.ae_sd[k]), k
    case = load_golden('aesop_ae')['cases'][0]
    model.feed_data({'gt': case['input']})
    model.test()
    assert _maxabs(model.output, case['reconstruction']) <= TOL
    assert _maxabs(model.bottleneck, case['bottleneck']) <= TOL


@pytest.mark.parametrize('yml, manifest, released_name', [
    ('test_aesop_rrdb.yml', 'aesop_rrdbnet_generator', 'AESOP_RRDB128_290K.pth'),
    ('test_aesop_swinir.yml', 'aesop_swinir_m_x4_generator', 'AESOP_SwinIR256_190K.pth')])
def test_aesop_generator_test_options_load_the_released_layout(yml, manifest, released_name, released, tmp_path,
                                                               capsys):
    """The AESOP generators are BasicSR's RRDBNet / SwinIR: the test options and the CLI ``--opt`` load a file in
    the released layout strictly (every tensor filled; no golden needed, BasicSR's forward is the official one)."""
    sd = fill(manifest)
    path = str(released.dir / released_name)  # big files live in the module folder (removed at the end)
    atomic_save({'params_ema': sd}, path)
    opt = load_option_file(str(OPTIONS / yml))
    assert opt['path']['param_key_g'] == 'params_ema' and opt['path'].get('strict_load_g', True) is True
    opt['path']['pretrain_network_g'] = path
    model, messages = _build_model_logged(_parsed_test_options(opt, tmp_path / 'root'))
    assert not _mismatch_lines(messages), _mismatch_lines(messages)
    own = model.get_bare_model(model.net_g).state_dict()
    assert set(own) == set(sd)
    for k, v in own.items():
        assert torch.equal(v, sd[k]), k
    from basicsr_ext import infer
    write_image_atomic(str(tmp_path / 'lr.png'), np.random.default_rng(0).random((12, 20, 3)), bit_depth=8)
    capsys.readouterr()
    rc = infer.main(['-i', str(tmp_path / 'lr.png'), '-o', str(tmp_path / 'sr'), '--opt', str(OPTIONS / yml),
                     '--weights', path, '--device', 'cpu', '--no-progress'])
    err = capsys.readouterr().err
    assert rc == 0 and not _mismatch_lines(err.splitlines()), err
    out, _ = read_image(str(tmp_path / 'sr' / 'lr_out.png'))
    assert out.shape == (48, 80, 3)


# ------------------------------------------------------------------------------------------------ 2. loss / tokenizer
def test_aesop_loss_autoencoder_load_reproduces_the_golden_ae(released):
    """train.aesop_opt of options/train_aesop_rrdb.yml with autoencoder_load.path -> the released AE file."""
    loss_opt = dict(load_option_file(str(AESOP_TRAIN_OPT))['train']['aesop_opt'])
    assert loss_opt['autoencoder_load']['key'] == 'params_ema'
    loss_opt['autoencoder_load'] = dict(loss_opt['autoencoder_load'], path=released.ae)
    loss = build_loss(loss_opt)
    ae = loss.autoencoder
    assert not ae.training and not any(p.requires_grad for p in ae.parameters())
    case = load_golden('aesop_ae')['cases'][0]
    with torch.no_grad():
        rec, z = ae(case['input'], return_bottleneck=True)
        value = loss(case['reconstruction'], case['input'])
    assert _maxabs(rec, case['reconstruction']) <= TOL
    assert _maxabs(z, case['bottleneck']) <= TOL
    assert value > 0


def test_pretrain_network_tok_gives_the_golden_tokenizer(tvqrap_model):
    """path.pretrain_network_tok -> the model's frozen net_tok encodes the golden HR as the official code."""
    model, _ = tvqrap_model
    tok = model.net_tok
    assert isinstance(tok, TVQTokenizer) and not tok.training
    case = load_golden('tvq_tokenizer')['cases'][0]
    out = model.tokenizer_targets(case['input_01'])
    assert torch.equal(out['indices'], case['indices'])
    for ours, golden in [('structure_latent', 'structure_latent'), ('texture_skip', 'texture_skip_h8'),
                         ('structure_feature', 'structure_feature_h8'), ('texture_feature', 'texture_feature_h8'),
                         ('codebook_loss', 'codebook_loss')]:
        assert _maxabs(out[ours], case[golden]) <= TOL, ours


def test_tokenizer_path_fills_the_frozen_parts_identically(tvqrap_model, released):
    """network_g.tokenizer_path (stage II from scratch) copies blocks_1/blocks_3/quantize bit for bit; they equal
    the same subtrees of the released SR file (what the model loaded) and of the model's net_tok."""
    model, _ = tvqrap_model
    net = build_network({'type': 'TVQRAPNet', 'tokenizer_path': released.tok, 'tokenizer_param_key': 'params_ema'})
    sd = net.state_dict()
    loaded = model.get_bare_model(model.net_g).state_dict()
    tok_state = model.net_tok.state_dict()
    keys = [k for k in sd if k.startswith(TOKENIZER_PREFIXES)]
    assert keys and all(k in released.tok_sd for k in keys)
    for k in keys:
        assert torch.equal(sd[k], released.tok_sd[k]), k
        assert torch.equal(sd[k], loaded[k]), k
        assert torch.equal(sd[k], tok_state[k]), k


# ------------------------------------------------------------------------------------------------ 3. inference CLI
@pytest.mark.e2e
def test_infer_cli_with_the_released_file(tvqrap_model, released, tmp_path, capsys):
    """``basicsr-ext-infer --arch TVQRAPNet --weights <released file>`` on PNGs of the golden LR.

    16-bit PNG in and out: code indices survive (input error 7.6e-6 << the 4.5e-4 margin), output within
    1e-3 + 1/65535 of the golden sr_01 (clamped, as any image). 8-bit PNG: quantising the *input* to 1/255
    flips some codes (the golden input is not 8-bit), so that output is compared with the same net run in
    process on the 8-bit input, within one 8-bit step + 1e-3.
    """
    from basicsr_ext import infer
    case = load_golden('tvqrap_sr')['cases'][0]
    lr = case['input_01'][0].permute(1, 2, 0).numpy()
    src, out_dir = tmp_path / 'lr', tmp_path / 'sr'
    src.mkdir()
    write_image_atomic(str(src / 'golden16.png'), lr, bit_depth=16)
    write_image_atomic(str(src / 'golden8.png'), lr, bit_depth=8)
    capsys.readouterr()
    rc = infer.main(['-i', str(src), '-o', str(out_dir), '--arch', 'TVQRAPNet', '--weights', released.sr,
                     '--device', 'cpu', '--precision', 'fp32', '--no-progress'])  # not 'auto' (bf16 on AMX)
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = err.splitlines()
    assert len(_layout_lines(lines)) == 1 and OFFICIAL_LAYOUT in _layout_lines(lines)[0], err
    assert released.sr in _layout_lines(lines)[0]
    assert not _mismatch_lines(lines), err

    sr16, info16 = read_image(str(out_dir / 'golden16_out.png'))
    assert info16.bit_depth == 16 and sr16.shape == (128, 128, 3)
    golden = case['sr_01'][0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert np.abs(sr16 - golden).max() <= TOL + 1 / 65535

    sr8, info8 = read_image(str(out_dir / 'golden8_out.png'))
    assert info8.bit_depth == 8 and sr8.shape == (128, 128, 3)
    lr8, _ = read_image(str(src / 'golden8.png'))
    net = tvqrap_model[0].get_bare_model(tvqrap_model[0].net_g)  # same weights (pad_multiple 64 there: no forward)
    ref = _unpadded_sr(net, torch.from_numpy(lr8).permute(2, 0, 1)[None].float())[2]
    ref = ref[0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert np.abs(sr8 - ref).max() <= 1 / 255 + TOL


# ------------------------------------------------------------------------------------------------ 4. variants
def test_params_only_and_trimmed_release_loads_at_paper_size(tvqrap_model, released):
    """A file with only ``params`` and without the unused CodeFormer subtrees: the same weights as the full file."""
    trimmed = {k: v for k, v in released.sr_sd.items() if not k.startswith(OFFICIAL_UNUSED_PREFIXES)}
    path = str(released.dir / 'trimmed_params_only.pth')
    atomic_save({'params': trimmed}, path)
    logger, handler = _logger()
    net = load_weights_into(TVQRAPNet(), path, 'params_ema', True, logger)
    reference = tvqrap_model[0].get_bare_model(tvqrap_model[0].net_g).state_dict()
    for k, v in net.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert not _layout_lines(handler.messages) and not _mismatch_lines(handler.messages)  # nothing to translate


def _logger() -> tuple[logging.Logger, ListHandler]:
    logger = logging.getLogger('tests.official_paths')
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = ListHandler()
    logger.addHandler(handler)
    return logger, handler


TINY_AE = {'num_feat': 16, 'num_block': 1, 'num_grow_ch': 4,
           'dec_opt': {'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4}}
#: tiny nets of the three classes; the AE one holds both copies of the encoder, as the released AE files
TINY_NETS = {'TVQRAPNet': lambda: TVQRAPNet(**TINY_SR), 'TVQTokenizer': lambda: TVQTokenizer(**TINY_TOKENIZER),
             'AESOPAutoEncoder': lambda: AESOPAutoEncoder(**TINY_AE)}


def _tiny(arch: str) -> tuple[torch.nn.Module, dict]:
    """(fresh tiny net, a different tiny state dict in the official layout of ``arch``)."""
    torch.manual_seed(1)
    official = dict(TINY_NETS[arch]().state_dict())
    if arch == 'TVQRAPNet':  # the official CodeFormer also carries the whole tokenizer
        official = dict(TVQTokenizer(**TINY_TOKENIZER).state_dict(), **official)
    official = {k: v.clone() for k, v in official.items()}
    torch.manual_seed(2)
    return TINY_NETS[arch](), official


ARCHS = ['TVQRAPNet', 'TVQTokenizer', 'AESOPAutoEncoder']
#: a real key (used by the forward) to drop / reshape, and an unknown key to add, per arch
REAL_KEY = {'TVQRAPNet': 'exactor.blocks.0.conv1.weight', 'TVQTokenizer': 'quantize.embedding.weight',
            'AESOPAutoEncoder': 'decoder.conv_up1.weight'}
UNKNOWN_KEY = {'TVQRAPNet': 'blocks_fuse.9.weight', 'TVQTokenizer': 'generator.blocks_4.0.weight',
               'AESOPAutoEncoder': 'decoder.conv_up3.weight'}


def _assert_holds(net: torch.nn.Module, official: dict) -> None:
    for k, v in net.state_dict().items():
        assert torch.equal(v, official[k]), k


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('layout', ['params_ema', 'params', 'both'])
def test_released_variants_accepted(arch, layout, tmp_path):
    """``params_ema``, else ``params`` (a file holding only ``params``); with both, ``params_ema`` wins."""
    net, official = _tiny(arch)
    ckpt = {layout: official} if layout != 'both' else {'params': {'junk': torch.zeros(1)}, 'params_ema': official}
    path = str(tmp_path / f'{arch}_{layout}.pth')
    atomic_save(ckpt, path)
    logger, handler = _logger()
    load_weights_into(net, path, 'params_ema', True, logger)
    _assert_holds(net, official)
    layout_lines = _layout_lines(handler.messages)
    assert len(layout_lines) == (1 if arch == 'TVQRAPNet' else 0), handler.messages
    assert not _mismatch_lines(handler.messages)


def test_trimmed_tvqrap_release_loads_and_unused_keys_are_the_documented_ones(tmp_path):
    net, official = _tiny('TVQRAPNet')
    dropped = {k for k in official if k.startswith(OFFICIAL_UNUSED_PREFIXES)}
    assert dropped and dropped == set(official) - set(net.state_dict())
    trimmed = {k: v for k, v in official.items() if k not in dropped}
    path = str(tmp_path / 'trimmed.pth')
    atomic_save({'params_ema': trimmed}, path)
    load_weights_into(net, path, 'params_ema', True)
    _assert_holds(net, official)


class _Payload:
    """Would create ``marker`` when unpickled with weights_only=False."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _bad_file(kind: str, arch: str, official: dict, folder: pathlib.Path) -> tuple[str, list[str]]:
    """Write a damaged release; returns (path, strings the error must contain besides the path)."""
    path = folder / f'{arch}_{kind}.pth'
    sd = dict(official)
    expect: list[str] = []
    if kind == 'missing':
        del sd[REAL_KEY[arch]]
        expect = ['1 missing keys', REAL_KEY[arch]]
    elif kind == 'extra':
        sd[UNKNOWN_KEY[arch]] = torch.zeros(3)
        expect = ['1 unexpected keys', UNKNOWN_KEY[arch]]
    elif kind == 'shape':
        v = sd[REAL_KEY[arch]]
        sd[REAL_KEY[arch]] = torch.zeros(v.shape[0] + 1, *v.shape[1:])
        expect = ['wrong shape', REAL_KEY[arch]]
    if kind in ('missing', 'extra', 'shape'):
        atomic_save({'params_ema': sd}, str(path))
    elif kind == 'truncated':
        good = folder / 'good.pth'
        atomic_save({'params_ema': sd}, str(good))
        data = good.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        expect = ['truncated or corrupt']
    elif kind == 'pickle':
        marker = folder / 'PWNED'
        torch.save({'params_ema': sd, 'meta': _Payload(str(marker))}, str(path))
        expect = ['arbitrary unpickling']
    return str(path), expect


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('kind', ['missing', 'extra', 'shape', 'truncated', 'pickle'])
def test_damaged_releases_refused(arch, kind, tmp_path):
    net, official = _tiny(arch)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    path, expect = _bad_file(kind, arch, official, tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_weights_into(net, path, 'params_ema', True)
    msg = str(err.value)
    assert path in msg, msg
    for s in expect:
        assert s in msg, (s, msg)
    assert not (tmp_path / 'PWNED').exists()  # the payload never ran
    for k, v in net.state_dict().items():  # nothing half-loaded
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize('kind', ['missing', 'shape', 'pickle'])
def test_aesop_loss_and_tokenizer_options_refuse_damaged_files(kind, tmp_path):
    """The two option paths with their own loaders (AESOPLoss autoencoder_load, TVQRAPNet.load_tokenizer)."""
    _, ae_sd = _tiny('AESOPAutoEncoder')
    path, expect = _bad_file(kind, 'AESOPAutoEncoder', ae_sd, tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_frozen_autoencoder(dict(TINY_AE, type='AESOPAutoEncoder'), {'path': path, 'key': 'params_ema'})
    assert path in str(err.value) and all(s in str(err.value) for s in expect), err.value

    _, tok_sd = _tiny('TVQTokenizer')
    tok_sd = dict(tok_sd)
    key = 'generator.blocks_3.0.conv1.weight'
    if kind == 'missing':
        del tok_sd[key]
    elif kind == 'shape':
        tok_sd[key] = torch.zeros(tok_sd[key].shape[0] + 1, *tok_sd[key].shape[1:])
    tok_path = str(tmp_path / f'tok_{kind}.pth')
    if kind == 'pickle':
        torch.save({'params_ema': tok_sd, 'meta': _Payload(str(tmp_path / 'PWNED'))}, tok_path)
    else:
        atomic_save({'params_ema': tok_sd}, tok_path)
    net = TVQRAPNet(**TINY_SR)
    with pytest.raises(CheckpointError) as err:
        net.load_tokenizer(tok_path, 'params_ema')
    assert tok_path in str(err.value)
    if kind != 'pickle':
        assert key in str(err.value)
    assert not (tmp_path / 'PWNED').exists()
