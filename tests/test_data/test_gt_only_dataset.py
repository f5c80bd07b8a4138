"""GTOnlyDataset (folder / LMDB, stage-I random crops, the official stage-II/III random squares, centre squares,
Real-ESRGAN kernels) and the device-agnostic Real-ESRGAN degradation + training-pair queue."""
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs

import basicsr_ext.data.realesrgan_degradation as rdeg
from basicsr_ext.data.gt_only_dataset import GTOnlyDataset, reflect_pad_to
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


def _rgb_chw(img_bgr_uint8):
    return (img_bgr_uint8.astype(np.float32) / 255.0)[..., ::-1].transpose(2, 0, 1)


def test_random_square_resize_smaller_image_is_reflect_padded_never_resized(folder):
    root, imgs = folder  # b.png is 20x30: square side max(20, 32) = 32, padded bottom/right by reflection
    ds = build_dataset(_opt(root, gt_size=32, resize_mode='random_square_resize'))
    expect = _rgb_chw(cv2.copyMakeBorder(imgs['b'], 0, 12, 0, 2, cv2.BORDER_REFLECT_101))
    for _ in range(3):
        out = ds[1]['gt'].numpy()
        assert out.shape == (3, 32, 32)
        assert np.array_equal(out, expect)  # exact pixels: padding by reflection, no interpolation


def test_random_square_resize_takes_the_square_at_a_random_position(folder, tmp_path):
    _, imgs = folder
    cv2.imwrite(str(tmp_path / 'c.png'), imgs['a'][:24, :40])  # 24x40, gt_size 24: a 24x24 crop, no resize
    ds = build_dataset(_opt(tmp_path, gt_size=24, resize_mode='random_square_resize'))
    src = _rgb_chw(imgs['a'][:24, :40])
    lefts = set()
    np.random.seed(0)
    for _ in range(30):
        out = ds[0]['gt'].numpy()
        match = [x for x in range(17) if np.array_equal(out, src[:, :, x:x + 24])]
        assert len(match) >= 1
        lefts.add(match[0])
    assert len(lefts) >= 5  # random, not centred


def test_random_square_resize_larger_square_is_area_resized(folder):
    root, imgs = folder  # a.png is 40x70, gt_size 16: a random 40x40 square, INTER_AREA to 16x16
    ds = build_dataset(_opt(root, gt_size=16, resize_mode='random_square_resize'))
    src = imgs['a'].astype(np.float32) / 255.0
    candidates = [cv2.resize(src[:, x:x + 40], (16, 16), interpolation=cv2.INTER_AREA)[..., ::-1].transpose(2, 0, 1)
                  for x in range(31)]
    lefts = set()
    np.random.seed(1)
    for _ in range(20):
        out = ds[0]['gt'].numpy()
        match = [x for x, c in enumerate(candidates) if np.allclose(out, c, atol=1e-6)]
        assert match, 'not an INTER_AREA resize of a 40x40 square'
        lefts.add(match[0])
    assert len(lefts) >= 5


def test_reflect_pad_to_mirrors_again_around_the_new_edge():
    row = np.arange(3, dtype=np.float32).reshape(1, 3, 1).repeat(3, axis=2)
    out = reflect_pad_to(row, 1, 9)[0, :, 0]
    # round 1 pads 3 (at most the current width): 0 1 2 | 1 0 1; round 2 mirrors around the new edge: | 0 1 2
    # (one periodic REFLECT_101 pad would give 2 1 0 there)
    assert out.tolist() == [0, 1, 2, 1, 0, 1, 0, 1, 2]
    tiny = np.full((1, 1, 3), 0.5, np.float32)
    assert reflect_pad_to(tiny, 4, 5).shape == (4, 5, 3) and float(reflect_pad_to(tiny, 4, 5).std()) == 0.0


def test_kernels_follow_the_stage2_options(folder, monkeypatch):
    """Second-stage kernel sizes 7-21 (the official dataset ignores its blur_kernel_size2: 15)."""
    root, _ = folder
    opt = dict(load_option_file(STAGE2)['datasets']['train'])
    assert opt['blur_kernel_size2'] == 21 and opt['blur_kernel_size'] == 21
    opt.update(dataroot_gt=str(root), io_backend={'type': 'disk'}, phase='train', gt_size=16)
    ds = build_dataset(opt)
    calls = []
    for name in ('random_mixed_kernels', 'circular_lowpass_kernel'):
        original = getattr(rdeg, name)

        def spy(*args, _original=original, _name=name, **kw):
            calls.append((_name, args[1] if _name == 'circular_lowpass_kernel' else args[2], kw.get('pad_to')))
            return _original(*args, **kw)
        monkeypatch.setattr(rdeg, name, spy)
    np.random.seed(0)
    rdeg.random.seed(0)
    sizes1, sizes2 = set(), set()
    for _ in range(120):
        calls.clear()
        item = ds[0]
        for key in ('kernel1', 'kernel2', 'sinc_kernel'):
            assert item[key].shape == (21, 21)
            assert float(item[key].sum()) == pytest.approx(1.0, abs=1e-4)
        sizes1.add(calls[0][1])
        sizes2.add(calls[1][1])  # kernel1, kernel2, then (maybe) the final sinc
    assert sizes1 == sizes2 == {7, 9, 11, 13, 15, 17, 19, 21}
    assert kernel_sizes(15) == [7, 9, 11, 13, 15] and kernel_sizes(None)[-1] == 21


def _degrade(opt, n=2, size=64):
    deg = RealESRGANDegradation(opt, scale=4)
    kopt = dict(opt['datasets']['train'])
    ks = [sample_realesrgan_kernels(kopt) for _ in range(n)]
    gt = torch.rand(n, 3, size, size)
    return deg(gt, *(torch.stack([k[name] for k in ks]) for name in ('kernel1', 'kernel2', 'sinc_kernel')))


@pytest.mark.parametrize('second_prob', [0.0, 1.0])
def test_degradation_makes_quantised_lr_on_cpu(second_prob):
    opt = dict(load_option_file(STAGE2))
    assert opt['second_order_prob'] == 0.5
    opt['second_order_prob'] = second_prob
    np.random.seed(1)
    lq = _degrade(opt)
    assert lq.shape == (2, 3, 16, 16)
    assert 0 <= float(lq.min()) and float(lq.max()) <= 1
    assert torch.allclose(lq * 255, (lq * 255).round(), atol=1e-4)
    with pytest.raises(KeyError, match='resize_prob'):
        RealESRGANDegradation({}, scale=4)


@pytest.mark.parametrize('key, prob', [('second_order_prob', 0.0), ('second_order_prob', 1.0),
                                       ('second_order_prob', 0.5), ('second_degradation_prob', 0.0), (None, None)])
def test_second_order_prob_is_honoured(monkeypatch, key, prob):
    """0.0: the second stage never runs; 1.0 (and the BasicSR default, no key): always; 0.5: sometimes. The
    alias second_degradation_prob works too."""
    opt = dict(load_option_file(STAGE2))
    opt.pop('second_order_prob')
    if key is not None:
        opt[key] = prob
    second = []
    original = rdeg._random_resize

    def spy(x, prob_, scale_range, size=None, base=None):
        if base is not None:  # only the second stage resizes relative to the GT / scale
            second.append(1)
        return original(x, prob_, scale_range, size, base)
    monkeypatch.setattr(rdeg, '_random_resize', spy)
    np.random.seed(2)
    runs = 12
    for _ in range(runs):
        _degrade(opt, n=1, size=96)
    expect = {0.0: [0], 1.0: [runs], None: [runs], 0.5: range(1, runs)}[prob]
    assert len(second) in expect


def test_second_order_prob_and_alias_must_agree():
    opt = dict(load_option_file(STAGE2))
    opt['second_degradation_prob'] = 0.5
    RealESRGANDegradation(opt, scale=4)  # same value: fine
    opt['second_degradation_prob'] = 1.0
    with pytest.raises(ValueError, match='disagree'):
        RealESRGANDegradation(opt, scale=4)
    opt.pop('second_degradation_prob')
    opt['second_order_prob'] = 1.5
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        RealESRGANDegradation(opt, scale=4)


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
