"""Dataset tooling: images -> sub-images -> LMDB -> BasicSR PairedImageDataset, and the named errors."""
import gc
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

import basicsr.data as bdata
from basicsr_ext.data import prep
from basicsr_ext.data.checks import DatasetError


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour ramps + noise, BGR uint8 (so bicubic/crop errors would show)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], axis=2) * 200 + rng.uniform(0, 55, (h, w, 3))
    return img.astype(np.uint8)


@pytest.fixture
def hr_folder(tmp_path):
    d = tmp_path / 'HR'
    d.mkdir()
    for i, (h, w) in enumerate([(102, 130), (96, 96), (61, 150)]):
        cv2.imwrite(str(d / f'img{i}.png'), _photo(h, w, i))
    return str(d)


def _paired(tmp_path, hr_folder, crop=48, step=32):
    hr_mod, lr = str(tmp_path / 'HR_mod'), str(tmp_path / 'LRx4')
    prep.bicubic_downscale(hr_folder, lr, 4, hr_mod_folder=hr_mod, progress=False)
    gt_sub, lq_sub = str(tmp_path / 'HR_sub'), str(tmp_path / 'LRx4_sub')
    n_gt = prep.extract_subimages(hr_mod, gt_sub, crop, step, 0, scale=1, progress=False)
    n_lq = prep.extract_subimages(lr, lq_sub, crop, step, 0, scale=4, progress=False)
    assert n_gt == n_lq
    return hr_mod, lr, gt_sub, lq_sub


def _dataset(gt, lq, backend, **extra):
    opt = dict(name='t', type='PairedImageDataset', phase='val', scale=4, filename_tmpl='{}', dataroot_gt=gt,
               dataroot_lq=lq, io_backend={'type': backend}, **extra)
    return bdata.build_dataset(opt)


def test_crop_positions_follow_basicsr_rule():
    # DIV2K-like side: 1404 px, 480 crops, step 240 -> last crop flush with the border
    assert prep.crop_positions(1404, 480, 240, 0) == [0, 240, 480, 720, 924]
    assert prep.crop_positions(960, 480, 240, 0) == [0, 240, 480]
    assert prep.crop_positions(1000, 480, 240, 100) == [0, 240, 480]  # 40 px left over <= thresh: dropped
    assert prep.crop_positions(100, 480, 240, 0) == [0]  # shorter than the crop: one crop of the whole side
    assert prep.strip_scale_suffix('0001x4', 4) == '0001' and prep.strip_scale_suffix('0001x4', 2) == '0001x4'


def test_bicubic_is_basicsr_imresize_with_mod_crop(tmp_path, hr_folder):
    from basicsr.utils.matlab_functions import imresize
    hr_mod, lr = str(tmp_path / 'm'), str(tmp_path / 'l')
    names = prep.bicubic_downscale(hr_folder, lr, 4, hr_mod_folder=hr_mod, progress=False)
    assert names == ['img0.png', 'img1.png', 'img2.png']
    src = cv2.imread(osp.join(hr_folder, 'img0.png'))
    hr = cv2.imread(osp.join(hr_mod, 'img0.png'))
    assert hr.shape == (100, 128, 3) and np.array_equal(hr, src[:100, :128])
    expected = np.clip(np.round(imresize(hr / 255.0, 0.25) * 255), 0, 255).astype(np.uint8)
    got = cv2.imread(osp.join(lr, 'img0.png'))
    assert got.shape == (25, 32, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # float32 rounding only


def test_round_trip_lmdb_equals_folder(tmp_path, hr_folder):
    _, _, gt_sub, lq_sub = _paired(tmp_path, hr_folder)
    names = sorted(os.listdir(gt_sub))
    assert names[0] == 'img0_s001.png' and sorted(os.listdir(lq_sub)) == names
    # sub-image i of the LR is exactly the bicubic of sub-image i of the HR region (sizes x4)
    for n in names:
        g, q = cv2.imread(osp.join(gt_sub, n)), cv2.imread(osp.join(lq_sub, n))
        assert g.shape[0] == 4 * q.shape[0] and g.shape[1] == 4 * q.shape[1]
    meta = str(tmp_path / 'meta.txt')
    assert prep.write_meta_info(gt_sub, meta, lq_folder=lq_sub, scale=4, progress=False) == len(names)
    assert open(meta).readline().strip() == 'img0_s001.png (48,48,3)'
    keys = prep.make_paired_lmdb(gt_sub, lq_sub, scale=4, progress=False)
    assert keys == [osp.splitext(n)[0] for n in names]
    assert not [f for f in os.listdir(tmp_path) if '.partial-' in f]

    lm = _dataset(gt_sub + '.lmdb', lq_sub + '.lmdb', 'lmdb')
    disk = _dataset(gt_sub, lq_sub, 'disk')
    meta_ds = _dataset(gt_sub, lq_sub, 'disk', meta_info_file=meta)
    by_key = {osp.splitext(osp.basename(p['gt_path']))[0]: i for i, p in enumerate(disk.paths)}
    assert len(lm) == len(disk) == len(meta_ds) == len(names)
    for i in range(len(lm)):
        a = lm[i]
        b, c = disk[by_key[a['gt_path']]], meta_ds[i]
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])
        assert torch.equal(a['gt'], c['gt']) and torch.equal(a['lq'], c['lq'])
    del lm
    gc.collect()


def test_errors_name_the_folder_or_file(tmp_path, hr_folder):
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(DatasetError, match='no images in .*empty'):
        prep.extract_subimages(str(empty), str(tmp_path / 'o'), progress=False)
    with pytest.raises(DatasetError, match='folder not found: .*missing'):
        prep.make_lmdb(str(tmp_path / 'missing'), progress=False)

    # an unreadable image is named (and nothing is written)
    bad = tmp_path / 'bad'
    bad.mkdir()
    cv2.imwrite(str(bad / 'a.png'), _photo(8, 8, 0))
    (bad / 'b.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'garbage' * 10)
    with pytest.raises(DatasetError, match=r'b\.png'):
        prep.make_lmdb(str(bad), progress=False)
    assert not osp.exists(str(bad) + '.lmdb')
    with pytest.raises(DatasetError, match=r'b\.png'):
        prep.extract_subimages(str(bad), str(tmp_path / 'bad_sub'), 4, 4, progress=False)
    assert not osp.exists(tmp_path / 'bad_sub') and not [f for f in os.listdir(tmp_path) if '.partial-' in f]

    # GT/LQ count and name mismatch
    gt, lq = tmp_path / 'gt', tmp_path / 'lq'
    gt.mkdir()
    lq.mkdir()
    for n in ('x', 'y', 'z'):
        cv2.imwrite(str(gt / f'{n}.png'), _photo(16, 16, 1))
    for n in ('x', 'y'):
        cv2.imwrite(str(lq / f'{n}.png'), _photo(4, 4, 1))
    with pytest.raises(DatasetError, match=r'GT without LQ: z\.png'):
        prep.make_paired_lmdb(str(gt), str(lq), scale=4, progress=False)
    cv2.imwrite(str(lq / 'w.png'), _photo(4, 4, 1))
    with pytest.raises(DatasetError, match=r'LQ without GT: w\.png'):
        prep.write_meta_info(str(gt), str(tmp_path / 'm.txt'), lq_folder=str(lq), progress=False)
    os.remove(lq / 'w.png')
    cv2.imwrite(str(lq / 'z.png'), _photo(5, 4, 1))
    with pytest.raises(DatasetError, match=r'size mismatch for scale 4: .*z\.png'):
        prep.make_paired_lmdb(str(gt), str(lq), scale=4, progress=False)
    # a '.' in a name would break BasicSR's key parsing
    cv2.imwrite(str(gt / 'v1.2.png'), _photo(16, 16, 1))
    with pytest.raises(DatasetError, match=r"v1\.2\.png.*'\.'"):
        prep.make_lmdb(str(gt), progress=False)


def test_existing_lmdb_refused_then_overwritten_atomically(tmp_path, hr_folder, monkeypatch):
    out = str(tmp_path / 'HR.lmdb')
    assert prep.make_lmdb(hr_folder, out, progress=False) == ['img0', 'img1', 'img2']
    with pytest.raises(DatasetError, match='HR.lmdb already exists.*--overwrite'):
        prep.make_lmdb(hr_folder, out, progress=False)
    os.remove(osp.join(hr_folder, 'img2.png'))

    # an interrupt while writing leaves the old LMDB untouched and no temporary folder
    import basicsr.utils.lmdb_util as lu
    real = lu.make_lmdb_from_imgs

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(lu, 'make_lmdb_from_imgs', interrupted)
    with pytest.raises(KeyboardInterrupt):
        prep.make_lmdb(hr_folder, out, overwrite=True, progress=False)
    assert open(osp.join(out, 'meta_info.txt')).read().count('\n') == 3
    assert sorted(os.listdir(tmp_path)) == ['HR', 'HR.lmdb']
    monkeypatch.setattr(lu, 'make_lmdb_from_imgs', real)
    assert prep.make_lmdb(hr_folder, out, overwrite=True, progress=False) == ['img0', 'img1']
    assert open(osp.join(out, 'meta_info.txt')).read().splitlines() == ['img0.png (102,130,3) 1',
                                                                      'img1.png (96,96,3) 1']
    assert sorted(os.listdir(tmp_path)) == ['HR', 'HR.lmdb']


def test_cli_exit_codes_and_table(tmp_path, hr_folder, capsys):
    from tests.harness import load_script
    cli = load_script('data/prepare_data')
    assert cli.main(['extract-subimages', hr_folder, str(tmp_path / 'sub'), '--crop-size', '64', '--step', '64',
                     '--quiet']) == 0
    assert '| sub-images |' in capsys.readouterr().out
    assert cli.main(['extract-subimages', hr_folder, str(tmp_path / 'sub'), '--quiet']) == 1
    assert 'sub already exists' in capsys.readouterr().err
    assert cli.main(['lmdb', str(tmp_path / 'nothing'), '--quiet']) == 1
    assert 'nothing' in capsys.readouterr().err


def test_prepare_recipes(tmp_path, hr_folder):
    out = prep.prepare_dataset('div2k', [hr_folder], str(tmp_path / 'div2k'), scales=[2, 4], crop_size=48, step=48,
                               lmdb=True, progress=False)
    assert sorted(out) == ['HR', 'HR_sub', 'HR_sub.lmdb', 'LRx2', 'LRx2_sub', 'LRx2_sub.lmdb', 'LRx4', 'LRx4_sub',
                           'LRx4_sub.lmdb', 'meta_info']
    assert cv2.imread(osp.join(out['HR'], 'img2.png')).shape == (60, 148, 3)  # mod 4 = lcm(2, 4)
    ds = _dataset(out['HR_sub.lmdb'], out['LRx4_sub.lmdb'], 'lmdb')
    assert len(ds) == len(os.listdir(out['HR_sub'])) and ds[0]['gt'].shape[-1] == 4 * ds[0]['lq'].shape[-1]
    del ds
    gc.collect()

    # imagenet: GT-only, nested folders, images stay in place, meta-info of relative paths
    root = tmp_path / 'imagenet'
    (root / 'n01').mkdir(parents=True)
    (root / 'n02').mkdir()
    cv2.imwrite(str(root / 'n01' / 'a.JPEG'), _photo(40, 50, 0))
    cv2.imwrite(str(root / 'n02' / 'b.png'), _photo(20, 30, 1))
    out = prep.prepare_dataset('imagenet', [str(root)], str(tmp_path / 'in'), min_size=32, lmdb=True,
                               progress=False)
    assert open(out['meta_info']).read() == 'n01/a.JPEG (40,50,3)\n'
    gt_only = bdata.build_dataset(dict(name='g', type='GTOnlyDataset', phase='val', dataroot_gt=str(root),
                                       meta_info_file=out['meta_info'], io_backend={'type': 'disk'},
                                       resize_mode='none'))
    assert len(gt_only) == 1 and tuple(gt_only[0]['gt'].shape) == (3, 40, 50)
    assert open(osp.join(out['GT.lmdb'], 'meta_info.txt')).read() == 'n01/a.png (40,50,3) 1\n'
