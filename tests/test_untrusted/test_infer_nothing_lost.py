"""Issue 13.5/13.6: basicsr-ext-infer loses nothing and always says why.

- an output that would replace an input (``-i DIR -o DIR --suffix ''``) is refused before anything runs unless
  ``--overwrite``; ``-o`` naming a file, two inputs writing one output and impossible numbers (``--tile -5``) too;
- the EXIF orientation is applied (as PIL's ImageOps.exif_transpose does);
- a huge image is refused from its header, with the memory figures and ``--tile`` advice, before decoding;
- an output holding NaN/inf is not written (the image fails, exit 1); non-finite weights are refused (exit 2);
- the weights file and key loaded are logged.
"""
import io
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from basicsr_ext import infer
from basicsr_ext.utils.image_io import read_image
from tests.test_untrusted import stock

INFER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'basicsr_ext',
                     'infer.py')
ARCH = ['--arch', 'SRVGGNetCompact', '--arch-opt', 'num_feat=8', 'num_conv=2', 'upscale=2', '--no-progress']


@pytest.fixture
def weights(tmp_path):
    from basicsr.archs.srvgg_arch import SRVGGNetCompact
    torch.manual_seed(0)
    net = SRVGGNetCompact(3, 3, num_feat=8, num_conv=2, upscale=2)
    path = tmp_path / 'w.pth'
    torch.save({'params': net.state_dict()}, path)
    return path


def _images(folder, n=2):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f'im{i}.png'), rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    return {p: p.read_bytes() for p in sorted(folder.iterdir())}


def _cli(*args):
    return stock.run(INFER, list(args), os.getcwd())


@pytest.mark.e2e
def test_output_over_input_refused_unless_overwrite(tmp_path, weights):
    src = tmp_path / 'photos'
    before = _images(src)
    out = _cli('-i', src, '-o', src, '--suffix', '', '--weights', weights, *ARCH)
    last = stock.assert_refused(out, str(src / 'im0.png'), 'would overwrite the input', '--overwrite')
    assert out.returncode == 2 and last
    assert {p: p.read_bytes() for p in sorted(src.iterdir())} == before  # untouched, nothing added
    code = infer.main(['-i', str(src), '-o', str(src), '--suffix', '', '--weights', str(weights), *ARCH,
                       '--overwrite'])
    assert code == 0 and sorted(src.iterdir()) == sorted(before)
    assert cv2.imread(str(src / 'im0.png')).shape == (24, 20, 3)  # replaced, as asked


@pytest.mark.e2e
def test_output_naming_a_file_and_bad_numbers_refused(tmp_path, weights, capsys):
    src = tmp_path / 'photos'
    _images(src, 1)
    target = tmp_path / 'result.png'
    target.write_bytes(b'keep me')
    out = _cli('-i', src, '-o', target, '--weights', weights, *ARCH)
    stock.assert_refused(out, str(target), 'is an existing file')
    assert target.read_bytes() == b'keep me'
    out = _cli('-i', src, '-o', tmp_path / 'o', '--tile', '-5', '--weights', weights, *ARCH)
    stock.assert_refused(out, '--tile -5')
    cases = {('--tile-overlap', '-1'): '--tile-overlap -1', ('--scale', '0'): '--scale 0',
             ('--multiple', '0'): '--multiple 0', ('--max-pixels', '-3'): '--max-pixels -3'}
    for extra, named in cases.items():
        assert infer.main(['-i', str(src), '-o', str(tmp_path / 'o'), '--weights', str(weights), *ARCH, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error:') and named in err[0], err
    (src / 'im0.jpg').write_bytes(cv2.imencode('.jpg', np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    assert infer.main(['-i', str(src), '-o', str(tmp_path / 'o'), '--weights', str(weights), *ARCH]) == 2
    assert 'would both be written to' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


def _with_orientation(rgb, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format='PNG', exif=exif)
    return buf.getvalue()


def test_exif_orientation_applied_as_pil_does(tmp_path, weights, capsys):
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        path = tmp_path / f'o{orientation}.png'
        path.write_bytes(_with_orientation(rgb, orientation))
        img, info = read_image(str(path), orient=True)
        want = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert('RGB'))
        assert info.orientation == orientation and (info.height, info.width) == want.shape[:2]
        assert np.array_equal(np.rint(img * 255).astype(np.uint8), want), orientation
        assert np.array_equal(np.rint(read_image(str(path))[0] * 255).astype(np.uint8), rgb)  # default: as stored
    assert infer.main(['-i', str(tmp_path / 'o6.png'), '-o', str(tmp_path / 'out'), '--weights', str(weights),
                       *ARCH]) == 0
    assert cv2.imread(str(tmp_path / 'out' / 'o6_out.png')).shape == (14, 10, 3)  # upright: 7x5 -> x2


def _png_header(width, height):
    """A PNG that declares width x height RGB pixels but holds almost no data (decoding it would fail)."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + \
        chunk(b'IEND', b'')


@pytest.mark.e2e
def test_huge_image_refused_from_its_header(tmp_path, weights, monkeypatch, capsys):
    src = tmp_path / 'in'
    _images(src, 1)
    (src / 'huge.png').write_bytes(_png_header(19000, 19000))  # x2: a 38000 x 38000 output
    out = _cli('-i', src, '-o', tmp_path / 'out', '--weights', weights, *ARCH)
    assert out.returncode == 1, out.stderr[-2000:]
    assert 'Traceback' not in out.stderr and 'cannot decode' not in out.stderr  # never decoded
    last = out.stderr.strip().splitlines()[-1]
    assert 'huge.png' in last and 'GiB of RAM for the image buffers alone' in last, last
    assert sorted(os.listdir(tmp_path / 'out')) == ['im0_out.png']
    # the network's feature maps are what does not fit: --tile is the advice, and it fits with tiles
    (src / 'huge.png').write_bytes(_png_header(4000, 3000))
    monkeypatch.setattr(infer, 'available_memory', lambda: 4 * 1024 ** 3)
    assert infer.main(['-i', str(src / 'huge.png'), '-o', str(tmp_path / 'o2'), '--weights', str(weights),
                       *ARCH]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'feature maps' in last and 'use --tile 256' in last and 'huge.png' in last, last
    up = infer.Upscaler(torch.nn.Conv2d(3, 12, 3, padding=1), scale=2, tile=256, device='cpu')
    buffers, maps = up.memory_needed(4000, 3000)
    assert buffers < 4 * 1024 ** 3 and maps < 50 * 1024 ** 2  # tiled: feature maps of one tile


@pytest.mark.e2e
def test_non_finite_output_not_written_and_weights_refused(tmp_path, weights):
    src = tmp_path / 'in'
    _images(src, 1)
    sd = torch.load(weights, weights_only=True)['params']
    torch.save({'params': {k: v * 1e25 if v.dim() == 4 else v for k, v in sd.items()}}, tmp_path / 'overflow.pth')
    out = _cli('-i', src, '-o', tmp_path / 'out', '--weights', tmp_path / 'overflow.pth', *ARCH)
    assert out.returncode == 1 and 'Traceback' not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert 'im0.png' in last and 'NaN/inf' in last and 'nothing written' in last, last
    assert not (tmp_path / 'out').exists() or not os.listdir(tmp_path / 'out')
    assert f"from {tmp_path / 'overflow.pth'} [key 'params']" in out.stderr  # the weights file and key, logged
    bad = dict(sd)
    bad['body.0.bias'] = bad['body.0.bias'].clone()
    bad['body.0.bias'][0] = float('nan')
    torch.save({'params': bad}, tmp_path / 'nan.pth')
    out = _cli('-i', src, '-o', tmp_path / 'out', '--weights', tmp_path / 'nan.pth', *ARCH)
    stock.assert_refused(out, str(tmp_path / 'nan.pth'), "'body.0.bias'", 'non-finite')
    assert out.returncode == 2
