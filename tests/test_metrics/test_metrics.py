"""Metric entries: BasicSR's PSNR/SSIM protocol, the pyiqa entry (cache, better, offline message), AE-PSNR, LR-PSNR."""
import sys
import urllib.error

import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_metric
from skimage import data
from skimage.metrics import structural_similarity

from basicsr_ext.metrics import fidelity_metric, pyiqa_metric
from basicsr_ext.metrics.fidelity_metric import bicubic_downscale_uint8, metric_needs_lq
from basicsr_ext.metrics.pyiqa_metric import MetricWeightsError, resolve_metric_better
from basicsr_ext.utils.checkpoint import atomic_save


@pytest.fixture(scope='module')
def pair():
    """A real photo (BGR uint8, as BasicSR hands it over) and a noisy version of it."""
    gt = np.ascontiguousarray(data.astronaut()[:64, :80][..., ::-1])
    sr = np.clip(gt + np.random.default_rng(0).normal(0, 6, gt.shape), 0, 255).round().astype(np.uint8)
    return sr, gt


def _y(img):
    img = img.astype(np.float64)  # BT.601 on BGR input, [16, 235]
    return (65.481 * img[..., 2] + 128.553 * img[..., 1] + 24.966 * img[..., 0]) / 255 + 16


def test_psnr_ssim_protocol_is_basicsr_y_crop4(pair):
    sr, gt = pair
    ys, yg = _y(sr)[4:-4, 4:-4], _y(gt)[4:-4, 4:-4]
    psnr = calculate_metric({'img': sr, 'img2': gt}, {'type': 'calculate_psnr', 'crop_border': 4,
                                                      'test_y_channel': True})
    assert psnr == pytest.approx(10 * np.log10(255 ** 2 / np.mean((ys - yg) ** 2)), abs=1e-6)
    ssim = calculate_metric({'img': sr, 'img2': gt}, {'type': 'calculate_ssim', 'crop_border': 4,
                                                      'test_y_channel': True})
    ref = structural_similarity(ys, yg, data_range=255, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert ssim == pytest.approx(ref, abs=1e-6)


def test_pyiqa_entry_weight_free_metrics_and_cache(pair, monkeypatch):
    sr, gt = pair
    pyiqa_metric.clear_metric_cache()
    import pyiqa
    calls = []
    real = pyiqa.create_metric
    monkeypatch.setattr(pyiqa, 'create_metric', lambda *a, **k: calls.append(a) or real(*a, **k))
    opt = {'type': 'pyiqa', 'metric': 'psnr', 'device': 'cpu', 'better': 'higher'}
    v1 = calculate_metric({'img': sr, 'img2': gt}, opt)
    v2 = calculate_metric({'img': gt, 'img2': sr}, opt)
    # pyiqa psnr is RGB on [0, 1]: same as BasicSR's RGB PSNR without crop (BGR->RGB conversion done right)
    rgb = calculate_metric({'img': sr, 'img2': gt}, {'type': 'calculate_psnr', 'crop_border': 0})
    assert v1 == pytest.approx(rgb, abs=1e-3) and v2 == pytest.approx(v1, abs=1e-3)
    assert len(calls) == 1  # the pyiqa network is created once, then cached
    nr = calculate_metric({'img': sr}, {'type': 'pyiqa', 'metric': 'entropy', 'device': 'cpu'})  # no GT
    assert 0 < nr < 8
    cropped = calculate_metric({'img': sr, 'img2': gt}, dict(opt, crop_border=4))
    assert cropped != pytest.approx(v1, abs=1e-4)
    with pytest.raises(ValueError, match='full-reference'):
        calculate_metric({'img': sr}, opt)


def test_better_filled_from_lower_better(tmp_path, monkeypatch):
    opt = {'val': {'metrics': {
        'lpips': {'type': 'pyiqa'},                                   # metric name from the key
        'dists': {'type': 'pyiqa', 'metric': 'dists'},
        'musiq': {'type': 'pyiqa', 'metric': 'musiq'},
        'niqe': {'type': 'pyiqa', 'metric': 'niqe', 'better': 'higher'},  # explicit kept
        'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}}}     # not ours: untouched
    resolve_metric_better(opt)
    m = opt['val']['metrics']
    assert (m['lpips']['better'], m['lpips']['metric']) == ('lower', 'lpips')
    assert m['dists']['better'] == 'lower' and m['musiq']['better'] == 'higher'
    assert m['niqe']['better'] == 'higher' and 'better' not in m['psnr']
    with pytest.raises(pyiqa_metric.MetricUnavailableError, match='val.metrics.x.*no metric'):
        resolve_metric_better({'val': {'metrics': {'x': {'type': 'pyiqa', 'metric': 'no_such_metric'}}}})
    # and it happens automatically when an option file is parsed
    yml = tmp_path / 'o.yml'
    yml.write_text('name: t\nmodel_type: SRModel\nnum_gpu: 0\ndatasets: {}\n'
                   'val:\n  metrics:\n    lpips: {type: pyiqa, metric: lpips}\n')
    from basicsr_ext.utils.options import parse_options
    monkeypatch.setattr(sys, 'argv', ['test', '-opt', str(yml)])
    parsed, _ = parse_options(str(tmp_path), is_train=False)
    assert parsed['val']['metrics']['lpips']['better'] == 'lower'


def test_offline_missing_weights_one_clear_error(pair, tmp_path, monkeypatch):
    sr, gt = pair
    pyiqa_metric.clear_metric_cache()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_torch_home'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    tries = []

    def offline(url, dst, *a, **k):  # what an offline machine answers (and no download from a test)
        tries.append(url)
        raise urllib.error.URLError('[Errno -2] Name or service not known')

    import torch.hub
    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(MetricWeightsError) as e:
        calculate_metric({'img': sr, 'img2': gt}, {'type': 'pyiqa', 'metric': 'lpips', 'device': 'cpu'})
    msg = str(e.value)
    assert 'alexnet-owt-7be5be79.pth' in msg
    assert str(tmp_path / 'empty_torch_home' / 'hub' / 'checkpoints') in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # one error, not a chained stack
    assert len(tries) == 1  # no retries


def _tiny_ae(tmp_path):
    arch = {'type': 'AESOPAutoEncoder', 'num_feat': 16, 'num_block': 1, 'num_grow_ch': 8,
            'dec_opt': {'num_feat': 8, 'num_block': 1, 'num_grow_ch': 8}}
    from basicsr.archs import build_network
    torch.manual_seed(0)
    net = build_network(dict(arch))
    with torch.no_grad():  # a random AE whose output depends on its input and stays mostly in [0, 1]
        net.decoder.conv_last.bias.fill_(0.5)
        net.decoder.conv_last.weight.mul_(0.5)
        for p in list(net.conv_first.parameters()) + list(net.conv_last.parameters()):
            p.mul_(10)
    path = str(tmp_path / 'ae.pth')
    atomic_save({'params_ema': net.state_dict()}, path)
    return arch, {'path': path, 'key': 'params_ema'}, net


def test_ae_psnr_matches_manual_and_is_cached(pair, tmp_path, monkeypatch):
    sr, gt = pair
    sr, gt = sr[:30, :34], gt[:30, :34]  # not a multiple of 4: padded for the x4 bottleneck, cropped back
    arch, load, net = _tiny_ae(tmp_path)
    builds = []
    real = fidelity_metric.load_frozen_autoencoder
    monkeypatch.setattr(fidelity_metric, 'load_frozen_autoencoder', lambda *a: builds.append(1) or real(*a))
    opt = {'type': 'calculate_ae_psnr', 'autoencoder_arch': arch, 'autoencoder_load': load, 'device': 'cpu'}
    v = calculate_metric({'img': sr, 'img2': gt}, opt)
    assert calculate_metric({'img': gt, 'img2': gt}, opt) == float('inf')
    assert len(builds) == 1

    from basicsr.metrics.psnr_ssim import calculate_psnr
    from basicsr.utils import tensor2img

    def ae(img):
        x = torch.from_numpy(img[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]
        x = torch.nn.functional.pad(x, (0, 2, 0, 2), mode='reflect')  # 30x34 -> 32x36
        with torch.no_grad():
            return tensor2img([net.eval()(x)[..., :30, :34].clamp(0, 1)])

    assert v == pytest.approx(calculate_psnr(ae(sr), ae(gt), 4, test_y_channel=True), abs=1e-6)
    assert np.isfinite(v)


def test_lr_psnr(pair):
    _, gt = pair
    lq = bicubic_downscale_uint8(gt, 4)
    # SR whose bicubic downscale is exactly the LR: infinite; with the LR given or rebuilt from the GT
    assert calculate_metric({'img': gt, 'img_lq': lq}, {'type': 'calculate_lr_psnr'}) == float('inf')
    assert calculate_metric({'img': gt, 'img2': gt}, {'type': 'calculate_lr_psnr', 'scale': 4}) == float('inf')
    from basicsr.utils.matlab_functions import imresize
    up = np.clip(np.rint(imresize(lq.astype(np.float32) / 255, 4) * 255), 0, 255).astype(np.uint8)
    v = calculate_metric({'img': up, 'img2': gt, 'img_lq': lq}, {'type': 'calculate_lr_psnr'})
    assert 30 < v < float('inf')  # bicubic up then down: close to the LR
    noisy = np.clip(up + np.random.default_rng(1).normal(0, 20, up.shape), 0, 255).astype(np.uint8)
    assert calculate_metric({'img': noisy, 'img_lq': lq}, {'type': 'calculate_lr_psnr'}) < v
    assert metric_needs_lq({'type': 'calculate_lr_psnr'}) and not metric_needs_lq({'type': 'calculate_psnr'})
