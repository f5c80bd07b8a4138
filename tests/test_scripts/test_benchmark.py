"""scripts/eval/benchmark.py: generated folders -> the expected table; missing/corrupt images reported, not fatal."""
import csv
import json
import os
import urllib.error

import cv2
import numpy as np
import pytest
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim
from skimage import data

from basicsr_ext.metrics.fidelity_metric import bicubic_downscale_uint8

from tests.harness import load_script


@pytest.fixture(scope='module')
def bench():
    return load_script('eval/benchmark')


@pytest.fixture
def folders(tmp_path):
    """GT (3 images), LR, method 'good' (BasicSR names, sigma 2), 'bad' (sigma 8, one missing, one corrupt)."""
    rng = np.random.default_rng(0)
    photo = data.astronaut()[..., ::-1]  # BGR
    gt_dir, lq_dir = tmp_path / 'Set3' / 'GT', tmp_path / 'Set3' / 'LR'
    good, bad = tmp_path / 'res_good' / 'Set3', tmp_path / 'res_bad' / 'Set3'
    for d in (gt_dir, lq_dir, good, bad):
        d.mkdir(parents=True)
    gts = {}
    for i, name in enumerate(['img_1', 'img_10', 'baby']):
        gt = np.ascontiguousarray(photo[40 * i:40 * i + 48, 60 * i:60 * i + 64])
        gts[name] = gt
        cv2.imwrite(str(gt_dir / f'{name}.png'), gt)
        cv2.imwrite(str(lq_dir / f'{name}.png'), bicubic_downscale_uint8(gt, 4))
        noisy = lambda s: np.clip(gt + rng.normal(0, s, gt.shape), 0, 255).round().astype(np.uint8)  # noqa: E731
        g = noisy(2)
        cv2.imwrite(str(good / f'{name}_good.png'), g)
        gts[name + '/good'] = g
        if name != 'img_10':
            b = noisy(8)
            gts[name + '/bad'] = b
            cv2.imwrite(str(bad / f'{name}x4_bad.png'), b)
    (bad / 'baby_bad.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')  # exact stem wins over the x4 file
    return tmp_path, gts


def test_table_values_and_reports(bench, folders, capsys):
    root, gts = folders
    out = str(root / 'report' / 'bench')
    code = bench.main(['--dataset', 'Set3', str(root / 'Set3' / 'GT'), str(root / 'Set3' / 'LR'),
                       '--method', 'good', str(root / 'res_good' / '{dataset}'),
                       '--method', 'bad', str(root / 'res_bad' / '{dataset}'),
                       '--method', 'Bicubic', '@bicubic',
                       '--metrics', 'psnr', 'ssim', 'lr_psnr', '--out', out, '--no-progress'])
    captured = capsys.readouterr()
    assert code == 0
    res = json.load(open(out + '.json'))
    rows = res['results']['Set3']['methods']
    # good: every image, values equal BasicSR's protocol (Y, crop 4) computed directly
    exp_psnr = np.mean([calculate_psnr(gts[n + '/good'], gts[n], 4, test_y_channel=True)
                        for n in ('img_1', 'img_10', 'baby')])
    exp_ssim = np.mean([calculate_ssim(gts[n + '/good'], gts[n], 4, test_y_channel=True)
                        for n in ('img_1', 'img_10', 'baby')])
    assert rows['good']['n'] == 3 and rows['good']['missing'] == [] and rows['good']['failed'] == {}
    assert rows['good']['metrics']['psnr'] == pytest.approx(exp_psnr, abs=1e-9)
    assert rows['good']['metrics']['ssim'] == pytest.approx(exp_ssim, abs=1e-9)
    # bad: img_10 missing, baby corrupt (reported by name), only img_1 scored
    assert rows['bad']['missing'] == ['img_10'] and list(rows['bad']['failed']) == ['baby']
    assert rows['bad']['n'] == 1
    assert rows['bad']['metrics']['psnr'] == pytest.approx(
        calculate_psnr(gts['img_1/bad'], gts['img_1'], 4, test_y_channel=True), abs=1e-9)
    assert 'img_10' in captured.err and 'baby' in captured.err
    # bicubic of the true LR: LR-PSNR is high (bicubic down of bicubic up ~ the LR), PSNR lowest
    assert rows['Bicubic']['n'] == 3
    assert rows['Bicubic']['metrics']['psnr'] < rows['bad']['metrics']['psnr'] < rows['good']['metrics']['psnr']
    assert rows['good']['metrics']['lr_psnr'] > 40
    assert res['better'] == {'psnr': 'higher', 'ssim': 'higher', 'lr_psnr': 'higher'}
    # Markdown, CSV
    assert '### Set3 (3 images)' in captured.out
    assert f"| good | {exp_psnr:.3f} | {exp_ssim:.4f} |" in captured.out
    assert '| bad |' in captured.out and '| 1 | 1 | 1 |' in captured.out
    with open(out + '.csv') as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 * 3
    good_psnr = [r for r in table if r['method'] == 'good' and r['metric'] == 'psnr'][0]
    assert float(good_psnr['value']) == pytest.approx(exp_psnr) and good_psnr['n_scored'] == '3'
    assert sorted(os.listdir(root / 'report')) == ['bench.csv', 'bench.json']  # atomic: no temporaries

    assert bench.main(['--dataset', 'Set3', str(root / 'Set3' / 'GT'), '--method', 'bad',
                       str(root / 'res_bad' / 'Set3'), '--out', out, '--no-progress', '--strict']) == 1


def test_yaml_config_and_unavailable_metric(bench, folders, tmp_path, monkeypatch, capsys):
    root, _ = folders

    def offline(url, dst, *a, **k):
        raise urllib.error.URLError('offline (test)')

    import torch.hub
    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)  # never download in tests
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    cfg = tmp_path / 'bench.yml'
    cfg.write_text(f"""
datasets:
  Set3: {{gt: {root / 'Set3' / 'GT'}, lq: {root / 'Set3' / 'LR'}}}
methods:
  good: {root / 'res_good'}/{{dataset}}
metrics: [psnr, lpips]
out: {tmp_path / 'cfg_out'}
""")
    code = bench.main(['--config', str(cfg), '--no-progress'])
    out = capsys.readouterr()
    assert code == 2  # lpips could not run
    res = json.load(open(str(tmp_path / 'cfg_out') + '.json'))
    assert res['results']['Set3']['methods']['good']['metrics']['lpips'] is None
    assert res['results']['Set3']['methods']['good']['n'] == 3
    assert 'lpips' in res['metric_errors'] and '.pth' in res['metric_errors']['lpips']
    assert 'n/a' in out.out
    bad_cfg = tmp_path / 'evil.yml'
    bad_cfg.write_text('datasets: !!python/object/apply:os.system ["echo hacked"]\n')
    assert bench.main(['--config', str(bad_cfg)]) == 2
    assert 'not allowed' in capsys.readouterr().err


def test_matching_rules(bench):
    m = bench.match_results(['img', 'img_1', 'baby'],
                            ['r/img_1_out.png', 'r/img_x.png', 'r/babyx4_SR.png', 'r/other.png'])
    assert m == {'img_1': 'r/img_1_out.png', 'img': 'r/img_x.png', 'baby': 'r/babyx4_SR.png'}
