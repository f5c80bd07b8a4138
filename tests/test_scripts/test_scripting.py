"""basicsr_ext.scripting (what the scripts share) and the shape of scripts/: no script imports another, none edits
sys.path, every one imports the package's public modules only."""
import ast
import glob
import os

import numpy as np
import pytest
import torch

from basicsr_ext import scripting
from tests.harness import ROOT

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, 'scripts', '**', '*.py'), recursive=True))


def test_scripts_are_grouped_and_import_no_other_script():
    names = {os.path.splitext(os.path.basename(p))[0] for p in SCRIPTS}
    assert len(SCRIPTS) >= 12
    for path in SCRIPTS:
        rel = os.path.relpath(path, os.path.join(ROOT, 'scripts'))
        assert rel == 'quickstart.py' or rel.split(os.sep)[0] in ('data', 'eval', 'bench', 'paper'), rel
        source = open(path).read()
        assert 'sys.path' not in source, f'{rel} edits sys.path'
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported = [a.name.split('.')[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported = [(node.module or '').split('.')[0]]
            else:
                continue
            assert not set(imported) & names, f'{rel} imports another script: {imported}'


def test_markdown_table_aligns_and_refuses_a_wrong_spec():
    table = scripting.markdown_table(['a', 'b'], [['x', 1], ['y', 2.5]], align='lr')
    assert table.splitlines() == ['| a | b |', '|---|---:|', '| x | 1 |', '| y | 2.5 |']
    assert scripting.markdown_table(['a'], []).splitlines() == ['| a |', '|---|']
    with pytest.raises(ValueError, match='2 columns'):
        scripting.markdown_table(['a', 'b'], [], align='l')
    assert scripting.fmt(None, '.2f') == 'n/a' and scripting.fmt(3.14159, '.2f', unit=' s') == '3.14 s'


def test_photos_are_bgr_uint8_and_fit():
    astronaut = scripting.load_photo('astronaut')
    import skimage.data
    assert astronaut.dtype == np.uint8 and np.array_equal(astronaut[..., ::-1], skimage.data.astronaut())
    camera = scripting.load_photo('camera')  # grey -> 3 equal channels
    assert camera.shape[2] == 3 and np.array_equal(camera[..., 0], camera[..., 2])
    small = scripting.fit_max_side(astronaut, 100)
    assert small.shape == (100, 100, 3)
    assert scripting.fit_max_side(astronaut, 600) is astronaut
    rgb = scripting.photo_rgb01('astronaut', 256)
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.float32 and 0 <= rgb.min() and rgb.max() <= 1


def test_package_photos_are_colour_and_a_missing_one_is_named(monkeypatch):
    """The colour photos shipped inside pinned dependencies load as BGR uint8 (pixels = OpenCV's decoding of the
    file); a missing package or file is one error naming both."""
    import cv2
    for name in scripting.PACKAGE_PHOTOS:
        img = scripting.load_photo(name)
        assert img.dtype == np.uint8 and img.ndim == 3 and min(img.shape[:2]) >= 500, name
        assert np.abs(img[..., 0].astype(int) - img[..., 2]).mean() > 5, f'{name} is not a colour photo'
    path = scripting.package_photo_path('grace_hopper')
    assert np.array_equal(scripting.load_photo('grace_hopper'), cv2.imread(path, cv2.IMREAD_COLOR))
    monkeypatch.setitem(scripting.PACKAGE_PHOTOS, 'gone', ('matplotlib', 'matplotlib/no_such_photo.jpg'))
    with pytest.raises(FileNotFoundError, match=r'no_such_photo\.jpg is missing from matplotlib'):
        scripting.load_photo('gone')
    monkeypatch.setitem(scripting.PACKAGE_PHOTOS, 'gone', ('no-such-dist', 'x.jpg'))
    with pytest.raises(FileNotFoundError, match='package no-such-dist is not installed'):
        scripting.load_photo('gone')


def test_crops_and_sampler_are_reproducible():
    crops = scripting.photo_crops(['astronaut'], 64, max_side=256)
    assert crops.shape == (16, 3, 64, 64)
    photos = [scripting.photo_rgb01('astronaut', 128), scripting.photo_rgb01('coffee', 128)]
    a, b = scripting.crop_sampler(photos, 3, 32, seed=5), scripting.crop_sampler(photos, 3, 32, seed=5)
    first = a()
    assert first.shape == (3, 3, 32, 32) and torch.equal(first, b())
    assert not torch.equal(a(), first)


def test_training_options_stay_in_the_workdir(tmp_path):
    path = scripting.option_file('train_aesop_rrdb.yml')
    opt = scripting.training_options(path, str(tmp_path), pretrained=False)
    assert opt['is_train'] and opt['num_gpu'] == 0 and opt['auto_resume'] is False and opt['dist'] is False
    assert {opt['path'][k] for k in ('experiments_root', 'models', 'training_states', 'log', 'visualization')} == {
        str(tmp_path)}
    assert not any('resume' in k for k in opt['path'])
    assert opt['path']['pretrain_network_g'] is None
    assert all(ds['phase'] in ('train', 'val') and ds['scale'] == opt['scale'] for ds in opt['datasets'].values())
    kept = scripting.training_options(path, str(tmp_path))
    assert kept['path']['pretrain_network_g'].endswith('.pth')
    demo = scripting.quickstart_options('tvq_tokenizer.yml', str(tmp_path), codebook_size=8)
    assert demo['network_g']['codebook_size'] == 8 and demo['train']['ema_decay'] == 0


def test_timed_step_times_one_optimisation():
    calls = []

    class Model:
        device = torch.device('cpu')

        def feed_data(self, data):
            calls.append(('feed', data['x']))

        def optimize_parameters(self, it):
            calls.append(('step', it))

    assert scripting.timed_step(Model(), {'x': 1}, 7) >= 0
    assert calls == [('feed', 1), ('step', 7)]
