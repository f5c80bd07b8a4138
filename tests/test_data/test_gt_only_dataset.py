"""GTOnlyDataset (folder / LMDB, stage-I random crops, stage-II/III centre squares, Real-ESRGAN kernels) and the
device-agnostic Real-ESRGAN degradation + training-pair queue."""
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from basicsr_ext.data.gt_only_dataset import GTOnlyDataset
from basicsr_ext.data.realesrgan_degradation import (RealESRGANDegradation, TrainingPairQueue, kernel_sizes,
                                                     sample_realesrgan_kernels)
from basicsr_ext.utils.options import load_option_file
from tests.harness import ROOT

STAGE2 = os.path.join(ROOT, 'options', 'train_tvqrap_stage2.yml')


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('gt_only')
    rng = np.random.default_rng(0)
    imgs = {'a': rng.integers(0, 256, (40, 70, 3), dtype=np.uint8), 'b': rng.integers(0, 256, (20, 30, 3),
                                                                                         dtype=np.uint8)}
    for k, v in imgs.items():
        cv2.imwrite(str(root / f'{k}.png'), v)
    return root, imgs


def _opt(root, **kw):
    opt = {'name': 't', 'type': 'GTOnlyDataset', 'dataroot_gt': str(root), 'io_backend': {'type': 'disk'},
           'phase': 'train'}
    opt.update(kw)
    return opt


def test_random_crop_reflect_pads_small_images(folder):
    root, _ = folder
    ds = build_dataset(_opt(root, gt_size=32, resize_mode='random_crop'))
    assert isinstance(ds, GTOnlyDataset) and len(ds) == 2
    for i in range(2):
        item = ds[i]
        assert item['gt'].shape == (3, 32, 32) and item['gt'].dtype == torch.float32
        assert 0 <= float(item['gt'].min()) and float(item['gt'].max()) <= 1
    small = ds[1]['gt']  # 20x30 image padded to 32x32: the padding mirrors the image (reflect 101)
    assert small.shape == (3, 32, 32)


def test_center_square_resize_is_area_resize_of_the_centre_square_in_rgb(folder):
    root, imgs = folder
    ds = build_dataset(_opt(root, gt_size=16, resize_mode='center_square_resize', phase='val'))
    item = ds[0]
    src = imgs['a'].astype(np.float32) / 255.0  # 40x70: centre square starts at column 15
    expect = cv2.resize(src[:, 15:55], (16, 16), interpolation=cv2.INTER_AREA)[..., ::-1].transpose(2, 0, 1)
    assert np.allclose(item['gt'].numpy(), expect, atol=1e-6)
    assert item['gt_path'].endswith('a.png')


def test_lmdb_matches_folder(folder, tmp_path):
    root, _ = folder
    lmdb_path = str(tmp_path / 'gt.lmdb')
    make_lmdb_from_imgs(str(root), lmdb_path, ['a.png', 'b.png'], ['a', 'b'])
    disk = build_dataset(_opt(root, resize_mode='none', phase='val'))
    db = build_dataset(_opt(lmdb_path, resize_mode='none', phase='val', io_backend={'type': 'lmdb'}))
    assert len(db) == 2
    assert torch.equal(disk[0]['gt'], db[0]['gt']) and db[0]['gt'].shape == (3, 40, 70)


def test_option_errors(folder, tmp_path):
    root, _ = folder
    with pytest.raises(ValueError, match='gt_size'):
        GTOnlyDataset(_opt(root))
    with pytest.raises(ValueError, match='resize_mode'):
        GTOnlyDataset(_opt(root, gt_size=8, resize_mode='crop'))
    with pytest.raises(ValueError, match='kernel_list'):
        GTOnlyDataset(_opt(root, gt_size=8, return_kernels=True))
    with pytest.raises(FileNotFoundError, match='meta_info'):
        GTOnlyDataset(_opt(str(tmp_path / 'x.lmdb'), gt_size=8, io_backend={'type': 'lmdb'}))


def test_kernels_follow_the_stage2_options(folder):
    root, _ = folder
    opt = dict(load_option_file(STAGE2)['datasets']['train'])
    opt.update(dataroot_gt=str(root), io_backend={'type': 'disk'}, phase='train', gt_size=16)
    ds = build_dataset(opt)
    np.random.seed(0)
    for _ in range(10):
        item = ds[0]
        for key in ('kernel1', 'kernel2', 'sinc_kernel'):
            assert item[key].shape == (21, 21)
            assert float(item[key].sum()) == pytest.approx(1.0, abs=1e-4)
        support = (item['kernel2'].abs() > 0).nonzero()
        assert int(support.max(0).values.max() - support.min(0).values.min()) + 1 <= 15  # blur_kernel_size2: 15
    assert kernel_sizes(15) == [7, 9, 11, 13, 15] and kernel_sizes(None)[-1] == 21


@pytest.mark.parametrize('second_prob', [0.0, 1.0])
def test_degradation_makes_quantised_lr_on_cpu(second_prob):
    opt = dict(load_option_file(STAGE2))
    opt['second_degradation_prob'] = second_prob
    deg = RealESRGANDegradation(opt, scale=4)
    kopt = dict(opt['datasets']['train'])
    np.random.seed(1)
    ks = [sample_realesrgan_kernels(kopt) for _ in range(2)]
    gt = torch.rand(2, 3, 64, 64)
    lq = deg(gt, *(torch.stack([k[n] for k in ks]) for n in ('kernel1', 'kernel2', 'sinc_kernel')))
    assert lq.shape == (2, 3, 16, 16)
    assert 0 <= float(lq.min()) and float(lq.max()) <= 1
    assert torch.allclose(lq * 255, (lq * 255).round(), atol=1e-4)
    with pytest.raises(KeyError, match='resize_prob'):
        RealESRGANDegradation({}, scale=4)


def test_training_pair_queue_passes_then_swaps():
    q = TrainingPairQueue(4)
    batches = [(torch.full((2, 1, 2, 2), float(i)), torch.full((2, 1, 8, 8), float(i))) for i in range(3)]
    out0 = q(*batches[0])
    out1 = q(*batches[1])
    assert torch.equal(out0[0], batches[0][0]) and torch.equal(out1[0], batches[1][0])  # filling: pass through
    lq, gt = q(*batches[2])  # full: a random pair of stored samples comes out, batch 2 goes in
    assert set(lq.flatten().tolist()) <= {0.0, 1.0}
    assert torch.equal(lq.mean((1, 2, 3)), gt.mean((1, 2, 3)))  # lq and gt stay paired
    assert float(q.lq.sum()) > 0 and 2.0 in q.lq.flatten().tolist()
    with pytest.raises(ValueError, match='divisible'):
        TrainingPairQueue(3)(*batches[0])
    assert TrainingPairQueue(0)(*batches[0])[0] is batches[0][0]
