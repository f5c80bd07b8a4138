"""Every dataset check fails when the dataset is BUILT, with the key or file named."""
import gc
import os
import os.path as osp
import shutil

import cv2
import lmdb
import numpy as np
import pytest

import basicsr.data as bdata
import basicsr.test as btest
import basicsr.train as btrain
from basicsr_ext.data import prep
from basicsr_ext.data.checks import DatasetError


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def data(tmp_path):
    """GT 16x16 / LQ 4x4 folders (3 pairs) and their paired LMDBs."""
    gt, lq = tmp_path / 'gt', tmp_path / 'lq'
    gt.mkdir()
    lq.mkdir()
    for i in range(3):
        cv2.imwrite(str(gt / f'k{i}.png'), _img(16, 16, i))
        cv2.imwrite(str(lq / f'k{i}.png'), _img(4, 4, i))
    prep.make_paired_lmdb(str(gt), str(lq), scale=4, progress=False)
    yield {'gt': str(gt), 'lq': str(lq), 'gt_db': str(gt) + '.lmdb', 'lq_db': str(lq) + '.lmdb', 'root': tmp_path}
    gc.collect()  # close LMDB environments held by built datasets


def paired(d, backend='disk', **kw):
    opt = dict(name='ds', type='PairedImageDataset', phase='train', scale=4, gt_size=8, use_hflip=False,
               use_rot=False, io_backend={'type': backend},
               dataroot_gt=d['gt_db'] if backend == 'lmdb' else d['gt'],
               dataroot_lq=d['lq_db'] if backend == 'lmdb' else d['lq'])
    opt.update(kw)
    return opt


def build(opt):
    return bdata.build_dataset(opt)


def _edit_meta(db, fn):
    p = osp.join(db, 'meta_info.txt')
    lines = open(p).read().splitlines()
    open(p, 'w').write(''.join(line + '\n' for line in fn(lines)))


def test_installed_in_basicsr_namespaces(data):
    assert bdata.build_dataset is btrain.build_dataset is btest.build_dataset
    assert getattr(bdata.build_dataset, '_basicsr_ext_checked', False)
    assert len(build(paired(data))) == 3 and len(build(paired(data, 'lmdb'))) == 3


def test_lmdb_meta_info_names_missing_key(data):
    _edit_meta(data['gt_db'], lambda lines: lines + ['ghost.png (16,16,3) 1'])
    with pytest.raises(DatasetError, match=r"meta_info.txt names 1 key\(s\) missing from the database: 'ghost'"):
        build(paired(data, 'lmdb'))


def test_lmdb_holds_key_not_in_meta_info(data):
    _edit_meta(data['lq_db'], lambda lines: lines[:2])
    with pytest.raises(DatasetError, match=r"lq.lmdb holds 1 key\(s\) not listed in its meta_info.txt: 'k2'"):
        build(paired(data, 'lmdb'))


def test_lmdb_gt_lq_different_keys(data):
    env = lmdb.open(data['lq_db'], map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b'other', cv2.imencode('.png', _img(4, 4))[1].tobytes())
    env.close()
    _edit_meta(data['lq_db'], lambda lines: lines + ['other.png (4,4,3) 1'])
    with pytest.raises(DatasetError, match=r"different keys: only in GT: -; only in LQ: 'other'"):
        build(paired(data, 'lmdb'))


def test_lmdb_size_mismatch_from_meta_info(data):
    _edit_meta(data['lq_db'], lambda lines: [line.replace('k1.png (4,4,3)', 'k1.png (5,4,3)') for line in lines])
    with pytest.raises(DatasetError, match=r'size mismatch for scale 4: GT k1 .* 16x16 .* LQ k1 .* 5x4'):
        build(paired(data, 'lmdb'))
    with pytest.raises(DatasetError, match=r'GT k0 \(.*\) is 16x16, smaller than gt_size 32'):
        build(paired(data, 'lmdb', gt_size=32, scale=1, dataroot_lq=data['gt_db']))


def test_missing_and_empty_folders(data):
    with pytest.raises(DatasetError, match=r"dataroot_gt '.*nowhere' does not exist"):
        build(paired(data, dataroot_gt=str(data['root'] / 'nowhere')))
    empty = data['root'] / 'empty'
    empty.mkdir()
    with pytest.raises(DatasetError, match=r'dataroot_lq .*empty contains no images'):
        build(paired(data, dataroot_lq=str(empty)))
    with pytest.raises(DatasetError, match=r'dataroot_lq .*empty contains no images'):
        build(dict(name='s', type='SingleImageDataset', phase='test', dataroot_lq=str(empty),
                   io_backend={'type': 'disk'}))
    with pytest.raises(DatasetError, match=r"dataroot_gt '.*gt' must end with '.lmdb'"):
        build(paired(data, 'lmdb', dataroot_gt=data['gt']))


def test_folder_count_name_and_size_mismatch(data):
    os.remove(osp.join(data['lq'], 'k2.png'))
    with pytest.raises(DatasetError, match=r'\(3 images\) and LQ folder .* \(2 images\) .* GT without LQ: \'k2.png\''):
        build(paired(data))
    cv2.imwrite(osp.join(data['lq'], 'k2.png'), _img(4, 5))
    with pytest.raises(DatasetError, match=r'size mismatch .*k2.png is 16x16 .*k2.png is 4x5'):
        build(paired(data))
    # validation tolerates a GT larger by < scale (BasicSR crops it), training does not
    cv2.imwrite(osp.join(data['lq'], 'k2.png'), _img(4, 4))
    cv2.imwrite(osp.join(data['gt'], 'k2.png'), _img(17, 19))
    assert len(build(paired(data, phase='val'))) == 3
    with pytest.raises(DatasetError, match='k2.png is 17x19'):
        build(paired(data))
    open(osp.join(data['gt'], 'notes.txt'), 'w').write('x')
    with pytest.raises(DatasetError, match=r"non-image files, which BasicSR would try to decode: 'notes.txt'"):
        build(paired(data, phase='val'))


def test_meta_info_line_escaping_root_or_missing(data):
    meta = data['root'] / 'meta.txt'
    for bad, what in (('../gt/k0.png', 'escapes the dataset root'), ('/etc/passwd', 'escapes the dataset root'),
                      ('k9.png', r'gt/k9.png does not exist')):
        meta.write_text(f'k1.png (16,16,3)\n{bad} (16,16,3)\n')
        with pytest.raises(DatasetError, match=rf'meta.txt, line 2: .*{what}'):
            build(paired(data, meta_info_file=str(meta)))
        with pytest.raises(DatasetError, match=rf'meta.txt, line 2: .*{what}'):
            build(dict(name='g', type='GTOnlyDataset', phase='train', dataroot_gt=data['gt'], gt_size=8,
                       meta_info_file=str(meta), io_backend={'type': 'disk'}))
        with pytest.raises(DatasetError, match=rf'meta.txt, line 2: .*{what}'):
            build(dict(name='r', type='RealESRGANDataset', phase='train', dataroot_gt=data['gt'],
                       meta_info=str(meta), io_backend={'type': 'disk'}))
    with pytest.raises(DatasetError, match="option meta_info is missing: RealESRGANDataset"):
        build(dict(name='r', type='RealESRGANDataset', dataroot_gt=data['gt'], io_backend={'type': 'disk'}))
    with pytest.raises(DatasetError, match='option meta_info_file is null'):
        build(dict(name='s', type='SingleImageDataset', dataroot_lq=data['lq'], meta_info_file=None,
                   io_backend={'type': 'disk'}))


def test_unreadable_image_named_at_build(data):
    with open(osp.join(data['lq'], 'k1.png'), 'wb') as f:
        f.write(b'not an image at all')
    with pytest.raises(DatasetError, match=r'lq/k1.png: not an image'):
        build(paired(data))


def test_check_switch_and_cap(data):
    cv2.imwrite(osp.join(data['lq'], 'k1.png'), _img(5, 4))
    with pytest.raises(DatasetError, match='k1.png'):
        build(paired(data))
    # headers read: evenly spread, capped -> with a cap of 2 (first and last) k1 is not read
    assert len(build(paired(data, check_max_files=2))) == 3
    with pytest.raises(DatasetError, match='k1.png'):
        build(paired(data, check_max_files=None))
    assert len(build(paired(data, check=False))) == 3
    with pytest.raises(DatasetError, match='check must be true or false'):
        build(paired(data, check='yes'))
    with pytest.raises(DatasetError, match='check_max_files must be'):
        build(paired(data, check_max_files=-1))


def test_gt_only_lmdb_and_folder(data):
    opt = dict(name='g', type='GTOnlyDataset', phase='train', dataroot_gt=data['gt_db'], gt_size=8,
               io_backend={'type': 'lmdb'})
    assert len(build(opt)) == 3
    shutil.rmtree(data['gt_db'])
    with pytest.raises(DatasetError, match=r"dataroot_gt '.*gt.lmdb' does not exist"):
        build(opt)
    sub = data['root'] / 'tree' / 'a'
    sub.mkdir(parents=True)
    with pytest.raises(DatasetError, match=r'tree contains no images'):
        build(dict(opt, dataroot_gt=str(data['root'] / 'tree'), io_backend={'type': 'disk'}))


def test_sample_errors_name_the_key(data):
    """A corrupt LMDB value passes the build (values are not decoded) and is named when read."""
    env = lmdb.open(data['gt_db'], map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b'k1', b'\x89PNG broken')
    env.close()
    ds = build(paired(data, 'lmdb', phase='val'))
    assert ds[0]['gt'].shape == (3, 16, 16)
    with pytest.raises(DatasetError, match=r"dataset 'ds' \(PairedImageDataset\): cannot load sample 1 "
                                           r"\(lq k1, gt k1\): cannot decode 11 image bytes"):
        ds[1]
    with pytest.raises(IndexError):
        ds[3]
    assert isinstance(ds, bdata.paired_image_dataset.PairedImageDataset) and type(ds).__name__ == 'PairedImageDataset'
