"""``basicsr-ext-infer --tile`` on a GroupNorm net (TVQ&RAP): the tiles share whole-image GroupNorm statistics by
default (``--tile-norm global``), so the tiled image is the untiled one; ``--tile-norm tile`` is the old per-tile run."""
import copy
import math
import os

import numpy as np
import skimage.data
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from basicsr_ext import infer
from tests.harness import ROOT, load_options


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1 / float(((a - b) ** 2).mean()))


def test_tiled_tvqrap_equals_untiled_and_the_memory_estimate_knows():
    opt = copy.deepcopy(load_options(os.path.join(ROOT, 'options', 'quickstart', 'tvqrap_rap.yml'))['network_g'])
    opt['norm_groups'] = 1  # GroupNorm (the quickstart uses none): tile-local statistics must show
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get(opt.pop('type'))(**opt)
    img = skimage.data.astronaut()[100:164, 150:214].astype(np.float32) / 255  # 64 x 64 LR
    whole = infer.Upscaler(net, scale=4, device='cpu')(img)
    tiled = infer.Upscaler(net, scale=4, tile=48, tile_overlap=32, device='cpu')
    independent = infer.Upscaler(net, scale=4, tile=48, tile_overlap=32, device='cpu', tile_norm='tile')
    assert psnr(whole, tiled(img)) >= 45
    assert psnr(whole, independent(img)) < 30
    # lock-step tiles keep every tile's feature maps: estimated as untiled, and the advice is per-tile statistics
    assert tiled.memory_needed(2000, 2000)[1] == whole_maps(net, 2000) > independent.memory_needed(2000, 2000)[1]
    assert '--tile-norm tile' in tiled.tile_advice()
    args = infer.build_parser().parse_args(['-i', 'a.png', '-o', 'out', '--tile', '64', '--tile-norm', 'tile'])
    assert args.tile_norm == 'tile'


def whole_maps(net, side: int) -> int:
    return infer.Upscaler(net, scale=4, device='cpu').memory_needed(side, side)[1]
