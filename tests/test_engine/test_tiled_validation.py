"""The one test path of the engine serves our five models: each model's validation, untiled and with
``val.tile_size`` tiles, through ``model.validation`` (metrics included); tiled and untiled outputs agree to >= 45 dB.

AESOP family (AESOPAutoEncoderModel, AESOPESRGANModel, AESOPRealESRGANModel: convolutional, local receptive field):
tiny nets re-initialised so that their output depends on the input (checked: another photo gives another output).

TVQ family (TVQTokenizerModel, TVQRAPModel): GroupNorm everywhere and a deep H/32 path whose receptive field is far
wider than any tile. With ``val.tile_norm: global`` (the default) the tiles run in lock-step: every GroupNorm takes
the statistics of the whole image and refreshes each tile's halo, so the overlap only has to cover the receptive
field between two GroupNorms (two 3x3 convolutions at H/32: 64 HR px of halo, i.e. an overlap of 128 HR / 32 LR
px). Measured on these tiny random nets: ~115 dB and every code of the tiles' cores identical to the untiled run's;
``val.tile_norm: tile`` (independent tiles, per-tile statistics) gives 10-16 dB on the same tiles.
"""
import copy
import math
import os

import numpy as np
import pytest
import skimage.data
import torch
from basicsr.models import build_model

from basicsr_ext.archs.tvq_arch import TVQTokenizer
from basicsr_ext.utils.options import ConfigError
from basicsr_ext.utils.tiling import arch_multiple, tile_layout, to_feature
from tests.harness import ROOT, load_options

QUICK = load_options(os.path.join(ROOT, 'options', 'quickstart', 'tvqrap_rap.yml'))
for _net in (QUICK['network_tok'], QUICK['network_g']):
    _net['norm_groups'] = 1  # GroupNorm, as the paper-size nets: its image-wide statistics are what tiling must keep
TINY_AE = {'type': 'AESOPAutoEncoder', 'num_feat': 16, 'num_block': 1, 'num_grow_ch': 4,
           'dec_opt': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                       'num_grow_ch': 4}}
TINY_RRDB = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4,
             'scale': 4}
#: model type: network, the batch key the network reads, input side, tile, overlap (input pixels)
CASES = {
    'AESOPAutoEncoderModel': (TINY_AE, 'gt', 256, 128, 64),  # receptive field: two RRDBs at H/4
    'AESOPESRGANModel': (TINY_RRDB, 'lq', 64, 32, 16),
    'AESOPRealESRGANModel': (TINY_RRDB, 'lq', 64, 32, 16),
    'TVQTokenizerModel': (QUICK['network_tok'], 'gt', 320, 256, 128),  # 2x2 tiles of 256 (multiple 64)
    'TVQRAPModel': (QUICK['network_g'], 'lq', 64, 48, 32),  # 2x2 tiles of 48 (multiple 16)
}
LOCAL = ('AESOPAutoEncoderModel', 'AESOPESRGANModel', 'AESOPRealESRGANModel')


def photo(side: int, name: str = 'astronaut') -> torch.Tensor:
    img = getattr(skimage.data, name)()[:side, :side]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None] / 255


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak 1, on the raw outputs (random nets leave [0, 1]; nothing is clamped away)."""
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(1 / mse) if mse else math.inf


def he_init(net: torch.nn.Module) -> None:
    """He-initialised convolutions: with BasicSR's 0.1-scaled RRDB init the output barely depends on the input."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2 / m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.zero_()


class Loader(list):
    def __init__(self, batches, name='tiles'):
        super().__init__(batches)
        self.dataset = type('D', (), {'opt': {'name': name}})()


def batch(key: str, x: torch.Tensor) -> dict:
    if key == 'gt':  # auto-encoders: the GT goes in (the AE also gets its bicubic-like LR reference)
        return {'gt': x, 'lq': torch.nn.functional.interpolate(x, scale_factor=0.25, mode='area'), 'gt_path': ['a.png']}
    return {'lq': x, 'gt': torch.nn.functional.interpolate(x, scale_factor=4, mode='bicubic').clamp(0, 1),
            'lq_path': ['a.png']}


def validate(model, key: str, x: torch.Tensor, tile: int = 0, overlap: int = 0,
             tile_norm: str = 'global') -> tuple[torch.Tensor, int, list, float]:
    """``model.validation`` on one image; returns (output, network calls, the code grid of each call in order (TVQ
    nets; the tiles in lock-step reach the quantiser in tile order), PSNR metric)."""
    model.opt['val'].update(tile_size=tile, tile_overlap=overlap, tile_norm=tile_norm)
    outputs, calls, codes = [], [], []
    set_output, net_forward = model.set_test_output, model.net_forward
    model.set_test_output = lambda out: set_output(out) or outputs.append(model.output.clone())
    model.net_forward = lambda net, t: calls.append(tuple(t.shape)) or net_forward(net, t)
    net = model.get_bare_model(model.net_g)
    hook = None
    if hasattr(net, 'quantize'):  # the tokenizer's nearest codes / the predictor's argmax codes, per call
        def record(module, args, out):
            if isinstance(out, tuple):
                codes.append(out[2].clone())
            else:  # (B, h/2 * w/2, K) logits of TVQRAPNet, tokens row-major
                side = int(math.isqrt(out.shape[1]))
                codes.append(out.argmax(-1).view(out.shape[0], side, side))
        hook = (net.quantize if isinstance(net, TVQTokenizer) else net.idx_pred_layer_low).register_forward_hook(record)
    try:
        model.validation(Loader([batch(key, x)]), 1, None, save_img=False)
    finally:
        del model.set_test_output, model.net_forward
        if hook is not None:
            hook.remove()
    return outputs[0], len(calls), codes, model.metric_results['psnr']


def code_agreement(whole: torch.Tensor, tiles: list, side: int, tile: int, overlap: int, multiple: int) -> float:
    """Fraction of the untiled run's codes that each tile reproduces on its core (the part of the image it owns)."""
    layout, _ = tile_layout(side, side, tile, overlap, multiple)
    assert len(layout) == len(tiles)
    same = total = 0
    g, t = whole.shape[-1], tiles[0].shape[-1]  # code grid of the image and of a tile
    for spec, codes in zip(layout, tiles):
        y0, _, x0, _ = spec.box
        r0, r1, c0, c1 = (to_feature(v, side, g) for v in spec.core)
        oy, ox = to_feature(y0, tile, t), to_feature(x0, tile, t)
        same += int((codes[:, r0 - oy:r1 - oy, c0 - ox:c1 - ox] == whole[:, r0:r1, c0:c1]).sum())
        total += (r1 - r0) * (c1 - c0) * whole.shape[0]
    assert total == whole.numel()  # the cores partition the code grid
    return same / total


@pytest.mark.parametrize('model_type', list(CASES))
def test_validation_tiled_and_untiled(model_type):
    net, key, side, tile, overlap = CASES[model_type]
    opt = {'name': 'tiles', 'model_type': model_type, 'is_train': False, 'dist': False, 'rank': 0, 'world_size': 1,
           'num_gpu': 0, 'scale': 4, 'network_g': copy.deepcopy(net), 'path': {},
           'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}}}
    torch.manual_seed(0)
    model = build_model(opt)
    if model_type in LOCAL:
        he_init(model.get_bare_model(model.net_g))
    x = photo(side)
    whole, n_whole, whole_codes, metric_whole = validate(model, key, x)
    tiled, n_tiled, tiled_codes, metric_tiled = validate(model, key, x, tile, overlap)
    scale = 1 if key == 'gt' else 4
    assert whole.shape == tiled.shape == (1, 3, side * scale, side * scale)
    assert n_whole == 1 and n_tiled >= 4  # really tile by tile
    assert math.isfinite(metric_whole) and math.isfinite(metric_tiled)
    assert psnr(whole, tiled) >= 45, f'{model_type}: tiled vs untiled {psnr(whole, tiled):.1f} dB'
    if model_type in LOCAL:
        other, *_ = validate(model, key, photo(side, 'coffee'))
        assert psnr(whole, other) < 30  # the net sees its input: the agreement above means something
    else:
        multiple = arch_multiple(model.get_bare_model(model.net_g))
        agreement = code_agreement(whole_codes[0], tiled_codes, side, tile, overlap, multiple)
        assert agreement >= 0.99, f'{model_type}: {agreement:.2%} of the codes as untiled'
        if model_type == 'TVQRAPModel':  # per-tile statistics: the lock-step is what makes them agree (17 dB for
            independent, *_ = validate(model, key, x, tile, overlap, tile_norm='tile')  # the tokenizer, 2 s more)
            assert psnr(whole, independent) < 30


def test_tile_norm_is_checked_at_build():
    opt = {'name': 'tiles', 'model_type': 'AESOPESRGANModel', 'is_train': False, 'dist': False, 'rank': 0,
           'world_size': 1, 'num_gpu': 0, 'scale': 4, 'network_g': copy.deepcopy(TINY_RRDB), 'path': {},
           'opt_path': 'x.yml', 'val': {'tile_norm': 'globl'}}
    with pytest.raises(ConfigError, match=r"x.yml: val.tile_norm: 'globl' is not one of global, tile"):
        build_model(opt)
