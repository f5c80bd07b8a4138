"""TVQ&RAP models: the paper option files of stages I, II and III, reduced to tiny widths, train a few iterations
through BasicSR's train pipeline on CPU, save and resume exactly (codebook, discriminator, EMA, dead-code counts);
stage-II targets are the tokenizer's own encoding of the GT; inconsistent options are refused at build."""
import copy
import logging
import os
import sys

import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.models import build_model

from basicsr_ext.models.engine import ConfigError
from basicsr_ext.models.tvq_model import codebook_usage
from basicsr_ext.utils.checkpoint import load_checkpoint
from tests.harness import ROOT, load_options, make_paired_folders, max_abs_diff, write_options

OPTIONS = os.path.join(ROOT, 'options')
QUICK = load_options(os.path.join(OPTIONS, 'quickstart', 'tvqrap_rap.yml'))
TINY_TOK, TINY_SR, TINY_D = QUICK['network_tok'], QUICK['network_g'], QUICK['network_d']
METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True}}


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('tvq_assets')
    return {'train': make_paired_folders(str(root / 'train'), n=4, size=64),
            'val': make_paired_folders(str(root / 'val'), n=1, size=64), 'root': root}


def reduce_options(file: str, assets: dict, name: str, total_iter: int) -> dict:
    """Tiny widths, local folders, no downloads, short schedule; everything else as in the paper file."""
    opt = load_options(os.path.join(OPTIONS, file))
    opt.update(name=name, num_gpu=0, manual_seed=0)
    opt['logger'] = {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False}
    opt['val'] = {'val_freq': total_iter, 'save_img': False, 'metrics': copy.deepcopy(METRICS)}
    opt['train']['total_iter'] = total_iter
    opt['network_g'] = copy.deepcopy(TINY_TOK if opt['model_type'] == 'TVQTokenizerModel' else TINY_SR)
    if 'network_tok' in opt:
        opt['network_tok'] = copy.deepcopy(TINY_TOK)
    if 'network_d' in opt:
        opt['network_d'] = copy.deepcopy(TINY_D)
    if opt['train'].get('perceptual_opt'):
        opt['train']['perceptual_opt']['pretrained'] = False
    tset = opt['datasets']['train']
    tset.update(dataroot_gt=assets['train']['gt'], io_backend={'type': 'disk'}, gt_size=64, batch_size_per_gpu=2,
                num_worker_per_gpu=0, dataset_enlarge_ratio=1)
    vset = opt['datasets']['val']
    vset.update(dataroot_gt=assets['val']['gt'], io_backend={'type': 'disk'})
    if vset['type'] == 'PairedImageDataset':
        vset['dataroot_lq'] = assets['val']['lq']
    return opt


LOGS: dict[str, list[str]] = {}


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


def train(opt: dict, cwd, *flags: str) -> str:
    """BasicSR's train pipeline in this process (log lines kept in LOGS[experiment folder])."""
    from basicsr.train import train_pipeline
    path = write_options(str(cwd / f"{opt['name']}.yml"), opt)
    exp = os.path.join(str(cwd), 'experiments', opt['name'])
    handler = _Collect(LOGS.setdefault(exp, []))
    logger = logging.getLogger('basicsr')
    level = logger.level  # BasicSR leaves it unset (WARNING) when a log-file-less call initialised it first
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    argv = sys.argv
    sys.argv = ['train.py', '-opt', path, *flags]
    try:
        train_pipeline(str(cwd))
    finally:
        sys.argv = argv
        logger.removeHandler(handler)
        logger.setLevel(level)
    return exp


def read_log(exp: str) -> str:
    return '\n'.join(LOGS.get(exp, []))


def train_then_resume(opt: dict, cwd) -> tuple[str, dict, dict]:
    """3 iterations straight (state saved at 2), then the same run resumed from iteration 2."""
    exp = train(opt, cwd)
    straight = {n: load_checkpoint(os.path.join(exp, 'models', f'{n}_latest.pth')) for n in ('net_g', 'net_d')
                if os.path.isfile(os.path.join(exp, 'models', f'{n}_latest.pth'))}
    opt = copy.deepcopy(opt)
    opt['path']['resume_state'] = os.path.join(exp, 'training_states', '2.state')
    train(opt, cwd)
    resumed = {n: load_checkpoint(os.path.join(exp, 'models', f'{n}_latest.pth')) for n in straight}
    return exp, straight, resumed


@pytest.fixture(scope='module')
def stage1(assets):
    opt = reduce_options('train_tvq_tokenizer.yml', assets, 'tvq_s1', total_iter=3)
    opt['train'].update(disc_start_iter=1, dead_code_reinit_iters=3, perceptual_opt=None)  # D from iteration 2
    exp, straight, resumed = train_then_resume(opt, assets['root'])
    return {'exp': exp, 'opt': opt, 'straight': straight, 'resumed': resumed,
            'ckpt': os.path.join(exp, 'models', 'net_g_latest.pth')}


@pytest.fixture(scope='module')
def stage2(assets, stage1):
    opt = reduce_options('train_tvqrap_stage2.yml', assets, 'tvqrap_s2', total_iter=2)
    opt['path']['pretrain_network_tok'] = stage1['ckpt']
    opt['queue_size'] = 4
    exp = train(opt, assets['root'])
    return {'exp': exp, 'opt': opt, 'ckpt': os.path.join(exp, 'models', 'net_g_latest.pth')}


def test_stage1_trains_and_resumes_exactly(stage1):
    straight, resumed = stage1['straight'], stage1['resumed']
    assert set(straight) == {'net_g', 'net_d'} and set(straight['net_g']) == {'params', 'params_ema'}
    assert max_abs_diff(straight['net_g'], resumed['net_g']) == 0.0  # codebook, EMA, RNG, dead-code counts
    assert max_abs_diff(straight['net_d'], resumed['net_d']) == 0.0  # discriminator incl. BatchNorm statistics
    init = build_network(copy.deepcopy(TINY_TOK))
    cb = straight['net_g']['params']['quantize.embedding.weight']
    assert not torch.allclose(cb, init.state_dict()['quantize.embedding.weight'])
    log = read_log(stage1['exp'])
    assert 'codebook_perplexity' in log and 'codebook_usage' in log and 'l_align' in log
    assert 'l_d_real' in log and 'd_weight' in log and 'n_reinit_codes' in log


def test_stage2_targets_are_the_tokenizers_encoding(stage1, stage2, assets):
    assert 'index_acc' in read_log(stage2['exp'])
    opt = copy.deepcopy(stage2['opt'])
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['path'].update(experiments_root=str(assets['root']), models=str(assets['root']))
    model = build_model(opt)
    tok = build_network(copy.deepcopy(TINY_TOK))
    tok.load_state_dict(load_checkpoint(stage1['ckpt'])['params_ema'])
    tok.eval()
    ds = build_dataset(dict(opt['datasets']['train'], phase='train', scale=4))
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ('gt', 'kernel1', 'kernel2', 'sinc_kernel')}
    model.feed_data(batch)
    assert model.lq.shape == (2, 3, 16, 16) and model.gt.shape == (2, 3, 64, 64)
    with torch.no_grad():
        expect = tok.encode(model.gt)
    got = model.tokenizer_targets(model.gt)
    assert torch.equal(got['indices'], expect['indices'])
    assert torch.allclose(got['structure_latent'], expect['structure_latent'], atol=1e-6)
    net = model.get_bare_model(model.net_g)  # frozen parts copied from the tokenizer, not trained
    assert torch.equal(net.codebook, tok.codebook) and not net.codebook.requires_grad
    for key in ('params', 'params_ema'):  # frozen parts stay bit-exact, in the EMA copy too
        assert torch.equal(load_checkpoint(stage2['ckpt'])[key]['quantize.embedding.weight'], tok.codebook.detach())
    before = net.get_last_layer().detach().clone()
    model.optimize_parameters(1)
    assert not torch.equal(before, net.get_last_layer()) and torch.equal(net.codebook, tok.codebook)


def test_stage3_rap_trains_and_resumes_exactly(stage1, stage2, assets):
    opt = reduce_options('train_tvqrap.yml', assets, 'tvqrap_s3', total_iter=3)
    opt['path'].update(pretrain_network_tok=stage1['ckpt'], pretrain_network_g=stage2['ckpt'])
    opt['queue_size'] = 4  # full after iteration 2: iteration 3 draws from the pool saved in the training state
    exp, straight, resumed = train_then_resume(opt, assets['root'])
    assert set(straight) == {'net_g', 'net_d'}
    assert max_abs_diff(straight['net_g'], resumed['net_g']) == 0.0
    assert max_abs_diff(straight['net_d'], resumed['net_d']) == 0.0
    s2 = load_checkpoint(stage2['ckpt'])['params_ema']
    s3 = straight['net_g']['params']
    frozen = [k for k in s2 if k.startswith(('quantize.', 'generator.'))]
    assert frozen and all(torch.equal(s2[k], s3[k]) for k in frozen)  # codebook and decoder stay frozen
    moved = [k for k in s2 if k.startswith('idx_pred_layer_low.') and not torch.equal(s2[k], s3[k])]
    assert moved  # the predictor learns from the image losses through the STE
    log = read_log(exp)
    assert 'l_lpips' in log and 'l_g_gan' in log and 'index_acc' in log and 'l_ce' not in log


def test_test_mode_with_and_without_gt(stage2, assets, tmp_path):
    from basicsr.test import test_pipeline
    opt = load_options(os.path.join(OPTIONS, 'test_tvqrap.yml'))
    opt.update(num_gpu=0, network_g=dict(copy.deepcopy(TINY_SR), pad_multiple=32))
    opt['path']['pretrain_network_g'] = stage2['ckpt']
    opt['datasets'] = {
        'test_1': {'name': 'pairs', 'type': 'PairedImageDataset', 'dataroot_gt': assets['val']['gt'],
                   'dataroot_lq': assets['val']['lq'], 'io_backend': {'type': 'disk'}},
        'test_2': {'name': 'nogt', 'type': 'SingleImageDataset', 'dataroot_lq': assets['val']['lq'],
                   'io_backend': {'type': 'disk'}, 'val_metrics': []}}
    opt['val'].update(metrics=copy.deepcopy(METRICS), tile_size=8, tile_overlap=2)  # tiled: LR 16 > 8
    path = write_options(str(tmp_path / 'test.yml'), opt)
    argv, sys.argv = sys.argv, ['test.py', '-opt', path]
    try:
        test_pipeline(str(tmp_path))
    finally:
        sys.argv = argv
    vis = tmp_path / 'results' / opt['name'] / 'visualization'
    assert sorted(os.listdir(vis)) == ['nogt', 'pairs'] and len(os.listdir(vis / 'nogt')) == 1


# ---- refusals at model build ---------------------------------------------------------------------------------
def build(opt: dict, root) -> object:
    opt = copy.deepcopy(opt)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['path'].update(experiments_root=str(root), models=str(root))
    return build_model(opt)


def test_inconsistent_options_are_refused(stage1, stage2, assets, tmp_path):
    base = stage2['opt']
    opt = copy.deepcopy(base)
    opt['network_g']['codebook_size'] = 32
    with pytest.raises(ConfigError, match='codebook_size'):
        build(opt, tmp_path)
    opt = copy.deepcopy(base)
    opt['path']['pretrain_network_tok'] = str(tmp_path / 'missing.pth')
    with pytest.raises(ConfigError, match=r'pretrain_network_tok.*missing\.pth'):
        build(opt, tmp_path)
    opt['path'].update(pretrain_network_tok=str(tmp_path / 'models' / 'net_tok_4.pth'), resume_state='x.state')
    with pytest.raises(ConfigError, match='ignore_resume_networks'):
        build(opt, tmp_path)
    opt = copy.deepcopy(base)
    opt['train'].pop('stage')
    with pytest.raises(ConfigError, match='train.stage'):
        build(opt, tmp_path)
    opt = copy.deepcopy(base)
    opt['train']['gan_opt'] = {'type': 'GANLoss', 'gan_type': 'hinge'}
    with pytest.raises(ConfigError, match='gan_opt'):
        build(opt, tmp_path)
    opt = copy.deepcopy(stage1['opt'])
    opt['train']['gan_opt']['gan_type'] = 'vanilla'
    with pytest.raises(ConfigError, match='hinge'):
        build(opt, tmp_path)


def test_paper_option_files_are_consistent():
    shared = ('emb_dim', 'structure_ch', 'struct_mid_ch', 'dec_ch', 'codebook_size', 'gen_depth', 'num_heads',
              'window_size')
    tok = load_options(os.path.join(OPTIONS, 'train_tvq_tokenizer.yml'))
    base = load_options(os.path.join(OPTIONS, 'train_vq_tokenizer_baseline.yml'))
    assert tok['network_g']['structure'] is True and base['network_g']['structure'] is False
    assert tok['train']['total_iter'] == 450000 and tok['datasets']['train']['gt_size'] == 512
    expect = {'train_tvqrap_stage2.yml': ('code', 300000, 256, 16), 'train_tvqrap_stage2_512.yml': ('code', 4000, 512, 2),
              'train_tvqrap.yml': ('rap', 4000, 512, 2), 'train_tvqrap_ce_only.yml': ('code', 4000, 512, 2)}
    for file, (stage, iters, size, batch) in expect.items():
        opt = load_options(os.path.join(OPTIONS, file))
        assert (opt['train']['stage'], opt['train']['total_iter']) == (stage, iters), file
        tset = opt['datasets']['train']
        assert (tset['gt_size'], tset['batch_size_per_gpu'], tset['resize_mode']) == (size, batch,
                                                                                      'random_square_resize'), file
        assert tset['blur_kernel_size2'] == 21, file  # official: second-stage kernel sizes 7-21
        assert opt['second_order_prob'] == 0.5 and opt['queue_size'] % batch == 0, file
        assert {k: opt['network_tok'][k] for k in shared} == {k: opt['network_g'][k] for k in shared}, file
        assert {k: opt['network_tok'][k] for k in shared} == {k: tok['network_g'][k] for k in shared}, file
        assert 'network_tok' in opt['path']['ignore_resume_networks'], file
    test = load_options(os.path.join(OPTIONS, 'test_tvqrap.yml'))
    nogt = [d for d in test['datasets'].values() if 'dataroot_gt' not in d]
    assert nogt and all(set(d['val_metrics']) <= set(test['val']['metrics']) for d in nogt)


def test_codebook_usage_statistics():
    uniform = codebook_usage(torch.ones(8, dtype=torch.float64))
    assert uniform == {'codebook_perplexity': pytest.approx(8.0), 'codebook_usage': 1.0}
    one = codebook_usage(torch.tensor([0, 5.0, 0, 0], dtype=torch.float64))
    assert one == {'codebook_perplexity': pytest.approx(1.0), 'codebook_usage': 0.25}


def test_ema_update_matches_the_per_tensor_rule(stage2, assets):
    """model_ema (foreach over cached lists) = BasicSR's ``ema * d + p * (1 - d)`` per trainable tensor, bit for bit;
    frozen tensors (codebook, decoder of the SR net) copied; a parameter frozen later is copied from then on."""
    model = build(stage2['opt'], assets['root'])
    net = model.get_bare_model(model.net_g)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in model.net_g_ema.named_parameters()}
    model.model_ema(0.9)
    ema = dict(model.net_g_ema.named_parameters())
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert trainable and frozen
    for name, p in net.named_parameters():
        expect = before[name].mul(0.9).add_(p, alpha=0.1) if p.requires_grad else p
        assert torch.equal(ema[name], expect), name
    first = dict(net.named_parameters())[trainable[0]]
    first.requires_grad_(False)
    with torch.no_grad():
        first.add_(1.0)
    model.model_ema(0.9)
    assert torch.equal(ema[trainable[0]], first)
