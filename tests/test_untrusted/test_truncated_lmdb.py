"""Issue 13.2: a truncated LMDB ``data.mdb`` is a DatasetError naming the file at dataset build, never a SIGBUS
(exit 135) at the first iteration that touches a missing page."""
import os
import signal
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest

from tests import harness
from tests.test_untrusted import stock

N, GT, LQ = 6, 64, 16


def _write_lmdb(path, side, seed):
    """A BasicSR LMDB (data.mdb + meta_info.txt) of N random PNGs; values big enough to span overflow pages."""
    rng = np.random.default_rng(seed)
    os.makedirs(path)
    env = lmdb.open(path, map_size=1 << 24)
    lines = []
    with env.begin(write=True) as txn:
        for i in range(N):
            img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            txn.put(f'im{i}'.encode(), cv2.imencode('.png', img)[1].tobytes())
            lines.append(f'im{i}.png ({side},{side},3) 1\n')
    env.close()
    with open(os.path.join(path, 'meta_info.txt'), 'w') as f:
        f.writelines(lines)
    return path


def _pair(root):
    return {'gt': _write_lmdb(os.path.join(root, 'gt.lmdb'), GT, 0),
            'lq': _write_lmdb(os.path.join(root, 'lq.lmdb'), LQ, 1)}


def _truncate(path, size):
    with open(os.path.join(path, 'data.mdb'), 'r+b') as f:
        f.truncate(size)


SWEEP = r'''
import os, shutil, sys
import basicsr_ext  # noqa
import basicsr.data as bdata
from basicsr_ext.data.checks import DatasetError
gt, lq, work = sys.argv[1:4]
full = os.path.getsize(os.path.join(gt, 'data.mdb'))
sizes = sorted({0, 1, 100, 4096, 8191, 8192, 8193, 3 * 4096, full // 2, full - 4096, full - 1})
refused = 0
for size in sizes:
    cut = os.path.join(work, f'cut{size}.lmdb')
    shutil.copytree(gt, cut)
    with open(os.path.join(cut, 'data.mdb'), 'r+b') as f:
        f.truncate(size)
    opt = dict(name='t', type='PairedImageDataset', phase='train', scale=4, gt_size=32, io_backend={'type': 'lmdb'},
               dataroot_gt=cut, dataroot_lq=lq, use_hflip=False, use_rot=False)
    try:
        ds = bdata.build_dataset(opt)
    except DatasetError as e:
        assert 'data.mdb' in str(e) and cut in str(e), str(e)
        refused += 1
        continue
    for i in range(len(ds)):  # whatever was not refused must read without a crash
        ds[i]
print('REFUSED', refused, 'OF', len(sizes))
# check: false switches the data checks off, not this one (any type reading the LMDB)
opt = dict(name='t', type='PairedImageDataset', phase='train', scale=4, gt_size=32, io_backend={'type': 'lmdb'},
           dataroot_gt=os.path.join(work, f'cut{full - 1}.lmdb'), dataroot_lq=lq, check=False)
try:
    bdata.build_dataset(opt)
except DatasetError as e:
    print('UNCHECKED REFUSED', 'dataroot_gt' in str(e) and 'truncated' in str(e))
'''


@pytest.mark.e2e
def test_truncated_data_mdb_refused_at_build_never_sigbus(tmp_path):
    dbs = _pair(str(tmp_path))
    out = subprocess.run([sys.executable, '-c', SWEEP, dbs['gt'], dbs['lq'], str(tmp_path)], env=harness.env(),
                         capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])  # -7 / 135 would be the SIGBUS
    assert 'REFUSED 11 OF 11' in out.stdout and 'UNCHECKED REFUSED True' in out.stdout, out.stdout


@pytest.mark.e2e
def test_training_on_truncated_lmdb_is_one_line_not_sigbus(tmp_path):
    dbs = _pair(str(tmp_path))
    size = os.path.getsize(os.path.join(dbs['gt'], 'data.mdb'))
    _truncate(dbs['gt'], size - 3 * 4096)  # the tail of the last images: the keys still list fine
    opt = stock.sr_options(dbs, 'lmdb_cut', io_backend={'type': 'lmdb'})
    out = stock.train(harness.write_options(str(tmp_path / 'o.yml'), opt), tmp_path)
    assert out.returncode not in (135, -signal.SIGBUS)
    stock.assert_refused(out, os.path.join(dbs['gt'], 'data.mdb'), 'truncated')
    models = tmp_path / 'experiments' / 'lmdb_cut' / 'models'
    assert not models.exists() or not os.listdir(models)


@pytest.mark.e2e
def test_intact_lmdb_still_trains(tmp_path):
    dbs = _pair(str(tmp_path))
    opt = stock.sr_options(dbs, 'lmdb_ok', io_backend={'type': 'lmdb'})
    out = stock.train(harness.write_options(str(tmp_path / 'o.yml'), opt), tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / 'experiments' / 'lmdb_ok' / 'models' / 'net_g_2.pth').exists()
