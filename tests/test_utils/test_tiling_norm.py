"""Tiled inference of GroupNorm networks with whole-image statistics (``tiled_forward(norm_net=...)``): equal to the
untiled forward once the halo covers the receptive field between two GroupNorms, in every grad / inference /
autocast mode, with the network restored afterwards; a failing tile fails the call and leaves no thread behind."""
import threading

import pytest
import torch
from torch import nn

from basicsr_ext.archs.tvq_blocks import SwinLayers
from basicsr_ext.utils.tiling import tile_layout, tiled_forward, to_feature


def gn_net() -> nn.Module:
    """Conv / GroupNorm / pixel-unshuffle / shifted-window Swin / upsample: every part of the TVQ nets, small."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1), nn.GroupNorm(4, 16), nn.SiLU(), nn.Conv2d(16, 16, 3, 1, 1), nn.GroupNorm(4, 16),
        nn.PixelUnshuffle(2), nn.Conv2d(64, 16, 3, 1, 1), nn.GroupNorm(2, 16),
        SwinLayers(16, (8, 8), [2], num_heads=2, window_size=4),  # shift 0 then 2: masks at the tile borders
        nn.GroupNorm(2, 16), nn.Upsample(scale_factor=4), nn.Conv2d(16, 3, 3, 1, 1)).eval()


def image(h: int = 72, w: int = 88) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(2, 3, h, w) * 2 + torch.linspace(0, 3, w)  # a gradient: per-tile statistics differ


def test_layout_cores_partition_every_feature_map():
    tiles, overlap = tile_layout(72, 88, 40, 16, 8)
    assert overlap == 16 and (tiles[0].rows, tiles[0].cols) == (3, 3)
    for size, feature in ((72, 9), (72, 18), (72, 288)):  # H/8, H/4, 4H
        covered = torch.zeros(feature, dtype=torch.int64)
        for t in (t for t in tiles if t.col == 0):
            y0, y1 = t.box[:2]
            c0, c1 = (to_feature(v, size, feature) for v in t.core[:2])
            assert to_feature(y0, size, feature) <= c0 <= c1 <= to_feature(y1, size, feature)
            covered[c0:c1] += 1
        assert torch.all(covered == 1)


def test_global_norm_tiles_equal_the_untiled_forward():
    net, x = gn_net(), image()
    with torch.no_grad():
        ref = tiled_forward(net, x, 2, multiple=8)
        exact = tiled_forward(net, x, 2, tile=40, overlap=24, multiple=8, norm_net=net)
        independent = tiled_forward(net, x, 2, tile=40, overlap=24, multiple=8)
    assert exact.shape == ref.shape == (2, 3, 144, 176)
    assert torch.allclose(exact, ref, atol=1e-5), float((exact - ref).abs().max())
    assert (independent - ref).abs().max() > 1e-2  # per-tile statistics and drifting edges
    assert all('forward' not in m.__dict__ for m in net.modules())  # the GroupNorms are themselves again


def test_global_norm_under_inference_mode_and_autocast():
    net, x = gn_net(), image()
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
        ref = tiled_forward(net, x, 2, multiple=8).float()
        tiled = tiled_forward(net, x, 2, tile=40, overlap=24, multiple=8, norm_net=net)
    assert tiled.dtype == torch.float32
    assert (tiled - ref).abs().max() < 0.1 * ref.abs().max()  # bf16 rounding, not per-tile statistics


def test_a_failing_tile_fails_the_call_and_restores_the_net():
    net, x = gn_net(), image()
    calls = []

    def fn(t):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError('tile 3 broke')
        return net(t)
    before = threading.active_count()
    with torch.no_grad(), pytest.raises(RuntimeError, match='tile 3 broke'):
        tiled_forward(fn, x, 2, tile=40, overlap=24, multiple=8, norm_net=net)
    assert threading.active_count() == before
    assert all('forward' not in m.__dict__ for m in net.modules())
