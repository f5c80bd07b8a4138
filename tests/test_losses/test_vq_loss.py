"""LPIPS-as-loss and the VQGAN adaptive GAN weight (basicsr_ext/losses/vq_loss.py)."""
import os

import pytest
import torch
from basicsr.losses import build_loss

from basicsr_ext.losses import vq_loss
from basicsr_ext.losses.vq_loss import LPIPS_VGG_FILE, VGG16_FILE, LPIPSLoss, LPIPSWeightsMissing, adaptive_gan_weight


def test_adaptive_weight_is_the_gradient_norm_ratio():
    w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
    x = torch.tensor([1.0, 2.0])
    y = w @ x
    rec = (y ** 2).sum()          # d rec / dw = 2 y x^T
    gan = -(3.0 * y).sum()        # d gan / dw = -3 * 1 x^T
    g_rec = 2 * y.detach()[:, None] * x[None]
    g_gan = -3 * torch.ones(2)[:, None] * x[None]
    expect = g_rec.norm() / (g_gan.norm() + 1e-4) * 0.75
    got = adaptive_gan_weight(rec, gan, w)
    assert torch.allclose(got, expect, rtol=1e-6)
    assert not got.requires_grad
    assert w.grad is None  # the gradients were taken without touching .grad
    # the graph is kept: the total loss can still be back-propagated
    (rec + got * gan).backward()
    assert w.grad is not None


def test_adaptive_weight_clamped_and_scaled():
    w = torch.nn.Parameter(torch.ones(3))
    rec = (w * 1e6).sum()
    gan = (w * 1e-6).sum()
    assert float(adaptive_gan_weight(rec, gan, w, max_weight=10.0, scale=0.5)) == pytest.approx(5.0)
    unused = torch.nn.Parameter(torch.ones(1))
    assert float(adaptive_gan_weight(rec, (unused * 2).sum(), w)) == 0.0  # GAN term does not reach the layer
    with pytest.raises(ValueError, match='frozen'):
        adaptive_gan_weight(rec, gan, torch.ones(3))


def test_lpips_random_weights_offline_is_a_fp32_distance():
    loss = build_loss({'type': 'LPIPSLoss', 'loss_weight': 2.0, 'pretrained': False})
    assert isinstance(loss, LPIPSLoss)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = torch.rand(2, 3, 32, 32)
    assert float(loss(y, y)) == pytest.approx(0.0, abs=1e-6)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = loss(x, y)
    assert value.dtype == torch.float32 and value.ndim == 0 and float(value) > 0
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.net.training  # the VGG stays in eval mode


def test_official_normalization_changes_the_input_mapping():
    std = LPIPSLoss(pretrained=False)
    off = LPIPSLoss(pretrained=False, official_normalization=True)
    off.load_state_dict(std.state_dict())
    x = torch.full((1, 3, 4, 4), 0.5)
    assert torch.allclose(std.normalize(x), torch.zeros_like(x))
    expect = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(off.normalize(x)[0, :, 0, 0], expect)
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert float(std(a, b)) != pytest.approx(float(off(a, b)))


def test_missing_weights_error_names_files_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    with pytest.raises(LPIPSWeightsMissing) as err:
        LPIPSLoss(pretrained=True)
    msg = str(err.value)
    assert VGG16_FILE in msg and LPIPS_VGG_FILE in msg
    assert os.path.join(str(tmp_path / 'torch_home'), 'hub', 'checkpoints') in msg
    with pytest.raises(LPIPSWeightsMissing, match='nope.pth'):
        LPIPSLoss(pretrained=True, vgg_weight_path=str(tmp_path / 'nope.pth'))


def test_pretrained_files_are_loaded_from_the_hub_folder(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    folder = tmp_path / 'hub' / 'checkpoints'
    folder.mkdir(parents=True)
    ref = vq_loss.LPIPSVGG()
    torch.manual_seed(1)
    vgg_sd = {f'features.{k}': torch.randn_like(v) for k, v in ref.features.state_dict().items()}
    vgg_sd['classifier.0.bias'] = torch.zeros(4)  # ignored
    torch.save(vgg_sd, folder / VGG16_FILE)
    heads = {f'lin{i}.model.1.weight': torch.rand_like(lin.weight) for i, lin in enumerate(ref.lins)}
    pyiqa_dir = tmp_path / 'hub' / 'pyiqa'
    pyiqa_dir.mkdir()
    torch.save(heads, pyiqa_dir / LPIPS_VGG_FILE)  # pyiqa's folder is searched too
    loss = LPIPSLoss(pretrained=True)
    assert torch.equal(loss.net.features[0].weight, vgg_sd['features.0.weight'])
    assert torch.equal(loss.net.lins[3].weight, heads['lin3.model.1.weight'])
