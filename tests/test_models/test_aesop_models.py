"""AESOP models: every AESOP option file, reduced to tiny widths, builds its model, trains a few iterations on
CPU through BasicSR's train pipeline, saves and resumes; option combinations that cannot work are refused."""
import copy
import os
import sys

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.models import build_model

from basicsr_ext.archs.aesop_arch import AESOPAutoEncoder
from basicsr_ext.models.aesop_model import AESOPESRGANModel
from basicsr_ext.models.engine import ConfigError
from basicsr_ext.utils.checkpoint import atomic_save, load_checkpoint
from tests.harness import ROOT, load_options, make_paired_folders, write_options

OPTIONS = os.path.join(ROOT, 'options')
TINY_AE = {'type': 'AESOPAutoEncoder', 'num_feat': 16, 'num_block': 1, 'num_grow_ch': 4,
           'dec_opt': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                       'num_grow_ch': 4}}
TINY_NETS = {
    'RRDBNet': {'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4},
    'SwinIR': {'img_size': 32, 'window_size': 8, 'depths': [1], 'embed_dim': 12, 'num_heads': [2], 'mlp_ratio': 1},
    'VGGStyleDiscriminator': {'num_feat': 4},
    'UNetDiscriminatorSN': {'num_feat': 4},
}
PAPER_FILES = ['train_aesop_autoencoder.yml', 'train_aesop_autoencoder_realworld.yml', 'train_aesop_rrdb.yml',
               'train_aesop_rrdb256.yml', 'train_aesop_swinir.yml', 'train_ldl_rrdb.yml', 'train_ldl_swinir.yml',
               'train_aesop_realworld.yml']


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('aesop_assets')
    train = make_paired_folders(str(root / 'train'), n=4, size=128)
    val = make_paired_folders(str(root / 'val'), n=1, size=72)  # LR 18x18: SwinIR pads to 24 and crops back
    meta = root / 'meta_info.txt'
    meta.write_text(''.join(f'{f}\n' for f in sorted(os.listdir(train['gt']))))
    torch.manual_seed(0)
    ae = AESOPAutoEncoder(**{k: v for k, v in TINY_AE.items() if k != 'type'})
    ae_path = str(root / 'ae.pth')
    atomic_save({'params': ae.state_dict(), 'params_ema': ae.state_dict()}, ae_path)
    dec = RRDBNet(3, 3, **TINY_NETS['RRDBNet'] | {'num_feat': 8})
    dec_path = str(root / 'psnr_rrdb.pth')
    atomic_save({'params_ema': dec.state_dict()}, dec_path)
    return {'train': train, 'val': val, 'meta': str(meta), 'ae': ae_path, 'decoder': dec_path,
            'decoder_sd': dec.state_dict()}


def reduce_options(opt: dict, assets: dict, total_iter: int = 2) -> dict:
    """Tiny widths, local data, no downloads (perceptual loss and pyiqa metrics off), short schedule."""
    opt = copy.deepcopy(opt)
    opt.update(num_gpu=0, manual_seed=0)
    opt['logger'] = {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False}
    opt['val'] = {'val_freq': 2, 'save_img': False,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True}}}
    train = opt['train']
    train['total_iter'] = total_iter
    train.pop('perceptual_opt', None)
    if train.get('aesop_opt'):
        train['aesop_opt']['autoencoder_arch'] = copy.deepcopy(TINY_AE)
        train['aesop_opt']['autoencoder_load'] = {'path': assets['ae'], 'key': 'params_ema'}
    is_ae = opt['model_type'] == 'AESOPAutoEncoderModel'
    gt_size = 64 if is_ae or opt['model_type'] == 'AESOPRealESRGANModel' else 128
    tset = opt['datasets']['train']
    tset.update(dataroot_gt=assets['train']['gt'], io_backend={'type': 'disk'}, gt_size=gt_size,
                batch_size_per_gpu=2, num_worker_per_gpu=0, dataset_enlarge_ratio=1)
    if tset['type'] == 'RealESRGANDataset':
        tset['meta_info'] = assets['meta']
        opt.update(gt_size=gt_size, queue_size=4)
    else:
        tset['dataroot_lq'] = assets['train']['lq']
    vset = opt['datasets']['val']
    vset.update(dataroot_gt=assets['val']['gt'], dataroot_lq=assets['val']['lq'])
    net_g = opt['network_g']
    if is_ae:
        opt['network_g'] = copy.deepcopy(TINY_AE)
        if opt['path'].get('pretrain_network_decoder'):
            opt['path']['pretrain_network_decoder'] = assets['decoder']
    else:
        net_g.update(TINY_NETS[net_g['type']])
        opt['path']['pretrain_network_g'] = None
        opt['network_d'].update(TINY_NETS[opt['network_d']['type']])
        if opt['network_d']['type'] == 'VGGStyleDiscriminator':
            opt['network_d']['input_size'] = gt_size  # the 256 configs run at 128 here (same structure)
    return opt


def train(opt: dict, cwd, monkeypatch, *flags: str) -> str:
    from basicsr.train import train_pipeline
    path = write_options(str(cwd / f"{opt['name']}.yml"), opt)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', path, *flags])
    train_pipeline(str(cwd))
    return os.path.join(str(cwd), 'experiments', opt['name'])


@pytest.mark.parametrize('file', PAPER_FILES)
def test_option_file_trains_saves_and_resumes(file, assets, tmp_path, monkeypatch):
    opt = reduce_options(load_options(os.path.join(OPTIONS, file)), assets, total_iter=2)
    exp = train(opt, tmp_path, monkeypatch)
    assert os.path.isfile(os.path.join(exp, 'training_states', '2.state'))
    ckpt = load_checkpoint(os.path.join(exp, 'models', 'net_g_2.pth'))
    assert set(ckpt) == {'params', 'params_ema'}
    if opt['model_type'] == 'AESOPAutoEncoderModel':
        assert any(k.startswith('encoder.') for k in ckpt['params'])  # official duplicated layout
        if opt['train'].get('freeze_decoder', 0) > 2:  # the frozen decoder is still the PSNR RRDB
            for k, v in assets['decoder_sd'].items():
                assert torch.equal(ckpt['params'][f'decoder.{k}'], v), k
    opt['train']['total_iter'] = 3
    train(opt, tmp_path, monkeypatch, '--auto_resume')
    assert not [d for d in os.listdir(tmp_path / 'experiments') if 'archived' in d]  # resumed, not restarted
    assert os.path.isfile(os.path.join(exp, 'models', 'net_g_latest.pth'))


def test_quickstart_chain_runs_on_lmdb(assets, tmp_path, monkeypatch):
    """options/quickstart: AE stage then AESOP and LDL stages, with the quickstart data layout."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    monkeypatch.chdir(tmp_path)
    os.makedirs('datasets')
    for src, dst in ((assets['train']['gt'], 'datasets/train_HR.lmdb'),
                     (assets['train']['lq'], 'datasets/train_LRx4.lmdb')):
        files = sorted(os.listdir(src))
        make_lmdb_from_imgs(src, dst, files, [f[:-4] for f in files], multiprocessing_read=False)
    os.symlink(os.path.dirname(assets['val']['gt']), 'datasets/val')
    for name in ('rrdb_l1', 'aesop_autoencoder', 'aesop_rrdb', 'ldl_rrdb'):  # AESOP/LDL fine-tune rrdb_l1
        opt = load_options(os.path.join(OPTIONS, 'quickstart', f'{name}.yml'))
        opt['train']['total_iter'] = 2
        opt['val']['val_freq'] = opt['logger']['save_checkpoint_freq'] = 2
        exp = train(opt, tmp_path, monkeypatch)
        assert os.path.isfile(os.path.join(exp, 'models', 'net_g_latest.pth'))


# ---- refusals at model build ---------------------------------------------------------------------------------
def build(opt: dict):
    opt = copy.deepcopy(opt)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    return build_model(opt)


@pytest.fixture(scope='module')
def aesop_rrdb(assets):
    return reduce_options(load_options(os.path.join(OPTIONS, 'train_aesop_rrdb.yml')), assets)


def test_ema_decay_zero_with_artifact_loss_is_refused(aesop_rrdb):
    opt = copy.deepcopy(aesop_rrdb)
    opt['train']['ema_decay'] = 0
    with pytest.raises(ConfigError, match='ema_decay'):
        build(opt)


def test_scale_other_than_4_is_refused(aesop_rrdb):
    opt = copy.deepcopy(aesop_rrdb)
    opt['scale'] = 2
    with pytest.raises(ConfigError, match='x4 only'):
        build(opt)


def test_discriminator_input_size_must_match_gt_size(aesop_rrdb):
    opt = copy.deepcopy(aesop_rrdb)
    opt['network_d']['input_size'] = 256
    with pytest.raises(ConfigError, match=r'input_size \(256\).*gt_size \(128\)'):
        build(opt)


def test_ae_model_refusals(assets):
    base = reduce_options(load_options(os.path.join(OPTIONS, 'train_aesop_autoencoder.yml')), assets)
    for change, pattern in (({'path': {'pretrain_network_g': assets['ae']}}, 'cannot be combined'),
                            ({'train': {'perceptual_opt': {'type': 'PerceptualLoss'}}}, 'perceptual_opt'),
                            ({'scale': 2}, 'x4 only')):
        opt = copy.deepcopy(base)
        for k, v in change.items():
            opt[k] = {**opt[k], **v} if isinstance(v, dict) else v
        with pytest.raises(ConfigError, match=pattern):
            build(opt)


def test_missing_ae_checkpoint_fails_at_build_naming_the_path(aesop_rrdb, tmp_path):
    opt = copy.deepcopy(aesop_rrdb)
    opt['train']['aesop_opt']['autoencoder_load']['path'] = str(tmp_path / 'AE_missing.pth')
    with pytest.raises(Exception, match='AE_missing.pth'):
        build(opt)


# ---- pieces ----------------------------------------------------------------------------------------------------
def test_swinir_validation_pads_to_the_window_and_crops_back(assets):
    opt = reduce_options(load_options(os.path.join(OPTIONS, 'train_aesop_swinir.yml')), assets)
    model = build(opt)
    assert isinstance(model, AESOPESRGANModel)
    lq = cv2.imread(os.path.join(assets['val']['lq'], '000.png'))
    model.lq = torch.from_numpy(np.ascontiguousarray(lq[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    model.test()
    assert model.output.shape[-2:] == (72, 72)


def test_decoder_init_and_freeze_decoder_until_iteration(assets):
    opt = reduce_options(load_options(os.path.join(OPTIONS, 'train_aesop_autoencoder.yml')), assets)
    opt['train']['freeze_decoder'] = 1
    model = build(opt)
    decoder = model.net_g.decoder
    for k, v in assets['decoder_sd'].items():  # path.pretrain_network_decoder, before the EMA copy
        assert torch.equal(decoder.state_dict()[k], v) and torch.equal(model.net_g_ema.decoder.state_dict()[k], v)
    data = {'gt': torch.rand(2, 3, 32, 32), 'lq': torch.rand(2, 3, 8, 8)}
    enc0 = model.net_g.conv_first[0].weight.detach().clone()
    model.feed_data(data)
    model.optimize_parameters(1)  # frozen: only the encoder moves
    assert set(model.log_dict) == {'l_pix', 'l_pix_lr'}
    assert all(torch.equal(decoder.state_dict()[k], v) for k, v in assets['decoder_sd'].items())
    assert not torch.equal(model.net_g.conv_first[0].weight, enc0)
    model.optimize_parameters(2)  # unfrozen from iteration 2
    assert not torch.equal(decoder.conv_first.weight, assets['decoder_sd']['conv_first.weight'])


@pytest.mark.parametrize('file,use_amp', [('train_aesop_rrdb.yml', False), ('train_aesop_rrdb.yml', True),
                                          ('train_ldl_rrdb.yml', False)])
def test_generator_loss_terms_frozen_ae_and_fp32_under_amp(file, use_amp, assets):
    opt = reduce_options(load_options(os.path.join(OPTIONS, file)), assets)
    opt['train']['use_amp'] = use_amp
    model = build(opt)
    model.feed_data({'lq': torch.rand(2, 3, 32, 32), 'gt': torch.rand(2, 3, 128, 128)})
    ae = model.cri_aesop.autoencoder if model.cri_aesop else None
    dtypes = []
    if ae is not None:
        ae.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
        before = {k: v.clone() for k, v in ae.state_dict().items()}
    model.optimize_parameters(1)
    expect = {'l_g_aesop', 'l_g_ldl', 'l_g_gan'} if ae is not None else {'l_g_pix', 'l_g_ldl', 'l_g_gan'}
    assert expect <= set(model.log_dict) and not ({'l_g_pix', 'l_g_aesop'} - expect) & set(model.log_dict)
    assert all(np.isfinite(v) for v in model.log_dict.values())
    if ae is not None:
        assert dtypes == [torch.float32, torch.float32]
        assert all(torch.equal(v, before[k]) for k, v in ae.state_dict().items())
        in_opt = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
        assert not any(id(p) in in_opt for p in ae.parameters())


def test_realworld_loss_targets_follow_the_official_setting(assets):
    opt = reduce_options(load_options(os.path.join(OPTIONS, 'train_aesop_realworld.yml')), assets)
    model = build(opt)
    model.gt, model.gt_usm = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    t = model.loss_targets()
    assert t['aesop'] is model.gt and t['gan'] is model.gt and t['percep'] is model.gt_usm


@pytest.mark.parametrize('file', ['test_aesop_autoencoder.yml', 'test_aesop_rrdb.yml', 'test_aesop_swinir.yml'])
def test_test_option_files_run_the_test_pipeline(file, assets, tmp_path, monkeypatch):
    """Reduced to one tiny set and offline metrics; SwinIR validates on an 18x18 LR (padded to 24)."""
    from basicsr.archs import build_network
    from basicsr.test import test_pipeline
    opt = load_options(os.path.join(OPTIONS, file))
    opt['num_gpu'] = 0
    first = next(iter(opt['datasets'].values()))
    first.update(dataroot_gt=assets['val']['gt'], dataroot_lq=assets['val']['lq'])
    opt['datasets'] = {'test_1': first}
    opt['val']['metrics'] = {k: v for k, v in opt['val']['metrics'].items() if k in ('psnr', 'ssim')}
    net_opt = copy.deepcopy(TINY_AE) if opt['network_g']['type'] == 'AESOPAutoEncoder' else \
        {**opt['network_g'], **TINY_NETS[opt['network_g']['type']]}
    opt['network_g'] = net_opt
    net = build_network(copy.deepcopy(net_opt))
    opt['path']['pretrain_network_g'] = str(tmp_path / 'net.pth')
    atomic_save({'params_ema': net.state_dict()}, opt['path']['pretrain_network_g'])
    path = write_options(str(tmp_path / file), opt)
    monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', path])
    test_pipeline(str(tmp_path))
    out = tmp_path / 'results' / opt['name'] / 'visualization' / first['name']
    images = sorted(os.listdir(out))
    assert len(images) == 1
    assert cv2.imread(str(out / images[0])).shape == (72, 72, 3)


def test_ae_validation_pads_any_size_and_reports_bottleneck_psnr(assets):
    opt = reduce_options(load_options(os.path.join(OPTIONS, 'train_aesop_autoencoder.yml')), assets)
    model = build(opt)
    model.start_validation()
    gt = torch.rand(1, 3, 30, 34)  # not a multiple of 4: padded, then cropped back
    model.feed_data({'gt': gt, 'lq': torch.nn.functional.interpolate(gt, size=(8, 9), mode='area')})
    model.test()
    recon, ref = model.validation_images()
    assert recon.shape == ref.shape == (30, 34, 3)
    model.after_validation_image()
    extra = model.finish_validation()
    assert set(extra) == {'bottleneck_lr_psnr'} and np.isfinite(extra['bottleneck_lr_psnr'])
