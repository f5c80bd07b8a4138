"""Quickstart: one command, no download. Builds a tiny SR dataset from photos the installed packages ship
(scikit-image, matplotlib, pyiqa), trains the quickstart stages with ``basicsr_ext/train.py`` and tests them with
``basicsr_ext/test.py``, then prints a table on
held-out photos (4-pixel border crop): PSNR on Y and on RGB (a colour cast hides in Y), SSIM on Y, and sharpness as
the ratio of the SR's mean absolute Laplacian to the GT's (1 = as sharp as the GT; no network weights needed), and
writes one comparison sheet (the same crop of the GT, bicubic and every method) as ``quickstart_sheet.png``.

    python scripts/quickstart.py                       # every stage, two at a time (~8 min on 2 cores)
    python scripts/quickstart.py --stages rrdb_l1      # the baseline only (~2 min)
    python scripts/quickstart.py --stages rrdb_l1 ldl aesop   # the AESOP part (~6 min on 2 cores)
    python scripts/quickstart.py --jobs 1              # one stage at a time (each on all cores)
    python scripts/quickstart.py --iters-scale 0.25    # shorter runs (smoke test)

Layout under ``--out`` (default ``quickstart_out/``; option files in ``options/quickstart/`` rely on it):

    datasets/train_HR.lmdb     GT sub-images (128x128, step 64) of 15 photos, keys in meta_info.txt
    datasets/train_LRx4.lmdb   bicubic x4 LR sub-images (32x32), same keys
    datasets/val/HR/*.png      4 held-out photos, centre 256x256 (multiple of 4)
    datasets/val/LRx4/*.png    their bicubic x4 LR (BasicSR's MATLAB imresize)
    datasets/build/            intermediate folders (full-size HR/LR, sub-image folders)
    experiments/, results/     what BasicSR writes (training runs from this folder as CWD)
    logs/<step>.log            stdout/stderr of every train/test command
    options/test_*.yml         test options generated for the method stages
    quickstart_results.json    the table's figures
    quickstart_sheet.png       the comparison sheet

Every command is printed before it runs, so any step can be re-run by hand from ``--out``.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np

import basicsr_ext  # noqa: F401  (compat first)
from basicsr_ext.data import prep
from basicsr_ext.data.checks import DatasetError
from basicsr_ext.scripting import REPO_ROOT as ROOT
from basicsr_ext.scripting import fit_max_side, fmt, load_photo, markdown_table, option_file
from basicsr_ext.utils import comparison
from basicsr_ext.utils.atomic import write_text_atomic

OPTIONS_DIR = option_file('quickstart')
TRAIN_SCRIPT = osp.join(ROOT, 'basicsr_ext', 'train.py')
TEST_SCRIPT = osp.join(ROOT, 'basicsr_ext', 'test.py')

# Photos bundled with the installed packages (no download): scikit-image's, plus the natural colour scenes that
# matplotlib and pyiqa ship (scripting.PACKAGE_PHOTOS). Natural colour photos, as the papers train on: scikit-image's
# set alone had 11 of 18 grey or synthetic photos (page, text, moon, phantom...). The four validation photos are held
# out.
TRAIN_PHOTOS = ('astronaut', 'stereo_motorcycle', 'grace_hopper', 'night_street', 'garden', 'sunset_beach',
                'snowy_road', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'brick', 'grass', 'gravel',
                'camera', 'colorwheel')
VAL_PHOTOS = ('chelsea', 'coffee', 'coins', 'rocket')
SCALE = 4
MAX_SIDE = 512       # larger photos are first resized (INTER_AREA) so that none dominates the sub-images
VAL_SIDE = 256       # validation: centre crop (fast validation; a multiple of 4 and of 64)
SUB_CROP, SUB_STEP = 128, 64   # sub-images: BasicSR's recipe shape (step = crop / 2) at quickstart size
DATA_VERSION = 2


@dataclass(frozen=True)
class Step:
    """One training run. ``label`` set: tested afterwards and shown in the table."""

    option: str                          # file in options/quickstart/
    label: str | None = None
    test_option: str | None = None       # file in options/quickstart/; None = test_<option> if present, else generated
    #                                      (either way path.param_key_g is choose_param_key's, for the run's length)
    force: tuple[str, ...] = ()          # extra --force_yml entries (shown in the printed command)
    short: str | None = None             # label on the comparison sheet (default: label)


@dataclass(frozen=True)
class Stage:
    name: str
    steps: tuple[Step, ...]
    note: str = field(default='')
    secs: int = 0    # measured wall time (one thread, beside another stage, 2-core AMX Xeon): with --jobs > 1 the
    #                  longest stage that is ready starts first, so the short ones fill the other lane at the end


#: the AE decoder starts from the L1 baseline, as the paper's starts from the PSNR RRDB (aesop.md §2), and stays frozen
#: while the encoder learns its first LR mapping (a random encoder would wreck the pretrained decoder). Given here, not
#: in aesop_autoencoder.yml, so that the option file also trains alone (tests, benchmarks) without the baseline.
AE_DECODER_INIT = ('path:pretrain_network_decoder=experiments/quickstart_rrdb_l1/models/net_g_latest.pth',
                   'path:param_key_decoder=params', 'train:freeze_decoder=150')

STAGES: tuple[Stage, ...] = (
    Stage('rrdb_l1', (Step('rrdb_l1.yml', 'RRDB + L1 (baseline)', 'test_rrdb_l1.yml', short='RRDB + L1'), ),
          secs=130),
    Stage('ldl', (Step('ldl_rrdb.yml', 'RRDB + LDL (AESOP baseline)', short='RRDB + LDL'), ), secs=50),
    Stage('aesop', (Step('aesop_autoencoder.yml', force=AE_DECODER_INIT),
                    Step('aesop_rrdb.yml', 'RRDB + AESOP', short='RRDB + AESOP')), secs=248),
    Stage('tvqrap', (Step('tvq_tokenizer.yml', 'TVQ tokenizer (HR reconstruction, not SR)',
                          short='TVQ tokenizer (recon)'),
                     Step('tvqrap_stage2.yml', 'TVQ&RAP stage II (code prediction)', short='TVQ&RAP II'),
                     Step('tvqrap_rap.yml', 'TVQ&RAP stage III (RAP)', short='TVQ&RAP III')), secs=487),
)


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------
def _center(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return img[top:top + side, left:left + side]


def build_data(out: str, rebuild: bool = False, log=print) -> dict[str, str]:
    """Make ``datasets/`` under ``out`` with the tooling of basicsr_ext.data.prep (skipped when up to date)."""
    ds = osp.join(out, 'datasets')
    build = osp.join(ds, 'build')
    paths = {'train_HR.lmdb': osp.join(ds, 'train_HR.lmdb'), 'train_LRx4.lmdb': osp.join(ds, 'train_LRx4.lmdb'),
             'val/HR': osp.join(ds, 'val', 'HR'), 'val/LRx4': osp.join(ds, 'val', 'LRx4')}
    stamp_path = osp.join(ds, 'quickstart_data.json')
    recipe = {'version': DATA_VERSION, 'train': TRAIN_PHOTOS, 'val': VAL_PHOTOS, 'max_side': MAX_SIDE,
              'val_side': VAL_SIDE, 'crop': SUB_CROP, 'step': SUB_STEP, 'scale': SCALE}
    if not rebuild and osp.isfile(stamp_path) and all(osp.exists(p) for p in paths.values()):
        with open(stamp_path) as f:
            if json.load(f) == json.loads(json.dumps(recipe)):
                log(f'data: up to date in {ds} (--rebuild-data to remake it)')
                return paths
    t0 = time.time()
    src_train, src_val = osp.join(build, 'photos_train'), osp.join(build, 'photos_val')
    with prep.staged_outputs([src_train, src_val], overwrite=True) as (t_dir, v_dir):
        os.makedirs(t_dir)
        os.makedirs(v_dir)
        for name in TRAIN_PHOTOS:
            prep.save_png(osp.join(t_dir, f'{name}.png'), fit_max_side(load_photo(name), MAX_SIDE))
        for name in VAL_PHOTOS:
            prep.save_png(osp.join(v_dir, f'{name}.png'), _center(load_photo(name), VAL_SIDE))
    kw = dict(overwrite=True, progress=False)
    hr_full, lr_full = osp.join(build, 'train_HR'), osp.join(build, f'train_LRx{SCALE}')
    prep.bicubic_downscale(src_train, lr_full, SCALE, hr_mod_folder=hr_full, **kw)
    hr_sub, lr_sub = osp.join(build, 'train_HR_sub'), osp.join(build, f'train_LRx{SCALE}_sub')
    n = prep.extract_subimages(hr_full, hr_sub, SUB_CROP, SUB_STEP, 0, scale=1, compress_level=1, **kw)
    prep.extract_subimages(lr_full, lr_sub, SUB_CROP, SUB_STEP, 0, scale=SCALE, compress_level=1, **kw)
    prep.make_paired_lmdb(hr_sub, lr_sub, paths['train_HR.lmdb'], paths['train_LRx4.lmdb'], scale=SCALE, **kw)
    prep.bicubic_downscale(src_val, paths['val/LRx4'], SCALE, hr_mod_folder=paths['val/HR'], **kw)
    write_text_atomic(stamp_path, json.dumps(recipe, indent=1))
    log(f'data: {len(TRAIN_PHOTOS)} train photos -> {n} sub-images {SUB_CROP}x{SUB_CROP} (LMDB), '
        f'{len(VAL_PHOTOS)} val photos, in {time.time() - t0:.1f} s ({ds})')
    return paths


# ----------------------------------------------------------------------------------------------------------
# options, commands
# ----------------------------------------------------------------------------------------------------------
def scaled_overrides(opt: dict, factor: float) -> list[str]:
    """``--force_yml`` entries that scale total_iter, val_freq, checkpoint frequency, LR milestones, cosine periods
    (the last one then ends at the new total_iter) and ``freeze_decoder``."""
    if factor == 1:
        return []
    train, out = opt.get('train') or {}, []
    total = int(train.get('total_iter', 0))
    new_total = max(1, int(round(total * factor)))
    out.append(f'train:total_iter={new_total}')
    periods = (train.get('scheduler') or {}).get('periods')
    if periods:
        new = [max(1, int(round(p * factor))) for p in periods]
        if sum(periods) == total:
            new[-1] = max(1, new_total - sum(new[:-1]))
        out.append('train:scheduler:periods=[' + ','.join(map(str, new)) + ']')
    freeze = int(train.get('freeze_decoder', 0) or 0)
    if 0 < freeze <= total:
        out.append(f'train:freeze_decoder={max(1, int(round(freeze * factor)))}')
    if (opt.get('val') or {}).get('val_freq'):
        out.append(f"val:val_freq={max(1, int(round(opt['val']['val_freq'] * factor)))}")
    if (opt.get('logger') or {}).get('save_checkpoint_freq'):
        out.append(f"logger:save_checkpoint_freq={max(1, int(round(opt['logger']['save_checkpoint_freq'] * factor)))}")
    if (opt.get('logger') or {}).get('print_freq'):
        out.append(f"logger:print_freq={max(1, int(round(opt['logger']['print_freq'] * factor)))}")
    milestones = (train.get('scheduler') or {}).get('milestones')
    if milestones and all(m <= total for m in milestones):
        out.append('train:scheduler:milestones=[' + ','.join(str(max(1, int(round(m * factor))))
                                                           for m in milestones) + ']')
    return out


def apply_force(opt: dict, entries) -> dict:
    """``opt`` with ``--force_yml``-style ``a:b=value`` entries applied (values parsed as YAML scalars)."""
    import copy

    import yaml
    opt = copy.deepcopy(opt)
    for entry in entries:
        keys, value = entry.split('=', 1)
        *parents, last = keys.split(':')
        node = opt
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = yaml.safe_load(value)
    return opt


def generic_test_option(train_opt: dict, param_key: str = 'params_ema', val_gt: str = 'datasets/val/HR',
                        val_lq: str = 'datasets/val/LRx4') -> OrderedDict:
    """A test option for a trained quickstart step: the train option's model and networks (not its data,
    validation or logging blocks), ``net_g_latest.pth`` with ``param_key`` (BasicSR falls back to ``params``;
    see :func:`choose_param_key`), the other ``path.pretrain_network_*`` entries as trained, and PSNR/SSIM
    (Y, crop 4) on the validation photos: the LR/HR pairs for SR, the HR photos alone for a scale-1 model (the
    tokenizer reconstructs its input, as in its training validation)."""
    skip = ('name', 'datasets', 'val', 'logger', 'path', 'dist_params', 'is_train')
    opt = OrderedDict()
    opt['name'] = f"test_{train_opt['name']}"
    for k, v in train_opt.items():
        if k not in skip:
            opt[k] = v
    opt['num_gpu'] = 0
    if int(train_opt.get('scale', SCALE)) == 1:
        data = OrderedDict(name='quickstart_val', type='GTOnlyDataset', dataroot_gt=val_gt, resize_mode='none')
    else:
        data = OrderedDict(name='quickstart_val', type='PairedImageDataset', dataroot_gt=val_gt, dataroot_lq=val_lq)
    data['io_backend'] = OrderedDict(type='disk')
    opt['datasets'] = OrderedDict(test_1=data)
    path = OrderedDict((k, v) for k, v in (train_opt.get('path') or {}).items()
                       if k not in ('resume_state', 'pretrain_network_g', 'param_key_g', 'strict_load_g'))
    path['pretrain_network_g'] = f"experiments/{train_opt['name']}/models/net_g_latest.pth"
    path['param_key_g'] = param_key
    path['strict_load_g'] = True
    opt['path'] = path
    metric = OrderedDict(crop_border=4, test_y_channel=True)
    opt['val'] = OrderedDict(save_img=True, suffix=None, metrics=OrderedDict(
        psnr=OrderedDict(type='calculate_psnr', **metric), ssim=OrderedDict(type='calculate_ssim', **metric)))
    return opt


def plain_data(o):
    """``o`` with every mapping a dict and every sequence a list (what ``yaml.safe_dump`` writes and compares)."""
    if isinstance(o, dict):
        return {k: plain_data(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [plain_data(v) for v in o]
    return o


def write_option(opt: dict, path: str) -> None:
    import yaml
    write_text_atomic(path, '# generated by scripts/quickstart.py\n' + yaml.safe_dump(plain_data(opt), sort_keys=False))


def run_logged(cmd: list[str], cwd: str, log_path: str, log=print, threads: int | None = None) -> tuple[int, float]:
    """Run ``cmd`` in ``cwd``, stdout+stderr to ``log_path``; (return code, seconds)."""
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    shown = ' '.join(osp.relpath(c, cwd) if osp.isabs(c) and c.startswith(ROOT) else c for c in cmd[1:])
    log(f'  $ python {shown}')
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', PYTHONPATH=ROOT + os.pathsep +
               os.environ.get('PYTHONPATH', ''))
    if threads:
        env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(threads)
    t0 = time.time()
    with open(log_path, 'w') as f:
        rc = subprocess.call(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env)
    return rc, time.time() - t0


def _tail(path: str, n: int = 25) -> str:
    with open(path, errors='replace') as f:
        return ''.join(f.readlines()[-n:])


# ----------------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------------
def evaluate_folder(sr_folder: str, hr_folder: str, suffix: str | None = None) -> dict[str, float]:
    """Mean PSNR (Y and RGB), SSIM (Y) and Laplacian ratio of the SR images in ``sr_folder`` against
    ``hr_folder`` (crop 4; see basicsr_ext.utils.comparison)."""
    return comparison.evaluate_folder(sr_folder, hr_folder, suffix=suffix, crop_border=4)


def bicubic_row(out: str) -> dict:
    """Bicubic x4 upsampling of the validation LR (MATLAB imresize), for reference."""
    sr_dir = osp.join(out, 'results', 'bicubic')
    os.makedirs(sr_dir, exist_ok=True)
    t0 = time.time()
    for lr_path in sorted(glob.glob(osp.join(out, 'datasets', 'val', 'LRx4', '*.png'))):
        lr = cv2.imread(lr_path)
        prep.save_png(osp.join(sr_dir, osp.basename(lr_path)), prep.bicubic_resize(lr, SCALE))
    row = dict(method='Bicubic (reference)', short='Bicubic', train_s=None, test_s=time.time() - t0, weights='-',
               folder='results/bicubic', suffix=None, status='ok')
    row.update(evaluate_folder(sr_dir, osp.join(out, 'datasets', 'val', 'HR')))
    return row


SHEET_NAME = 'quickstart_sheet.png'
SHEET_IMAGE = 'chelsea'      # fur, whiskers and an eye: where blur, ringing and colour casts show
SHEET_CROP = 96              # GT pixels, zoomed x2 (nearest neighbour)


def write_sheet(out: str, rows: list[dict], image: str | None = None, crop_side: int = SHEET_CROP,
                panel: int = 2 * SHEET_CROP) -> str | None:
    """The comparison sheet of every row with SR images (GT first) on one crop of one validation photo: the
    ``crop_side`` square with the most GT detail. Each panel is labelled with its row's PSNR-Y on that photo.
    Returns the path, or None when there is no validation photo."""
    from basicsr_ext.utils.image_io import list_images, read_image
    gt_paths = {osp.splitext(osp.basename(p))[0]: p for p in list_images(osp.join(out, 'datasets', 'val', 'HR'))}
    if not gt_paths:
        return None
    stem = image if image in gt_paths else SHEET_IMAGE if SHEET_IMAGE in gt_paths else sorted(gt_paths)[0]
    gt_bgr = cv2.imread(gt_paths[stem], cv2.IMREAD_COLOR)
    gt_rgb, _ = read_image(gt_paths[stem])
    crop = comparison.detail_crop(gt_bgr, crop_side)
    panels = [('GT', gt_rgb)]
    for r in rows:
        if r.get('psnr') is None:
            continue
        path = comparison.find_result(osp.join(out, r['folder']), stem, r.get('suffix'))
        if path is None:
            continue
        sr_rgb, _ = read_image(path)
        sr_rgb = comparison.fit_to(sr_rgb, gt_rgb.shape[:2])
        psnr = comparison.image_figures(cv2.imread(path, cv2.IMREAD_COLOR), gt_bgr)['psnr']
        panels.append((f"{r.get('short') or r['method']} ({psnr:.2f} dB)", sr_rgb))
    path = osp.join(out, SHEET_NAME)
    comparison.make_sheet(panels, crop, path, panel=panel)
    return path


# ----------------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------------
def _referenced_experiments(opt) -> set[str]:
    """Names of experiments whose checkpoints an option points at (``experiments/<name>/models/...``)."""
    found: set[str] = set()
    stack = [opt]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif isinstance(o, str):
            found.update(re.findall(r'experiments/([^/]+)/models/', o))
    return found


def _step_option(step: Step) -> dict:
    """The step's training option file, as written (no forced entries)."""
    from basicsr_ext.utils.options import load_option_file
    return load_option_file(osp.join(OPTIONS_DIR, step.option))


def _stage_references(stage: Stage) -> set[str]:
    """Experiment names whose checkpoints the stage's option files (and forced entries) name."""
    refs: set[str] = set()
    for st in stage.steps:
        refs |= _referenced_experiments(_step_option(st)) | _referenced_experiments(list(st.force))
    return refs


def _producers(stages) -> dict[str, Stage]:
    """Experiment name -> the stage whose step trains it."""
    return {_step_option(st)['name']: s for s in stages for st in s.steps}


def plan_stages(names: list[str] | None, out: str, log=print) -> list[Stage]:
    """The selected stages in order, with every stage whose checkpoints they need (and that are not already
    under ``out``) pulled in before them; stages whose option files are missing are left out."""
    present = [s for s in STAGES if all(osp.isfile(osp.join(OPTIONS_DIR, st.option)) for st in s.steps)]
    for s in STAGES:
        if s not in present and (names is None or s.name in names):
            log(f'stage {s.name}: skipped (option files missing in options/quickstart/)')
    producer = _producers(present)
    plan: list[Stage] = []

    def add(stage: Stage, trail: tuple = ()) -> None:
        if stage in plan or stage in trail:
            return
        for exp in sorted(_stage_references(stage)):
            dep = producer.get(exp)
            done = osp.isfile(osp.join(out, 'experiments', exp, 'models', 'net_g_latest.pth'))
            if dep is not None and dep is not stage and not done:
                add(dep, trail + (stage, ))
        plan.append(stage)

    for s in present:
        if names is None or s.name in names:
            add(s)
    return plan


def stage_dependencies(plan: list[Stage]) -> dict[str, set[str]]:
    """For each planned stage, the names of the other planned stages whose checkpoints it needs: it starts only
    when they have finished."""
    producer = _producers(plan)
    return {s.name: {producer[r].name for r in _stage_references(s) if r in producer and producer[r] is not s}
            for s in plan}


def choose_param_key(train_opt: dict, total_iter: int) -> str:
    """``params_ema``, unless the EMA still carries more than 5 % of a random initialisation.

    BasicSR starts ``net_g_ema`` as a copy of ``net_g`` at build time; without ``path.pretrain_network_g`` that copy
    is random, and after ``total_iter`` steps its weight is ``ema_decay ** total_iter`` (0.99 over 100 iterations:
    37 %). Short quickstart runs are then judged on ``params`` (the table says which).
    """
    decay = float((train_opt.get('train') or {}).get('ema_decay', 0) or 0)
    pretrained = bool((train_opt.get('path') or {}).get('pretrain_network_g'))
    if decay <= 0:
        return 'params'
    if not pretrained and decay ** max(1, total_iter) > 0.05:
        return 'params'
    return 'params_ema'


def _weights_used(test_opt: dict, out: str) -> str:
    from basicsr_ext.utils.checkpoint import CheckpointError, load_checkpoint
    path = test_opt.get('path') or {}
    key = path.get('param_key_g') or 'params'
    try:
        ckpt = load_checkpoint(osp.join(out, path.get('pretrain_network_g') or ''))
    except CheckpointError:
        return key
    return key if key in ckpt else 'params' if 'params' in ckpt else key


def _row(step: Step, **kw) -> dict:
    row = dict(method=step.label or osp.splitext(step.option)[0], short=step.short or step.label, psnr=None,
               psnr_rgb=None, ssim=None, lap_ratio=None, train_s=None, test_s=None, weights='-', folder='-',
               suffix=None, status='ok')
    row.update(kw)
    return row


def default_jobs() -> int:
    """Stages run side by side: 2 on a machine with 2 or more cores, else 1. On 2 cores a quickstart training step
    runs at about the same speed with 1 OpenMP thread as with 2 (tokenizer 648 vs 616 ms), so two 1-thread runs at
    once nearly halve the wall time."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def run_stage(stage: Stage, out: str, iters_scale: float = 1.0, log=print, threads: int | None = None) -> list[dict]:
    """Train the stage's steps in order and test the labelled ones; the table rows of the labelled steps."""
    from basicsr_ext.utils.options import load_option_file
    hr_dir = osp.join(out, 'datasets', 'val', 'HR')
    rows: list[dict] = []
    log(f'stage {stage.name}')
    t_stage = time.time()
    for step in stage.steps:
        opt_path = osp.join(OPTIONS_DIR, step.option)
        train_opt = apply_force(_step_option(step), step.force)
        base = osp.splitext(step.option)[0]
        cmd = [sys.executable, TRAIN_SCRIPT, '-opt', opt_path]
        force = list(step.force) + scaled_overrides(train_opt, iters_scale)
        if force:
            cmd += ['--force_yml', *force]
        rc, secs = run_logged(cmd, out, osp.join(out, 'logs', f'{base}.log'), log, threads)
        log(f'    train {base}: {"ok" if rc == 0 else f"FAILED (exit {rc})"} in {secs:.0f} s')
        if rc != 0:
            log(_tail(osp.join(out, 'logs', f'{base}.log')))
            rows.append(_row(step, train_s=secs, status=f'train failed: logs/{base}.log'))
            break
        if not step.label:
            continue
        test_path = osp.join(OPTIONS_DIR, step.test_option or f'test_{step.option}')
        total = int(round(int((train_opt.get('train') or {}).get('total_iter', 0)) * iters_scale))
        param_key = choose_param_key(train_opt, total)
        if not osp.isfile(test_path):
            test_opt = generic_test_option(train_opt, param_key)
            test_path = osp.join(out, 'options', f'test_{step.option}')
            write_option(test_opt, test_path)
        test_opt = load_option_file(test_path)
        test_cmd = [sys.executable, TEST_SCRIPT, '-opt', test_path]
        if (test_opt.get('path') or {}).get('param_key_g') != param_key:  # a shipped file, another --iters-scale
            test_cmd += ['--force_yml', f'path:param_key_g={param_key}']
            test_opt['path']['param_key_g'] = param_key
        rc, test_secs = run_logged(test_cmd, out, osp.join(out, 'logs', f'test_{base}.log'), log, threads)
        sr_dir = osp.join('results', test_opt['name'], 'visualization', 'quickstart_val')
        row = _row(step, train_s=secs, test_s=test_secs, weights=_weights_used(test_opt, out), folder=sr_dir,
                   suffix=test_opt['name'])
        if rc != 0:
            log(_tail(osp.join(out, 'logs', f'test_{base}.log')))
            row['status'] = f'test failed: logs/test_{base}.log'
        else:
            try:
                row.update(evaluate_folder(osp.join(out, sr_dir), hr_dir, suffix=test_opt['name']))
            except FileNotFoundError as e:
                row['status'] = f'no SR images: {e}'
        rows.append(row)
    log(f'  stage {stage.name}: {time.time() - t_stage:.0f} s')
    return rows


def _skipped_rows(stage: Stage, failed: str) -> list[dict]:
    return [_row(st, status=f'skipped: stage {failed} failed') for st in stage.steps if st.label]


def run_quickstart(out: str, stages: list[str] | None = None, iters_scale: float = 1.0, rebuild_data: bool = False,
                   log=print, threads: int | None = None, jobs: int = 1) -> list[dict]:
    """Data, then the planned stages (each one's steps in order: train, then test the labelled ones), up to ``jobs``
    stages at once, a stage starting when the stages it needs checkpoints from have finished (the longest ready one
    first, by ``Stage.secs``); then the comparison sheet and ``quickstart_results.json``. Returns the table rows
    (bicubic first, then the stages in plan order). With ``jobs`` > 1 every log line starts with its stage's name
    and ``threads`` defaults to cores / jobs."""
    import threading
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
    out = osp.abspath(out)
    os.makedirs(out, exist_ok=True)
    build_data(out, rebuild_data, log)
    rows: list[dict] = [bicubic_row(out)]
    plan = plan_stages(stages, out, log)
    deps = stage_dependencies(plan)
    jobs = max(1, min(int(jobs), len(plan) or 1))
    if jobs > 1 and not threads:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    lock = threading.Lock()

    def stage_log(name: str):
        if jobs == 1:
            return log

        def prefixed(msg: str) -> None:
            with lock:
                log('\n'.join(f'[{name}] {line}' for line in str(msg).splitlines()) or f'[{name}]')
        return prefixed

    results: dict[str, list[dict]] = {}
    failed: set[str] = set()
    pending = list(plan)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running = {}
        while pending or running:
            for stage in sorted(pending, key=lambda st: -st.secs):   # longest ready stage first (stable)
                if deps[stage.name] & failed:
                    pending.remove(stage)
                    bad = sorted(deps[stage.name] & failed)[0]
                    log(f'stage {stage.name}: skipped (stage {bad} failed)')
                    results[stage.name] = _skipped_rows(stage, bad)
                    failed.add(stage.name)
                elif len(running) < jobs and deps[stage.name] <= set(results):
                    pending.remove(stage)
                    running[pool.submit(run_stage, stage, out, iters_scale, stage_log(stage.name), threads)] = stage
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                stage = running.pop(fut)
                results[stage.name] = fut.result()
                if any(r['status'].startswith('train failed') for r in results[stage.name]):
                    failed.add(stage.name)
    for stage in plan:
        rows.extend(results.get(stage.name, []))
    sheet = write_sheet(out, rows)
    if sheet:
        log(f'comparison sheet: {sheet}')
    write_text_atomic(osp.join(out, 'quickstart_results.json'),
                      json.dumps({'val_photos': list(VAL_PHOTOS), 'scale': SCALE, 'crop_border': 4, 'sheet': sheet,
                                  'rows': rows}, indent=1))
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of the rows; '-' where a figure is missing."""
    return markdown_table(
        ['method', 'PSNR (Y)', 'PSNR (RGB)', 'SSIM (Y)', 'sharpness (Laplacian ratio)', 'train time', 'test time',
         'weights', 'SR images (under the output folder)', 'status'],
        [[r['method'], fmt(r.get('psnr'), '.2f', '-'), fmt(r.get('psnr_rgb'), '.2f', '-'),
          fmt(r.get('ssim'), '.4f', '-'), fmt(r.get('lap_ratio'), '.3f', '-'), fmt(r.get('train_s'), '.0f', '-', ' s'),
          fmt(r.get('test_s'), '.0f', '-', ' s'), r['weights'], r['folder'], r['status']] for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--out', default=osp.join(ROOT, 'quickstart_out'), help='output folder (default: %(default)s)')
    parser.add_argument('--stages', nargs='+', choices=[s.name for s in STAGES], default=None,
                        help='stages to run (default: all whose options exist)')
    parser.add_argument('--iters-scale', type=float, default=1.0,
                        help='multiply every total_iter (and val/checkpoint frequencies) by this')
    parser.add_argument('--rebuild-data', action='store_true', help='remake the dataset even if up to date')
    parser.add_argument('--jobs', type=int, default=default_jobs(),
                        help='stages trained side by side, each waiting for the stages whose checkpoints it needs '
                             '(default: %(default)s = 2 on 2 or more cores)')
    parser.add_argument('--threads', type=int, default=None,
                        help='OMP_NUM_THREADS of each train/test run (default: cores / jobs with --jobs > 1, else '
                             'torch decides); 1 on a busy machine')
    args = parser.parse_args(argv)
    if not (args.iters_scale > 0 and math.isfinite(args.iters_scale)):
        parser.error('--iters-scale must be a positive number')
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error('--jobs and --threads must be at least 1')
    t0 = time.time()
    try:
        rows = run_quickstart(args.out, args.stages, args.iters_scale, args.rebuild_data,
                              log=lambda m: print(m, flush=True), threads=args.threads, jobs=args.jobs)
    except DatasetError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'\nQuickstart results on {len(VAL_PHOTOS)} held-out photos (x{SCALE}, crop 4; sharpness = mean '
          f'|Laplacian| of the SR over the GT\'s, 1 = as sharp as the GT), output folder {args.out}:\n')
    print(format_table(rows))
    sheet = osp.join(osp.abspath(args.out), SHEET_NAME)
    if osp.isfile(sheet):
        print(f'\ncomparison sheet ({SHEET_IMAGE}, GT / bicubic / each method on the same crop): {sheet}')
    print(f'\ntotal wall time: {time.time() - t0:.0f} s')
    return 0 if all(r['status'] == 'ok' for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
