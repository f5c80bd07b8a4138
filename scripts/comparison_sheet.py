"""Side-by-side zoomed crops: the same region of the GT, bicubic and each method, labelled, as one PNG.

    python scripts/comparison_sheet.py --gt datasets/Set14/GTmod12 --lq datasets/Set14/LRbicx4 --image baboon \
        --method AESOP 'results/test_aesop_rrdb/visualization/Set14' --method LDL results/ldl/Set14 \
        --crop 120 200 96 96 --out baboon_sheet.png
    python scripts/comparison_sheet.py --gt gt.png --method ours out/gt_out.png --out sheet.png   # single files

- ``--gt`` / ``--lq`` / each ``--method`` path is a file, or a folder in which ``--image`` is found by stem
  (BasicSR's ``<stem>_<suffix>`` names are matched).
- ``--crop X Y W H`` in GT pixels (default: a centred square of a quarter of the shorter side). Bicubic is the
  MATLAB-compatible bicubic (BasicSR's ``imresize``) of the LR, or of the GT downscaled by the same kernel when
  no LR is given (``--no-bicubic`` to leave it out). ``--overview`` adds the whole GT with the crop framed.
- Every panel is ``--panel`` pixels wide (nearest-neighbour zoom, so pixels stay visible) with its label
  under it; the PNG size is exact: ``n * panel + (n + 1) * gap`` wide and written atomically.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import basicsr_ext  # noqa: E402,F401
import cv2  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from basicsr_ext.utils.image_io import ImageError, list_images, match_by_stem, read_image, write_figure_atomic  # noqa: E402,E501

LABEL_PX = 22
GAP_PX = 6


def resolve(path: str, stem: str | None) -> str:
    """A file as is, or the image of ``stem`` in a folder."""
    if osp.isdir(path):
        if not stem:
            raise ValueError(f'{path} is a folder: give --image STEM')
        found = match_by_stem([stem], list_images(path)).get(stem)
        if not found:
            raise ValueError(f'no image for {stem!r} in {path}')
        return found
    return path


def bicubic_like_gt(gt: np.ndarray, lq: np.ndarray | None, scale: int) -> np.ndarray:
    """MATLAB-bicubic upscaling of the LR (or of the bicubic-downscaled GT), at the GT's size."""
    from basicsr.utils.matlab_functions import imresize
    if lq is None:
        lq = np.clip(np.asarray(imresize(gt, 1.0 / scale)), 0, 1)
    up = np.clip(np.asarray(imresize(lq, scale)), 0, 1)
    h, w = min(up.shape[0], gt.shape[0]), min(up.shape[1], gt.shape[1])
    out = np.zeros_like(gt)
    out[:h, :w] = up[:h, :w]
    return out


def default_crop(h: int, w: int) -> tuple[int, int, int, int]:
    side = max(8, min(h, w) // 4)
    return (w - side) // 2, (h - side) // 2, side, side


def sheet_size(n_panels: int, panel: int, crop_wh: tuple[int, int]) -> tuple[int, int]:
    """(width, height) in pixels of a sheet of ``n_panels`` crops."""
    ph = int(round(panel * crop_wh[1] / crop_wh[0]))
    return n_panels * panel + (n_panels + 1) * GAP_PX, ph + LABEL_PX + 2 * GAP_PX


def make_sheet(panels: list[tuple[str, np.ndarray]], crop: tuple[int, int, int, int], out: str, panel: int = 256,
               overview: np.ndarray | None = None, dpi: int = 100) -> tuple[int, int]:
    """Write the sheet; ``panels`` are (label, full RGB float image at GT size). Returns the PNG size."""
    x, y, cw, ch = crop
    n = len(panels) + (overview is not None)
    W, H = sheet_size(n, panel, (cw, ch))
    ph = H - LABEL_PX - 2 * GAP_PX
    fig = plt.figure(figsize=(W / dpi, H / dpi), dpi=dpi)
    fig.patch.set_facecolor('white')
    items = ([('GT (overview)', overview)] if overview is not None else []) + list(panels)
    for i, (label, img) in enumerate(items):
        left = GAP_PX + i * (panel + GAP_PX)
        ax = fig.add_axes([left / W, (GAP_PX + LABEL_PX) / H, panel / W, ph / H])
        ax.set_axis_off()
        if overview is not None and i == 0:
            ax.imshow(img, interpolation='antialiased', aspect='auto')
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), cw, ch, fill=False, edgecolor='red', linewidth=1.5))
        else:
            zoom = cv2.resize(np.ascontiguousarray(img[y:y + ch, x:x + cw]), (panel, ph),
                              interpolation=cv2.INTER_NEAREST)
            ax.imshow(np.clip(zoom, 0, 1), interpolation='nearest', aspect='auto')
        fig.text((left + panel / 2) / W, (GAP_PX + LABEL_PX / 2) / H, label, ha='center', va='center', fontsize=9)
    write_figure_atomic(fig, out, dpi=dpi)
    plt.close(fig)
    return W, H


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--gt', required=True, help='GT image or folder')
    p.add_argument('--lq', default=None, help='LR image or folder (for the bicubic panel)')
    p.add_argument('--image', default=None, help='image stem when --gt/--lq/--method are folders')
    p.add_argument('--method', nargs=2, action='append', default=[], metavar=('NAME', 'PATH'),
                   help='result image or folder; repeat')
    p.add_argument('--crop', nargs=4, type=int, default=None, metavar=('X', 'Y', 'W', 'H'), help='GT pixels')
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--panel', type=int, default=256, help='panel width in pixels')
    p.add_argument('--no-bicubic', action='store_true')
    p.add_argument('--overview', action='store_true', help='add the whole GT with the crop framed')
    p.add_argument('--out', default='comparison_sheet.png')
    args = p.parse_args(argv)
    try:
        gt, _ = read_image(resolve(args.gt, args.image))
        h, w = gt.shape[:2]
        crop = tuple(args.crop) if args.crop else default_crop(h, w)
        x, y, cw, ch = crop
        if cw <= 0 or ch <= 0 or x < 0 or y < 0 or x + cw > w or y + ch > h:
            raise ValueError(f'--crop {crop} is outside the {w}x{h} GT')
        panels = [('GT', gt)]
        if not args.no_bicubic:
            lq = read_image(resolve(args.lq, args.image))[0] if args.lq else None
            panels.append(('Bicubic', bicubic_like_gt(gt, lq, args.scale)))
        rows = []
        for name, path in args.method:
            src = resolve(path, args.image)
            img, _ = read_image(src)
            if img.shape[:2] != (h, w):
                fixed = np.zeros_like(gt)
                hh, ww = min(h, img.shape[0]), min(w, img.shape[1])
                fixed[:hh, :ww] = img[:hh, :ww]
                img = fixed
            panels.append((name, img))
            rows.append((name, src))
        size = make_sheet(panels, crop, args.out, args.panel, gt if args.overview else None)
    except (ImageError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print('| panel | source |\n|---|---|')
    print(f'| GT | {resolve(args.gt, args.image)} |')
    for name, src in rows:
        print(f'| {name} | {src} |')
    print(f'\nwrote {args.out} ({size[0]}x{size[1]} px, crop x={crop[0]} y={crop[1]} {crop[2]}x{crop[3]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
