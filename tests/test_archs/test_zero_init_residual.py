"""``zero_init_residual``: every residual branch of both TVQ archs starts at zero (each ResBlock / Swin block is
the identity, or its 1x1 skip), the state dict keys are unchanged, and the default keeps the official init."""
import torch

from basicsr_ext.archs.tvq_arch import TVQTokenizer
from basicsr_ext.archs.tvq_blocks import ResBlock, SwinBlock
from basicsr_ext.archs.tvqrap_arch import TVQRAPNet

QUICK = dict(enc_ch=[32] * 5, latent_mid_ch=[32, 32], structure_ch=32, struct_mid_ch=32, emb_dim=32, codebook_size=16,
             dec_ch=[32] * 3, aux_ch=[32, 32], enc_depths=[1, 1], gen_depth=1, num_heads=2, window_size=4, img_size=64,
             norm_groups=8)
RAP = dict(lq_ch=[16, 32], emb_dim=32, low_ch=32, structure_ch=32, struct_mid_ch=32, dec_ch=[32] * 3, codebook_size=16,
           lq_depths=[1, 1], fuse_depth=1, ft_depths=[1, 1], gen_depth=1, num_heads=2, window_size=4, img_size=16,
           norm_groups=8)


def _blocks(net):
    return [m for m in net.modules() if isinstance(m, (ResBlock, SwinBlock))]


def test_every_residual_block_is_the_identity_at_init():
    torch.manual_seed(0)
    for net in (TVQTokenizer(**QUICK, zero_init_residual=True), TVQRAPNet(**RAP, zero_init_residual=True)):
        blocks = [m for m in _blocks(net) if isinstance(m, ResBlock) and m.in_channels == m.out_channels]
        assert len(blocks) > 10
        for m in blocks:
            x = torch.randn(1, m.in_channels, 8, 8)
            assert torch.equal(m(x), x)
        swins = [m for m in _blocks(net) if isinstance(m, SwinBlock)]
        assert swins
        for m in swins:
            t = torch.randn(1, 64, m.norm1.normalized_shape[0])
            assert torch.allclose(m(t, (8, 8)), t)


def test_state_dict_unchanged_and_default_is_the_official_init():
    torch.manual_seed(0)
    zero = TVQTokenizer(**QUICK, zero_init_residual=True)
    torch.manual_seed(0)
    default = TVQTokenizer(**QUICK)
    assert list(zero.state_dict()) == list(default.state_dict())
    assert all(m.conv2.weight.abs().sum() > 0 for m in _blocks(default) if isinstance(m, ResBlock))
    # the zero-init tokenizer still reconstructs something that depends on the input (not a constant)
    x = torch.rand(2, 3, 64, 64)
    out = zero(x)['reconstruction']
    assert out.shape == x.shape and (out[0] - out[1]).abs().mean() > 1e-4
