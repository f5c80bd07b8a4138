"""basicsr-ext-infer --precision: aliases, refusals, set-up once per run, weights cast once (bit-identical)."""
import cv2
import numpy as np
import pytest
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet
from skimage import data

from basicsr_ext import infer
from basicsr_ext.utils import precision as P
from basicsr_ext.utils.checkpoint import atomic_save
from basicsr_ext.utils.image_io import read_image


def _rrdb():
    torch.manual_seed(0)
    return RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=8, scale=4)


@pytest.fixture
def setup(tmp_path):
    atomic_save({'params': _rrdb().state_dict()}, str(tmp_path / 'g.pth'))
    src = tmp_path / 'in'
    src.mkdir()
    for i, crop in enumerate((data.astronaut()[100:124, 180:212], data.coffee()[200:224, 300:332])):
        cv2.imwrite(str(src / f'p{i}.png'), crop[..., ::-1])
    base = ['-i', str(src), '--arch', 'RRDBNet', '--arch-opt', 'num_in_ch=3', 'num_out_ch=3', 'num_feat=8',
            'num_block=1', 'num_grow_ch=8', '--weights', str(tmp_path / 'g.pth'), '--no-progress', '--device', 'cpu']
    return tmp_path, base


def _psnr(a, b):
    return 10 * np.log10(1.0 / float(((a - b) ** 2).mean()))


def test_bf16_alias_is_precision_bf16_and_says_it_is_deprecated(setup, capsys):
    tmp, base = setup
    assert infer.main([*base, '-o', str(tmp / 'new'), '--precision', 'bf16']) == 0
    err = capsys.readouterr().err
    assert 'precision bf16, channels_last' in err and 'deprecated' not in err
    assert infer.main([*base, '-o', str(tmp / 'old'), '--bf16']) == 0
    assert '--bf16 is deprecated: use --precision bf16' in capsys.readouterr().err
    assert infer.main([*base, '-o', str(tmp / 'fp32'), '--precision', 'fp32', '--channels-last', 'off']) == 0
    assert 'precision fp32, NCHW' in capsys.readouterr().err
    for name in ('p0_out.png', 'p1_out.png'):
        new, _ = read_image(str(tmp / 'new' / name))
        old, _ = read_image(str(tmp / 'old' / name))
        ref, _ = read_image(str(tmp / 'fp32' / name))
        assert np.array_equal(new, old)
        assert _psnr(new, ref) > 40


def test_fp16_on_cpu_is_one_error_line(setup, capsys):
    tmp, base = setup
    for flag in (['--precision', 'fp16'], ['--half']):
        assert infer.main([*base, '-o', str(tmp / 'x'), *flag]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith('error:')]
        assert len(err) == 1 and 'fp16 needs a CUDA device' in err[0]
    assert not (tmp / 'x').exists()


def test_auto_follows_the_cpu(setup, capsys, monkeypatch):
    tmp, base = setup
    monkeypatch.setattr(P, 'cpu_flags', lambda path='/proc/cpuinfo': frozenset({'avx2'}))
    assert infer.main([*base, '-o', str(tmp / 'a')]) == 0  # --precision auto is the default
    assert 'precision fp32, channels_last' in capsys.readouterr().err
    monkeypatch.setattr(P, 'cpu_flags', lambda path='/proc/cpuinfo': frozenset({'amx_bf16', 'avx512_bf16'}))
    assert infer.main([*base, '-o', str(tmp / 'b'), '--channels-last', 'off']) == 0
    err = capsys.readouterr().err
    assert 'precision bf16, NCHW' in err and 'emulated' not in err


def test_bf16_on_a_cpu_without_bf16_units_warns(setup, capsys, monkeypatch):
    tmp, base = setup
    monkeypatch.setattr(P, 'cpu_flags', lambda path='/proc/cpuinfo': frozenset({'avx2'}))
    assert infer.main([*base, '-o', str(tmp / 'a'), '--precision', 'bf16']) == 0
    assert 'emulated' in capsys.readouterr().err


def test_cast_weights_are_bit_identical_to_autocast_casts():
    net, ref_net = _rrdb().eval(), _rrdb().eval()
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad(), P.inference_autocast('cpu', 'bf16'):
        ref = ref_net(x)
        assert P.cast_matmul_weights(net, 'bf16') == sum(
            1 for m in net.modules() if isinstance(m, torch.nn.Conv2d) for _ in m.parameters())
        out = net(x)
    assert torch.equal(out, ref)
    assert P.cast_matmul_weights(_rrdb(), 'fp32') == 0
    norm = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.GroupNorm(2, 4), torch.nn.Embedding(3, 4))
    P.cast_matmul_weights(norm, 'bf16')
    assert norm[0].weight.dtype == torch.bfloat16
    assert norm[1].weight.dtype == norm[2].weight.dtype == torch.float32  # norms and codebooks stay fp32


def test_a_folder_pays_the_set_up_once():
    """The Upscaler prepares the net once: later images reuse the same cast, channels_last weights and run the
    network exactly once each (no re-probe, no re-cast, no per-image warm-up)."""
    net = _rrdb()
    up = infer.Upscaler(net, scale=4, device='cpu', precision='bf16')
    w = net.conv_first.weight
    assert w.dtype == torch.bfloat16 and w.is_contiguous(memory_format=torch.channels_last)
    ptr = w.data_ptr()
    calls = []
    net.register_forward_pre_hook(lambda m, a: calls.append((a[0].dtype, a[0].is_contiguous(
        memory_format=torch.channels_last), torch.is_autocast_enabled('cpu'))))
    img = data.astronaut()[:20, :24].astype(np.float32) / 255
    for _ in range(3):
        out = up(img)
    assert out.shape == (80, 96, 3) and out.dtype == np.float32
    assert calls == [(torch.float32, True, True)] * 3
    assert net.conv_first.weight.data_ptr() == ptr


class ViewNet(torch.nn.Module):
    """A network that flattens a 4-D map with ``.view`` (fails on a channels_last input)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        b, c, h, w = y.shape
        y = y.view(b, c * h * w).view(b, c, h, w)  # C merged with H: needs NCHW
        return torch.nn.functional.pixel_shuffle(y, 2)


def test_a_net_that_cannot_take_channels_last_falls_back_to_nchw(caplog):
    img = data.astronaut()[:16, :16].astype(np.float32) / 255
    ref = infer.Upscaler(ViewNet(), scale=2, device='cpu', channels_last=False)(img)
    torch.manual_seed(0)
    up = infer.Upscaler(ViewNet(), scale=2, device='cpu')  # auto: channels_last on a CPU
    assert up.channels_last
    with caplog.at_level('WARNING', logger='basicsr_ext.infer'):
        out = up(img)
    assert not up.channels_last and 'running it in NCHW' in caplog.text
    assert np.allclose(out, ref, atol=1e-6)
    forced = infer.Upscaler(ViewNet(), scale=2, device='cpu', channels_last=True)
    with pytest.raises(RuntimeError, match='view'):
        forced(img)  # asked for explicitly: the error is not hidden
