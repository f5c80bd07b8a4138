"""AESOPAutoEncoder: shapes, the official (duplicated-encoder) layout, golden outputs, size errors."""
import pytest
import torch
from basicsr.archs import build_network

from basicsr_ext.archs.aesop_arch import AESOPAutoEncoder
from tests.golden_rule import fill, load_golden

OFFICIAL = {'type': 'AESOPAutoEncoder', 'enc_opt': {'placeholder': 0},
            'dec_opt': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23,
                        'num_grow_ch': 32}}


def tiny() -> AESOPAutoEncoder:
    return AESOPAutoEncoder(num_feat=16, num_block=1, num_grow_ch=4,
                            dec_opt={'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4})


@pytest.fixture(scope='module')
def official():
    torch.manual_seed(0)
    net = build_network(dict(OFFICIAL)).eval()
    sd = fill('aesop_autoencoder_rrdbnet')
    return net, sd


def test_shapes_and_api():
    net = tiny().eval()
    x = torch.rand(2, 3, 24, 40)
    with torch.no_grad():
        out, z = net(x, return_bottleneck=True)
        assert out.shape == x.shape and z.shape == (2, 3, 6, 10)
        assert torch.allclose(net.encode(x), z) and torch.allclose(net.decode(z), out)
        assert torch.allclose(net(x), out)


def test_encoder_modules_are_registered_twice_as_in_the_official_class():
    net = tiny()
    assert net.encoder[0] is net.conv_first and net.encoder[2] is net.body and net.encoder[3] is net.conv_last
    keys = list(net.state_dict())
    assert keys[0].startswith('decoder.')
    assert 'encoder.2.0.rdb1.conv1.weight' in keys and 'body.0.rdb1.conv1.weight' in keys
    # each parameter once for optimizers / EMA
    assert len(list(net.parameters())) == len({id(p) for p in net.parameters()})


def test_official_layout_loads_strictly_and_fills_every_tensor(official):
    net, sd = official
    assert list(net.state_dict()) == list(sd)  # same keys in the same order
    net.load_state_dict(sd, strict=True)
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert sum(p.numel() for p in net.parameters()) == 18175754  # manifest num_params (unique)


def test_golden_outputs_through_public_api(official):
    net, sd = official
    net.load_state_dict(sd, strict=True)
    case = load_golden('aesop_ae')['cases'][0]
    with torch.no_grad():
        recon, bottleneck = net(case['input'], return_bottleneck=True)
        assert (bottleneck - case['bottleneck']).abs().max() <= 1e-3
        assert (recon - case['reconstruction']).abs().max() <= 1e-3
        assert (net.encode(case['input']) - case['bottleneck']).abs().max() <= 1e-3
        assert (net.decode(case['bottleneck']) - case['reconstruction']).abs().max() <= 1e-3


def test_single_copy_checkpoint_is_completed():
    net = tiny()
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith('encoder.')}
    full, layout = net.convert_official_state_dict(sd)
    assert layout is not None
    net.load_state_dict(full, strict=True)
    assert net.convert_official_state_dict(net.state_dict())[1] is None


@pytest.mark.parametrize('size', [(30, 32), (32, 18)])
def test_size_not_divisible_by_4_names_the_size(size):
    with pytest.raises(ValueError, match=f'{size[0]}x{size[1]}'):
        tiny()(torch.rand(1, 3, *size))


def test_bad_options():
    with pytest.raises(ValueError, match='divisible by 16'):
        AESOPAutoEncoder(num_feat=24)
    with pytest.raises(ValueError, match='x4 only'):
        AESOPAutoEncoder(dec_opt={'scale': 2})
