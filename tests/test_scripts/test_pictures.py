"""Perception-distortion plot and comparison sheet: valid PNGs of the expected size, atomic, errors exit 2."""
import json
import os

import cv2
import numpy as np
import pytest
from skimage import data

from tests.harness import load_script


def _png(path):
    raw = open(path, 'rb').read()
    assert raw[:8] == b'\x89PNG\r\n\x1a\n'
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None
    return img


def _bench_json(path):
    res = {'metrics': ['psnr', 'lpips'], 'better': {'psnr': 'higher', 'lpips': 'lower'}, 'results': {
        name: {'n_gt': 3, 'methods': {
            'Bicubic': {'metrics': {'psnr': 26.0 + k, 'lpips': 0.45}},
            'ESRGAN': {'metrics': {'psnr': 24.1 + k, 'lpips': 0.12}},
            'AESOP': {'metrics': {'psnr': 24.9 + k, 'lpips': 0.11}},
            'broken': {'metrics': {'psnr': None, 'lpips': 0.2}}}}
        for k, name in enumerate(['Set5', 'Set14'])}}
    with open(path, 'w') as f:
        json.dump(res, f)


def test_perception_distortion_plot(tmp_path, capsys):
    mod = load_script('eval/plot_perception_distortion')
    _bench_json(tmp_path / 'b.json')
    out = tmp_path / 'plots' / 'pd.png'
    assert mod.main(['--json', str(tmp_path / 'b.json'), '--out', str(out), '--width', '7', '--height', '3',
                     '--dpi', '80']) == 0
    img = _png(out)
    assert img.shape[:2] == (240, 560)
    text = capsys.readouterr().out
    assert '| Set14 | AESOP | 25.9000 | 0.1100 |' in text and 'broken' not in text  # no point without psnr
    assert img.std() > 10  # something was drawn
    assert os.listdir(out.parent) == ['pd.png']
    assert mod.main(['--json', str(tmp_path / 'b.json'), '--x', 'fid', '--out', str(out)]) == 2


def test_comparison_sheet(tmp_path, capsys):
    mod = load_script('eval/comparison_sheet')
    gt = data.astronaut()[:96, :128][..., ::-1]
    for d in ('gt', 'lq', 'ours'):
        (tmp_path / d).mkdir()
    cv2.imwrite(str(tmp_path / 'gt' / 'astro.png'), gt)
    cv2.imwrite(str(tmp_path / 'lq' / 'astro.png'), cv2.resize(gt, (32, 24), interpolation=cv2.INTER_AREA))
    ours = cv2.GaussianBlur(gt, (5, 5), 1.5)
    cv2.imwrite(str(tmp_path / 'ours' / 'astro_ours.png'), ours)
    out = tmp_path / 'sheet.png'
    code = mod.main(['--gt', str(tmp_path / 'gt'), '--lq', str(tmp_path / 'lq'), '--image', 'astro',
                     '--method', 'Ours', str(tmp_path / 'ours'), '--method', 'GT-copy', str(tmp_path / 'gt'),
                     '--crop', '40', '30', '32', '24', '--panel', '128', '--out', str(out)])
    assert code == 0, capsys.readouterr().err
    img = _png(out)
    w, h = mod.sheet_size(4, 128, (32, 24))  # GT, Bicubic, Ours, GT-copy
    assert img.shape[:2] == (h, w) == (96 + 22 + 12, 4 * 128 + 5 * 6)
    # the GT panel shows the zoomed crop: its centre pixel is the GT pixel, nearest-neighbour zoom
    left, top = 6, 6
    centre = img[top + 48, left + 64, :3].astype(int)
    assert np.abs(centre - gt[30 + 12, 40 + 16].astype(int)).max() <= 3
    # the GT-copy panel equals the GT panel, the Ours panel does not
    panel = lambda i: img[top:top + 96, left + i * 134:left + i * 134 + 128, :3].astype(int)  # noqa: E731
    assert np.abs(panel(0) - panel(3)).mean() < 1.0
    assert np.abs(panel(0) - panel(2)).mean() > 2.0
    assert mod.main(['--gt', str(tmp_path / 'gt' / 'astro.png'), '--crop', '120', '90', '32', '32',
                     '--out', str(out)]) == 2  # crop outside the image


@pytest.mark.parametrize('overview', [True])
def test_sheet_overview_panel(tmp_path, overview):
    mod = load_script('eval/comparison_sheet')
    cv2.imwrite(str(tmp_path / 'g.png'), data.astronaut()[:64, :64][..., ::-1])
    out = tmp_path / 's.png'
    assert mod.main(['--gt', str(tmp_path / 'g.png'), '--no-bicubic', '--overview', '--panel', '64',
                     '--out', str(out)]) == 0
    assert _png(out).shape[:2] == mod.sheet_size(2, 64, (16, 16))[::-1]


def _dark_box(img, x0, x1):
    """(width, height) of the bounding box of the dark pixels in columns x0..x1 of a sheet, above the labels."""
    from basicsr_ext.utils.comparison import GAP_PX, LABEL_PX
    ys, xs = np.nonzero(img[:img.shape[0] - LABEL_PX - GAP_PX, x0:x1, :3].max(axis=2) < 100)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


@pytest.mark.parametrize('hw', [(90, 120), (120, 90), (40, 400)])
def test_sheet_overview_keeps_the_photo_aspect_ratio(tmp_path, hw):
    """Issue 13.11: a 4:3 (or 3:4) photo's overview is not squashed into the crop panels' square; a panorama
    wider than the 4-panel cap is letterboxed, never squashed."""
    mod = load_script('eval/comparison_sheet')
    h, w = hw
    gt = np.full((h, w, 3), 30, np.uint8)  # dark: the overview's extent shows against the white sheet
    gt[h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8] = 230
    cv2.imwrite(str(tmp_path / 'g.png'), gt)
    out = tmp_path / 's.png'
    assert mod.main(['--gt', str(tmp_path / 'g.png'), '--no-bicubic', '--overview', '--panel', '64',
                     '--crop', str(w // 2 - 8), str(h // 2 - 8), '16', '16', '--out', str(out)]) == 0
    img = _png(out)
    assert img.shape[:2] == mod.sheet_size(1, 64, (16, 16), (h, w))[::-1]
    from basicsr_ext.utils.comparison import overview_width
    ow = overview_width(64, (h, w), 64)
    bw, bh = _dark_box(img, 0, 6 + ow + 3)
    assert abs(bw / bh - w / h) < 0.06 * w / h, (bw, bh, w, h)


def test_pd_plot_labels_of_identical_and_near_identical_points_do_not_overprint(tmp_path, monkeypatch):
    """Issue 13.11: two methods at the same point share one label; near-identical points (1e-3 dB apart, a
    dataset spanning 3 dB) get labels that do not overlap; every label still names its method."""
    mod = load_script('eval/plot_perception_distortion')
    res = {'better': {'psnr': 'higher', 'lpips': 'lower'}, 'results': {'Set5': {'methods': {
        'A': {'metrics': {'psnr': 25.0, 'lpips': 0.2}}, 'B': {'metrics': {'psnr': 25.0, 'lpips': 0.2}},
        'C-long-name': {'metrics': {'psnr': 26.0, 'lpips': 0.15}},
        'D-long-name': {'metrics': {'psnr': 26.001, 'lpips': 0.1501}},
        'E': {'metrics': {'psnr': 26.0005, 'lpips': 0.1499}}, 'F': {'metrics': {'psnr': 28.0, 'lpips': 0.3}}}}}}
    (tmp_path / 'b.json').write_text(json.dumps(res))
    seen = {}

    def capture(fig, path, dpi=100):
        renderer = fig.canvas.get_renderer()
        seen['texts'] = [(t.get_text(), t.get_window_extent(renderer)) for ax in fig.axes for t in ax.texts]

    monkeypatch.setattr(mod, 'write_figure_atomic', capture)
    assert mod.main(['--json', str(tmp_path / 'b.json'), '--out', str(tmp_path / 'pd.png')]) == 0
    labels = sorted(t for t, _ in seen['texts'])
    assert labels == ['A = B', 'C-long-name', 'D-long-name', 'E', 'F'], labels
    boxes = [b for _, b in seen['texts']]
    overlapping = [(seen['texts'][i][0], seen['texts'][j][0]) for i in range(len(boxes))
                   for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert not overlapping, overlapping
    assert mod.merge_identical([('X', 1.0, 2.0), ('Y', 1.00001, 2.0), ('Z', 1.1, 2.0)]) == [
        ('X = Y', 1.0, 2.0, 0), ('Z', 1.1, 2.0, 2)]
