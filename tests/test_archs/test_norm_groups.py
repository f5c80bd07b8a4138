"""``norm_groups``: every GroupNorm of the TVQ archs follows it; 32 (official) stays the default; the state dict
does not depend on it; a reduced 32-channel decoder with 32 groups cannot pass an image's mean colour to its
output, with 8 groups it can (issue "training that visibly works", cause measured in shared/notes)."""
import pytest
import torch
from torch import nn

from basicsr_ext.archs.tvq_arch import TVQTokenizer, build_decoder
from basicsr_ext.archs.tvq_blocks import ChannelAffine
from basicsr_ext.archs.tvqrap_arch import TVQRAPNet
from tests.test_archs.tvq_tiny import TINY_TOKENIZER

QUICK = dict(enc_ch=[32] * 5, latent_mid_ch=[32, 32], structure_ch=32, struct_mid_ch=32, emb_dim=32,
             codebook_size=64, dec_ch=[32, 32, 32], aux_ch=[32, 32], enc_depths=[1, 1], gen_depth=1, num_heads=2,
             window_size=4, img_size=64)
QUICK_SR = dict(lq_ch=[32, 32], emb_dim=32, low_ch=32, structure_ch=32, struct_mid_ch=32, dec_ch=[32, 32, 32],
                codebook_size=64, lq_depths=[1], fuse_depth=1, ft_depths=[1], gen_depth=1, num_heads=2, window_size=4,
                img_size=16)


def _groups(net: nn.Module) -> set[int]:
    return {m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm)}


def test_default_is_the_official_32_groups():
    assert _groups(TVQTokenizer(**TINY_TOKENIZER)) == {32}


@pytest.mark.parametrize('groups', [1, 8, 16])
def test_every_groupnorm_follows_norm_groups_and_the_state_dict_is_unchanged(groups):
    ref = TVQTokenizer(**QUICK)
    tok = TVQTokenizer(**QUICK, norm_groups=groups)
    assert _groups(tok) == {groups} and tok.norm_groups == groups
    assert {k: v.shape for k, v in tok.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    sr = TVQRAPNet(**QUICK_SR, norm_groups=groups)
    assert _groups(sr) == {groups}
    sr.load_tokenizer(tok.state_dict(), None)  # same subtrees whatever the groups


def test_zero_groups_replace_every_groupnorm_by_a_channel_affine_with_the_same_keys():
    """``norm_groups: 0``: no GroupNorm left, one ChannelAffine per GroupNorm of the official layout; the state dict
    keeps every key and shape (so the stages share checkpoints as with any group count); it starts as the identity
    and stays per-channel (no statistic of the image is taken)."""
    ref, tok = TVQTokenizer(**QUICK), TVQTokenizer(**QUICK, norm_groups=0)
    assert _groups(tok) == set()
    n_gn = sum(isinstance(m, nn.GroupNorm) for m in ref.modules())
    assert sum(isinstance(m, ChannelAffine) for m in tok.modules()) == n_gn > 0
    assert {k: v.shape for k, v in tok.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    tok.load_state_dict(ref.state_dict())
    norm = ChannelAffine(4)
    x = torch.randn(2, 4, 3, 3) * 5 + 7
    assert torch.equal(norm(x), x)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1., 2., 3., 4.]))
        norm.bias.fill_(1.)
    assert torch.allclose(norm(x), x * torch.tensor([1., 2., 3., 4.]).view(1, 4, 1, 1) + 1)
    assert torch.allclose(norm(x[:1]), norm(x)[:1])  # per sample: no batch or image statistic
    sr = TVQRAPNet(**QUICK_SR, norm_groups=0)
    assert _groups(sr) == set()
    sr.load_tokenizer(tok.state_dict(), None)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('shape', [(2, 16, 8, 8), (1, 8, 4, 6), (3, 16, 3, 3), (2, 32, 4, 4)])
def test_channel_affine_row_tiled_path_computes_the_same_values_and_gradients(shape, dtype):
    """bf16 channels_last with fewer than 32 channels takes the row-tiled layout (speed only): the same products,
    bit for bit, forward and backward, and the output stays channels_last; fp32, 32 channels and shapes whose pixel
    count the tile does not divide (3x16x3x3) keep the broadcast."""
    torch.manual_seed(0)
    norm = ChannelAffine(shape[1])
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
    x0 = torch.randn(shape).to(dtype)
    outs = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        norm.zero_grad()
        x = x0.clone(memory_format=fmt).requires_grad_()
        y = norm(x)
        assert y.dtype == dtype and y.is_contiguous(memory_format=fmt)
        (y.float() * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
        outs.append((y.detach().contiguous(), x.grad.contiguous(), norm.weight.grad.clone(), norm.bias.grad.clone()))
    ref_y = torch.addcmul(norm.bias.to(dtype).view(1, -1, 1, 1), x0, norm.weight.to(dtype).view(1, -1, 1, 1))
    assert torch.equal(outs[0][0], ref_y) and torch.equal(outs[1][0], ref_y)
    assert torch.equal(outs[0][1], outs[1][1])
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    for a, b in zip(outs[0][2:], outs[1][2:]):  # parameter grads: the same sums, in another order
        torch.testing.assert_close(a, b, **tol)


def test_a_group_count_that_does_not_divide_a_width_is_refused():
    with pytest.raises(ValueError, match='norm_groups'):
        TVQTokenizer(**QUICK, norm_groups=5)
    with pytest.raises(ValueError, match='norm_groups'):
        TVQTokenizer(**QUICK, norm_groups=-1)


def test_with_one_channel_per_group_the_mean_colour_cannot_reach_the_output():
    """Decoder GN -> conv: with 32 groups on 32 channels each channel is normalised to zero mean per image, so the
    output's mean colour is (up to border effects) the same for every input; with 8 groups it follows the input."""
    torch.manual_seed(0)
    spread = {}
    for groups in (32, 8):
        dec = build_decoder(32, [32, 32, 32], 64, num_heads=2, window_size=4, depth=1, norm_groups=groups).eval()
        z = torch.randn(6, 32, 8, 8) + torch.linspace(-3, 3, 6).view(6, 1, 1, 1) * torch.randn(1, 32, 1, 1)
        with torch.no_grad():
            means = dec(z).mean(dim=(2, 3))  # (6, 3) mean colour per image
        spread[groups] = means.std(dim=0).mean().item()
    assert spread[8] > 5 * spread[32], spread


def test_quantizer_defaults_are_official_and_small_scale_options_apply():
    """commit_weight 1 / beta 0.25 / init +-1/K by default (golden-safe); the reduced options change exactly the
    commitment term and the initial codebook range."""
    torch.manual_seed(0)
    tok = TVQTokenizer(**QUICK)
    assert tok.quantize.commit_weight == 1.0 and tok.quantize.beta == 0.25
    assert tok.quantize.embedding.weight.abs().max() <= 1 / 64
    small = TVQTokenizer(**QUICK, beta=1.0, commit_weight=0.0, codebook_init_scale=0.5)
    w = small.quantize.embedding.weight
    assert 0.4 < w.abs().max().item() <= 0.5
    z = torch.randn(2, 32, 4, 4, requires_grad=True)
    _, loss, _ = small.quantize(z)
    loss.backward()
    # no commitment term: the codebook loss sends no gradient into the texture feature
    assert z.grad is None or torch.count_nonzero(z.grad) == 0
    z2 = torch.randn(2, 32, 4, 4, requires_grad=True)
    _, loss2, _ = tok.quantize(z2)
    loss2.backward()
    assert torch.count_nonzero(z2.grad) > 0
