"""AESOP with ``train.channels_last``: the generator (and its EMA) and the frozen AESOP auto-encoder run channels_last;
the VGG-style discriminator, whose flatten is a ``.view`` that fails on channels_last features, stays NCHW and is fed
contiguous inputs; a full training step (AESOP + LDL + relativistic GAN, G and D updated) runs."""
import pytest
import torch
from basicsr.models import build_model

from basicsr_ext import scripting

CL, NCHW = torch.channels_last, torch.contiguous_format


def _convs(net):
    """The 3x3 (or larger) convolution weights: the tensors whose memory format tells NCHW from NHWC."""
    return [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]


def _model(tmp_path, channels_last):
    opt = scripting.training_options(scripting.option_file('quickstart', 'aesop_rrdb.yml'), str(tmp_path),
                                     pretrained=False)
    scripting.random_frozen_checkpoints(opt, str(tmp_path))
    opt['train']['channels_last'] = channels_last
    return build_model(opt)


@pytest.mark.parametrize('channels_last', [True, False])
def test_aesop_channels_last_on_generator_and_ae_not_on_the_vgg_discriminator(channels_last, tmp_path):
    torch.manual_seed(0)
    model = _model(tmp_path, channels_last)
    fmt = CL if channels_last else NCHW
    assert type(model.net_d).__name__ == 'VGGStyleDiscriminator'
    ae = model.cri_aesop.autoencoder
    for net in (model.net_g, model.net_g_ema, ae):
        assert _convs(net) and all(w.is_contiguous(memory_format=fmt) for w in _convs(net))
    assert all(w.is_contiguous() and not w.is_contiguous(memory_format=CL) for w in _convs(model.net_d))
    seen = {'d': [], 'ae': []}
    model.net_d.register_forward_pre_hook(lambda m, a: seen['d'].append(a[0].is_contiguous()))
    ae.register_forward_pre_hook(lambda m, a: seen['ae'].append(a[0].is_contiguous(memory_format=fmt)))
    g_before = [p.detach().clone() for p in model.net_g.parameters()]
    d_before = [p.detach().clone() for p in model.net_d.parameters()]
    gt = torch.rand(2, 3, 128, 128)
    model.feed_data({'gt': gt, 'lq': torch.nn.functional.interpolate(gt, scale_factor=0.25, mode='area')})
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert {'l_g_aesop', 'l_g_ldl', 'l_g_gan', 'l_d_real', 'l_d_fake'} <= set(log)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in log.values())
    assert seen['d'] and all(seen['d'])    # D saw NCHW-contiguous inputs only (real, fake, detached fake)
    assert seen['ae'] and all(seen['ae'])  # the AE got SR and HR in the generator's format
    assert any(not torch.equal(a, b) for a, b in zip(g_before, model.net_g.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, model.net_d.parameters()))
    # the optimizers still hold the networks' own parameters (the formats were changed in place)
    assert {id(p) for g in model.optimizer_d.param_groups for p in g['params']} == \
        {id(p) for p in model.net_d.parameters()}
    assert all(w.is_contiguous(memory_format=fmt) for w in _convs(model.net_g))  # Adam kept the format
