"""TVQTokenizer and the shared blocks (tiny widths): shapes, size checks, quantiser, straight-through, aux AE,
vanilla-VQ switch, Swin masks."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY

from basicsr_ext.archs.tvq_arch import TVQTokenizer, VectorQuantizer
from basicsr_ext.archs.tvq_blocks import (Downsample, ResBlock, SwinBlock, SwinLayers,
                                          shifted_window_mask)
from tests.test_archs.tvq_tiny import TINY_TOKENIZER


@pytest.fixture(scope='module')
def tiny():
    return TVQTokenizer(**TINY_TOKENIZER)


@pytest.mark.parametrize('size', [(64, 64), (128, 64)])
def test_tokenizer_shapes(tiny, size):
    h, w = size
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        out = tiny(x)
    assert out['indices'].shape == (2, h // 8, w // 8) and out['indices'].dtype == torch.int64
    assert out['structure_latent'].shape == (2, 32, h // 32, w // 32)
    assert out['texture_skip'].shape == (2, 64, h // 8, w // 8)
    assert out['structure_feature'].shape == out['texture_feature'].shape == out['quant'].shape == (2, 64, h // 8,
                                                                                                     w // 8)
    assert out['reconstruction'].shape == out['reconstruction_raw'].shape == x.shape
    assert torch.allclose(out['reconstruction'], (out['reconstruction_raw'] + 1) / 2)
    assert out['aux_latent'].shape == (2, 32, h // 32, w // 32)
    assert out['aux_reconstruction'].shape == (2, 3, h // 8, w // 8)
    for k in ('codebook_loss', 'align_loss', 'aux_recon_loss'):
        assert out[k].ndim == 0 and torch.isfinite(out[k])


@pytest.mark.parametrize('size', [(96, 64), (64, 40), (32, 32)])
def test_tokenizer_rejects_bad_sizes(tiny, size):
    with pytest.raises(ValueError, match=rf'{size[0]}x{size[1]}.*multiple of 64'):
        tiny.encode(torch.rand(1, 3, *size))


def test_size_multiple_of_paper_options():
    # H/16 must hold whole 8-pixel windows (TVQ); the vanilla VQ only goes to H/8
    assert TVQTokenizer(enc_depths=(1, 1), gen_depth=1).size_multiple == 128
    assert TVQTokenizer(structure=False, enc_depths=(1, 1), gen_depth=1).size_multiple == 64


def test_registered_and_api(tiny):
    assert ARCH_REGISTRY.get('TVQTokenizer') is TVQTokenizer
    assert tiny.get_last_layer() is tiny.generator.blocks_3[-1].weight
    assert tiny.codebook is tiny.quantize.embedding.weight and tiny.codebook.shape == (64, 64)


def test_decode_matches_forward_and_lookup(tiny):
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = tiny(x)
        codes = tiny.lookup(out['indices'])
        assert torch.allclose(codes, out['quant'], atol=1e-6)
        a = tiny.decode(indices=out['indices'], structure_latent=out['structure_latent'])
        b = tiny.decode(codes=codes, structure_latent=out['structure_latent'])
        s = tiny.structure_path(out['structure_latent'])
        c = (tiny.decode_features(s, codes) + 1) / 2
    assert torch.allclose(a, out['reconstruction'], atol=1e-5)
    assert torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(ValueError):
        tiny.decode(indices=out['indices'])  # TVQ needs F^L


def test_quantizer_nearest_and_loss():
    torch.manual_seed(1)
    vq = VectorQuantizer(codebook_size=16, emb_dim=8, beta=0.25)
    z = torch.randn(2, 8, 3, 5)
    q, loss, idx = vq(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    brute = torch.cdist(flat.double(), vq.embedding.weight.double()).argmin(1).view(2, 3, 5)
    assert torch.equal(idx, brute)
    codes = vq.embedding.weight[idx].permute(0, 3, 1, 2)
    assert torch.allclose(q, codes, atol=1e-6)  # straight-through forward value = the codes
    assert torch.allclose(loss, 1.25 * ((codes - z) ** 2).mean(), rtol=1e-5)
    assert (vq.embedding.weight.abs() <= 1 / 16).all()  # uniform(+-1/K) init


def test_straight_through_and_codebook_gradients(tiny):
    net = TVQTokenizer(**TINY_TOKENIZER)
    x = torch.rand(1, 3, 64, 64)
    out = net(x)
    out['texture_feature'].retain_grad()
    F.mse_loss(out['reconstruction'], x).backward(retain_graph=True)
    enc_grad = net.encoder.blocks[0].weight.grad
    assert enc_grad is not None and enc_grad.abs().sum() > 0  # image loss reaches the encoder through q
    assert net.generator.blocks_2[-1].weight.grad.abs().sum() > 0  # ... and the texture head
    assert net.codebook.grad is None or net.codebook.grad.abs().sum() == 0  # not the codebook
    # straight-through: dL/dT equals dL/dq (identity backward)
    assert out['texture_feature'].grad.abs().sum() > 0
    net.zero_grad(set_to_none=True)
    out['codebook_loss'].backward()
    g = net.codebook.grad
    used = torch.unique(out['indices'])
    assert g is not None and g[used].abs().sum() > 0  # codebook term pulls the used codes
    unused = torch.ones(g.shape[0], dtype=torch.bool)
    unused[used] = False
    assert g[unused].abs().sum() == 0
    assert net.encoder.blocks[0].weight.grad.abs().sum() > 0  # commitment term reaches the encoder


def test_aux_autoencoder_and_align_loss(tiny):
    net = TVQTokenizer(**TINY_TOKENIZER)
    x = torch.rand(1, 3, 64, 64)
    out = net(x)  # lr8 computed internally
    area = cv2.resize(x[0].permute(1, 2, 0).numpy(), (8, 8), interpolation=cv2.INTER_AREA)
    lr8 = torch.from_numpy(np.ascontiguousarray(area)).permute(2, 0, 1)[None]
    assert torch.allclose(TVQTokenizer.downscale8(x), lr8, atol=1e-6)  # = cv2 INTER_AREA
    lr8 = TVQTokenizer.downscale8(x)
    latent, aux_raw = net.aux_forward(lr8)
    assert torch.allclose(out['aux_latent'], latent, atol=1e-5)
    assert torch.allclose(out['align_loss'], ((out['structure_latent'] - latent) ** 2).mean(), rtol=1e-5)
    assert torch.allclose(out['aux_recon_loss'], F.mse_loss(aux_raw, lr8 * 2 - 1), rtol=1e-5)
    out['align_loss'].backward()  # only the HR side is pulled (sg on the aux latent)
    assert net.encoder.blocks[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.lq_encoder.parameters())


def test_vanilla_vq_switch():
    torch.manual_seed(0)
    net = TVQTokenizer(structure=False, **{k: v for k, v in TINY_TOKENIZER.items()})
    assert net.size_multiple == 32  # window 4 at H/8
    assert net.generator.blocks_1 is None and net.lq_encoder is None and net.lq_generator is None
    assert not any(k.startswith(('lq_', 'generator.blocks_1')) for k in net.state_dict())
    x = torch.rand(2, 3, 32, 64)
    out = net(x)
    assert out['structure_latent'] is None and out['structure_feature'] is None and 'align_loss' not in out
    assert out['indices'].shape == (2, 4, 8) and out['reconstruction'].shape == x.shape
    with torch.no_grad():
        # the forward decodes z + (q - z) (straight-through), decode() q itself: equal up to float rounding
        # (measured up to 9e-6 on outputs near 2); a wrong decode path differs by O(0.1)
        assert torch.allclose(net.decode(indices=out['indices']), out['reconstruction'], atol=5e-5)
    with pytest.raises(RuntimeError):
        net.structure_path(torch.rand(1, 32, 1, 1))
    (F.mse_loss(out['reconstruction'], x) + out['codebook_loss']).backward()
    assert net.encoder.blocks[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ blocks
def test_resblock_and_sampling_layers():
    rb = ResBlock(32, 64)
    assert hasattr(rb, 'conv_out') and not hasattr(ResBlock(32), 'conv_out')
    assert rb.norm1.eps == 1e-6 and rb.norm1.num_groups == 32
    assert rb(torch.rand(1, 32, 4, 4)).shape == (1, 64, 4, 4)
    d = Downsample(32)
    assert d.conv.bias is None and Downsample(32, bias=True).conv.bias is not None
    assert d(torch.rand(1, 32, 8, 8)).shape == (1, 64, 4, 4)  # C/2 then unshuffle: 2C at half size


def test_swin_mask_buffer_and_runtime_recompute():
    torch.manual_seed(0)
    layers = SwinLayers(32, (8, 8), [2], num_heads=2, window_size=4)
    b0, b1 = layers.swin_blks[0].residual_group.blocks
    assert b0.shift_size == 0 and b1.shift_size == 2
    sd = layers.state_dict()
    mask_keys = [k for k in sd if k.endswith('attn_mask')]
    assert mask_keys == ['swin_blks.0.residual_group.blocks.1.attn_mask'] and sd[mask_keys[0]].shape == (4, 16, 16)
    assert b1.norm1.eps == 1e-5 and isinstance(b1.mlp.act, torch.nn.GELU) and b1.mlp.act.approximate == 'none'
    # runtime size != construction size: a mask for that size is used (and equals a fresh construction)
    x = torch.rand(1, 32, 16, 8)
    other = SwinLayers(32, (16, 8), [2], num_heads=2, window_size=4)
    other.load_state_dict({k: v for k, v in sd.items() if not k.endswith('attn_mask')}, strict=False)
    with torch.no_grad():
        assert torch.allclose(layers(x), other(x), atol=1e-6)
    assert torch.equal(b1._mask(16, 8, x.device), shifted_window_mask(16, 8, 4, 2))
    with pytest.raises(ValueError, match='multiple of 4'):
        layers(torch.rand(1, 32, 6, 8))


def test_swin_block_matches_explicit_attention():
    """One unshifted block = LN -> per-window softmax(q k^T / sqrt(d) + bias) v -> proj, + residual, + MLP."""
    torch.manual_seed(0)
    blk = SwinBlock(16, (4, 4), num_heads=2, window_size=4, shift_size=0)
    x = torch.randn(1, 16, 16)
    a = blk.attn
    t = blk.norm1(x)
    qkv = a.qkv(t).view(1, 16, 3, 2, 8).permute(2, 0, 3, 1, 4)
    bias = a.relative_position_bias_table[a.relative_position_index.view(-1)].view(16, 16, 2).permute(2, 0, 1)
    att = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) / 8 ** 0.5 + bias, -1)
    y = x + a.proj((att @ qkv[2]).transpose(1, 2).reshape(1, 16, 16))
    y = y + blk.mlp(blk.norm2(y))
    assert torch.allclose(blk(x, (4, 4)), y, atol=1e-5)


def test_pad_to_multiple():
    from basicsr_ext.utils.tiling import pad_to_multiple
    x = torch.arange(12.).view(1, 1, 3, 4)
    y, _ = pad_to_multiple(x, 8)  # pad larger than the image: repeated reflection
    assert y.shape == (1, 1, 8, 8) and torch.equal(y[..., :3, :4], x)
    assert y[0, 0, 3, 0] == x[0, 0, 1, 0]  # reflection
    assert pad_to_multiple(torch.rand(1, 3, 1, 5), 4)[0].shape == (1, 3, 4, 8)
