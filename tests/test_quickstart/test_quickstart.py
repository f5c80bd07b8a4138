"""The quickstart baseline option trains through basicsr_ext/train.py on CPU, learns, and resumes; a shortened
quickstart run reports PSNR (Y, RGB), SSIM and the Laplacian sharpness ratio and writes the comparison sheet.

Data: scripts/quickstart.py's builder with fewer photos (same layout). The real options/quickstart/rrdb_l1.yml is
used with ``--force_yml`` for fewer iterations. The run is SIGKILLed once training state 20 is complete, then
``--auto_resume`` continues from iteration 20 to 40. The final network must beat the same architecture at its
initialisation on the held-out photos (the option has ``ema_decay: 0``, so ``params`` is what is evaluated and
what BasicSR validates; with an EMA the test would have to read ``params_ema``).
"""
import glob
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from tests.harness import ROOT, TRAIN, env, load_script

OPTION = osp.join(ROOT, 'options', 'quickstart', 'rrdb_l1.yml')
NAME = 'quickstart_rrdb_l1'
FORCE = ['--force_yml', 'train:total_iter=40', 'val:val_freq=20', 'logger:save_checkpoint_freq=20',
         'logger:print_freq=10', 'train:scheduler:periods=[40]', 'datasets:train:batch_size_per_gpu=4']


def _quickstart_module():
    return load_script('quickstart')


@pytest.fixture(scope='module')
def qs_out(tmp_path_factory):
    qs = _quickstart_module()
    qs.TRAIN_PHOTOS = ('astronaut', 'camera', 'coffee', 'immunohistochemistry', 'brick', 'text')
    qs.VAL_PHOTOS = ('chelsea', 'rocket')
    qs.MAX_SIDE = 256  # fewer sub-images: a faster build
    out = str(tmp_path_factory.mktemp('qs'))
    paths = qs.build_data(out, log=lambda m: None)
    assert sorted(paths) == ['train_HR.lmdb', 'train_LRx4.lmdb', 'val/HR', 'val/LRx4']
    return out, qs


def _psnr_on_val(out, state_dict):
    from basicsr.archs import build_network
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img

    from basicsr_ext.utils.options import load_option_file
    net = build_network(dict(load_option_file(OPTION)['network_g']))
    if state_dict is not None:
        net.load_state_dict(state_dict)
    net.eval()
    psnrs = []
    with torch.no_grad():
        for hr_path in sorted(glob.glob(osp.join(out, 'datasets', 'val', 'HR', '*.png'))):
            lr = cv2.imread(hr_path.replace(osp.join('val', 'HR'), osp.join('val', 'LRx4')))
            x = torch.from_numpy(np.ascontiguousarray(lr[..., ::-1].transpose(2, 0, 1))).float()[None] / 255.0
            psnrs.append(calculate_psnr(tensor2img(net(x)), cv2.imread(hr_path), 4, test_y_channel=True))
    return float(np.mean(psnrs))


def _train(out, *extra, timeout=300):
    return subprocess.run([sys.executable, TRAIN, '-opt', OPTION, *FORCE, *extra], cwd=out, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def _kill_after_complete_state(out, it, timeout=300):
    """Start training; SIGKILL it once training_states/<it>.state is complete (loadable)."""
    from basicsr_ext.utils.checkpoint import CheckpointError, load_checkpoint
    state = osp.join(out, 'experiments', NAME, 'training_states', f'{it}.state')
    proc = subprocess.Popen([sys.executable, TRAIN, '-opt', OPTION, *FORCE], cwd=out, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f'training ended before iteration {it}: {proc.stderr.read()[-3000:]}')
            if time.time() > deadline:
                raise AssertionError('timeout waiting for the training state')
            if osp.exists(state):
                try:
                    load_checkpoint(state)
                    break
                except CheckpointError:
                    pass
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()


@pytest.mark.e2e
def test_quickstart_layout_and_baseline_learns_and_resumes(qs_out):
    out, qs = qs_out
    import lmdb
    from basicsr_ext.utils.checkpoint import load_checkpoint

    # layout other helpers' options rely on
    keys = [line.split('.')[0] for line in open(osp.join(out, 'datasets', 'train_HR.lmdb', 'meta_info.txt'))]
    assert keys == [line.split('.')[0] for line in open(osp.join(out, 'datasets', 'train_LRx4.lmdb',
                                                                   'meta_info.txt'))]
    assert keys[0] == 'astronaut_s001' and len(keys) > 20
    env_ = lmdb.open(osp.join(out, 'datasets', 'train_HR.lmdb'), readonly=True, lock=False)
    with env_.begin() as txn:
        assert cv2.imdecode(np.frombuffer(txn.get(b'astronaut_s001'), np.uint8), 1).shape == (128, 128, 3)
    env_.close()
    hr = sorted(os.listdir(osp.join(out, 'datasets', 'val', 'HR')))
    assert hr == ['chelsea.png', 'rocket.png'] == sorted(os.listdir(osp.join(out, 'datasets', 'val', 'LRx4')))
    assert cv2.imread(osp.join(out, 'datasets', 'val', 'HR', 'rocket.png')).shape == (256, 256, 3)
    assert cv2.imread(osp.join(out, 'datasets', 'val', 'LRx4', 'rocket.png')).shape == (64, 64, 3)

    # interrupted at iteration 20, resumed to 40
    _kill_after_complete_state(out, 20)
    assert not osp.exists(osp.join(out, 'experiments', NAME, 'models', 'net_g_40.pth'))
    res = _train(out, '--auto_resume')
    assert res.returncode == 0, res.stderr[-4000:]
    logs = sorted(glob.glob(osp.join(out, 'experiments', NAME, f'train_{NAME}_*.log')))
    text = open(logs[-1]).read()
    assert re.search(r'Resuming training from epoch: \d+, iter: 20', text), text[-3000:]
    assert 'iter:      30' in text and 'iter:      10,' not in text

    ckpt = load_checkpoint(osp.join(out, 'experiments', NAME, 'models', 'net_g_latest.pth'))
    assert 'params_ema' not in ckpt  # ema_decay 0: the trained weights are params
    before = _psnr_on_val(out, None)
    after = _psnr_on_val(out, ckpt['params'])
    print(f"val PSNR before {before:.2f} dB, after {after:.2f} dB")
    assert after > before + 3.0, (before, after)
    # the same number as BasicSR's own validation at iteration 40
    logged = [float(m) for m in re.findall(r'# psnr: ([0-9.]+)', text)]
    assert logged and abs(logged[-1] - after) < 1e-3, (logged, after)


def test_quickstart_planning_helpers(tmp_path):
    """Stage plan (dependencies pulled in), generated test option, EMA choice, --iters-scale overrides."""
    qs = _quickstart_module()
    from basicsr_ext.utils.options import load_option_file
    names = [s.name for s in qs.STAGES]
    assert names[0] == 'rrdb_l1'
    plan = [s.name for s in qs.plan_stages(None, str(tmp_path), log=lambda m: None)]
    assert plan[0] == 'rrdb_l1' and len(plan) == len(set(plan))

    train = load_option_file(OPTION)
    train['path']['pretrain_network_tok'] = 'experiments/other/models/net_g_latest.pth'
    test = qs.generic_test_option(train)
    assert test['name'] == f'test_{NAME}' and test['network_g'] == train['network_g']
    assert test['model_type'] == 'SRModel' and 'logger' not in test
    assert test['path']['pretrain_network_g'] == f'experiments/{NAME}/models/net_g_latest.pth'
    assert test['path']['pretrain_network_tok'] == 'experiments/other/models/net_g_latest.pth'
    assert list(test['datasets']) == ['test_1'] and test['datasets']['test_1']['dataroot_lq'] == 'datasets/val/LRx4'
    assert qs._referenced_experiments(train) == {'other'}

    train['train']['ema_decay'] = 0.99
    assert qs.choose_param_key(train, 100) == 'params'       # 0.99^100 = 37 % random init left in the EMA
    assert qs.choose_param_key(train, 1000) == 'params_ema'
    train['path']['pretrain_network_g'] = 'x.pth'
    assert qs.choose_param_key(train, 100) == 'params_ema'   # the EMA started from the pretrained weights
    train['train']['ema_decay'] = 0
    assert qs.choose_param_key(train, 10 ** 6) == 'params'

    base = load_option_file(OPTION)
    total = base['train']['total_iter']
    assert base['train']['scheduler']['periods'] == [total]     # the cosine decay ends with the run
    force = qs.scaled_overrides(base, 0.5)
    assert f'train:total_iter={total // 2}' in force and f"val:val_freq={base['val']['val_freq'] // 2}" in force
    assert f'train:scheduler:periods=[{total // 2}]' in force and qs.scaled_overrides(train, 1.0) == []
    step = {'train': {'total_iter': 100, 'scheduler': {'type': 'MultiStepLR', 'milestones': [80]}}}
    assert qs.scaled_overrides(step, 0.5) == ['train:total_iter=50', 'train:scheduler:milestones=[40]']
    cos = {'train': {'total_iter': 101, 'freeze_decoder': 30, 'scheduler': {'periods': [50, 51]}}}
    assert qs.scaled_overrides(cos, 0.1) == ['train:total_iter=10', 'train:scheduler:periods=[5,5]',
                                             'train:freeze_decoder=3']

    # the AE step: decoder from the L1 baseline (pulled in by the plan), frozen first; scaled with the run
    ae_step = next(st for s in qs.STAGES for st in s.steps if st.option == 'aesop_autoencoder.yml')
    ae = qs.apply_force(load_option_file(osp.join(ROOT, 'options', 'quickstart', ae_step.option)), ae_step.force)
    assert ae['path']['pretrain_network_decoder'] == f'experiments/{NAME}/models/net_g_latest.pth'
    assert ae['network_g']['dec_opt']['num_feat'] == base['network_g']['num_feat']   # the same RRDBNet
    assert 0 < ae['train']['freeze_decoder'] < ae['train']['total_iter']
    assert qs._referenced_experiments(list(ae_step.force)) == {NAME}
    assert [s.name for s in qs.plan_stages(['aesop'], str(tmp_path), log=lambda m: None)] == ['rrdb_l1', 'aesop']


def test_figures_colour_shift_and_sharpness():
    """PSNR on RGB sees a colour cast that Y hides; the Laplacian ratio is 1 for the GT, < 1 when blurred."""
    from skimage import data

    from basicsr_ext.utils.comparison import image_figures, laplacian_ratio
    gt = np.ascontiguousarray(data.chelsea()[:96, :128, ::-1])
    f = image_figures(gt.copy(), gt)
    assert f['psnr'] == f['psnr_rgb'] == float('inf') and f['ssim'] == pytest.approx(1) and f['lap_ratio'] == 1
    # a magenta cast (BGR +20, -14, +20) that leaves Y = 0.257 R + 0.504 G + 0.098 B nearly unchanged
    cast = np.clip(gt.astype(np.int16) + np.array([20, -14, 20], np.int16), 0, 255).astype(np.uint8)
    f = image_figures(cast, gt)
    assert f['psnr_rgb'] < 25 and f['psnr'] > f['psnr_rgb'] + 10, f
    blurred = cv2.GaussianBlur(gt, (0, 0), 1.5)
    assert 0 < laplacian_ratio(blurred, gt) < 0.6
    noisy = np.clip(gt + np.random.default_rng(0).normal(0, 8, gt.shape), 0, 255).astype(np.uint8)
    assert laplacian_ratio(noisy, gt) > 1


@pytest.mark.e2e
def test_shortened_quickstart_reports_figures_and_writes_the_sheet(qs_out, monkeypatch, capsys):
    """scripts/quickstart.py (the baseline stage at 1 % of its iterations): every column, the JSON and the sheet."""
    out, qs = qs_out
    from basicsr_ext.utils import comparison
    logs = []
    rows = qs.run_quickstart(out, ['rrdb_l1'], iters_scale=0.01, log=logs.append, threads=1)
    assert [r['method'] for r in rows] == ['Bicubic (reference)', 'RRDB + L1 (baseline)']
    assert all(r['status'] == 'ok' for r in rows), rows
    for r in rows:
        for key in ('psnr', 'psnr_rgb', 'ssim', 'lap_ratio'):
            assert r[key] is not None and np.isfinite(r[key]), (key, r)
        assert 0 < r['lap_ratio'] < 2 and r['psnr_rgb'] != r['psnr']
    assert rows[0]['lap_ratio'] < 0.8        # bicubic x4 is blurry
    assert rows[1]['train_s'] > 0 and rows[1]['test_s'] > 0
    table = qs.format_table(rows)
    assert '| PSNR (Y) | PSNR (RGB) | SSIM (Y) | sharpness (Laplacian ratio) |' in table
    assert f"| {rows[1]['psnr_rgb']:.2f} |" in table and f"| {rows[0]['lap_ratio']:.3f} |" in table

    sheet = osp.join(out, qs.SHEET_NAME)
    assert f'comparison sheet: {sheet}' in logs
    img = cv2.imread(sheet)
    assert img is not None
    w, h = comparison.sheet_size(3, 2 * qs.SHEET_CROP, (qs.SHEET_CROP, qs.SHEET_CROP))   # GT, bicubic, L1
    assert img.shape[:2] == (h, w)
    with open(osp.join(out, 'quickstart_results.json')) as f:
        saved = json.load(f)
    assert saved['sheet'] == sheet and [r['method'] for r in saved['rows']] == [r['method'] for r in rows]

    # the command line prints the table and the sheet's path (run_quickstart itself is tested above)
    monkeypatch.setattr(qs, 'run_quickstart', lambda *a, **k: rows)
    assert qs.main(['--out', out, '--stages', 'rrdb_l1']) == 0
    printed = capsys.readouterr().out
    assert table in printed and f'comparison sheet (chelsea, GT / bicubic / each method on the same crop): {sheet}' \
        in printed


def test_stages_run_side_by_side_after_their_dependencies(tmp_path, monkeypatch):
    """--jobs 2: a stage starts only after the stages it needs checkpoints from; independent stages overlap; a failed
    stage's dependents are skipped with a row saying why; rows keep the plan order."""
    import threading
    qs = _quickstart_module()
    plan = qs.plan_stages(None, str(tmp_path), log=lambda m: None)
    deps = qs.stage_dependencies(plan)
    assert deps == {'rrdb_l1': set(), 'ldl': {'rrdb_l1'}, 'aesop': {'rrdb_l1'}, 'tvqrap': set()}
    assert qs.default_jobs() == (2 if (os.cpu_count() or 1) >= 2 else 1)

    monkeypatch.setattr(qs, 'build_data', lambda out, rebuild=False, log=print: {})
    monkeypatch.setattr(qs, 'bicubic_row', lambda out: {'method': 'bicubic', 'status': 'ok'})
    monkeypatch.setattr(qs, 'write_sheet', lambda out, rows: None)
    events, lock, running, overlap = [], threading.Lock(), set(), []
    threads_seen = set()

    def fake_stage(stage, out, iters_scale=1.0, log=print, threads=None, fail=()):
        with lock:
            events.append(('start', stage.name))
            running.add(stage.name)
            if len(running) > 1:
                overlap.append(set(running))
            threads_seen.add(threads)
        log(f'training {stage.name}')
        time.sleep(0.2)
        with lock:
            running.discard(stage.name)
            events.append(('end', stage.name))
        status = 'train failed: x' if stage.name in fail else 'ok'
        return [{'method': st.label, 'status': status} for st in stage.steps if st.label]

    logs = []
    monkeypatch.setattr(qs, 'run_stage', fake_stage)
    rows = qs.run_quickstart(str(tmp_path), log=logs.append, jobs=2)
    for stage, needs in deps.items():
        for dep in needs:
            assert events.index(('end', dep)) < events.index(('start', stage)), (stage, dep, events)
    assert overlap and all(len(r) <= 2 for r in overlap)
    assert threads_seen == {max(1, (os.cpu_count() or 1) // 2)}
    assert any(line.startswith('[tvqrap] training tvqrap') for line in logs)
    labels = [st.label for s in plan for st in s.steps if st.label]
    assert [r['method'] for r in rows] == ['bicubic'] + labels

    events.clear()   # one lane: the longest ready stage first (Stage.secs), rows still in plan order
    rows = qs.run_quickstart(str(tmp_path), log=logs.append, jobs=1)
    assert [name for kind, name in events if kind == 'start'] == ['tvqrap', 'rrdb_l1', 'aesop', 'ldl']
    assert [r['method'] for r in rows] == ['bicubic'] + labels

    monkeypatch.setattr(qs, 'run_stage', lambda *a, **k: fake_stage(*a, **k, fail=('rrdb_l1', )))
    events.clear()
    rows = qs.run_quickstart(str(tmp_path), log=logs.append, jobs=2)
    started = {name for kind, name in events if kind == 'start'}
    assert started == {'rrdb_l1', 'tvqrap'}
    by_method = {r['method']: r['status'] for r in rows}
    assert by_method['RRDB + LDL (AESOP baseline)'] == 'skipped: stage rrdb_l1 failed'
    assert by_method['RRDB + AESOP'] == 'skipped: stage rrdb_l1 failed'
    assert by_method['TVQ&RAP stage III (RAP)'] == 'ok'
    assert [r['method'] for r in rows] == ['bicubic'] + labels
