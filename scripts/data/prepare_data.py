"""Prepare SR datasets the BasicSR way: sub-images, bicubic LR, meta-info files, LMDBs, one-shot recipes.

    python scripts/data/prepare_data.py extract-subimages DIV2K_train_HR datasets/DIV2K/HR_sub
    python scripts/data/prepare_data.py extract-subimages DIV2K_train_LR_bicubic/X4 datasets/DIV2K/LRx4_sub --scale 4
    python scripts/data/prepare_data.py bicubic HR/ LRx4/ --scale 4 [--mod 12] [--hr-out HR_mod12/]
    python scripts/data/prepare_data.py meta-info HR_sub/ meta_info.txt [--lq LRx4_sub/ --scale 4] [--format pairs]
    python scripts/data/prepare_data.py lmdb HR_sub/ [--lq LRx4_sub/ --scale 4] [--overwrite]
    python scripts/data/prepare_data.py prepare --recipe div2k --hr DIV2K_train_HR --out datasets/DIV2K --lmdb
    python scripts/data/prepare_data.py prepare --recipe df2k --hr DIV2K_train_HR Flickr2K_HR --out datasets/DF2K
    python scripts/data/prepare_data.py prepare --recipe imagenet --hr ILSVRC/train --out datasets/ImageNet

Every error (missing/empty folder, GT/LQ mismatch, unreadable image, existing output) exits with status 1 and
a message naming the file or folder. Outputs are built in a temporary folder and renamed at the end. The
logic lives in ``basicsr_ext.data.prep``.
"""
from __future__ import annotations

import argparse
import sys
import time

import basicsr_ext  # noqa: F401  (compat first)
from basicsr_ext.data import prep
from basicsr_ext.data.checks import DatasetError
from basicsr_ext.scripting import markdown_table


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument('--workers', type=int, default=1, help='processes (default 1)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output')
    p.add_argument('--quiet', action='store_true', help='no progress bars')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest='cmd', required=True)

    p = sub.add_parser('extract-subimages', help="BasicSR's DIV2K sub-image recipe (480/240/0 for HR)")
    p.add_argument('input')
    p.add_argument('output')
    p.add_argument('--crop-size', type=int, default=prep.DIV2K_CROP_SIZE, help='HR crop size (default 480)')
    p.add_argument('--step', type=int, default=prep.DIV2K_STEP, help='HR step (default 240)')
    p.add_argument('--thresh-size', type=int, default=prep.DIV2K_THRESH_SIZE, help='HR threshold (default 0)')
    p.add_argument('--scale', type=int, default=1,
                   help='>1: the input is an LR folder at this scale (crop/step/thresh divided by it, "x4" name '
                        'suffixes dropped)')
    p.add_argument('--compress-level', type=int, default=3, help='PNG compression 0-9 (default 3)')
    _common(p)

    p = sub.add_parser('bicubic', help="LR with BasicSR's MATLAB-compatible imresize")
    p.add_argument('hr')
    p.add_argument('lr')
    p.add_argument('--scale', type=int, required=True, choices=[2, 3, 4, 8])
    p.add_argument('--mod', type=int, default=None, help='crop HR to a multiple of this first (default: scale)')
    p.add_argument('--hr-out', default=None, help='also write the mod-cropped HR here')
    p.add_argument('--compress-level', type=int, default=3)
    _common(p)

    p = sub.add_parser('meta-info', help='meta_info file: GT-only or paired (checked against the LQ folder)')
    p.add_argument('gt')
    p.add_argument('output')
    p.add_argument('--lq', default=None, help='LQ folder to pair with (names via --filename-tmpl)')
    p.add_argument('--scale', type=int, default=None, help='check GT size = LQ size x scale')
    p.add_argument('--filename-tmpl', default='{}')
    p.add_argument('--format', choices=['basicsr', 'pairs'], default='basicsr',
                   help="basicsr: 'name (h,w,c)'; pairs: 'gt, lq' (RealESRGANPairedDataset)")
    p.add_argument('--recursive', action='store_true')
    p.add_argument('--verify', action='store_true', help='decode every image (default: headers only)')
    _common(p)

    p = sub.add_parser('lmdb', help='GT-only or paired LMDB (make_lmdb_from_imgs)')
    p.add_argument('gt', help='GT (or single) image folder')
    p.add_argument('--lq', default=None, help='LQ folder: build a paired GT/LQ LMDB with the same keys')
    p.add_argument('--gt-out', default=None, help='default: <gt>.lmdb')
    p.add_argument('--lq-out', default=None, help='default: <lq>.lmdb')
    p.add_argument('--scale', type=int, default=None, help='check GT size = LQ size x scale')
    p.add_argument('--filename-tmpl', default='{}')
    p.add_argument('--recursive', action='store_true', help='GT-only: include sub-folders (keys keep the path)')
    p.add_argument('--compress-level', type=int, default=1)
    _common(p)

    p = sub.add_parser('prepare', help='one-shot recipe: div2k, df2k or imagenet')
    p.add_argument('--recipe', choices=prep.RECIPES, required=True)
    p.add_argument('--hr', nargs='+', required=True, help='HR folder(s) (df2k: DIV2K_train_HR Flickr2K_HR)')
    p.add_argument('--lr', nargs='+', default=None, help='existing LR folder per scale (default: bicubic)')
    p.add_argument('--out', required=True)
    p.add_argument('--scales', type=int, nargs='+', default=[4])
    p.add_argument('--crop-size', type=int, default=prep.DIV2K_CROP_SIZE)
    p.add_argument('--step', type=int, default=prep.DIV2K_STEP)
    p.add_argument('--thresh-size', type=int, default=prep.DIV2K_THRESH_SIZE)
    p.add_argument('--mod', type=int, default=None, help='HR mod-crop (div2k: lcm of scales, df2k: 12)')
    p.add_argument('--lmdb', action='store_true', help='also build LMDBs')
    p.add_argument('--min-size', type=int, default=0, help='imagenet: skip images with a side below this')
    _common(p)
    return parser


def run(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    progress = not args.quiet
    common = dict(workers=args.workers, overwrite=args.overwrite, progress=progress)
    if args.cmd == 'extract-subimages':
        n = prep.extract_subimages(args.input, args.output, args.crop_size, args.step, args.thresh_size, args.scale,
                                   compress_level=args.compress_level, **common)
        return [('sub-images', args.output, n)]
    if args.cmd == 'bicubic':
        names = prep.bicubic_downscale(args.hr, args.lr, args.scale, mod=args.mod, hr_mod_folder=args.hr_out,
                                       compress_level=args.compress_level, **common)
        rows = [(f'LR x{args.scale}', args.lr, len(names))]
        return rows + ([('HR (mod-cropped)', args.hr_out, len(names))] if args.hr_out else [])
    if args.cmd == 'meta-info':
        n = prep.write_meta_info(args.gt, args.output, lq_folder=args.lq, scale=args.scale,
                                 filename_tmpl=args.filename_tmpl, fmt=args.format, recursive=args.recursive,
                                 overwrite=args.overwrite, verify=args.verify, progress=progress)
        return [('meta-info', args.output, n)]
    if args.cmd == 'lmdb':
        common['compress_level'] = args.compress_level
        if args.lq:
            keys = prep.make_paired_lmdb(args.gt, args.lq, args.gt_out, args.lq_out, scale=args.scale,
                                         filename_tmpl=args.filename_tmpl, **common)
            gt_out = args.gt_out or args.gt.rstrip('/\\') + '.lmdb'
            lq_out = args.lq_out or args.lq.rstrip('/\\') + '.lmdb'
            return [('GT LMDB', gt_out, len(keys)), ('LQ LMDB', lq_out, len(keys))]
        keys = prep.make_lmdb(args.gt, args.gt_out, recursive=args.recursive, **common)
        return [('LMDB', args.gt_out or args.gt.rstrip('/\\') + '.lmdb', len(keys))]
    paths = prep.prepare_dataset(args.recipe, args.hr, args.out, scales=args.scales, lr_folders=args.lr,
                                 crop_size=args.crop_size, step=args.step, thresh_size=args.thresh_size,
                                 mod=args.mod, lmdb=args.lmdb, min_size=args.min_size, **common)
    return prep.describe_outputs(paths)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.time()
    try:
        rows = run(args)
    except DatasetError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted: no partial output was left behind', file=sys.stderr)
        return 130
    print('\n' + markdown_table(['output', 'path', 'entries'], rows))
    print(f'\n{args.cmd} done in {time.time() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
