"""Benchmark result folders against ground truth in the papers' protocols; Markdown table, CSV and JSON.

    python scripts/eval/benchmark.py \
        --dataset Set5 datasets/Set5/GTmod12 datasets/Set5/LRbicx4 \
        --dataset Set14 datasets/Set14/GTmod12 \
        --method AESOP 'results/test_aesop_rrdb/visualization/{dataset}' \
        --method BasicSR-ESRGAN 'results/ESRGAN_x4/visualization/{dataset}' \
        --method Bicubic @bicubic \
        --metrics psnr ssim lpips dists lr_psnr fid --out benchmark_out
    python scripts/eval/benchmark.py --config bench.yml          # same keys as below, read with the safe loader

Config file (YAML): ``datasets: {NAME: {gt: DIR, lq: DIR}}``, ``methods: {NAME: DIR_PATTERN}``, ``metrics: [...]``,
``crop_border``, ``scale``, ``out``, ``device``, ``ae_weights``; command-line datasets/methods are added.

Result folders: any folder of images (basicsr_ext/test.py, stock BasicSR, other code). A result matches a GT
image by stem, tolerating BasicSR's ``_<suffix>`` (``baby_AESOP.png``) and an ``x4`` tag (``babyx4_out.png``);
the pattern may contain ``{dataset}``. ``@bicubic`` is the MATLAB-bicubic upscaling of the LR (or of the GT
downscaled with the same kernel when no LR folder is given).

Metrics and protocols (aesop.md "Metric implementations used", tvqrap.md §6), all on 8-bit images:
- ``psnr``, ``ssim``: BasicSR's calculate_psnr/ssim on Y (BT.601), ``--crop-border`` (default = scale = 4);
  ``psnr_rgb``, ``ssim_rgb``: the same on RGB.
- ``lr_psnr``: PSNR(bicubic-down(SR), LR) on Y, no crop; ``ae_psnr``: PSNR(AE(SR), AE(GT)) (needs
  ``--ae-weights``); ``niqe_basicsr``: BasicSR's NIQE (works offline).
- any other name is a pyiqa metric with pyiqa's defaults on RGB [0,1], no crop (``lpips``, ``dists``, ``niqe``,
  ``musiq``, ``maniqa``, ``clipiqa``...); ``fid``: pyiqa FID between the method's and the GT's matched images.
A missing or unreadable image is reported by name and counted, never fatal; a metric that cannot run (pyiqa
missing, weights offline) is reported once and left empty. Exit code: 0, or 2 if a metric could not run
(1 with ``--strict`` when images were missing or unreadable).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import os.path as osp
import shutil
import sys
import tempfile
from collections import OrderedDict
from typing import Any, Callable

import basicsr_ext  # noqa: F401
import numpy as np

from basicsr_ext.metrics.pyiqa_metric import MetricUnavailableError
from basicsr_ext.scripting import markdown_table
from basicsr_ext.utils.atomic import write_bytes_atomic
from basicsr_ext.utils.image_io import ImageError, list_images, match_by_stem, quantize, read_image
from basicsr_ext.utils.options import OptionError, load_option_file

BICUBIC = '@bicubic'
_LABELS = {'psnr': 'PSNR', 'ssim': 'SSIM', 'psnr_rgb': 'PSNR-RGB', 'ssim_rgb': 'SSIM-RGB', 'lr_psnr': 'LR-PSNR',
           'ae_psnr': 'AE-PSNR', 'niqe_basicsr': 'NIQE(BasicSR)', 'fid': 'FID'}


# ---------------------------------------------------------------------------------------------------------
# matching
def match_results(gt_stems: list[str], files: list[str]) -> dict[str, str]:
    """GT stem -> result file (see :func:`basicsr_ext.utils.image_io.match_by_stem`)."""
    return match_by_stem(gt_stems, files)


def method_folder(pattern: str, dataset: str) -> str:
    return pattern.replace('{dataset}', dataset)


# ---------------------------------------------------------------------------------------------------------
# metrics
def metric_option(name: str, crop_border: int = 4, scale: int = 4, device: str | None = None,
                  ae_weights: str | None = None) -> dict[str, Any]:
    """The ``val.metrics`` entry (a ``type`` of BasicSR's METRIC_REGISTRY and its kwargs) that computes ``name``.

    ``psnr``/``ssim`` are on Y, ``*_rgb`` on RGB; ``lr_psnr``, ``ae_psnr`` are ours; ``niqe_basicsr`` is BasicSR's
    NIQE; any other name is a pyiqa metric (``type: pyiqa``). ``fid`` is dataset-level (no registry entry).
    """
    if name in ('psnr', 'ssim', 'psnr_rgb', 'ssim_rgb'):
        return {'type': 'calculate_psnr' if name.startswith('psnr') else 'calculate_ssim', 'crop_border': crop_border,
                'test_y_channel': not name.endswith('_rgb'), 'better': 'higher'}
    if name == 'lr_psnr':
        return {'type': 'calculate_lr_psnr', 'scale': scale, 'better': 'higher'}
    if name == 'ae_psnr':
        return {'type': 'calculate_ae_psnr', 'autoencoder_load': {'path': ae_weights, 'key': 'params_ema'},
                'crop_border': crop_border, 'device': device, 'better': 'higher'}
    if name == 'niqe_basicsr':
        return {'type': 'calculate_niqe', 'crop_border': crop_border, 'input_order': 'HWC', 'better': 'lower'}
    if name == 'fid':
        return {'type': None, 'better': 'lower'}
    return {'type': 'pyiqa', 'metric': name, 'device': device}


def metric_better(name: str) -> str:
    better = metric_option(name).get('better')
    if better:
        return better
    from basicsr_ext.metrics.pyiqa_metric import lower_is_better
    try:
        return 'lower' if lower_is_better(name) else 'higher'
    except MetricUnavailableError:
        return 'higher'


def make_metric(name: str, crop_border: int, scale: int, device: str | None,
                ae_weights: str | None) -> Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]:
    """A per-image function (sr, gt, lq) -> value on uint8 BGR HWC images, through BasicSR's ``calculate_metric``
    (the registry, as in validation). Raises MetricUnavailableError up front (weights missing, offline)."""
    from basicsr.metrics import calculate_metric

    from basicsr_ext.metrics.metric_util import metric_needs_lq
    opt = metric_option(name, crop_border, scale, device, ae_weights)
    if opt['type'] == 'calculate_ae_psnr':
        if not ae_weights:
            raise MetricUnavailableError('ae_psnr needs --ae-weights AE_RRDBdecoder_100K.pth (the AESOP AE)')
        from basicsr_ext.metrics.fidelity_metric import get_autoencoder
        try:
            get_autoencoder(None, opt['autoencoder_load'], device)
        except Exception as e:  # noqa: BLE001 - reported as an unavailable metric
            raise MetricUnavailableError(f'ae_psnr: {e}') from None
    elif opt['type'] == 'pyiqa':
        from basicsr_ext.metrics.pyiqa_metric import get_pyiqa_metric, pyiqa_metric_info
        pyiqa_metric_info(name)
        get_pyiqa_metric(name, device=device)  # build now: an offline failure is reported once, up front
    needs_lq = metric_needs_lq(opt)

    def metric(sr: np.ndarray, gt: np.ndarray, lq: np.ndarray | None) -> float:
        data = {'img': sr, 'img2': gt}
        if needs_lq and lq is not None:
            data['img_lq'] = lq
        return float(calculate_metric(data, opt))
    return metric


def _read_u8(path: str) -> np.ndarray:
    img, _ = read_image(path, channel_order='bgr')
    return quantize(img, 8)


def _bicubic_up(lq: np.ndarray, scale: int) -> np.ndarray:
    from basicsr.utils.matlab_functions import imresize
    return quantize(np.asarray(imresize(lq.astype(np.float32) / 255.0, scale)), 8)


def _align(sr: np.ndarray, gt: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop to the common size when they differ by less than ``scale`` pixels (BasicSR's GT mod-crop)."""
    if sr.shape == gt.shape:
        return sr, gt
    dh, dw = abs(sr.shape[0] - gt.shape[0]), abs(sr.shape[1] - gt.shape[1])
    if dh < max(scale, 1) and dw < max(scale, 1) and sr.shape[2:] == gt.shape[2:]:
        h, w = min(sr.shape[0], gt.shape[0]), min(sr.shape[1], gt.shape[1])
        return sr[:h, :w], gt[:h, :w]
    raise ImageError('', f'size {sr.shape[1]}x{sr.shape[0]} does not match the GT {gt.shape[1]}x{gt.shape[0]}')


# ---------------------------------------------------------------------------------------------------------
# the run
def run_benchmark(datasets: dict[str, dict[str, str | None]], methods: dict[str, str], metrics: list[str],
                  crop_border: int = 4, scale: int = 4, device: str | None = None, ae_weights: str | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Compute every metric for every dataset x method; returns the JSON-ready result (see the module doc)."""
    from tqdm import tqdm
    per_image_metrics = [m for m in metrics if m != 'fid']
    metric_errors: dict[str, str] = {}
    fns = OrderedDict()
    for m in per_image_metrics:
        try:
            fns[m] = make_metric(m, crop_border, scale, device, ae_weights)
        except (MetricUnavailableError, ImportError) as e:
            metric_errors[m] = str(e)
            print(f'warning: metric {m} is not available: {e}', file=sys.stderr)
    results: dict[str, Any] = OrderedDict()
    for dname, dcfg in datasets.items():
        gt_files = list_images(dcfg['gt']) if osp.isdir(dcfg['gt']) else []
        if not gt_files:
            print(f'warning: dataset {dname}: no images in {dcfg["gt"]}', file=sys.stderr)
        gt_map = {osp.splitext(osp.basename(f))[0]: f for f in gt_files}
        lq_map = match_results(list(gt_map), list_images(dcfg['lq'])) if dcfg.get('lq') and osp.isdir(
            dcfg['lq']) else {}
        matched = {}
        for mname, pattern in methods.items():
            if pattern == BICUBIC:
                matched[mname] = {g: BICUBIC for g in gt_map}
                continue
            folder = method_folder(pattern, dname)
            files = list_images(folder) if osp.isdir(folder) else []
            if not osp.isdir(folder):
                print(f'warning: {mname} on {dname}: folder not found: {folder}', file=sys.stderr)
            matched[mname] = match_results(list(gt_map), files)
        rows = {m: {'metrics': OrderedDict(), 'n': 0, 'missing': [], 'failed': OrderedDict(),
                    'per_image': OrderedDict(), 'folder': None if methods[m] == BICUBIC
                    else method_folder(methods[m], dname)} for m in methods}
        sums = {m: {k: [] for k in fns} for m in methods}
        bar = tqdm(total=len(gt_map) * len(methods), desc=dname, unit='img', disable=not progress,
                   file=sys.stderr)
        for stem, gt_path in gt_map.items():
            try:
                gt = _read_u8(gt_path)
            except ImageError as e:
                for m in methods:
                    rows[m]['failed'][stem] = f'GT unreadable: {e.reason}'
                bar.update(len(methods))
                continue
            lq = None
            if stem in lq_map:
                try:
                    lq = _read_u8(lq_map[stem])
                except ImageError as e:
                    print(f'warning: {dname}/{stem}: LR unreadable: {e.reason}', file=sys.stderr)
            for mname in methods:
                bar.update(1)
                src = matched[mname].get(stem)
                if src is None:
                    rows[mname]['missing'].append(stem)
                    continue
                try:
                    if src == BICUBIC:
                        from basicsr_ext.metrics.fidelity_metric import bicubic_downscale_uint8
                        sr = _bicubic_up(lq if lq is not None else bicubic_downscale_uint8(gt, scale), scale)
                    else:
                        sr = _read_u8(src)
                    sr_a, gt_a = _align(sr, gt, scale)
                    values = OrderedDict()
                    for k, fn in fns.items():
                        values[k] = float(fn(sr_a, gt_a, lq))
                except ImageError as e:
                    rows[mname]['failed'][stem] = f'{osp.basename(src)}: {e.reason}'
                    continue
                except (ValueError, RuntimeError) as e:
                    rows[mname]['failed'][stem] = f'{osp.basename(src)}: {type(e).__name__}: {e}'
                    continue
                rows[mname]['per_image'][stem] = values
                rows[mname]['n'] += 1
                for k, v in values.items():
                    sums[mname][k].append(v)
        bar.close()
        for mname in methods:
            for k in fns:
                vals = [v for v in sums[mname][k] if not math.isnan(v)]  # inf (identical images) stays
                rows[mname]['metrics'][k] = float(np.mean(vals)) if vals else None
        if 'fid' in metrics and 'fid' not in metric_errors:
            for mname in methods:
                if not rows[mname]['per_image']:
                    continue
                try:
                    rows[mname]['metrics']['fid'] = _fid(gt_map, matched[mname], rows[mname]['per_image'], device,
                                                         lq_map, scale)
                except (MetricUnavailableError, ImportError, RuntimeError, ValueError) as e:
                    metric_errors['fid'] = str(e)
                    print(f'warning: metric fid is not available: {e}', file=sys.stderr)
                    break
        for mname in methods:
            for k in metrics:
                rows[mname]['metrics'].setdefault(k, None)
            if rows[mname]['missing']:
                print(f'{dname}/{mname}: {len(rows[mname]["missing"])} missing: '
                      f'{", ".join(rows[mname]["missing"][:10])}', file=sys.stderr)
            for stem, why in list(rows[mname]['failed'].items())[:10]:
                print(f'{dname}/{mname}: failed {stem}: {why}', file=sys.stderr)
        results[dname] = {'gt': dcfg['gt'], 'lq': dcfg.get('lq'), 'n_gt': len(gt_map), 'methods': rows}
    return {'metrics': list(metrics), 'better': {m: metric_better(m) for m in metrics},
            'protocol': {'crop_border': crop_border, 'scale': scale}, 'metric_errors': metric_errors,
            'results': results}


def _fid(gt_map: dict[str, str], matched: dict[str, str], ok: dict, device: str | None,
         lq_map: dict[str, str], scale: int) -> float:
    """pyiqa FID between the method's images and their GTs (only pairs that were scored)."""
    from basicsr_ext.metrics.pyiqa_metric import calculate_fid_folders
    from basicsr_ext.utils.image_io import write_image_atomic
    tmp = tempfile.mkdtemp(prefix='bench_fid_')
    try:
        a, b = osp.join(tmp, 'sr'), osp.join(tmp, 'gt')
        os.makedirs(a)
        os.makedirs(b)
        for stem in ok:
            src = matched[stem]
            if src == BICUBIC:
                from basicsr_ext.metrics.fidelity_metric import bicubic_downscale_uint8
                gt = _read_u8(gt_map[stem])
                lq = _read_u8(lq_map[stem]) if stem in lq_map else bicubic_downscale_uint8(gt, scale)
                write_image_atomic(osp.join(a, stem + '.png'), _bicubic_up(lq, scale), channel_order='bgr')
            else:
                shutil.copyfile(src, osp.join(a, stem + osp.splitext(src)[1]))
            shutil.copyfile(gt_map[stem], osp.join(b, stem + osp.splitext(gt_map[stem])[1]))
        return calculate_fid_folders(a, b, device=device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# output
def _fmt(v: float | str | None, metric: str) -> str:
    if v is None:
        return 'n/a'
    if isinstance(v, str) or math.isinf(v):
        return str(v)
    if metric in ('ssim', 'ssim_rgb', 'lpips', 'dists') or metric.startswith(('lpips', 'ssim', 'ms_ssim')):
        return f'{v:.4f}'
    return f'{v:.3f}' if abs(v) < 100 else f'{v:.2f}'


def format_markdown(res: dict[str, Any]) -> str:
    """One Markdown table per dataset: a row per method, a column per metric (arrow = better direction)."""
    out = []
    for dname, d in res['results'].items():
        heads = [f'{_LABELS.get(m, m.upper())} {"↑" if res["better"][m] == "higher" else "↓"}' for m in res['metrics']]
        out.append(f'### {dname} ({d["n_gt"]} images)\n')
        out.append(markdown_table(
            ['method', *heads, 'scored', 'missing', 'failed'],
            [[mname, *(_fmt(r['metrics'].get(m), m) for m in res['metrics']), r['n'], len(r['missing']),
              len(r['failed'])] for mname, r in d['methods'].items()], align='l' + 'r' * (len(heads) + 3)))
        out.append('')
    if res['metric_errors']:
        out.append('Metrics not computed: ' + '; '.join(f'{k}: {v}' for k, v in res['metric_errors'].items()))
    return '\n'.join(out)


def write_outputs(res: dict[str, Any], out_prefix: str) -> tuple[str, str]:
    """``<prefix>.csv`` and ``<prefix>.json`` (atomic)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(['dataset', 'method', 'metric', 'value', 'better', 'n_scored', 'n_missing', 'n_failed'])
    for dname, d in res['results'].items():
        for mname, r in d['methods'].items():
            for m in res['metrics']:
                v = r['metrics'].get(m)
                w.writerow([dname, mname, m, '' if v is None else repr(v), res['better'][m], r['n'],
                            len(r['missing']), len(r['failed'])])
    csv_path, json_path = out_prefix + '.csv', out_prefix + '.json'
    write_bytes_atomic(csv_path, buf.getvalue().encode('utf-8'))
    write_bytes_atomic(json_path, json.dumps(res, indent=1, allow_nan=False,
                                             default=lambda o: None).encode('utf-8'))
    return csv_path, json_path


def _clean_nan(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ('inf' if obj > 0 else '-inf')
    if isinstance(obj, dict):
        return type(obj)((k, _clean_nan(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_clean_nan(v) for v in obj]
    return obj


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', help='YAML file with datasets/methods/metrics (safe loader)')
    p.add_argument('--dataset', nargs='+', action='append', default=[], metavar='ARG',
                   help='NAME GT_DIR [LQ_DIR]; repeat for several datasets')
    p.add_argument('--lq', nargs=2, action='append', default=[], metavar=('NAME', 'LQ_DIR'),
                   help='LR folder of a dataset given by --dataset')
    p.add_argument('--method', nargs=2, action='append', default=[], metavar=('NAME', 'DIR_PATTERN'),
                   help="result folder; may contain {dataset}; '@bicubic' = MATLAB bicubic of the LR")
    p.add_argument('--metrics', nargs='+', default=None, help='default: psnr ssim')
    p.add_argument('--crop-border', type=int, default=None, help='PSNR/SSIM crop (default: scale)')
    p.add_argument('--scale', type=int, default=None, help='SR scale (default 4)')
    p.add_argument('--device', default=None, help='device of the pyiqa/AE networks (default cuda if available)')
    p.add_argument('--ae-weights', default=None, help='AESOP AE checkpoint for ae_psnr')
    p.add_argument('--out', default=None, help='output prefix: writes <out>.csv and <out>.json (default benchmark)')
    p.add_argument('--strict', action='store_true', help='exit 1 when images are missing or unreadable')
    p.add_argument('--no-progress', action='store_true')
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg: dict[str, Any] = {}
    try:
        if args.config:
            cfg = dict(load_option_file(args.config))
    except OptionError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    datasets: dict[str, dict[str, str | None]] = OrderedDict()
    for name, d in (cfg.get('datasets') or {}).items():
        d = {'gt': d} if isinstance(d, str) else dict(d)
        datasets[str(name)] = {'gt': d.get('gt'), 'lq': d.get('lq')}
    for entry in args.dataset:
        if len(entry) not in (2, 3):
            print(f'error: --dataset takes NAME GT_DIR [LQ_DIR], got {entry}', file=sys.stderr)
            return 2
        datasets[entry[0]] = {'gt': entry[1], 'lq': entry[2] if len(entry) == 3 else None}
    for name, lq in args.lq:
        if name not in datasets:
            print(f'error: --lq {name}: no --dataset {name}', file=sys.stderr)
            return 2
        datasets[name]['lq'] = lq
    methods = OrderedDict((str(k), str(v)) for k, v in (cfg.get('methods') or {}).items())
    methods.update(OrderedDict(args.method))
    if not datasets or not methods or any(not d.get('gt') for d in datasets.values()):
        print('error: give at least one --dataset NAME GT_DIR and one --method NAME DIR (or --config)',
              file=sys.stderr)
        return 2
    metrics = args.metrics or cfg.get('metrics') or ['psnr', 'ssim']
    scale = int(args.scale or cfg.get('scale') or 4)
    crop = args.crop_border if args.crop_border is not None else int(cfg.get('crop_border', scale))
    res = run_benchmark(datasets, methods, list(metrics), crop, scale, args.device or cfg.get('device'),
                        args.ae_weights or cfg.get('ae_weights'), progress=not args.no_progress)
    res = _clean_nan(res)
    print(format_markdown(res))
    csv_path, json_path = write_outputs(res, args.out or cfg.get('out') or 'benchmark')
    print(f'\nwrote {csv_path} and {json_path}')
    problems = sum(len(r['missing']) + len(r['failed']) for d in res['results'].values()
                   for r in d['methods'].values())
    if res['metric_errors']:
        return 2
    return 1 if (args.strict and problems) else 0


if __name__ == '__main__':
    sys.exit(main())
