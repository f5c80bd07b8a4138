"""The one test path of the engine serves our five models: each model's validation, untiled and with
``val.tile_size`` tiles, through ``model.validation`` (metrics included).

AESOP family (AESOPAutoEncoderModel, AESOPESRGANModel, AESOPRealESRGANModel: convolutional, local receptive field):
tiled and untiled outputs agree to >= 45 dB PSNR, on tiny nets re-initialised so that their output depends on the
input (checked: another photo gives another output).

TVQ family (TVQTokenizerModel, TVQRAPModel): a tile's output depends on the whole tile, by design: GroupNorm
normalises over the whole feature map, and the argmax code of a feature flips under any change of it. On tiny
random nets at test sizes a tiled run differs from an untiled one by design (10-20 dB measured, with a single-code
codebook too), so for them the test checks that validation really runs tile by tile and gives an image of the
untiled size and a finite metric; closeness needs large tiles of a trained net (the official 768 / 80).
"""
import copy
import math
import os

import numpy as np
import pytest
import skimage.data
import torch
from basicsr.models import build_model

from tests.harness import ROOT, load_options

QUICK = load_options(os.path.join(ROOT, 'options', 'quickstart', 'tvqrap_rap.yml'))
TINY_AE = {'type': 'AESOPAutoEncoder', 'num_feat': 16, 'num_block': 1, 'num_grow_ch': 4,
           'dec_opt': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                       'num_grow_ch': 4}}
TINY_RRDB = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4,
             'scale': 4}
#: model type, network, the batch key the network reads, input side, tile, overlap (input pixels)
CASES = {
    'AESOPAutoEncoderModel': (TINY_AE, 'gt', 256, 128, 64),  # receptive field: two RRDBs at H/4
    'AESOPESRGANModel': (TINY_RRDB, 'lq', 64, 32, 16),
    'AESOPRealESRGANModel': (TINY_RRDB, 'lq', 64, 32, 16),
    'TVQTokenizerModel': (QUICK['network_tok'], 'gt', 256, 128, 64),
    'TVQRAPModel': (QUICK['network_g'], 'lq', 64, 32, 16),
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


def validate(model, key: str, x: torch.Tensor, tile: int = 0, overlap: int = 0) -> tuple[torch.Tensor, int, float]:
    """``model.validation`` on one image; returns (output, network calls, PSNR metric)."""
    model.opt['val'].update(tile_size=tile, tile_overlap=overlap)
    outputs, calls = [], []
    set_output, net_forward = model.set_test_output, model.net_forward
    model.set_test_output = lambda out: set_output(out) or outputs.append(model.output.clone())
    model.net_forward = lambda net, t: calls.append(tuple(t.shape)) or net_forward(net, t)
    model.validation(Loader([batch(key, x)]), 1, None, save_img=False)
    del model.set_test_output, model.net_forward
    return outputs[0], len(calls), model.metric_results['psnr']


@pytest.mark.parametrize('model_type', list(CASES))
def test_validation_tiled_and_untiled(model_type):
    net, key, side, tile, overlap = CASES[model_type]
    opt = {'name': 'tiles', 'model_type': model_type, 'is_train': False, 'dist': False, 'rank': 0, 'world_size': 1,
           'num_gpu': 0, 'scale': 4, 'network_g': copy.deepcopy(net), 'path': {},
           'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}}}
    model = build_model(opt)
    if model_type in LOCAL:
        he_init(model.get_bare_model(model.net_g))
    x = photo(side)
    whole, n_whole, metric_whole = validate(model, key, x)
    tiled, n_tiled, metric_tiled = validate(model, key, x, tile, overlap)
    scale = 1 if key == 'gt' else 4
    assert whole.shape == tiled.shape == (1, 3, side * scale, side * scale)
    assert n_whole == 1 and n_tiled >= 4  # really tile by tile
    assert math.isfinite(metric_whole) and math.isfinite(metric_tiled)
    if model_type in LOCAL:
        other, _, _ = validate(model, key, photo(side, 'coffee'))
        assert psnr(whole, other) < 30  # the net sees its input: the agreement below means something
        assert psnr(whole, tiled) >= 45, f'{model_type}: tiled vs untiled {psnr(whole, tiled):.1f} dB'
