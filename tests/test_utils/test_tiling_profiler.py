"""Padding to a multiple, the arch multiple, and the cost profiler's counts."""
import torch

from basicsr_ext.utils.profiler import format_cost_table, profile_network
from basicsr_ext.utils.tiling import arch_multiple, crop_to, pad_to_multiple, tiled_forward


def test_pad_and_crop_roundtrip():
    x = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7)
    y, (h, w) = pad_to_multiple(x, 4)
    assert y.shape[-2:] == (8, 8) and (h, w) == (5, 7)
    assert torch.equal(crop_to(y, h, w), x)
    assert torch.equal(y[0, 0, 5, :7], x[0, 0, 3])  # reflect
    tiny, _ = pad_to_multiple(torch.ones(1, 1, 1, 2), 8)  # too small to reflect: replicate
    assert tiny.shape[-2:] == (8, 8) and torch.all(tiny == 1)
    same, _ = pad_to_multiple(x, 1)
    assert same is x


def test_tiles_of_identity_are_exact_and_sizes_odd():
    x = torch.rand(2, 3, 45, 70)
    up = torch.nn.Upsample(scale_factor=3, mode='nearest')
    y = tiled_forward(up, x, 3, tile=16, overlap=6, multiple=4)
    assert y.shape == (2, 3, 135, 210)
    assert torch.allclose(y, up(x), atol=1e-6)


def test_arch_multiple_reads_the_arch():
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from basicsr.archs.swinir_arch import SwinIR
    assert arch_multiple(RRDBNet(3, 3, num_feat=4, num_block=1, num_grow_ch=4, scale=2)) == 2
    assert arch_multiple(RRDBNet(3, 3, num_feat=4, num_block=1, num_grow_ch=4, scale=4)) == 1
    swin = SwinIR(upscale=2, img_size=16, window_size=8, embed_dim=12, depths=[1], num_heads=[2],
                  upsampler='pixelshuffledirect')
    assert arch_multiple(swin) == 8
    net = torch.nn.Conv2d(3, 3, 1)
    net.pad_multiple = 32
    assert arch_multiple(net) == 32


def test_profile_counts_macs_params_and_memory():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 12, 3, padding=1), torch.nn.PixelShuffle(2))
    r = profile_network(net, 32, repeats=3, warmup=1)
    assert r['params'] == 3 * 16 * 9 + 16 + 16 * 12 * 9 + 12
    assert r['macs'] == 32 * 32 * 9 * (3 * 16 + 16 * 12)  # conv MACs per output pixel
    assert r['output_shape'] == (1, 3, 64, 64)
    act = 16 * 32 * 32 * 4 / 2**20  # one 16-channel fp32 activation, MB
    assert act < r['peak_mem_mb'] < 10 * act and r['peak_mem_kind'] == 'cpu_live_tensors'
    assert r['latency_ms'] > 0
    table = format_cost_table([dict(r, name='toy')])
    assert '| toy | 32x32 | 0.002 | 0.002 |' in table
