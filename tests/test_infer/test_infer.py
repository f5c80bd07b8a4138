"""basicsr_ext.infer: seamless tiles, exact output sizes, every image kind, bad files skipped, exit codes."""
import os

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from basicsr_ext import infer
from basicsr_ext.utils.checkpoint import atomic_save
from basicsr_ext.utils.image_io import read_image
from basicsr_ext.utils.tiling import tiled_forward


class ResidualNet(torch.nn.Module):
    """Bicubic x2 plus a random conv residual (receptive field 9 px): tile edges would show."""

    def __init__(self, scale: int = 2, nf: int = 12) -> None:
        super().__init__()
        self.scale = scale
        layers = []
        for i in range(4):
            layers += [torch.nn.Conv2d(3 if i == 0 else nf, nf, 3, padding=1), torch.nn.LeakyReLU(0.2)]
        self.body = torch.nn.Sequential(*layers, torch.nn.Conv2d(nf, 3 * scale * scale, 3, padding=1),
                                        torch.nn.PixelShuffle(scale))

    def forward(self, x):
        up = torch.nn.functional.interpolate(x, scale_factor=self.scale, mode='bicubic', align_corners=False)
        return up + 3 * self.body(x)


def _psnr(a, b):
    return 10 * np.log10(1.0 / float(((a - b) ** 2).mean()))


@pytest.fixture(scope='module')
def astronaut():
    img = data.astronaut()[96:96 + 151, 128:128 + 181].astype(np.float32) / 255  # odd size, real photo
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def test_tiled_equals_untiled_on_a_real_photo(astronaut):
    torch.manual_seed(0)
    net = ResidualNet().eval()
    with torch.no_grad():
        full = tiled_forward(net, astronaut, 2, tile=0, multiple=8)
        tiled = tiled_forward(net, astronaut, 2, tile=64, overlap=16, multiple=8)
        naive = tiled_forward(net, astronaut, 2, tile=64, overlap=0, multiple=8)
    assert full.shape == tiled.shape == (1, 3, 302, 362)
    assert float((full - torch.nn.functional.interpolate(astronaut, scale_factor=2, mode='bicubic')).std()) > 0.05
    p_tiled, p_naive = _psnr(full.numpy(), tiled.numpy()), _psnr(full.numpy(), naive.numpy())
    print(f'tiled vs untiled: {p_tiled:.1f} dB (blended overlap 16), {p_naive:.1f} dB (no overlap)')
    assert p_tiled >= 45.0
    assert p_naive < p_tiled - 10  # the seams are real and the blending removes them


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    from basicsr.archs.srvgg_arch import SRVGGNetCompact
    net = SRVGGNetCompact(3, 3, num_feat=8, num_conv=2, upscale=2)
    path = str(tmp_path / 'w.pth')
    atomic_save({'params': {'module.' + k: v for k, v in net.state_dict().items()}}, path)  # DDP-style keys
    return path


ARCH = ['--arch', 'SRVGGNetCompact', '--arch-opt', 'num_feat=8', 'num_conv=2', 'upscale=2']


def test_cli_kinds_sizes_and_a_corrupt_file(tmp_path, tiny_weights, capsys):
    src = tmp_path / 'in'
    src.mkdir()
    rgb = data.astronaut()[:37, :53]
    cv2.imwrite(str(src / 'rgb.png'), rgb[..., ::-1])
    cv2.imwrite(str(src / 'gray.png'), rgb[..., 0])
    alpha = np.tile(np.linspace(0, 255, 53).astype(np.uint8), (37, 1))
    cv2.imwrite(str(src / 'rgba.png'), np.dstack([rgb[..., ::-1], alpha]))
    cv2.imwrite(str(src / 'deep.png'), (rgb.astype(np.uint16) * 257)[..., ::-1])
    (src / 'broken.png').write_bytes((src / 'rgb.png').read_bytes()[:120])
    out = tmp_path / 'out'
    code = infer.main(['-i', str(src), '-o', str(out), *ARCH, '--weights', tiny_weights, '--multiple', '8',
                       '--suffix', 'x2', '--no-progress'])
    err = capsys.readouterr().err
    assert code == 1  # one failure
    assert 'broken.png' in err and '4 written' in err and '1 failed' in err
    assert sorted(os.listdir(out)) == ['deep_x2.png', 'gray_x2.png', 'rgb_x2.png', 'rgba_x2.png']
    shapes = {n: cv2.imread(str(out / n), cv2.IMREAD_UNCHANGED) for n in os.listdir(out)}
    assert shapes['rgb_x2.png'].shape == (74, 106, 3) and shapes['rgb_x2.png'].dtype == np.uint8
    assert shapes['gray_x2.png'].shape == (74, 106)
    assert shapes['rgba_x2.png'].shape == (74, 106, 4)
    assert shapes['deep_x2.png'].dtype == np.uint16 and shapes['deep_x2.png'].shape == (74, 106, 3)
    up_alpha = cv2.resize(alpha, (106, 74), interpolation=cv2.INTER_CUBIC)
    assert np.abs(shapes['rgba_x2.png'][..., 3].astype(int) - up_alpha).max() <= 1  # alpha: bicubic


def test_cli_tiles_match_whole_image(tmp_path, tiny_weights):
    src = tmp_path / 'photo.png'
    cv2.imwrite(str(src), data.astronaut()[100:181, 200:299][..., ::-1])
    base = ['-i', str(src), *ARCH, '--weights', tiny_weights, '--no-progress']
    assert infer.main([*base, '-o', str(tmp_path / 'a')]) == 0
    assert infer.main([*base, '-o', str(tmp_path / 'b'), '--tile', '32', '--tile-overlap', '8']) == 0
    a, _ = read_image(str(tmp_path / 'a' / 'photo_out.png'))
    b, _ = read_image(str(tmp_path / 'b' / 'photo_out.png'))
    assert a.shape == (162, 198, 3)
    assert _psnr(a, b) >= 45.0


@pytest.mark.parametrize('size,scale,multiple', [((37, 53), 2, 8), ((5, 3), 3, 4), ((17, 16), 4, 1)])
def test_exact_output_size(size, scale, multiple):
    from basicsr.archs.srvgg_arch import SRVGGNetCompact
    up = infer.Upscaler(SRVGGNetCompact(3, 3, num_feat=4, num_conv=1, upscale=scale), multiple=multiple,
                        device='cpu')
    assert up.scale == scale  # measured from the net
    out = up(np.random.rand(*size, 3).astype(np.float32))
    assert out.shape == (size[0] * scale, size[1] * scale, 3)


def test_bad_options_exit_2(tmp_path, tiny_weights, capsys):
    img = tmp_path / 'a.png'
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    assert infer.main(['-i', str(img), '-o', str(tmp_path), '--arch', 'NoSuchArch', '--weights', tiny_weights]) == 2
    assert 'NoSuchArch' in capsys.readouterr().err
    wrong = ['--arch', 'SRVGGNetCompact', '--arch-opt', 'num_feat=16', 'num_conv=2', 'upscale=2']
    assert infer.main(['-i', str(img), '-o', str(tmp_path), *wrong, '--weights', tiny_weights]) == 2
    assert 'does not fit' in capsys.readouterr().err


def test_opt_file_bf16_and_official_layout_log(tmp_path, capsys):
    from basicsr.archs.rrdbnet_arch import RRDBNet
    torch.manual_seed(0)
    net = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=8, scale=2)
    atomic_save({'params_ema': net.state_dict(), 'params': {}}, str(tmp_path / 'g.pth'))
    (tmp_path / 'o.yml').write_text(
        'name: t\nscale: 2\nnetwork_g: {type: RRDBNet, num_in_ch: 3, num_out_ch: 3, num_feat: 8, num_block: 1, '
        f'num_grow_ch: 8, scale: 2}}\npath: {{pretrain_network_g: {tmp_path / "g.pth"}, param_key_g: params_ema}}\n')
    cv2.imwrite(str(tmp_path / 'p.png'), data.astronaut()[:31, :45][..., ::-1])
    base = ['-i', str(tmp_path / 'p.png'), '--opt', str(tmp_path / 'o.yml'), '--no-progress', '--suffix', '']
    assert infer.main([*base, '-o', str(tmp_path / 'fp32'), '--precision', 'fp32']) == 0  # from pretrain_network_g
    err = capsys.readouterr().err  # explicit fp32: the default 'auto' is bf16 on an AMX / avx512_bf16 CPU
    assert 'multiple 2' in err and 'precision fp32' in err  # RRDBNet x2 pixel-unshuffles: LR padded to even
    assert infer.main([*base, '-o', str(tmp_path / 'bf16'), '--bf16']) == 0
    a, _ = read_image(str(tmp_path / 'fp32' / 'p.png'))
    b, _ = read_image(str(tmp_path / 'bf16' / 'p.png'))
    assert a.shape == (62, 90, 3) and _psnr(a, b) > 30
    assert infer.main([*base, '-o', str(tmp_path / 'x'), '--half', '--device', 'cpu']) == 2  # fp16 needs CUDA


def test_official_layout_is_translated_with_one_log_line(tmp_path, caplog):
    import logging

    from basicsr_ext.utils.checkpoint import load_weights_into

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)

        @staticmethod
        def convert_official_state_dict(sd):
            if 'official.weight' in sd:
                return {'conv.' + k.split('.', 1)[1]: v for k, v in sd.items()}, 'toy official'
            return sd, None

    src = Net()
    atomic_save({'params_ema': {'module.official.weight': src.conv.weight, 'module.official.bias': src.conv.bias}},
                str(tmp_path / 'off.pth'))
    dst = Net()
    with caplog.at_level(logging.INFO, logger='t'):
        load_weights_into(dst, str(tmp_path / 'off.pth'), 'params_ema', True, logging.getLogger('t'))
    assert torch.equal(dst.conv.weight, src.conv.weight)
    messages = [r.message for r in caplog.records]
    assert [m for m in messages if 'Loaded' not in m] == [f'{tmp_path / "off.pth"}: recognised the toy official '
                                                          'layout and translated it.']
    assert messages[-1] == f"Loaded 2 tensors into Net from {tmp_path / 'off.pth'} [key 'params_ema']."
