"""Fuzz LMDB datasets: corrupt/truncated/replaced values, missing keys, wrong meta_info.txt.

Each case builds a dataset through BasicSR's (checked) ``build_dataset`` and reads every sample. Every case ends
in a DatasetError (at build or naming the sample) or well-formed samples (GT = LQ x scale, values in [0, 1]);
never another exception or a hang. Seeded, a few hundred cases, < 20 s.
"""
import gc
import os
import random
import time

import cv2
import lmdb
import numpy as np
import pytest
import torch

import basicsr.data as bdata
from basicsr_ext.data.checks import DatasetError

N_CASES = 240
KEYS = ['a0', 'a1', 'b2', 'c3']
GT, LQ = 32, 8


def _png(h, w, seed, ch=3, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    peak = 255 if dtype == np.uint8 else 65535
    img = rng.integers(0, peak + 1, (h, w, ch) if ch > 1 else (h, w), dtype=np.int64).astype(dtype)
    return cv2.imencode('.png', img)[1].tobytes()


def _base():
    gt = {k: _png(GT, GT, i) for i, k in enumerate(KEYS)}
    lq = {k: _png(LQ, LQ, 10 + i) for i, k in enumerate(KEYS)}
    meta = {'gt': [f'{k}.png ({GT},{GT},3) 1' for k in KEYS], 'lq': [f'{k}.png ({LQ},{LQ},3) 1' for k in KEYS]}
    return {'gt': gt, 'lq': lq}, meta


def _write_db(path, items, meta_lines):
    os.makedirs(path)
    env = lmdb.open(path, map_size=1 << 22)
    with env.begin(write=True) as txn:
        for k, v in items.items():
            txn.put(k.encode('ascii', 'backslashreplace'), v)
    env.close()
    if meta_lines is not None:
        data = meta_lines if isinstance(meta_lines, bytes) else ''.join(line + '\n' for line in meta_lines).encode()
        with open(os.path.join(path, 'meta_info.txt'), 'wb') as f:
            f.write(data)


def _mutate_value(rng, v: bytes, side: int) -> bytes:
    kind = rng.randrange(9)
    if kind == 0:
        return v[:rng.randrange(len(v))]
    if kind == 1:
        b = bytearray(v)
        for _ in range(rng.randint(1, 6)):
            p = rng.randrange(len(b))
            b[p] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    if kind == 3:
        return b''
    if kind == 4:  # a valid image of the wrong size
        return _png(side + rng.choice([-1, 1, side]), side, rng.randrange(99))
    if kind == 5:  # valid grayscale / 16-bit / JPEG of the right size (decodes to a correct sample)
        return rng.choice([_png(side, side, 1, ch=1), _png(side, side, 2, dtype=np.uint16),
                           cv2.imencode('.jpg', np.zeros((side, side, 3), np.uint8))[1].tobytes()])
    if kind == 6:  # PNG header claiming a huge image
        b = bytearray(v)
        b[16:24] = (40000).to_bytes(4, 'big') * 2
        return bytes(b)
    if kind == 7:
        return v + bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    return v[:33] + v[33:][::-1]


def _mutate_meta(rng, lines: list[str]):
    kind = rng.randrange(11)
    lines = list(lines)
    i = rng.randrange(len(lines))
    if kind == 0:
        del lines[i]
    elif kind == 1:
        lines.append('ghost.png (32,32,3) 1')
    elif kind == 2:
        lines.append(lines[i])
    elif kind == 3:
        lines[i] = lines[i].replace('.png', '')
    elif kind == 4:
        lines[i] = lines[i].replace('32', '31').replace('(8,', '(9,')
    elif kind == 5:
        lines.insert(i, '')
    elif kind == 6:
        return None  # no meta_info.txt
    elif kind == 7:
        return b'\xff\xfe\x00' + lines[i].encode()
    elif kind == 8:
        return []
    elif kind == 9:
        lines[i] = '.png (1,1,3) 1'
    else:
        lines[i] = lines[i][:rng.randrange(len(lines[i]))]
    return lines


def _close(ds):
    fc = getattr(ds, 'file_client', None)
    for env in getattr(getattr(fc, 'client', None), '_client', {}).values():
        env.close()


def _run_case(root, opt_kind, items, meta, rng) -> str:
    gt_db, lq_db = os.path.join(root, 'gt.lmdb'), os.path.join(root, 'lq.lmdb')
    _write_db(gt_db, items['gt'], meta['gt'])
    _write_db(lq_db, items['lq'], meta['lq'])
    if opt_kind == 'gt_only':
        opt = dict(name='f', type='GTOnlyDataset', phase='train', dataroot_gt=gt_db, gt_size=16,
                   resize_mode=rng.choice(['random_crop', 'none']), io_backend={'type': 'lmdb'})
    else:
        opt = dict(name='f', type='PairedImageDataset', phase=opt_kind, scale=4, dataroot_gt=gt_db,
                   dataroot_lq=lq_db, gt_size=16, use_hflip=True, use_rot=True, io_backend={'type': 'lmdb'})
    ds = None
    try:
        ds = bdata.build_dataset(opt)
        for i in range(len(ds)):
            try:
                s = ds[i]
            except DatasetError as e:
                assert 'cannot load sample' in str(e)
                return 'sample-error'
            assert s['gt'].dtype == torch.float32 and s['gt'].shape[0] == 3
            assert 0 <= float(s['gt'].min()) and float(s['gt'].max()) <= 1
            if 'lq' in s:
                assert s['gt'].shape[-2:] == tuple(4 * x for x in s['lq'].shape[-2:])
        return 'ok'
    except DatasetError:
        return 'build-error'
    finally:
        if ds is not None:
            _close(ds)
        del ds


@pytest.mark.parametrize('seed', [0])
def test_fuzz_lmdb_datasets(tmp_path, seed):
    rng = random.Random(seed)
    base_items, base_meta = _base()
    counts = {}
    t0 = time.time()
    for n in range(N_CASES):
        items = {'gt': dict(base_items['gt']), 'lq': dict(base_items['lq'])}
        meta = {k: list(v) for k, v in base_meta.items()}
        for _ in range(rng.randint(1, 2)):
            side = rng.choice(['gt', 'lq'])
            what = rng.randrange(3)
            if what == 0 and items[side]:
                k = rng.choice(sorted(items[side]))
                items[side][k] = _mutate_value(rng, items[side][k], GT if side == 'gt' else LQ)
            elif what == 1:
                items[side].pop(rng.choice(KEYS), None)
            elif isinstance(meta[side], list) and meta[side]:
                meta[side] = _mutate_meta(rng, meta[side])
        kind = rng.choice(['train', 'val', 'gt_only'])
        t = time.time()
        out = _run_case(str(tmp_path / f'c{n}'), kind, items, meta, rng)
        assert time.time() - t < 3, f'case {n} took {time.time() - t:.1f} s'
        counts[out] = counts.get(out, 0) + 1
        if n % 50 == 0:
            gc.collect()
    assert time.time() - t0 < 20
    assert counts.get('build-error', 0) > N_CASES // 10 and counts.get('sample-error', 0) > N_CASES // 20, counts
    assert counts.get('ok', 0) > 0, counts


def test_unmutated_base_reads_back(tmp_path):
    items, meta = _base()
    for kind in ('train', 'val', 'gt_only'):
        assert _run_case(str(tmp_path / kind), kind, items, meta, random.Random(0)) == 'ok'
