"""TVQPatchGANDiscriminator: official layout, shapes, [0, 1] interface, training step."""
import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from basicsr_ext.archs.patchgan_arch import TVQPatchGANDiscriminator
from tests.golden_rule import fill


def test_registered_and_official_layout():
    assert ARCH_REGISTRY.get('TVQPatchGANDiscriminator') is TVQPatchGANDiscriminator
    net = TVQPatchGANDiscriminator()
    sd = fill('tvqrap_discriminator.json')
    net.load_state_dict(sd, strict=True)
    assert list(net.state_dict()) == list(sd)
    assert sum(p.numel() for p in net.parameters()) == 663361
    assert net.main[2].bias is None and net.main[5].bias is None and net.main[0].bias is not None


@pytest.mark.parametrize('size,out', [(64, 14), (32, 6), (96, 22)])
def test_logit_map_shape(size, out):
    net = TVQPatchGANDiscriminator(ndf=8).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, size, size)).shape == (2, 1, out, out)


def test_input_is_mapped_to_minus_one_one():
    net = TVQPatchGANDiscriminator(ndf=8).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), net.main(x * 2 - 1))


def test_train_step_updates_batchnorm_and_weights():
    net = TVQPatchGANDiscriminator(ndf=8, n_layers=3).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    w0 = net.main[0].weight.detach().clone()
    loss = torch.relu(1 - net(torch.rand(2, 3, 64, 64))).mean()
    loss.backward()
    opt.step()
    assert not torch.equal(w0, net.main[0].weight)
    assert int(net.main[3].num_batches_tracked) == 1
