"""AESOPLoss: frozen AE, gradient to SR only, AE(HR) without graph, fp32 under autocast, checkpoint errors;
and the LDL artifact map that the AESOP model uses."""
import pytest
import torch
from basicsr.losses import build_loss
from basicsr.losses.loss_util import get_refined_artifact_map

from basicsr_ext.archs.aesop_arch import AESOPAutoEncoder
from basicsr_ext.utils.checkpoint import CheckpointError, atomic_save
from tests.golden_rule import fill, load_golden

TINY = {'type': 'AESOPAutoEncoder', 'num_feat': 16, 'num_block': 1, 'num_grow_ch': 4,
        'dec_opt': {'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4}}


@pytest.fixture
def tiny_ckpt(tmp_path):
    net = AESOPAutoEncoder(**{k: v for k, v in TINY.items() if k != 'type'})
    path = str(tmp_path / 'ae.pth')
    atomic_save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
    return path


def make_loss(path, **kw):
    return build_loss({'type': 'AESOPLoss', 'autoencoder_arch': dict(TINY),
                       'autoencoder_load': {'path': path, 'key': 'params_ema'}, **kw})


def test_zero_for_identical_images_and_positive_otherwise(tiny_ckpt):
    loss = make_loss(tiny_ckpt)
    hr = torch.rand(2, 3, 16, 16)
    assert loss(hr.clone(), hr).item() == 0.0
    assert loss(hr + 0.1 * torch.randn_like(hr), hr).item() > 0


def test_gradient_reaches_sr_but_never_the_ae(tiny_ckpt):
    loss = make_loss(tiny_ckpt)
    hr = torch.rand(1, 3, 16, 16)
    delta = torch.nn.Parameter(0.1 * torch.randn(1, 3, 16, 16))
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    opt = torch.optim.Adam([delta, *loss.parameters()], lr=0.1)  # even if someone hands the AE to an optimizer
    loss(hr + delta, hr).backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    opt.step()
    assert all(torch.equal(v, before[k]) for k, v in loss.state_dict().items())


def test_ae_of_hr_builds_no_graph_and_everything_is_fp32_under_autocast(tiny_ckpt):
    loss = make_loss(tiny_ckpt)
    seen = []
    loss.autoencoder.register_forward_hook(lambda m, i, o: seen.append((o.dtype, o.grad_fn is not None)))
    hr = torch.rand(1, 3, 16, 16, requires_grad=True)
    sr = torch.rand(1, 3, 16, 16, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = loss(sr.to(torch.bfloat16), hr)
    assert seen == [(torch.float32, False), (torch.float32, True)]  # AE(HR) no graph, AE(SR) graph; both fp32
    assert value.dtype == torch.float32
    value.backward()
    assert hr.grad is None and sr.grad is not None


def test_no_clamping_and_criterion_l2(tiny_ckpt):
    l1, l2 = make_loss(tiny_ckpt), make_loss(tiny_ckpt, criterion='l2', loss_weight=2.0)
    hr = torch.rand(1, 3, 16, 16)
    sr = hr + 1.5  # far outside [0, 1]: must not be clamped back
    with torch.no_grad():
        a, b = l1.autoencoder(sr), l1.autoencoder(hr)
    assert l1(sr, hr).item() == pytest.approx((a - b).abs().mean().item(), rel=1e-5)
    assert l2(sr, hr).item() == pytest.approx(2 * ((a - b) ** 2).mean().item(), rel=1e-5)


def test_ae_stays_in_eval_mode(tiny_ckpt):
    loss = make_loss(tiny_ckpt)
    loss.train()
    assert not loss.autoencoder.training


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = str(tmp_path / 'nowhere' / 'AE_RRDBdecoder_100K.pth')
    with pytest.raises(CheckpointError, match='AE_RRDBdecoder_100K.pth'):
        make_loss(missing)
    with pytest.raises(CheckpointError, match='autoencoder_load.path'):
        build_loss({'type': 'AESOPLoss', 'autoencoder_arch': dict(TINY)})


def test_wrong_key_and_wrong_arch_name_path_and_key(tiny_ckpt):
    # an absent key falls back to params_ema, then params (the released-file policy of every loader)
    loss = build_loss({'type': 'AESOPLoss', 'autoencoder_arch': dict(TINY),
                       'autoencoder_load': {'path': tiny_ckpt, 'key': 'ema'}})
    assert not any(p.requires_grad for p in loss.autoencoder.parameters())
    other = dict(TINY, dec_opt={'num_feat': 8, 'num_block': 2, 'num_grow_ch': 4})
    with pytest.raises(CheckpointError, match=r"ae\.pth, key 'params_ema'\).*missing keys"):
        build_loss({'type': 'AESOPLoss', 'autoencoder_arch': other,
                    'autoencoder_load': {'path': tiny_ckpt, 'key': 'params_ema'}})


def test_official_layout_checkpoint_loads_through_autoencoder_load(tmp_path):
    path = str(tmp_path / 'AE_RRDBdecoder_100K.pth')
    atomic_save({'params_ema': fill('aesop_autoencoder_rrdbnet')}, path)
    loss = build_loss({'type': 'AESOPLoss', 'loss_weight': 1.0, 'criterion': 'l1',
                       'autoencoder_arch': {'type': 'AutoEncoder_RRDBNet', 'enc_opt': {'placeholder': 0},
                                            'dec_opt': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3,
                                                        'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32}},
                       'autoencoder_load': {'path': path, 'key': 'params_ema'}})
    case = load_golden('aesop_ae')['cases'][0]
    with torch.no_grad():
        assert (loss.autoencoder(case['input']) - case['reconstruction']).abs().max() <= 1e-3
        # L_AESOP of the input against itself shifted: equals the L1 of the two golden-weight reconstructions
        shifted = case['input'] * 0.9
        expect = (loss.autoencoder(shifted) - case['reconstruction']).abs().mean()
        assert loss(shifted, case['input']).item() == pytest.approx(expect.item(), rel=1e-5)


def test_ldl_artifact_map_is_zero_where_the_output_beats_the_ema_output():
    """LDL (aesop.md §1): the map is 0 wherever r_SR < r_EMA, i.e. where the EMA output is *farther* from GT;
    pixels where the EMA output is closer than the current output are the artifacts that get penalised."""
    torch.manual_seed(0)
    gt = torch.rand(1, 3, 16, 16)
    out = gt + 0.2 * torch.randn_like(gt)
    ema = gt.clone()
    ema[..., 8:] = gt[..., 8:] + 0.5  # EMA worse on the right half (map 0), perfect on the left half
    w = get_refined_artifact_map(gt, out, ema, 7)
    assert torch.all(w[..., 8:] == 0)
    assert torch.all(w[..., :8] > 0)
