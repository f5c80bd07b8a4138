"""Seeded fuzz harness for read_image: a few hundred malformed images, each an ImageError or a correct decode.

The decoding runs in a child process (a crash would show as a signal, a hang as the timeout) that writes the
name of the file it is working on before each decode, so a failure names the file.
Run by hand for more cases: ``python tests/test_untrusted/test_fuzz_images.py --make DIR --n 2000 --seed 1``
then ``python tests/test_untrusted/test_fuzz_images.py --check DIR``.
"""
import argparse
import io
import json
import os
import random
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ_MAX_PIXELS = 4096 * 4096

pytestmark = pytest.mark.e2e  # every test starts Python subprocesses (entry points, fresh interpreters)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)


def _seeds() -> dict[str, bytes]:
    """Small valid images of every kind read_image handles."""
    import cv2
    from PIL import Image
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)

    def pil(im, fmt, **kw):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        return b.getvalue()

    seeds = {
        'rgb.png': cv2.imencode('.png', rgb)[1].tobytes(),
        'rgba.png': cv2.imencode('.png', np.dstack([rgb, rgb[..., 0]]))[1].tobytes(),
        'gray16.png': cv2.imencode('.png', rgb[..., 0].astype(np.uint16) * 257)[1].tobytes(),
        'rgb16.png': cv2.imencode('.png', rgb.astype(np.uint16) * 257)[1].tobytes(),
        'pal.png': pil(Image.fromarray(rgb).convert('P'), 'PNG', transparency=3),
        'a.jpg': cv2.imencode('.jpg', rgb)[1].tobytes(),
        'cmyk.jpg': pil(Image.fromarray(rgb).convert('CMYK'), 'JPEG'),
        'a.bmp': cv2.imencode('.bmp', rgb)[1].tobytes(),
        'a.gif': pil(Image.fromarray(rgb).convert('P'), 'GIF'),
        'a.webp': pil(Image.fromarray(rgb), 'WEBP'),
        'a.tif': pil(Image.fromarray(rgb), 'TIFF'),
        'la.png': pil(Image.fromarray(rgb[..., 0]).convert('LA'), 'PNG'),
    }
    return seeds


def _png_with_size(data: bytes, w: int, h: int) -> bytes:
    """Rewrite a PNG's IHDR width/height with a valid CRC (the decoder sees a plausible header)."""
    if not data.startswith(b'\x89PNG') or len(data) < 33:
        return data
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack('>II', w, h)
    return data[:8] + _chunk(b'IHDR', bytes(ihdr)) + data[33:]


def make_cases(folder: str, n: int, seed: int) -> list[str]:
    """Write ``n`` mutated files (+ fixed edge cases) into ``folder``; returns their names."""
    rng = random.Random(seed)
    seeds = _seeds()
    names = list(seeds)
    cases: dict[str, bytes] = {'zero.png': b'', 'one.png': b'\x89', 'sig_only.png': b'\x89PNG\r\n\x1a\n',
                               'huge_100000.png': _png_with_size(seeds['rgb.png'], 100000, 100000),
                               'huge_wide.png': _png_with_size(seeds['rgb.png'], 2**31 - 1, 1),
                               'zero_w.png': _png_with_size(seeds['rgb.png'], 0, 10),
                               'text.jpg': b'<html>not an image</html>'}
    for name, data in seeds.items():
        cases['ok_' + name] = data
        other = names[(names.index(name) + 1) % len(names)]
        cases['wrongext_' + name.split('.')[0] + os.path.splitext(other)[1]] = data
    kinds = ('truncate', 'flip', 'bytes', 'insert', 'delete', 'size', 'splice')
    for i in range(n):
        name = rng.choice(names)
        data = bytearray(seeds[name])
        kind = kinds[i % len(kinds)]
        if kind == 'truncate':
            data = data[:rng.randrange(0, len(data))]
        elif kind == 'flip':
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
        elif kind == 'bytes':
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(len(data))
                data[pos] = rng.choice([0, 0xff, 0x7f, 0x80, rng.randrange(256)])
        elif kind == 'insert':
            pos = rng.randrange(len(data))
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif kind == 'delete':
            pos = rng.randrange(len(data))
            del data[pos:pos + rng.randint(1, 64)]
        elif kind == 'size':
            w, h = rng.choice([(100000, 100000), (1, 1), (5000, 5000), (65535, 3), (7, 90000), (2**31 - 1, 2)])
            data = bytearray(_png_with_size(bytes(seeds['rgb.png' if rng.random() < 0.7 else 'rgba.png']), w, h))
        else:  # header of one format, body of another
            a, b = rng.choice(names), rng.choice(names)
            cut = rng.randrange(8, 64)
            data = bytearray(seeds[a][:cut] + seeds[b][cut:])
        ext = os.path.splitext(rng.choice(names))[1] if rng.random() < 0.3 else os.path.splitext(name)[1]
        cases[f'{i:04d}_{kind}_{name.split(".")[0]}{ext}'] = bytes(data)
    for fname, data in cases.items():
        with open(os.path.join(folder, fname), 'wb') as f:
            f.write(data)
    return sorted(cases)


def check_folder(folder: str, progress_file: str) -> dict:
    """Decode every file; count ImageErrors and decodes; anything else is recorded as a failure."""
    from basicsr_ext.utils.image_io import ImageError, read_image
    out = {'ok': 0, 'image_error': 0, 'failures': [], 'slowest': [0.0, '']}
    for fname in sorted(os.listdir(folder)):
        with open(progress_file, 'w') as f:
            f.write(fname)
        t0 = time.perf_counter()
        try:
            img, info = read_image(os.path.join(folder, fname), max_pixels=FUZZ_MAX_PIXELS)
            good = (img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3
                    and img.shape[:2] == (info.height, info.width) and np.isfinite(img).all()
                    and img.min() >= 0 and img.max() <= 1 and info.bit_depth in (8, 16, 32)
                    and (info.alpha is None or info.alpha.shape == img.shape[:2]))
            if good:
                out['ok'] += 1
            else:
                out['failures'].append(f'{fname}: bad decode {img.shape} {img.dtype} {info}')
        except ImageError as e:
            out['image_error'] += 1
            if fname not in str(e):
                out['failures'].append(f'{fname}: ImageError does not name the file: {e}')
        except BaseException as e:  # noqa: BLE001 - the point of the harness
            out['failures'].append(f'{fname}: uncaught {type(e).__name__}: {e}')
        dt = time.perf_counter() - t0
        if dt > out['slowest'][0]:
            out['slowest'] = [dt, fname]
    return out


def test_fuzzed_images_never_escape(tmp_path):
    folder = tmp_path / 'cases'
    folder.mkdir()
    names = make_cases(str(folder), n=350, seed=1234)
    assert len(names) > 370
    progress = tmp_path / 'progress.txt'
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, '--check', str(folder), '--progress', str(progress)],
                              cwd=ROOT, capture_output=True, text=True, timeout=45)
    except subprocess.TimeoutExpired:
        pytest.fail(f'hang: the harness did not finish in 45 s; last file: {progress.read_text()}')
    elapsed = time.perf_counter() - t0
    last = progress.read_text() if progress.exists() else '?'
    assert proc.returncode == 0, f'crash (return code {proc.returncode}) on {last}:\n{proc.stderr[-2000:]}'
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['failures'] == [], result['failures'][:10]
    assert result['ok'] + result['image_error'] == len(names)
    assert result['ok'] >= 24 and result['image_error'] >= 50  # both outcomes really occur
    assert elapsed < 30, f'fuzz run took {elapsed:.1f}s (slowest file {result["slowest"]})'


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--make', help='write cases into this folder')
    parser.add_argument('--check', help='decode every file of this folder; print a JSON summary')
    parser.add_argument('--progress', default=os.devnull, help='file that holds the name being decoded')
    parser.add_argument('--n', type=int, default=350)
    parser.add_argument('--seed', type=int, default=1234)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    if args.make:
        os.makedirs(args.make, exist_ok=True)
        print(len(make_cases(args.make, args.n, args.seed)), 'cases written to', args.make)
    if args.check:
        print(json.dumps(check_folder(args.check, args.progress)))
