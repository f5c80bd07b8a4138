"""AESOP's fidelity-bias metrics (aesop.md §6 "Fidelity-bias metrics"): AE-PSNR and LR-PSNR.

    val:
      metrics:
        ae_psnr:                      # PSNR between AE(SR) and AE(HR)
          type: calculate_ae_psnr
          autoencoder_load: {path: experiments/pretrained_models/AE_RRDBdecoder_100K.pth, key: params_ema}
          crop_border: 4
          test_y_channel: true
        lr_psnr:                      # PSNR between bicubic-downscaled SR and the LR input
          type: calculate_lr_psnr
          test_y_channel: true

Both follow the PSNR protocol of the paper's tables: 8-bit quantisation, BT.601 Y, MSE in float64 (BasicSR's
``calculate_psnr``).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np
import torch
from basicsr.metrics.psnr_ssim import calculate_psnr
from basicsr.utils import tensor2img
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import METRIC_REGISTRY

from basicsr_ext.archs.aesop_arch import DEFAULT_AUTOENCODER_ARCH, load_frozen_autoencoder
from basicsr_ext.metrics.metric_util import metric_needs_lq  # noqa: F401  (the needs_lq protocol)
from basicsr_ext.metrics.pyiqa_metric import to_rgb_tensor
from basicsr_ext.utils.tiling import tiled_forward

_AE_CACHE: dict[tuple, torch.nn.Module] = {}


def get_autoencoder(autoencoder_arch: Mapping[str, Any] | None, autoencoder_load: Mapping[str, Any] | None,
                    device: str | torch.device | None = None) -> torch.nn.Module:
    """The frozen AE (built and loaded once per arch/checkpoint/device, then cached)."""
    device = torch.device(device) if device is not None else torch.device(
        'cuda' if torch.cuda.is_available() else 'cpu')
    key = (json.dumps(autoencoder_arch or DEFAULT_AUTOENCODER_ARCH, sort_keys=True, default=str),
           json.dumps(dict(autoencoder_load or {}), sort_keys=True, default=str), str(device))
    if key not in _AE_CACHE:
        _AE_CACHE[key] = load_frozen_autoencoder(autoencoder_arch, autoencoder_load).to(device)
    return _AE_CACHE[key]


def _quantised_bgr(t: torch.Tensor) -> np.ndarray:
    return tensor2img([t.detach().float().cpu().clamp_(0, 1)], rgb2bgr=True, out_type=np.uint8)


@METRIC_REGISTRY.register()
def calculate_ae_psnr(img: np.ndarray, img2: np.ndarray, autoencoder_arch: Mapping[str, Any] | None = None,
                      autoencoder_load: Mapping[str, Any] | None = None, crop_border: int = 4,
                      test_y_channel: bool = True, input_order: str = 'HWC', device: str | None = None,
                      tile: int = 0, tile_overlap: int = 32, **kwargs: Any) -> float:
    """AE-PSNR: PSNR between AE(SR) and AE(HR) (aesop.md §6), for BasicSR uint8 BGR images.

    Both images go through the frozen AE as RGB in [0, 1] (padded to a multiple of 4, which the x4 bottleneck
    needs, and cropped back); the reconstructions are clamped, quantised to 8 bits and compared with
    BasicSR's ``calculate_psnr`` (``crop_border`` 4 and Y by default, the official ``calculate_aepsnr``
    protocol). ``autoencoder_arch`` defaults to the official AE block (``AESOPAutoEncoder``, RRDB decoder);
    ``autoencoder_load: {path, key}`` is required. ``tile`` > 0 runs the AE tile by tile (large images).
    """
    ae = get_autoencoder(autoencoder_arch, autoencoder_load, device)
    dev = next(ae.parameters()).device
    recon = []
    with torch.no_grad():
        for im in (img, img2):
            x = to_rgb_tensor(im, 0, input_order).to(dev)
            recon.append(_quantised_bgr(tiled_forward(ae, x, 1, tile=tile, overlap=tile_overlap, multiple=4)))
    return float(calculate_psnr(recon[0], recon[1], crop_border=crop_border, test_y_channel=test_y_channel))


def bicubic_downscale_uint8(img: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-compatible bicubic ``1/scale`` (BasicSR's ``imresize``, antialiased) of a uint8 HWC image, 8-bit."""
    x = np.asarray(img).astype(np.float32) / 255.0
    y = imresize(x, 1.0 / scale)
    return np.clip(np.rint(np.asarray(y) * 255.0), 0, 255).astype(np.uint8)


@METRIC_REGISTRY.register()
def calculate_lr_psnr(img: np.ndarray, img2: np.ndarray | None = None, img_lq: np.ndarray | None = None,
                      scale: int | None = None, crop_border: int = 0, test_y_channel: bool = True,
                      input_order: str = 'HWC', **kwargs: Any) -> float:
    """LR-PSNR: PSNR between the bicubic-downscaled SR and the LR input (aesop.md §6; "presumably", no code).

    Choices (the paper gives no code): MATLAB-compatible bicubic (BasicSR's ``imresize``, the kernel the
    benchmark LR sets were made with), 8-bit quantisation of the downscaled SR, Y channel, no crop.

    Where the LR comes from:
    - ``img_lq``: our models' validation (``basicsr_ext.models.engine``) passes the LR input of the batch to
      every metric that declares ``needs_lq`` (this one); ``scripts/eval/benchmark.py --lq`` passes the LR file.
    - otherwise the LR is rebuilt from the GT (``img2``) with the same bicubic: identical to the LR of the
      bicubic benchmark sets, *not* valid for real-world degradations.

    ``scale`` defaults to SR height / LR height (or 4 when the LR is rebuilt from the GT).
    """
    if input_order == 'CHW':
        img = np.asarray(img).transpose(1, 2, 0)
        img2 = None if img2 is None else np.asarray(img2).transpose(1, 2, 0)
        img_lq = None if img_lq is None else np.asarray(img_lq).transpose(1, 2, 0)
    if img_lq is None:
        if img2 is None:
            raise ValueError('calculate_lr_psnr needs the LR input (img_lq) or the ground truth (img2)')
        scale = int(scale or 4)
        img_lq = bicubic_downscale_uint8(img2, scale)
    elif scale is None:
        scale = max(1, round(img.shape[0] / img_lq.shape[0]))
    down = bicubic_downscale_uint8(img, int(scale))
    h, w = min(down.shape[0], img_lq.shape[0]), min(down.shape[1], img_lq.shape[1])
    return float(calculate_psnr(down[:h, :w], np.asarray(img_lq)[:h, :w], crop_border=crop_border,
                                test_y_channel=test_y_channel))


calculate_lr_psnr.needs_lq = True  # validation passes ``img_lq`` to it (metric_util.metric_needs_lq)
