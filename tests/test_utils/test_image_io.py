"""read_image: one documented format for every image kind, ImageError for every bad file; atomic writes."""
import io
import os
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from basicsr_ext.utils.image_io import ImageError, read_image, write_image_atomic


def _rgb(h=24, w=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)


def png_declaring(w: int, h: int) -> bytes:
    """A valid PNG header (IHDR) declaring w x h RGB, with a tiny IDAT: decoding it would need w*h*3 bytes."""
    ihdr = struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', ihdr) + _chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + \
        _chunk(b'IEND', b'')


def test_rgb_png_both_orders(tmp_path):
    rgb = _rgb()
    p = str(tmp_path / 'a.png')
    cv2.imwrite(p, rgb[..., ::-1])
    img, info = read_image(p)
    assert img.dtype == np.float32 and img.shape == (24, 40, 3)
    np.testing.assert_allclose(img, rgb / 255.0, atol=1e-6)
    bgr, _ = read_image(p, channel_order='bgr')
    np.testing.assert_allclose(bgr, rgb[..., ::-1] / 255.0, atol=1e-6)
    assert (info.width, info.height, info.channels, info.bit_depth, info.format) == (40, 24, 3, 8, 'PNG')
    assert not info.has_alpha


def test_gray_alpha_16bit_palette_cmyk(tmp_path):
    rgb = _rgb()
    gray = rgb[..., 1]
    cv2.imwrite(str(tmp_path / 'g.png'), gray)
    img, info = read_image(str(tmp_path / 'g.png'))
    assert info.channels == 1 and img.shape == (24, 40, 3)
    np.testing.assert_allclose(img[..., 2], gray / 255.0, atol=1e-6)
    keep, _ = read_image(str(tmp_path / 'g.png'), gray='keep')
    assert keep.shape == (24, 40, 1)

    alpha = np.tile(np.arange(40, dtype=np.uint8) * 6, (24, 1))
    cv2.imwrite(str(tmp_path / 'a.png'), np.dstack([rgb[..., ::-1], alpha]))
    img, info = read_image(str(tmp_path / 'a.png'))
    assert img.shape == (24, 40, 3) and info.has_alpha
    np.testing.assert_allclose(info.alpha, alpha / 255.0, atol=1e-6)
    np.testing.assert_allclose(img, rgb / 255.0, atol=1e-6)

    deep = (rgb.astype(np.uint16) * 257 + 3)
    cv2.imwrite(str(tmp_path / 'd.png'), deep[..., ::-1])
    img, info = read_image(str(tmp_path / 'd.png'))
    assert info.bit_depth == 16
    np.testing.assert_allclose(img, deep / 65535.0, atol=1e-6)

    Image.fromarray(gray.astype(np.uint16) * 200).save(tmp_path / 'g16.png')  # PIL mode I;16
    img, info = read_image(str(tmp_path / 'g16.png'))
    assert info.channels == 1 and info.bit_depth == 16

    pal = Image.fromarray(rgb).convert('P')
    pal.save(tmp_path / 'p.png', transparency=0)
    img, info = read_image(str(tmp_path / 'p.png'))
    assert img.shape == (24, 40, 3) and info.has_alpha and info.mode == 'P'
    np.testing.assert_allclose(img, np.asarray(pal.convert('RGB')) / 255.0, atol=1e-6)

    smooth = np.clip(cv2.GaussianBlur(rgb, (9, 9), 3).astype(int), 0, 255).astype(np.uint8)
    Image.fromarray(smooth).convert('CMYK').save(tmp_path / 'c.jpg', quality=98)
    img, info = read_image(str(tmp_path / 'c.jpg'))
    assert info.mode == 'CMYK' and img.shape == (24, 40, 3)
    assert np.abs(img - smooth / 255.0).mean() < 0.03  # converted to RGB, not 4 raw channels


def test_extension_is_ignored(tmp_path):
    rgb = _rgb()
    p = tmp_path / 'really_png.jpg'
    p.write_bytes(cv2.imencode('.png', rgb[..., ::-1])[1].tobytes())
    img, info = read_image(str(p))
    assert info.format == 'PNG'
    np.testing.assert_allclose(img, rgb / 255.0, atol=1e-6)


def test_bad_files_name_the_file_and_reason(tmp_path):
    good = cv2.imencode('.png', _rgb())[1].tobytes()
    cases = {
        'missing.png': None,
        'empty.png': b'',
        'text.png': b'hello, not an image\n' * 10,
        'truncated.png': good[:len(good) // 2],
        'garbage.jpg': b'\xff\xd8\xff\xe0' + os.urandom(200),
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError) as e:
            read_image(str(tmp_path / name))
        assert name in str(e.value) and e.value.reason, name
    with pytest.raises(ImageError, match='not a regular file'):
        read_image(str(tmp_path))


def test_huge_declared_size_refused_before_decoding(tmp_path):
    p = tmp_path / 'bomb.png'
    p.write_bytes(png_declaring(100000, 100000))
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match='100000x100000.*exceeds'):
        read_image(str(p))
    assert time.perf_counter() - t0 < 1.0  # nothing was allocated or decoded


def test_pixel_limit_argument_and_env(tmp_path, monkeypatch):
    p = str(tmp_path / 'a.png')
    cv2.imwrite(p, _rgb())
    with pytest.raises(ImageError, match='exceeds the limit of 100'):
        read_image(p, max_pixels=100)
    monkeypatch.setenv('BASICSR_EXT_MAX_PIXELS', '500')
    with pytest.raises(ImageError, match='limit of 500'):
        read_image(p)
    read_image(p, max_pixels=24 * 40)  # exactly at the limit is fine


def test_write_atomic_roundtrip_and_no_leftovers(tmp_path):
    rgb = _rgb() / 255.0
    alpha = np.linspace(0, 1, 40, dtype=np.float32)[None].repeat(24, 0)
    write_image_atomic(str(tmp_path / 'o16.png'), rgb, bit_depth=16, alpha=alpha)
    img, info = read_image(str(tmp_path / 'o16.png'))
    assert info.bit_depth == 16 and info.has_alpha
    np.testing.assert_allclose(img, rgb, atol=1e-4)
    np.testing.assert_allclose(info.alpha, alpha, atol=1e-4)
    write_image_atomic(str(tmp_path / 'sub' / 'g.png'), rgb[..., :1])
    assert read_image(str(tmp_path / 'sub' / 'g.png'))[1].channels == 1
    with pytest.raises(Exception):
        write_image_atomic(str(tmp_path / 'x.unknownext'), rgb)
    assert sorted(os.listdir(tmp_path)) == ['o16.png', 'sub']  # no temporary files, no partial output


def test_pil_fallback_formats(tmp_path):
    rgb = _rgb()
    buf = io.BytesIO()
    Image.fromarray(rgb).convert('P').save(buf, 'GIF')
    (tmp_path / 'a.gif').write_bytes(buf.getvalue())
    img, info = read_image(str(tmp_path / 'a.gif'))
    assert img.shape == (24, 40, 3) and info.format == 'GIF'
