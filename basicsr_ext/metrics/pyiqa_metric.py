"""pyiqa metrics as one BasicSR metric entry, ``type: pyiqa`` (anchors.md §4; tvqrap.md §6; aesop.md §6).

    val:
      metrics:
        lpips: {type: pyiqa, metric: lpips}            # FR; better: lower (from pyiqa's lower_better)
        dists: {type: pyiqa, metric: dists}
        musiq: {type: pyiqa, metric: musiq}            # NR: the GT is not used
        psnr:  {type: calculate_psnr, crop_border: 4, test_y_channel: true}   # BasicSR's own, kept

Protocol (aesop.md "Metric implementations used"): BasicSR hands over 8-bit BGR HWC images (already quantised);
they become RGB NCHW float tensors in [0, 1], ``crop_border`` (default 0, i.e. no crop) is cut from each side,
and pyiqa's default settings of the named metric are used (LPIPS: AlexNet v0.1). Extra keys are passed to
``pyiqa.create_metric`` (e.g. ``net: vgg``); ``device`` (default CUDA if available, else CPU) and ``better``
are ours.

- The pyiqa network is created once per (metric, device, options) and cached, not per image.
- ``better`` left out of the YAML is filled from pyiqa's ``lower_better`` by :func:`resolve_metric_better`,
  registered to run at the end of :func:`basicsr_ext.utils.options.parse_options` (BasicSR reads ``better``
  when it tracks the best value, and ``val.key_metric`` saves ``net_g_best.pth`` by it).
- pyiqa is an optional extra (``pip install basicsr_ext[metrics]``), imported on first use.
- Offline, a metric whose weights are not cached fails once with :class:`MetricWeightsError`, naming the file
  and the folder to put it in (pyiqa's own files: ``torch.hub.get_dir()/pyiqa``; torchvision backbones:
  ``torch.hub.get_dir()/checkpoints``; Hugging Face files: the HF hub cache), instead of a stack of retries.
  ``BASICSR_EXT_OFFLINE=1`` (or ``offline: true``) also sets ``HF_HUB_OFFLINE`` so the hub does not retry.
- FID is dataset-level (folder to folder): :func:`calculate_fid_folders`, used by ``scripts/eval/benchmark.py``.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from basicsr_ext.utils.options import register_option_resolver

PYIQA_TYPES = ('pyiqa',)
_CACHE: dict[tuple, Any] = {}
_INSTALL_HINT = 'pip install "basicsr_ext[metrics]" (or pip install pyiqa)'


class MetricUnavailableError(RuntimeError):
    """A metric that cannot run here: pyiqa missing, unknown name, or weights not available."""


class MetricWeightsError(MetricUnavailableError):
    """A metric's pretrained weights are neither cached nor downloadable (offline)."""


def set_offline(offline: bool = True) -> None:
    """Make the Hugging Face hub fail fast instead of retrying (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    if not offline:
        return
    os.environ['HF_HUB_OFFLINE'] = '1'
    os.environ['TRANSFORMERS_OFFLINE'] = '1'
    try:  # already imported: its constant was read at import time
        import huggingface_hub.constants as hf_constants
        hf_constants.HF_HUB_OFFLINE = True
    except Exception:  # noqa: BLE001 - huggingface_hub is optional
        pass


def import_pyiqa():
    """``import pyiqa`` (lazily), with a clear message when the optional extra is missing."""
    if os.environ.get('BASICSR_EXT_OFFLINE', '').lower() in ('1', 'true', 'yes'):
        set_offline(True)
    try:
        return importlib.import_module('pyiqa')
    except ImportError as e:
        raise MetricUnavailableError(f'pyiqa metrics need the pyiqa package, which is not importable ({e}): '
                                     f'{_INSTALL_HINT}') from None


def pyiqa_metric_info(metric: str) -> dict[str, Any]:
    """pyiqa's default config of ``metric`` (``metric_mode``, ``lower_better``...) without building the network."""
    import_pyiqa()
    configs = importlib.import_module('pyiqa.default_model_configs').DEFAULT_CONFIGS
    if metric not in configs:
        close = [m for m in configs if metric.lower() in m.lower()][:8]
        raise MetricUnavailableError(f'pyiqa has no metric {metric!r}' + (f' (did you mean: {", ".join(close)}?)'
                                                                         if close else ''))
    return dict(configs[metric])


def _weight_folders() -> str:
    hub = torch.hub.get_dir()
    hf = os.environ.get('HF_HUB_CACHE') or os.path.join(
        os.environ.get('HF_HOME', os.path.join(os.path.expanduser('~'), '.cache', 'huggingface')), 'hub')
    return (f'pyiqa files in {os.path.join(hub, "pyiqa")}; torchvision backbones in '
            f'{os.path.join(hub, "checkpoints")}; CLIP in {os.path.join(hub, "clip")}; Hugging Face files in {hf}')


@contextlib.contextmanager
def _record_downloads() -> Iterator[list[tuple[str, str]]]:
    """Record (url, destination) of every download attempted through torch.hub / pyiqa while inside."""
    attempts: list[tuple[str, str]] = []
    patched = []

    def wrap(orig):
        def download(url, dst, *args, **kwargs):
            attempts.append((str(url), str(dst)))
            return orig(url, dst, *args, **kwargs)
        return download

    for modname in ('torch.hub', 'pyiqa.utils.download_util'):
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        if hasattr(mod, 'download_url_to_file'):
            patched.append((mod, mod.download_url_to_file))
            mod.download_url_to_file = wrap(mod.download_url_to_file)
    try:
        yield attempts
    finally:
        for mod, orig in patched:
            mod.download_url_to_file = orig


def _is_download_failure(e: BaseException) -> bool:
    import urllib.error
    names = {c.__name__ for c in type(e).__mro__}
    hf = {'LocalEntryNotFoundError', 'OfflineModeIsEnabled', 'HfHubHTTPError', 'EntryNotFoundError',
          'RepositoryNotFoundError', 'ConnectionError', 'Timeout', 'ProxyError', 'SSLError'}
    return isinstance(e, (urllib.error.URLError, ConnectionError, TimeoutError)) or bool(names & hf)


def _weights_error(metric: str, e: BaseException, attempts: list[tuple[str, str]]) -> MetricWeightsError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    if attempts:
        url, dst = attempts[-1]
        return MetricWeightsError(
            f'pyiqa metric {metric!r} needs the weight file {os.path.basename(dst)!r}, which is not cached and could '
            f'not be downloaded ({type(e).__name__}: {first}). Put it in {os.path.dirname(dst)}/ '
            f'(source: {url}) and run again.')
    return MetricWeightsError(
        f'pyiqa metric {metric!r} needs pretrained weights that are not cached and could not be downloaded '
        f'({type(e).__name__}: {first}). Where they go: {_weight_folders()}.')


def get_pyiqa_metric(metric: str, device: str | torch.device | None = None, **kwargs: Any):
    """The pyiqa ``InferenceModel`` for ``metric`` on ``device``, created once and cached.

    Raises:
        MetricUnavailableError: pyiqa missing or unknown metric.
        MetricWeightsError: weights missing offline (names the file and the folder).
    """
    if kwargs.pop('offline', False):
        set_offline(True)
    device = torch.device(device) if device is not None else torch.device(
        'cuda' if torch.cuda.is_available() else 'cpu')
    key = (metric, str(device), json.dumps(kwargs, sort_keys=True, default=str))
    if key in _CACHE:
        return _CACHE[key]
    pyiqa = import_pyiqa()
    pyiqa_metric_info(metric)
    with _record_downloads() as attempts:
        try:
            model = pyiqa.create_metric(metric, device=device, **kwargs)
        except Exception as e:  # noqa: BLE001 - sorted below: download failures get one clear message
            if _is_download_failure(e):
                raise _weights_error(metric, e, attempts) from None
            raise
    model.eval()
    _CACHE[key] = model
    return model


def clear_metric_cache() -> None:
    """Forget the cached pyiqa networks (frees their memory)."""
    _CACHE.clear()


def to_rgb_tensor(img: Any, crop_border: int = 0, input_order: str = 'HWC') -> torch.Tensor:
    """BasicSR image (uint8/uint16/float [0,1], BGR, HWC or CHW) -> RGB (1, 3, H, W) float32 in [0, 1].

    A tensor passes through unchanged (assumed RGB NCHW or CHW in [0, 1]) apart from the crop.
    """
    if isinstance(img, torch.Tensor):
        t = img if img.dim() == 4 else img.unsqueeze(0)
    else:
        arr = np.asarray(img)
        if input_order == 'CHW' and arr.ndim == 3:
            arr = arr.transpose(1, 2, 0)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        elif arr.dtype == np.uint16:
            arr = arr.astype(np.float32) / 65535.0
        else:
            arr = np.clip(arr.astype(np.float32), 0.0, 1.0)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        arr = arr[..., 2::-1]  # BGR -> RGB (drops a 4th channel)
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0)
    if crop_border:
        t = t[..., crop_border:-crop_border, crop_border:-crop_border]
    return t


def calculate_pyiqa(img: Any, img2: Any = None, metric: str | None = None, crop_border: int = 0,
                    device: str | None = None, input_order: str = 'HWC', better: str | None = None,
                    **kwargs: Any) -> float:
    """Score one image (and its reference for FR metrics) with pyiqa's ``metric``; see the module docstring."""
    del better  # read by BasicSR's best-metric tracking, not by the metric
    kwargs.pop('img_lq', None)
    if not metric:
        raise ValueError("a type: pyiqa metric needs 'metric: <pyiqa name>' (e.g. lpips, dists, musiq)")
    info = pyiqa_metric_info(metric)
    if 'fid' in metric or metric == 'inception_score':
        raise MetricUnavailableError(f'{metric} is a dataset-level metric (folder vs folder): use '
                                     'scripts/eval/benchmark.py --metrics fid, not a per-image val.metrics entry')
    model = get_pyiqa_metric(metric, device=device, **kwargs)
    dev = getattr(model, 'device', None) or torch.device('cpu')
    x = to_rgb_tensor(img, crop_border, input_order).to(dev)
    if info.get('metric_mode') == 'FR':
        if img2 is None:
            raise ValueError(f'pyiqa metric {metric!r} is full-reference: it needs the ground truth (img2)')
        ref = to_rgb_tensor(img2, crop_border, input_order).to(dev)
        if ref.shape != x.shape:
            raise ValueError(f'image shapes differ: {tuple(x.shape)} vs reference {tuple(ref.shape)}')
        score = model(x, ref)
    else:
        score = model(x)
    return float(torch.as_tensor(score).float().mean().item())


@METRIC_REGISTRY.register()
def pyiqa(img: Any, img2: Any = None, **opt: Any) -> float:  # the registry key is this function's name
    """``val.metrics.<name>: {type: pyiqa, metric: NAME, ...}`` → :func:`calculate_pyiqa`."""
    return calculate_pyiqa(img, img2, **opt)


def lower_is_better(metric: str) -> bool:
    """pyiqa's ``lower_better`` of ``metric`` (False when pyiqa does not say)."""
    return bool(pyiqa_metric_info(metric).get('lower_better', False))


@register_option_resolver
def resolve_metric_better(opt: Mapping[str, Any]) -> Mapping[str, Any]:
    """Fill a missing ``better`` of every ``type: pyiqa`` entry of ``val.metrics`` from pyiqa's ``lower_better``.

    Works in place on the parsed options and returns them. An explicit ``better`` is kept; a pyiqa entry
    without ``metric`` uses its YAML key as the metric name (``lpips: {type: pyiqa}``).

    Raises:
        MetricUnavailableError: a pyiqa entry while pyiqa is not installed, or an unknown metric name.
    """
    metrics = ((opt or {}).get('val') or {}).get('metrics') or {}
    for name, entry in metrics.items():
        if not isinstance(entry, dict) or entry.get('type') not in PYIQA_TYPES:
            continue
        entry.setdefault('metric', name)
        if entry.get('better') is None:
            try:
                entry['better'] = 'lower' if lower_is_better(entry['metric']) else 'higher'
            except MetricUnavailableError as e:
                raise MetricUnavailableError(f'val.metrics.{name}: {e}') from None
        elif entry['better'] not in ('higher', 'lower'):
            raise ValueError(f"val.metrics.{name}.better must be 'higher' or 'lower', got {entry['better']!r}")
    return opt


def calculate_fid_folders(dir1: str, dir2: str, device: str | None = None, **kwargs: Any) -> float:
    """pyiqa FID between two image folders (dataset-level; Inception weights needed, see the module docstring)."""
    model = get_pyiqa_metric('fid', device=device)
    with _record_downloads() as attempts:
        try:
            return float(model(dir1, dir2, verbose=False, **kwargs))
        except Exception as e:  # noqa: BLE001
            if _is_download_failure(e):
                raise _weights_error('fid', e, attempts) from None
            raise
