"""Comparing SR results with their GT: per-image figures and a labelled side-by-side crop sheet.

Figures (8-bit images, ``crop_border`` pixels off each side, as BasicSR's metrics):

- PSNR and SSIM on Y (BasicSR's ``calculate_psnr`` / ``calculate_ssim``, BT.601 Y) and PSNR on RGB: a colour cast
  costs little on Y and shows on RGB.
- Sharpness: the mean absolute Laplacian (3x3, 4-neighbour kernel) of the SR's Y, divided by the GT's
  (:func:`laplacian_ratio`). 1 = as much fine detail/edge energy as the GT, below 1 = blurrier (bicubic x4 is
  far below), above 1 = more (noise, ringing or invented texture). No network weights needed.

The sheet (:func:`make_sheet`): the same crop of the GT, bicubic and each method, nearest-neighbour zoomed to
``panel`` pixels wide, each labelled under it; the PNG size is exact (:func:`sheet_size`) and written atomically.
Used by ``scripts/eval/comparison_sheet.py`` and ``scripts/quickstart.py``.
"""
from __future__ import annotations

import os.path as osp
from typing import Sequence

import cv2
import numpy as np

from basicsr_ext.utils.image_io import list_images, match_by_stem, write_figure_atomic

LABEL_PX = 22
GAP_PX = 6


# ----------------------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------------------
def _y_channel(img_bgr: np.ndarray) -> np.ndarray:
    """BT.601 Y (16..235) of an 8-bit BGR image, float64 (BasicSR's ``bgr2ycbcr(y_only=True)``)."""
    from basicsr.utils.color_util import bgr2ycbcr
    return bgr2ycbcr(img_bgr.astype(np.float32) / 255.0, y_only=True).astype(np.float64) * 255.0


def mean_abs_laplacian(img_bgr: np.ndarray, crop_border: int = 4) -> float:
    """Mean |Laplacian| (3x3 4-neighbour kernel) of the Y channel of an 8-bit BGR image, border cropped."""
    y = _y_channel(img_bgr)
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    return float(np.abs(cv2.Laplacian(y, cv2.CV_64F, ksize=1)).mean())


def laplacian_ratio(sr_bgr: np.ndarray, gt_bgr: np.ndarray, crop_border: int = 4) -> float:
    """Sharpness of ``sr`` relative to ``gt``: mean |Laplacian| of SR's Y over GT's (1 = as sharp as the GT)."""
    ref = mean_abs_laplacian(gt_bgr, crop_border)
    return mean_abs_laplacian(sr_bgr, crop_border) / ref if ref > 0 else float('nan')


def image_figures(sr_bgr: np.ndarray, gt_bgr: np.ndarray, crop_border: int = 4) -> dict[str, float]:
    """PSNR (Y), PSNR (RGB), SSIM (Y) and the Laplacian ratio of one 8-bit BGR SR image against its GT (the GT is
    cut to the SR's size when it is larger, as BasicSR's mod-crop)."""
    from basicsr.metrics import calculate_psnr, calculate_ssim
    gt_bgr = gt_bgr[:sr_bgr.shape[0], :sr_bgr.shape[1]]
    if gt_bgr.shape != sr_bgr.shape:
        raise ValueError(f'SR {sr_bgr.shape} and GT {gt_bgr.shape} differ in size')
    return {'psnr': float(calculate_psnr(sr_bgr, gt_bgr, crop_border, test_y_channel=True)),
            'psnr_rgb': float(calculate_psnr(sr_bgr, gt_bgr, crop_border, test_y_channel=False)),
            'ssim': float(calculate_ssim(sr_bgr, gt_bgr, crop_border, test_y_channel=True)),
            'lap_ratio': laplacian_ratio(sr_bgr, gt_bgr, crop_border)}


def find_result(folder: str, stem: str, suffix: str | None = None) -> str | None:
    """The image of ``stem`` in ``folder``: ``<stem>_<suffix>.png`` first, else BasicSR-style stem matching."""
    if suffix:
        exact = osp.join(folder, f'{stem}_{suffix}.png')
        if osp.isfile(exact):
            return exact
    return match_by_stem([stem], list_images(folder)).get(stem)


def evaluate_folder(sr_folder: str, gt_folder: str, suffix: str | None = None,
                    crop_border: int = 4) -> dict[str, float]:
    """Mean :func:`image_figures` over the GT images of ``gt_folder`` (each must have an SR image), plus ``n``."""
    per_image = []
    for gt_path in list_images(gt_folder):
        stem = osp.splitext(osp.basename(gt_path))[0]
        sr_path = find_result(sr_folder, stem, suffix)
        if sr_path is None:
            raise FileNotFoundError(f'no SR image for {stem} in {sr_folder}')
        per_image.append(image_figures(cv2.imread(sr_path, cv2.IMREAD_COLOR), cv2.imread(gt_path, cv2.IMREAD_COLOR),
                                       crop_border))
    if not per_image:
        raise FileNotFoundError(f'no GT images in {gt_folder}')
    out = {k: float(np.mean([f[k] for f in per_image])) for k in per_image[0]}
    out['n'] = len(per_image)
    return out


# ----------------------------------------------------------------------------------------------------------
# sheet
# ----------------------------------------------------------------------------------------------------------
def bicubic_like_gt(gt: np.ndarray, lq: np.ndarray | None, scale: int) -> np.ndarray:
    """MATLAB-bicubic upscaling of the LR (or of the bicubic-downscaled GT), at the GT's size; RGB float [0, 1]."""
    from basicsr.utils.matlab_functions import imresize
    if lq is None:
        lq = np.clip(np.asarray(imresize(gt, 1.0 / scale)), 0, 1)
    up = np.clip(np.asarray(imresize(lq, scale)), 0, 1)
    return fit_to(up, gt.shape[:2])


def fit_to(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``img`` cut or zero-padded (bottom/right) to ``hw``."""
    h, w = hw
    if img.shape[:2] == (h, w):
        return img
    out = np.zeros((h, w) + img.shape[2:], img.dtype)
    hh, ww = min(h, img.shape[0]), min(w, img.shape[1])
    out[:hh, :ww] = img[:hh, :ww]
    return out


def default_crop(h: int, w: int) -> tuple[int, int, int, int]:
    """A centred square of a quarter of the shorter side: (x, y, w, h)."""
    side = max(8, min(h, w) // 4)
    return (w - side) // 2, (h - side) // 2, side, side


def detail_crop(gt_bgr: np.ndarray, side: int, step: int | None = None, crop_border: int = 4,
                sigma: float = 2.0) -> tuple[int, int, int, int]:
    """The ``side`` x ``side`` window (on a ``step`` grid, away from the border) with the most edge energy of the
    GT at scale ``sigma`` (gradient magnitude of the Gaussian-blurred Y): structures such as an eye or a rim, where
    SR methods differ visibly, rather than fine texture that none recovers at x4. (x, y, w, h)."""
    h, w = gt_bgr.shape[:2]
    side = min(side, h - 2 * crop_border, w - 2 * crop_border)
    step = step or max(1, side // 8)
    y = _y_channel(gt_bgr)
    if sigma > 0:
        y = cv2.GaussianBlur(y, (0, 0), sigma)
    energy = np.hypot(cv2.Sobel(y, cv2.CV_64F, 1, 0), cv2.Sobel(y, cv2.CV_64F, 0, 1))
    best, best_xy = -1.0, (crop_border, crop_border)
    for top in range(crop_border, h - crop_border - side + 1, step):
        for left in range(crop_border, w - crop_border - side + 1, step):
            e = float(energy[top:top + side, left:left + side].mean())
            if e > best:
                best, best_xy = e, (left, top)
    return best_xy[0], best_xy[1], side, side


def overview_width(panel_height: int, image_hw: tuple[int, int], panel: int) -> int:
    """Width of the overview panel: the whole image at the crop panels' height, its aspect ratio kept (at most
    4 panels wide; a wider panorama is letterboxed in that box)."""
    h, w = image_hw
    return max(1, min(4 * panel, int(round(panel_height * w / max(1, h)))))


def sheet_size(n_panels: int, panel: int, crop_wh: tuple[int, int],
               overview_hw: tuple[int, int] | None = None) -> tuple[int, int]:
    """(width, height) in pixels of a sheet of ``n_panels`` crops, plus, with ``overview_hw`` (the whole image's
    height and width), an overview panel first (:func:`overview_width`)."""
    ph = int(round(panel * crop_wh[1] / crop_wh[0]))
    width = n_panels * panel + (n_panels + 1) * GAP_PX
    if overview_hw is not None:
        width += overview_width(ph, overview_hw, panel) + GAP_PX
    return width, ph + LABEL_PX + 2 * GAP_PX


def make_sheet(panels: Sequence[tuple[str, np.ndarray]], crop: tuple[int, int, int, int], out: str,
               panel: int = 256, overview: np.ndarray | None = None, dpi: int = 100,
               fontsize: float = 9) -> tuple[int, int]:
    """Write the sheet; ``panels`` are (label, full RGB float image in [0, 1] at GT size). Returns the PNG size.

    Every crop panel keeps the crop's aspect ratio (``sheet_size``); ``overview`` (the whole GT at the panels'
    height, its own aspect ratio kept: :func:`overview_width`) comes first with the crop framed in red."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    x, y, cw, ch = crop
    W, H = sheet_size(len(panels), panel, (cw, ch), overview.shape[:2] if overview is not None else None)
    ph = H - LABEL_PX - 2 * GAP_PX
    fig = plt.figure(figsize=(W / dpi, H / dpi), dpi=dpi)
    fig.patch.set_facecolor('white')
    items = ([('GT (overview)', overview)] if overview is not None else []) + list(panels)
    left = GAP_PX
    for i, (label, img) in enumerate(items):
        is_overview = overview is not None and i == 0
        pw = overview_width(ph, img.shape[:2], panel) if is_overview else panel
        ax = fig.add_axes([left / W, (GAP_PX + LABEL_PX) / H, pw / W, ph / H])
        ax.set_axis_off()
        if is_overview:
            ax.imshow(img, interpolation='antialiased', aspect='equal')  # never squashed (letterboxed if capped)
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), cw, ch, fill=False, edgecolor='red', linewidth=1.5))
        else:
            zoom = cv2.resize(np.ascontiguousarray(img[y:y + ch, x:x + cw]), (panel, ph),
                              interpolation=cv2.INTER_NEAREST)
            ax.imshow(np.clip(zoom, 0, 1), interpolation='nearest', aspect='auto')
        fig.text((left + pw / 2) / W, (GAP_PX + LABEL_PX / 2) / H, label, ha='center', va='center',
                 fontsize=fontsize)
        left += pw + GAP_PX
    write_figure_atomic(fig, out, dpi=dpi)
    plt.close(fig)
    return W, H
