"""What the command-line scripts under ``scripts/`` share, written once: the photos bundled with scikit-image and
other pinned packages, models built from the repository's option files, timed training steps, and Markdown tables.

This module sits beside the entry points (``train.py``, ``test.py``, ``infer.py``), above every layer: it may
import archs, losses, models and metrics, and nothing in the package imports it. Scripts import it as
``from basicsr_ext import scripting`` (the package is installed, editable, by ``make venv``), so they run from
any working directory without touching ``sys.path``, and no script imports another.
"""
from __future__ import annotations

import copy
import logging
import os.path as osp
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
OPTIONS_DIR = osp.join(REPO_ROOT, 'options')

# The photo split of the in-memory paper demonstrations (Fig. 1c, RAP ablation): train on these, score on
# non-overlapping crops of the held-out pair.
TOY_TRAIN_PHOTOS = ('astronaut', 'rocket', 'immunohistochemistry', 'hubble_deep_field', 'retina', 'stereo_motorcycle',
                    'colorwheel', 'brick', 'gravel')
TOY_TEST_PHOTOS = ('chelsea', 'coffee')


def option_file(*parts: str) -> str:
    """The path of a repository option file, e.g. ``option_file('quickstart', 'tvq_tokenizer.yml')``."""
    return osp.join(OPTIONS_DIR, *parts)


# ----------------------------------------------------------------------------------------------------------
# photos
# ----------------------------------------------------------------------------------------------------------
#: Colour photos shipped inside other pinned dependencies (no download): name -> (distribution, file in it). The
#: scikit-image set is mostly grey or synthetic; these add natural colour scenes (night, garden, sunset, snow,
#: portrait).
PACKAGE_PHOTOS = {
    'grace_hopper': ('matplotlib', 'matplotlib/mpl-data/sample_data/grace_hopper.jpg'),
    'night_street': ('pyiqa', 'tests/test_efficiency_img_dir/SPAQ_10241.jpg'),
    'garden': ('pyiqa', 'tests/test_efficiency_img_dir/frame_4wrwr48cdk6rbcjl.jpg'),
    'sunset_beach': ('pyiqa', 'tests/test_efficiency_img_dir/frame_7gzdcz9sif0ekg31.jpg'),
    'snowy_road': ('pyiqa', 'tests/test_efficiency_img_dir/frame_9ogwhvvy7gfj6jzh.jpg'),
}


def package_photo_path(name: str) -> str:
    """The file of a :data:`PACKAGE_PHOTOS` entry inside its installed distribution; a FileNotFoundError naming the
    package and the file when it is not there."""
    import importlib.metadata
    dist_name, rel = PACKAGE_PHOTOS[name]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f'photo {name!r}: package {dist_name} is not installed (pip install -r '
                                f'requirements.txt), it ships {rel}') from None
    path = str(dist.locate_file(rel))
    if not osp.isfile(path):
        raise FileNotFoundError(f'photo {name!r}: {path} is missing from {dist_name} {dist.version} '
                                f'(reinstall it: pip install --force-reinstall -r requirements.txt)')
    return path


def load_photo(name: str) -> np.ndarray:
    """A bundled photo as BGR uint8 H x W x 3 (gray -> 3 channels, alpha composited on white): a scikit-image
    ``skimage.data`` name, or a :data:`PACKAGE_PHOTOS` name (read through the checked image reader)."""
    if name in PACKAGE_PHOTOS:
        from basicsr_ext.utils.image_io import read_image
        img, _ = read_image(package_photo_path(name), channel_order='bgr', orient=True)
        return np.ascontiguousarray(np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8))
    import skimage.data
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle -> (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        img = np.clip(np.round(img.astype(np.float64) * (255.0 if img.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        alpha = img[..., 3:].astype(np.float32) / 255.0
        img = np.round(img[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(img[..., ::-1])


def fit_max_side(img: np.ndarray, max_side: int) -> np.ndarray:
    """``img`` shrunk (INTER_AREA) so that its longer side is at most ``max_side``; unchanged when it already is."""
    import cv2
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img
    f = max_side / max(h, w)
    return cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)


def photo_rgb01(name: str, max_side: int | None = None) -> np.ndarray:
    """A bundled photo as RGB float32 H x W x 3 in [0, 1], optionally shrunk to ``max_side``."""
    img = load_photo(name)[..., ::-1]
    if max_side is not None:
        img = fit_max_side(img, max_side)
    return np.ascontiguousarray(img).astype(np.float32) / 255.0


def photo_crops(names: Sequence[str], size: int, max_side: int | None = None) -> torch.Tensor:
    """Non-overlapping ``size`` x ``size`` crops of the photos (N, 3, size, size) in [0, 1], row by row."""
    crops = []
    for name in names:
        img = photo_rgb01(name, max_side)
        h, w = img.shape[:2]
        for y in range(0, h - size + 1, size):
            for x in range(0, w - size + 1, size):
                crops.append(img[y:y + size, x:x + size])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def crop_sampler(photos: Sequence[np.ndarray], batch: int, size: int, seed: int = 0) -> Callable[[], torch.Tensor]:
    """A function returning random ``size`` crops (+ horizontal flips) of H x W x 3 photos as (batch, 3, size, size),
    reproducible from ``seed``."""
    rng = np.random.default_rng(seed)

    def sample() -> torch.Tensor:
        out = []
        for _ in range(batch):
            img = photos[rng.integers(len(photos))]
            y, x = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
            crop = img[y:y + size, x:x + size]
            out.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
        return torch.from_numpy(np.ascontiguousarray(np.stack(out))).permute(0, 3, 1, 2).contiguous()
    return sample


# ----------------------------------------------------------------------------------------------------------
# option-file models
# ----------------------------------------------------------------------------------------------------------
def training_options(path: str, workdir: str, num_gpu: int = 0, pretrained: bool = True) -> dict:
    """An option file as the dict ``build_model`` takes for in-process training, without an experiment folder:
    single process, no auto-resume, every output folder in ``workdir``, no resume state; with
    ``pretrained=False`` also no ``pretrain_network_*`` weights (random initialisation)."""
    from basicsr_ext.utils.options import load_option_file
    opt = copy.deepcopy(load_option_file(path))
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=num_gpu, auto_resume=False)
    paths = {k: v for k, v in (opt.get('path') or {}).items() if 'resume' not in k}
    if not pretrained:
        paths = {k: (None if k.startswith('pretrain_network') else v) for k, v in paths.items()}
    paths.update(experiments_root=workdir, models=workdir, training_states=workdir, log=workdir,
                 visualization=workdir)
    opt['path'] = paths
    for phase, ds in (opt.get('datasets') or {}).items():
        ds['phase'] = phase.split('_')[0]
        ds['scale'] = opt.get('scale', 4)
    return opt


def random_frozen_checkpoints(opt: dict, workdir: str) -> dict:
    """Point the frozen networks an option file loads from disk at random checkpoints saved in ``workdir`` (in
    place; returns ``opt``): the AESOP loss's auto-encoder (``train.aesop_opt.autoencoder_load``) and the TVQ&RAP
    stage-I tokenizer (``network_tok`` + ``path.pretrain_network_tok``). For step timings and smoke checks only:
    a random frozen network costs the same as a trained one but its loss means nothing."""
    from basicsr.archs import build_network

    from basicsr_ext.utils.checkpoint import atomic_save
    aesop = (opt.get('train') or {}).get('aesop_opt')
    if aesop:
        arch = dict(aesop.get('autoencoder_arch') or {'type': 'AESOPAutoEncoder'})
        arch.setdefault('type', 'AESOPAutoEncoder')
        path = osp.join(workdir, 'random_aesop_ae.pth')
        atomic_save({'params_ema': build_network(arch).state_dict()}, path)
        aesop['autoencoder_load'] = {'path': path, 'key': 'params_ema'}
    if opt.get('network_tok'):
        path = osp.join(workdir, 'random_tokenizer.pth')
        atomic_save({'params_ema': build_network(dict(opt['network_tok'])).state_dict()}, path)
        opt.setdefault('path', {}).update(pretrain_network_tok=path, tok_param_key='params_ema')
    return opt


def quickstart_options(file: str, workdir: str, **network_overrides: Any) -> dict:
    """``options/quickstart/<file>`` as :func:`training_options`, ``network_g`` updated with ``network_overrides``
    and EMA off: the in-memory paper demonstrations (Fig. 1c, RAP ablation) score the trained weights."""
    opt = training_options(option_file('quickstart', file), workdir)
    opt['network_g'].update(network_overrides)
    opt['train']['ema_decay'] = 0
    return opt


def fit_schedule(opt: dict, iters: int) -> dict:
    """Stretch the option file's schedule to ``iters`` iterations (in place; returns ``opt``): ``total_iter``, a
    one-period cosine scheduler's period, and ``warmup_iter`` / ``disc_start_iter`` / ``dead_code_reinit_iters``
    in proportion, so a demo run longer or shorter than the file keeps the same shape (warm-up, GAN phase, decay)."""
    train = opt['train']
    ratio = iters / max(1, int(train.get('total_iter') or iters))
    train['total_iter'] = iters
    sched = train.get('scheduler') or {}
    if sched.get('type') == 'CosineAnnealingRestartLR' and len(sched.get('periods', [])) == 1:
        sched['periods'] = [iters]
    for key in ('warmup_iter', 'disc_start_iter', 'dead_code_reinit_iters'):
        if isinstance(train.get(key), int) and train[key] > 0:
            train[key] = max(1, round(train[key] * ratio))
    return opt


def on_device(opt: dict, device: str = 'cpu', bf16: bool = False) -> dict:
    """Point an in-process training option dict at ``device`` ('cpu' or 'cuda'; in place, returns ``opt``) and,
    with ``bf16``, switch on the engine's bf16 autocast (``train.use_amp``, ``amp_dtype: bf16``; AMX CPUs and GPUs),
    without it fp32 (an option file's ``use_amp: auto`` too: the demos' precision is the flag's, so their tables
    reproduce on any CPU). CUDA without a GPU is refused with one line."""
    if device not in ('cpu', 'cuda'):
        raise SystemExit(f'--device: {device!r} is not one of cpu, cuda')
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA GPU is visible to torch (torch.cuda.is_available() is False)')
    opt['num_gpu'] = 1 if device == 'cuda' else 0
    if bf16:
        opt['train'].update(use_amp=True, amp_dtype='bf16')
    else:
        opt['train']['use_amp'] = False
    return opt


def quiet_basicsr() -> None:
    """BasicSR's root logger at WARNING: the scripts print their own progress."""
    from basicsr.utils import get_root_logger
    get_root_logger(log_level=logging.WARNING)


def train_steps(opt: dict, batch_fn: Callable[[], dict], iters: int, log: Callable[[str], Any] = print,
                label: str = '') -> Any:
    """Build the model from ``opt`` and run ``iters`` optimisation steps on ``batch_fn()`` batches (with the option
    file's warm-up and LR scheduler, as BasicSR's training loop), logging the loss terms four times."""
    from basicsr.models import build_model
    model = build_model(opt)
    warmup = (opt.get('train') or {}).get('warmup_iter', -1)
    t0 = time.time()
    for it in range(1, iters + 1):
        model.update_learning_rate(it, warmup_iter=warmup)  # the option file's warm-up and LR schedule, as train.py
        model.feed_data(batch_fn())
        model.optimize_parameters(it)
        if it % max(1, iters // 4) == 0 or it == iters:
            terms = ' '.join(f'{k} {v:.4f}' for k, v in model.get_current_log().items() if k.startswith('l_'))
            log(f'  {label} iter {it}/{iters} ({time.time() - t0:.0f} s): {terms}')
    return model


def bicubic_x4_pair(gt: torch.Tensor) -> dict:
    """``{'gt': gt, 'lq': ...}`` with the LR = antialiased bicubic x4 of ``gt`` rounded to 8 bits."""
    from torch.nn import functional as F
    lq = F.interpolate(gt, scale_factor=0.25, mode='bicubic', antialias=True, align_corners=False).clamp(0, 1)
    return {'gt': gt, 'lq': (lq * 255).round() / 255}


def save_net_g(model: Any, path: str) -> None:
    """The trained ``net_g`` of an in-process model as a checkpoint the next stage loads (``params`` and
    ``params_ema`` both the current weights), written atomically."""
    from basicsr_ext.utils.checkpoint import atomic_save
    sd = model.get_bare_model(model.net_g).state_dict()
    atomic_save({'params': sd, 'params_ema': sd}, path)


#: iterations of :func:`train_quickstart_tvqrap` (tokenizer, stage II, RAP): the accuracy guard's default
QUICK_TVQRAP_ITERS = (150, 600, 5)


def train_quickstart_tvqrap(workdir: str, iters: Sequence[int] = QUICK_TVQRAP_ITERS, seed: int = 0,
                            device: str = 'cpu', batch: int = 2,
                            log: Callable[[str], Any] | None = None) -> tuple[dict, dict]:
    """The quickstart TVQ&RAP, trained in memory: the tokenizer (stage I), stage II and RAP of
    ``options/quickstart/`` for ``iters`` iterations each, every stage with its option file's recipe (schedule
    stretched by :func:`fit_schedule`, EMA off), on random 128² crops (and flips) of :data:`TOY_TRAIN_PHOTOS`, LR =
    :func:`bicubic_x4_pair`; chelsea and coffee stay held out. Returns ``(network_g options, state dict of the RAP
    network on the CPU)``, ready for ``build_network`` + ``load_state_dict``. Checkpoints between stages go to
    ``workdir``; the caller's torch RNG state is left as it was.

    Trained weights, not random ones, are what the bf16 accuracy guard needs: a random frozen decoder amplifies
    every rounding (bf16 vs fp32 ~31 dB), a trained one does not (56-58 dB). The default 150 + 600 + 5 iterations
    (~1 min of one core) give chelsea at 20.0 dB against 16.6 dB for the random net with the quickstart's 1024
    codes (the guard's margin is +3 dB; 80 + 80 + 5 gave 18.1, 80 + 400 + 5 19.2, 80 + 800 + 5 19.5: a stage II
    predicting 1024 codes needs hundreds of iterations; with 64 codes 80 + 80 + 5 gave 19.1 vs 14.6) and at least
    98 % equal code indices in bf16 (the guard's threshold); shorter stage-II runs leave flat logits (94.7-99.7 %
    over seeds at 20 + 10 + 5, measured with the earlier GroupNorm tokenizer)."""
    if len(iters) != 3 or min(iters) < 1:
        raise ValueError(f'iters {tuple(iters)!r}: three counts >= 1 (tokenizer, stage II, RAP)')
    log = log or (lambda _msg: None)
    photos = [photo_rgb01(name, 512) for name in TOY_TRAIN_PHOTOS]
    tok_path, s2_path = osp.join(workdir, 'quick_tokenizer.pth'), osp.join(workdir, 'quick_stage2.pth')

    with torch.random.fork_rng(devices=[]):
        model = None
        for stage, (file, n) in enumerate(zip(('tvq_tokenizer.yml', 'tvqrap_stage2.yml', 'tvqrap_rap.yml'), iters)):
            torch.manual_seed(seed + stage)
            opt = quickstart_options(file, workdir)
            if stage == 1:
                opt['path'].update(pretrain_network_tok=tok_path, pretrain_network_g=None)
            elif stage == 2:
                opt['path'].update(pretrain_network_tok=tok_path, pretrain_network_g=s2_path, param_key_g='params')
            on_device(fit_schedule(opt, n), device)
            sample = crop_sampler(photos, batch, 128, seed=seed + stage)
            batch_fn = (lambda s=sample: {'gt': s()}) if stage == 0 else (lambda s=sample: bicubic_x4_pair(s()))
            model = train_steps(opt, batch_fn, n, log, ('stage I', 'stage II', 'RAP')[stage])
            if stage < 2:
                save_net_g(model, (tok_path, s2_path)[stage])
        net = model.get_bare_model(model.net_g)
        return dict(opt['network_g']), {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def timed_step(model: Any, data: dict, current_iter: int) -> float:
    """Seconds one ``optimize_parameters`` of ``model`` takes on ``data`` (CUDA synchronised around it)."""
    cuda = torch.device(getattr(model, 'device', 'cpu')).type == 'cuda'
    model.feed_data(data)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.optimize_parameters(current_iter)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def lpips_or_none() -> Any:
    """LPIPS-VGG with its pretrained weights, or None when they are not on disk (the scripts then say so)."""
    from basicsr_ext.losses.vq_loss import LPIPSLoss, LPIPSWeightsMissing
    try:
        return LPIPSLoss(pretrained=True)
    except LPIPSWeightsMissing:
        return None


# ----------------------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table; ``align`` has one letter per column, ``l`` (default) or ``r`` (right-aligned numbers)."""
    align = align or 'l' * len(header)
    if len(align) != len(header):
        raise ValueError(f'align {align!r} has {len(align)} letters for {len(header)} columns')
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ''.join('---:|' if a == 'r' else '---|' for a in align)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def fmt(value: float | None, spec: str, missing: str = 'n/a', unit: str = '') -> str:
    """``format(value, spec) + unit``, or ``missing`` for None."""
    return missing if value is None else format(value, spec) + unit
