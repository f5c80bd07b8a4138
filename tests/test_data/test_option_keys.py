"""Unknown keys in dataset blocks and in the degradation keys of the option root are refused, with a did-you-mean
naming the file and the block; every option file we ship passes; the official data-side values are pinned."""
import copy
import glob
import os
import sys

import pytest
import yaml

import basicsr.data as bdata
import basicsr.test as btest
import basicsr.train as btrain
from basicsr_ext.data.checks import (COMMON_DATASET_KEYS, STOCK_DATASET_KEYS, check_dataset_keys,
                                     check_degradation_keys, check_option_keys, dataset_keys)
from basicsr_ext.data.gt_only_dataset import GTOnlyDataset
from basicsr_ext.data.realesrgan_degradation import RealESRGANDegradation
from basicsr_ext.utils.options import OptionError, load_option_file
from tests.harness import ROOT

OPTIONS = os.path.join(ROOT, 'options')
ALL_OPTION_FILES = sorted(glob.glob(os.path.join(OPTIONS, '*.yml')) + glob.glob(os.path.join(OPTIONS, 'quickstart',
                                                                                              '*.yml')))
STAGE2 = os.path.join(OPTIONS, 'train_tvqrap_stage2.yml')
TVQRAP_FILES = ['train_tvqrap_stage2.yml', 'train_tvqrap_stage2_512.yml', 'train_tvqrap.yml',
                'train_tvqrap_ce_only.yml']


@pytest.mark.parametrize('path', ALL_OPTION_FILES, ids=lambda p: os.path.relpath(p, OPTIONS))
def test_every_shipped_option_file_passes_the_key_check(path):
    opt = load_option_file(path)
    check_option_keys(opt, path)
    for phase, block in opt['datasets'].items():  # as parse_options leaves them (phase and scale added)
        block = dict(block, phase=phase.split('_')[0], scale=opt.get('scale', 4))
        check_dataset_keys(block, path, f'datasets:{phase}')


def test_unknown_dataset_key_named_with_file_block_and_did_you_mean():
    opt = load_option_file(STAGE2)
    opt['datasets']['train']['resize_mod'] = 'random_square_resize'
    with pytest.raises(OptionError) as e:
        check_option_keys(opt, STAGE2)
    msg = str(e.value)
    assert STAGE2 in msg and 'datasets:train (GTOnlyDataset)' in msg
    assert "'resize_mod' (did you mean 'resize_mode'?)" in msg


def test_degradation_key_in_a_dataset_block_is_said_to_belong_at_the_top():
    opt = load_option_file(STAGE2)
    opt['datasets']['train']['second_order_prob'] = 0.5
    with pytest.raises(OptionError, match="'second_order_prob' \\(a degradation key: it belongs at the top level"):
        check_option_keys(opt, STAGE2)


@pytest.mark.parametrize('typo, meant', [('second_order_probs', 'second_order_prob'),
                                         ('second_order_probability', 'second_order_prob'),
                                         ('jpeg_range_2', 'jpeg_range2'), ('queue_sise', 'queue_size')])
def test_unknown_degradation_key_at_the_root_is_refused(typo, meant):
    opt = load_option_file(STAGE2)
    opt[typo] = 0.5
    with pytest.raises(OptionError) as e:
        check_option_keys(opt, STAGE2)
    assert STAGE2 in str(e.value) and 'top level' in str(e.value)
    assert f"{typo!r} (did you mean {meant!r}?)" in str(e.value)
    with pytest.raises(OptionError, match=typo):  # the degradation itself (built by TVQRAPModel) refuses it too
        RealESRGANDegradation(dict(opt, opt_path=STAGE2), scale=4)


def test_kernel_key_at_the_root_is_said_to_belong_in_the_dataset():
    opt = load_option_file(STAGE2)
    opt['blur_sigma2'] = [0.2, 1.5]
    with pytest.raises(OptionError, match="'blur_sigma2' \\(a dataset key: it belongs in the datasets:train block"):
        check_option_keys(opt, STAGE2)


def test_root_without_degradation_keys_is_not_checked():
    opt = load_option_file(os.path.join(OPTIONS, 'train_aesop_rrdb.yml'))
    opt['anything_of_a_model'] = 1
    check_degradation_keys(opt, 'x.yml')


def test_second_order_prob_below_one_refused_where_basicsr_ignores_it():
    path = os.path.join(OPTIONS, 'train_aesop_realworld.yml')
    opt = load_option_file(path)
    check_option_keys(dict(opt, second_order_prob=1.0), path)
    with pytest.raises(OptionError, match='would be ignored: model_type AESOPRealESRGANModel'):
        check_option_keys(dict(opt, second_order_prob=0.5), path)
    with pytest.raises(OptionError, match='disagree'):
        check_option_keys(dict(load_option_file(STAGE2), second_degradation_prob=1.0), STAGE2)


def test_stock_dataset_types_refused_at_build_with_did_you_mean(tmp_path):
    opt = dict(name='pairs', type='PairedImageDataset', phase='train', scale=4, io_backend={'type': 'disk'},
               dataroot_gt=str(tmp_path), dataroot_lq=str(tmp_path), gt_szie=64)
    with pytest.raises(OptionError, match="dataset 'pairs' \\(PairedImageDataset\\): unknown key\\(s\\) 'gt_szie' "
                                          "\\(did you mean 'gt_size'\\?\\)"):
        bdata.build_dataset(opt)
    with pytest.raises(OptionError, match="'meta_info_file' \\(did you mean 'meta_info'\\?\\)"):
        check_dataset_keys({'type': 'RealESRGANDataset', 'meta_info_file': 'x'})
    with pytest.raises(OptionError, match="'resize_mod'"):
        GTOnlyDataset({'type': 'GTOnlyDataset', 'dataroot_gt': str(tmp_path), 'resize_mod': 'none'})


def test_key_table():
    assert dataset_keys('GTOnlyDataset') == COMMON_DATASET_KEYS + GTOnlyDataset.KEYS
    assert 'kernel_list2' in dataset_keys('RealESRGANDataset') and 'meta_info' in dataset_keys('RealESRGANDataset')
    assert dataset_keys('NoSuchDataset') is None and dataset_keys('VideoTestDataset') is None  # not checked
    assert set(STOCK_DATASET_KEYS) >= {'PairedImageDataset', 'SingleImageDataset', 'RealESRGANDataset'}


def test_parse_options_names_the_file(tmp_path, monkeypatch):
    opt = copy.deepcopy(load_option_file(os.path.join(OPTIONS, 'test_tvqrap.yml')))
    first = next(iter(opt['datasets']))
    opt['datasets'][first]['filename_tmp'] = '{}'
    path = str(tmp_path / 'typo.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(yaml.safe_load(yaml.safe_dump(_plain(opt))), f)
    monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', path])
    assert all(getattr(m.parse_options, '_basicsr_ext_keys_checked', False) for m in (btrain, btest))
    with pytest.raises(OptionError) as e:
        btest.parse_options(str(tmp_path), is_train=False)
    assert path in str(e.value) and f'datasets:{first}' in str(e.value)
    assert "'filename_tmp' (did you mean 'filename_tmpl'?)" in str(e.value)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


# ---- the official data-side values (TVQ&RAP stage II/III, AESOP real-world) --------------------------------
@pytest.mark.parametrize('file', TVQRAP_FILES)
def test_tvqrap_files_use_the_official_crop_kernels_and_second_order_key(file):
    opt = load_option_file(os.path.join(OPTIONS, file))
    tset = opt['datasets']['train']
    assert tset['resize_mode'] == 'random_square_resize'
    assert tset['blur_kernel_size'] == 21 and tset['blur_kernel_size2'] == 21  # official: 7-21 for both kernels
    assert opt['second_order_prob'] == 0.5 and 'second_degradation_prob' not in opt


def test_aesop_realworld_uses_the_official_degradation_ranges():
    opt = load_option_file(os.path.join(OPTIONS, 'train_aesop_realworld.yml'))
    official = {'resize_range': [0.2, 1.5], 'poisson_scale_range': [0.05, 2], 'jpeg_range': [50, 95],
                'noise_range2': [1, 20], 'poisson_scale_range2': [0.05, 2], 'jpeg_range2': [50, 95],
                # unchanged from Real-ESRGAN and equal to the official file
                'resize_prob': [0.2, 0.7, 0.1], 'noise_range': [1, 30], 'gaussian_noise_prob': 0.5,
                'gray_noise_prob': 0.4, 'second_blur_prob': 0.8, 'resize_prob2': [0.3, 0.4, 0.3],
                'resize_range2': [0.3, 1.2], 'gaussian_noise_prob2': 0.5, 'gray_noise_prob2': 0.4}
    assert {k: opt[k] for k in official} == official
    assert 'second_order_prob' not in opt and opt['queue_size'] == 144 and opt['gt_size'] == 256
