"""Side-by-side zoomed crops: the same region of the GT, bicubic and each method, labelled, as one PNG.

    python scripts/eval/comparison_sheet.py --gt datasets/Set14/GTmod12 --lq datasets/Set14/LRbicx4 --image baboon \
        --method AESOP 'results/test_aesop_rrdb/visualization/Set14' --method LDL results/ldl/Set14 \
        --crop 120 200 96 96 --out baboon_sheet.png
    python scripts/eval/comparison_sheet.py --gt gt.png --method ours out/gt_out.png --out sheet.png   # single files

- ``--gt`` / ``--lq`` / each ``--method`` path is a file, or a folder in which ``--image`` is found by stem
  (BasicSR's ``<stem>_<suffix>`` names are matched).
- ``--crop X Y W H`` in GT pixels (default: a centred square of a quarter of the shorter side). Bicubic is the
  MATLAB-compatible bicubic (BasicSR's ``imresize``) of the LR, or of the GT downscaled by the same kernel when
  no LR is given (``--no-bicubic`` to leave it out). ``--overview`` adds the whole GT (its aspect ratio kept)
  with the crop framed.
- The drawing lives in ``basicsr_ext.utils.comparison`` (also used by ``scripts/quickstart.py``).
- Every panel is ``--panel`` pixels wide (nearest-neighbour zoom, so pixels stay visible) with its label
  under it; the PNG size is exact: ``n * panel + (n + 1) * gap`` wide and written atomically.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

import basicsr_ext  # noqa: F401
from basicsr_ext.utils.comparison import (GAP_PX, LABEL_PX, bicubic_like_gt, default_crop, fit_to,  # noqa: F401
                                          make_sheet, sheet_size)
from basicsr_ext.utils.image_io import ImageError, list_images, match_by_stem, read_image


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
            img = fit_to(img, (h, w))
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
