"""TVQRAPNet (tiny widths): shapes, padding/cropping, STE, frozen parts, tokenizer loading, official layout."""
import pytest
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY

from basicsr_ext.archs.tvq_arch import TVQTokenizer
from basicsr_ext.archs.tvqrap_arch import (OFFICIAL_LAYOUT, OFFICIAL_UNUSED_PREFIXES, TOKENIZER_PREFIXES, TVQRAPNet,
                                           straight_through_codes)
from basicsr_ext.utils.checkpoint import CheckpointError, atomic_save
from tests.test_archs.tvq_tiny import TINY_SR, TINY_TOKENIZER


@pytest.fixture(scope='module')
def tiny():
    return TVQRAPNet(**TINY_SR).eval()


def test_registered_and_frozen_parts(tiny):
    assert ARCH_REGISTRY.get('TVQRAPNet') is TVQRAPNet
    assert tiny.get_last_layer() is tiny.idx_pred_layer_low[1].weight
    assert tiny.idx_pred_layer_low[1].bias is None and tiny.idx_pred_layer_low[0].eps == 1e-5
    assert tiny.codebook is tiny.quantize.embedding.weight
    for name, p in tiny.named_parameters():
        assert p.requires_grad == (not name.startswith(('quantize.', 'generator.'))), name
    assert tiny.generator.blocks_2 is None  # the texture head is not part of the SR net


@pytest.mark.parametrize('size', [(16, 16), (32, 16)])
def test_predict_shapes(tiny, size):
    h, w = size
    with torch.no_grad():
        p = tiny.predict(torch.rand(2, 3, h, w))
    assert p['logits'].shape == (2, (h // 2) * (w // 2), 64)
    assert p['structure_latent_pred'].shape == (2, 32, h // 8, w // 8)
    assert p['structure_feature'].shape == (2, 64, h // 2, w // 2)


@pytest.mark.parametrize('size', [(16, 16), (20, 28), (17, 33), (5, 7), (1, 3)])
def test_forward_any_size_is_exactly_x4(tiny, size):
    h, w = size
    with torch.no_grad():
        y = tiny(torch.rand(1, 3, h, w))
    assert y.shape == (1, 3, 4 * h, 4 * w) and torch.isfinite(y).all()


def test_forward_pads_with_reflection_and_crops(tiny):
    x = torch.rand(1, 3, 20, 12)
    padded = F.pad(x, (0, 4, 0, 12), mode='reflect')
    with torch.no_grad():
        ref = tiny(padded)[..., :80, :48]
        assert torch.equal(tiny(x), ref)
    net64 = TVQRAPNet(pad_multiple=64, **TINY_SR)
    assert net64.pad_multiple == 64 and tiny.pad_multiple == tiny.size_multiple == 16


@pytest.mark.parametrize('size', [(20, 16), (16, 8)])
def test_predict_and_ste_reject_bad_sizes(tiny, size):
    with pytest.raises(ValueError, match=rf'{size[0]}x{size[1]}.*multiple of 16'):
        tiny.predict(torch.rand(1, 3, *size))
    with pytest.raises(ValueError, match='multiple of 16'):
        tiny.forward_ste(torch.rand(1, 3, *size))


def test_row_major_tokens_and_argmax_lookup(tiny):
    x = torch.rand(1, 3, 16, 32)
    with torch.no_grad():
        p = tiny.predict(x)
        out = tiny.forward_ste(x)
        sr = tiny(x)
    idx = p['logits'].argmax(-1)
    assert torch.equal(out['indices'], idx.view(1, 8, 16))  # token n = (n // w, n % w)
    codes = tiny.quantize.lookup(out['indices'])
    hard = tiny.decode_features(p['structure_feature'], codes)
    assert torch.equal(out['sr_raw'], hard)  # STE forward = hard-index decode, exactly
    assert torch.equal(out['sr01'], sr) and torch.equal(sr, (hard + 1) / 2)


def test_straight_through_codes_forward_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)
    cb = torch.randn(7, 3, requires_grad=True)
    z = straight_through_codes(logits, cb)
    assert torch.equal(z, cb.detach()[logits.argmax(-1)])
    w = torch.randn(2, 5, 3)
    (z * w).sum().backward()
    g_ours = logits.grad.clone()
    assert cb.grad is None  # the codebook is never trained through the STE
    logits.grad = None
    soft = logits.softmax(-1)
    hard = F.one_hot(logits.argmax(-1), 7).float()
    ((soft + (hard - soft).detach()) @ cb.detach() * w).sum().backward()  # the spec's literal form
    assert torch.allclose(g_ours, logits.grad, atol=1e-6) and g_ours.abs().sum() > 0


def test_ste_gradients_and_frozen_parts_unchanged():
    net = TVQRAPNet(**TINY_SR).train()
    frozen = {k: v.clone() for k, v in net.state_dict().items() if k.startswith(TOKENIZER_PREFIXES)}
    head = net.idx_pred_layer_low[1].weight.detach().clone()
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=1e-2)
    x, gt = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 64, 64)
    out = net.forward_ste(x)
    out['logits'].retain_grad()
    F.mse_loss(out['sr01'], gt).backward()
    assert out['logits'].grad is not None and out['logits'].grad.abs().sum() > 0
    assert net.idx_pred_layer_low[1].weight.grad.abs().sum() > 0  # predictor, via the STE
    assert net.exactor.blocks[0].conv1.weight.grad.abs().sum() > 0  # structure branch, via S_hat + z
    assert net.lqencoder.blocks[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in net.named_parameters() if n.startswith(TOKENIZER_PREFIXES))
    opt.step()
    for k, v in net.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k
    assert not torch.equal(net.idx_pred_layer_low[1].weight, head)  # the trainable part did move


def test_predictor_sees_detached_structure():
    """Only the decoder path carries image-loss gradient into the structure branch; the fuse input is sg(S_hat)."""
    net = TVQRAPNet(**TINY_SR)
    p = net.predict(torch.rand(1, 3, 16, 16))
    p['logits'].sum().backward()
    assert all(q.grad is None for q in net.exactor.parameters())  # logits do not depend on F^L_hat
    assert net.blocks_fuse[0].conv1.weight.grad.abs().sum() > 0


def test_load_tokenizer_from_checkpoint(tmp_path):
    tok = TVQTokenizer(**TINY_TOKENIZER)
    path = str(tmp_path / 'net_g_latest.pth')
    atomic_save({'params': {k: torch.zeros_like(v) for k, v in tok.state_dict().items()},
                 'params_ema': tok.state_dict()}, path)
    net = TVQRAPNet(tokenizer_path=path, **TINY_SR)
    own = net.state_dict()
    for k, v in tok.state_dict().items():
        if k.startswith(TOKENIZER_PREFIXES):
            assert torch.equal(own[k], v), k
    assert not any(k.startswith('generator.blocks_2') for k in own)
    assert all(not p.requires_grad for p in net.generator.parameters())
    net2 = TVQRAPNet(**TINY_SR)
    net2.load_tokenizer(tok.state_dict())  # a bare state dict works too
    assert torch.equal(net2.codebook, tok.codebook)


def test_load_tokenizer_errors_name_the_file(tmp_path):
    net = TVQRAPNet(**TINY_SR)
    other = TVQTokenizer(**dict(TINY_TOKENIZER, codebook_size=32))
    path = str(tmp_path / 'wrong.pth')
    atomic_save({'params_ema': other.state_dict()}, path)
    with pytest.raises(CheckpointError, match='wrong.pth.*shape.*quantize.embedding.weight'):
        net.load_tokenizer(path)
    sd = TVQTokenizer(**TINY_TOKENIZER).state_dict()
    sd.pop('generator.blocks_3.0.conv1.weight')
    atomic_save({'params_ema': sd}, path)
    with pytest.raises(CheckpointError, match='wrong.pth.*missing.*generator.blocks_3.0.conv1.weight'):
        net.load_tokenizer(path)
    with pytest.raises(CheckpointError, match='not found'):
        TVQRAPNet(tokenizer_path=str(tmp_path / 'nope.pth'), **TINY_SR)


def test_convert_official_state_dict_drops_only_unused_parts():
    net = TVQRAPNet(**TINY_SR)
    tok = TVQTokenizer(**TINY_TOKENIZER)
    official = dict(tok.state_dict())  # the official class also carries the whole tokenizer
    official.update(net.state_dict())
    sd, layout = net.convert_official_state_dict(official)
    assert layout == OFFICIAL_LAYOUT
    assert set(official) - set(sd) == {k for k in official if k.startswith(OFFICIAL_UNUSED_PREFIXES)}
    net.load_state_dict(sd, strict=True)
    assert net.convert_official_state_dict(sd)[1] is None
    official['blocks_fuse.99.weight'] = torch.zeros(1)
    with pytest.raises(RuntimeError, match='blocks_fuse.99.weight'):
        net.load_state_dict(net.convert_official_state_dict(official)[0], strict=True)
