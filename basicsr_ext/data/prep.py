"""Dataset preparation: BasicSR's recipes (sub-images, bicubic LR, meta-info, LMDB) as importable functions.

``scripts/data/prepare_data.py`` is the command line; tests and ``scripts/quickstart.py`` call these functions.

- :func:`extract_subimages`: BasicSR's DIV2K recipe (``crop_size`` 480, ``step`` 240, ``thresh_size`` 0 for HR;
  an LR folder at scale ``s`` uses ``crop_size/s``, ``step/s``, ``thresh_size/s`` and drops a trailing ``x{s}``
  from its names, so that ``0001x4.png`` and ``0001.png`` give the same sub-image names ``0001_s001.png``).
  Positions: ``0, step, 2*step, ...`` while the crop fits, plus a last crop flush with the border when more than
  ``thresh_size`` pixels would be left over. A side shorter than the crop gives one crop of that whole side
  (BasicSR would fail on it); for an HR/LR pair the two folders still match.
- :func:`bicubic_downscale`: LR with BasicSR's MATLAB-compatible ``imresize`` (antialiased bicubic), after
  cropping the HR to a multiple of ``mod`` (default: the scale); the cropped HR can be written too.
- :func:`write_meta_info`: ``name (h,w,c)`` lines (BasicSR's GT meta-info; paired: checked against the LQ
  folder first) or ``gt, lq`` lines (``RealESRGANPairedDataset``).
- :func:`make_lmdb` / :func:`make_paired_lmdb`: through ``basicsr.utils.lmdb_util.make_lmdb_from_imgs`` after
  every image has been decoded once (so a bad file is named before anything is written); built in a hidden
  temporary folder next to the target and renamed at the end, so an interrupt never leaves a half LMDB.
- :func:`prepare_dataset`: one-shot recipes ``div2k``, ``df2k`` (several HR folders, HR cropped to a multiple of
  12 as in LDL/AESOP) and ``imagenet`` (GT-only: recursive meta-info of relative paths, optional LMDB).

Every output folder/file is written atomically and an existing one is refused unless ``overwrite=True``.
Images are read with :func:`basicsr_ext.utils.image_io.read_image` (header and pixel-limit check, then OpenCV);
every failure is a :class:`~basicsr_ext.data.checks.DatasetError` naming the file or folder. Outputs are PNG
(lossless) with the input's bit depth (8 or 16), grayscale replicated to 3 channels, alpha dropped (as
BasicSR's ``imfrombytes`` reads them).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import os.path as osp
import shutil
import sys
from multiprocessing import Pool
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from basicsr_ext.data.checks import DatasetError, check_relative_name, image_shape
from basicsr_ext.utils import image_io
from basicsr_ext.utils.atomic import write_bytes_atomic, write_text_atomic
from basicsr_ext.utils.image_io import ImageError, quantize, read_image

# BasicSR's DIV2K recipe (scripts/data_preparation/extract_subimages.py)
DIV2K_CROP_SIZE, DIV2K_STEP, DIV2K_THRESH_SIZE = 480, 240, 0
RECIPES = ('div2k', 'df2k', 'imagenet')


# ----------------------------------------------------------------------------------------------------------
# listing, reading, writing
# ----------------------------------------------------------------------------------------------------------
def list_images(folder: str, recursive: bool = False) -> list[str]:
    """:func:`basicsr_ext.utils.image_io.list_images`, relative to ``folder``; DatasetError if missing or empty."""
    if not osp.exists(folder):
        raise DatasetError(f'folder not found: {folder}')
    if not osp.isdir(folder):
        raise DatasetError(f'not a folder: {folder}')
    out = image_io.list_images(folder, recursive, relative=True)
    if not out:
        raise DatasetError(f'no images in {folder} (extensions: {", ".join(image_io.IMAGE_EXTENSIONS)}'
                           f'{"; searched recursively" if recursive else "; sub-folders not searched"})')
    return out


def load_image(path: str) -> np.ndarray:
    """One image as H x W x 3 BGR uint8 (uint16 for 16-bit files); DatasetError naming the file."""
    try:
        img, info = read_image(path, channel_order='bgr', gray='rgb')
    except ImageError as e:
        raise DatasetError(f'unreadable image {e.path}: {e.reason}') from None
    return quantize(img, 16 if info.bit_depth == 16 else 8)


def save_png(path: str, img: np.ndarray, compress_level: int = 3) -> None:
    """Write a BGR uint8/uint16 array as PNG (temporary name + rename; the umask decides the permissions)."""
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)])
    if not ok:
        raise DatasetError(f'OpenCV could not encode {path}')
    write_bytes_atomic(path, buf.tobytes(), fsync=False)  # no fsync per file: prep stages whole folders


def _write_text(path: str, lines: Iterable[str]) -> None:
    write_text_atomic(path, ''.join(line + '\n' for line in lines), fsync=False)


@contextlib.contextmanager
def staged_outputs(finals: Sequence[str], overwrite: bool = False) -> Iterator[list[str]]:
    """Build outputs in hidden temporary paths next to ``finals``; rename them in place only on success.

    An existing final path is refused (DatasetError) unless ``overwrite``; then it is replaced only after the
    new one is complete. On any exception (including KeyboardInterrupt) the temporary paths are removed.
    """
    for final in finals:
        if osp.lexists(final) and not overwrite:
            raise DatasetError(f'{final} already exists; pass --overwrite (overwrite=True) to replace it')
    temps = []
    for final in finals:
        final = osp.abspath(final)
        parent, base = osp.split(final)
        os.makedirs(parent, exist_ok=True)
        ext = '.lmdb' if base.endswith('.lmdb') else ''
        tmp = osp.join(parent, f'.{base}.partial-{os.getpid()}{ext}')
        _remove(tmp)
        temps.append(tmp)
    try:
        yield temps
    except BaseException:
        for tmp in temps:
            _remove(tmp)
        raise
    for tmp, final in zip(temps, finals):
        final = osp.abspath(final)
        if osp.lexists(final):
            old = osp.join(osp.dirname(final), f'.{osp.basename(final)}.old-{os.getpid()}')
            _remove(old)
            os.rename(final, old)
            os.rename(tmp, final)
            _remove(old)
        else:
            os.rename(tmp, final)


def _remove(path: str) -> None:
    if osp.isdir(path) and not osp.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif osp.lexists(path):
        os.remove(path)


def _map(fn: Callable, items: Sequence[Any], workers: int, desc: str, progress: bool) -> list[Any]:
    """``[fn(x) for x in items]`` with an optional process pool and a tqdm bar (order kept)."""
    from tqdm import tqdm
    bar = tqdm(total=len(items), unit='img', desc=desc, disable=not progress, file=sys.stderr)
    out = []
    try:
        if workers > 1 and len(items) > 1:
            with Pool(min(workers, len(items))) as pool:
                for r in pool.imap(fn, items, chunksize=1):
                    out.append(r)
                    bar.update(1)
        else:
            for x in items:
                out.append(fn(x))
                bar.update(1)
    finally:
        bar.close()
    return out


# ----------------------------------------------------------------------------------------------------------
# sub-images
# ----------------------------------------------------------------------------------------------------------
def crop_positions(length: int, crop: int, step: int, thresh: int) -> list[int]:
    """Top/left corners along one side (BasicSR's rule; a side shorter than ``crop`` gives ``[0]``)."""
    if length <= crop:
        return [0]
    pos = list(range(0, length - crop + 1, step))
    if length - (pos[-1] + crop) > thresh:
        pos.append(length - crop)
    return pos


def strip_scale_suffix(stem: str, scale: int) -> str:
    """``0001x4`` -> ``0001`` for scale 4 (DIV2K's LR names); other stems unchanged."""
    suffix = f'x{scale}'
    return stem[:-len(suffix)] if scale > 1 and stem.endswith(suffix) and len(stem) > len(suffix) else stem


def _subimage_job(args: tuple) -> tuple[str, int]:
    src, out_dir, stem, crop, step, thresh, level = args
    img = load_image(src)
    h, w = img.shape[:2]
    n = 0
    for y in crop_positions(h, crop, step, thresh):
        for x in crop_positions(w, crop, step, thresh):
            n += 1
            patch = img[y:y + min(crop, h), x:x + min(crop, w)]
            save_png(osp.join(out_dir, f'{stem}_s{n:03d}.png'), patch, level)
    return src, n


def extract_subimages(input_folder: str, output_folder: str, crop_size: int = DIV2K_CROP_SIZE,
                      step: int = DIV2K_STEP, thresh_size: int = DIV2K_THRESH_SIZE, scale: int = 1,
                      compress_level: int = 3, workers: int = 1, overwrite: bool = False,
                      progress: bool = True) -> int:
    """Cut every image of ``input_folder`` into overlapping crops written to ``output_folder`` (PNG).

    ``scale`` > 1 marks an LR folder: crop, step and threshold are divided by it (they must be multiples), and a
    trailing ``x{scale}`` is dropped from names. Returns the number of sub-images written.
    """
    for name, v in (('crop_size', crop_size), ('step', step), ('thresh_size', thresh_size)):
        if v % scale:
            raise DatasetError(f'{name} {v} is not a multiple of scale {scale}')
    if crop_size <= 0 or step <= 0 or thresh_size < 0:
        raise DatasetError(f'crop_size and step must be positive and thresh_size >= 0, got {crop_size}, {step}, '
                           f'{thresh_size}')
    names = list_images(input_folder)
    stems: dict[str, str] = {}
    for n in names:
        stem = strip_scale_suffix(osp.splitext(n)[0], scale)
        if stem in stems:
            raise DatasetError(f'{input_folder}: {stems[stem]} and {n} would give the same sub-image names')
        stems[stem] = n
    crop, st, th = crop_size // scale, step // scale, thresh_size // scale
    with staged_outputs([output_folder], overwrite) as (tmp, ):
        os.makedirs(tmp)
        jobs = [(osp.join(input_folder, n), tmp, s, crop, st, th, compress_level) for s, n in stems.items()]
        counts = _map(_subimage_job, jobs, workers, f'sub-images {osp.basename(output_folder)}', progress)
    return sum(n for _, n in counts)


# ----------------------------------------------------------------------------------------------------------
# bicubic LR
# ----------------------------------------------------------------------------------------------------------
def mod_crop(img: np.ndarray, mod: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``mod``."""
    h, w = img.shape[:2]
    return img[:h - h % mod, :w - w % mod]


def bicubic_resize(img: np.ndarray, scale: float) -> np.ndarray:
    """BasicSR's MATLAB-compatible ``imresize`` (antialiased bicubic) on a uint8/uint16 image, same dtype out."""
    from basicsr.utils.matlab_functions import imresize
    peak = 65535.0 if img.dtype == np.uint16 else 255.0
    out = imresize(img.astype(np.float64) / peak, scale)
    out = np.asarray(out, dtype=np.float32)
    return quantize(out, 16 if img.dtype == np.uint16 else 8)


def _bicubic_job(args: tuple) -> tuple[str, tuple[int, int]]:
    src, lr_path, hr_path, scale, mod, level = args
    img = load_image(src)
    img = mod_crop(img, mod)
    if img.shape[0] < scale or img.shape[1] < scale:
        raise DatasetError(f'{src}: {img.shape[0]}x{img.shape[1]} is too small for scale {scale}')
    if hr_path:
        save_png(hr_path, img, level)
    save_png(lr_path, bicubic_resize(img, 1.0 / scale), level)
    return src, img.shape[:2]


def bicubic_downscale(hr_folder: str, lr_folder: str, scale: int, mod: int | None = None,
                      hr_mod_folder: str | None = None, compress_level: int = 3, workers: int = 1,
                      overwrite: bool = False, progress: bool = True) -> list[str]:
    """Bicubic LR (x1/scale) of every image of ``hr_folder`` into ``lr_folder`` (same stems, ``.png``).

    The HR is first cropped to a multiple of ``mod`` (default ``scale``; must be a multiple of it);
    ``hr_mod_folder`` also receives the cropped HR. Returns the written names.
    """
    if scale not in (2, 3, 4, 8) and not (isinstance(scale, int) and scale >= 2):
        raise DatasetError(f'scale must be an integer >= 2, got {scale!r}')
    mod = mod or scale
    if mod % scale:
        raise DatasetError(f'mod {mod} is not a multiple of scale {scale}')
    names = list_images(hr_folder)
    out_names = _unique_png_names(hr_folder, names)
    finals = [lr_folder] + ([hr_mod_folder] if hr_mod_folder else [])
    with staged_outputs(finals, overwrite) as tmps:
        for t in tmps:
            os.makedirs(t)
        jobs = [(osp.join(hr_folder, n), osp.join(tmps[0], o), osp.join(tmps[1], o) if hr_mod_folder else None,
                 scale, mod, compress_level) for n, o in zip(names, out_names)]
        _map(_bicubic_job, jobs, workers, f'bicubic x{scale}', progress)
    return out_names


def _unique_png_names(folder: str, names: Sequence[str]) -> list[str]:
    out, seen = [], {}
    for n in names:
        o = osp.splitext(osp.basename(n))[0] + '.png'
        if o in seen:
            raise DatasetError(f'{folder}: {seen[o]} and {n} would both be written as {o}')
        seen[o] = n
        out.append(o)
    return out


# ----------------------------------------------------------------------------------------------------------
# meta-info and pairing
# ----------------------------------------------------------------------------------------------------------
def pair_names(gt_folder: str, lq_folder: str, filename_tmpl: str = '{}',
               recursive: bool = False) -> list[tuple[str, str]]:
    """(GT name, LQ name) for every GT image, as BasicSR pairs them; DatasetError on any mismatch."""
    gt_names, lq_names = list_images(gt_folder, recursive), list_images(lq_folder, recursive)
    lq_set = set(lq_names)
    pairs, no_lq = [], []
    for g in gt_names:
        d, base = osp.split(g)
        stem, ext = osp.splitext(base)
        q = osp.join(d, f'{filename_tmpl.format(stem)}{ext}').replace(os.sep, '/')
        (pairs if q in lq_set else no_lq).append((g, q))
    no_gt = lq_set - {q for _, q in pairs}
    if no_lq or no_gt:
        raise DatasetError(f'GT folder {gt_folder} ({len(gt_names)} images) and LQ folder {lq_folder} '
                           f'({len(lq_names)} images) do not pair up (filename_tmpl {filename_tmpl!r}): GT without LQ: '
                           f'{", ".join(g for g, _ in no_lq[:5]) or "-"}; LQ without GT: '
                           f'{", ".join(sorted(no_gt)[:5]) or "-"}')
    return pairs


def check_pair_size(gt_file: str, gt: tuple[int, ...], lq_file: str, lq: tuple[int, ...], scale: int) -> None:
    if gt[0] != lq[0] * scale or gt[1] != lq[1] * scale:
        raise DatasetError(f'size mismatch for scale {scale}: {gt_file} is {gt[0]}x{gt[1]} (HxW), {lq_file} is '
                           f'{lq[0]}x{lq[1]}; expected GT = LQ x {scale}')


def _check_meta_name(name: str, folder: str) -> None:
    check_relative_name(name, folder)
    if ' ' in name or ',' in name:
        raise DatasetError(f'{osp.join(folder, name)}: a space or comma in the name breaks meta-info files; '
                           'rename the file')


def write_meta_info(gt_folder: str, out_path: str, lq_folder: str | None = None, scale: int | None = None,
                    filename_tmpl: str = '{}', fmt: str = 'basicsr', recursive: bool = False,
                    overwrite: bool = False, verify: bool = False, progress: bool = True) -> int:
    """Write a meta-info file for ``gt_folder`` (and check it against ``lq_folder`` when given).

    ``fmt='basicsr'``: ``name (h,w,c)`` per GT image (sizes from headers; BasicSR's GT meta-info, read by
    ``PairedImageDataset``/``GTOnlyDataset`` ``meta_info_file`` and ``RealESRGANDataset`` ``meta_info``).
    ``fmt='pairs'``: ``gt_name, lq_name`` (``RealESRGANPairedDataset``). With ``lq_folder`` every GT must have its
    LQ (``filename_tmpl``) and, with ``scale``, GT size = LQ size x scale. ``verify`` decodes every image.
    Returns the number of lines.
    """
    if fmt not in ('basicsr', 'pairs'):
        raise DatasetError(f"meta-info format must be 'basicsr' or 'pairs', got {fmt!r}")
    if fmt == 'pairs' and lq_folder is None:
        raise DatasetError("meta-info format 'pairs' needs an LQ folder")
    if osp.lexists(out_path) and not overwrite:
        raise DatasetError(f'{out_path} already exists; pass --overwrite (overwrite=True) to replace it')
    if lq_folder is not None:
        pairs = pair_names(gt_folder, lq_folder, filename_tmpl, recursive)
    else:
        pairs = [(g, None) for g in list_images(gt_folder, recursive)]
    for g, q in pairs:
        _check_meta_name(g, gt_folder)
        if q is not None:
            _check_meta_name(q, lq_folder)
    shapes = _map(_shape_job, [(osp.join(gt_folder, g), osp.join(lq_folder, q) if q else None, verify)
                               for g, q in pairs], 1, 'meta-info', progress)
    lines = []
    for (g, q), (gt_shape, lq_shape) in zip(pairs, shapes):
        if scale and lq_shape is not None:
            check_pair_size(osp.join(gt_folder, g), gt_shape, osp.join(lq_folder, q), lq_shape, scale)
        lines.append(f'{g}, {q}' if fmt == 'pairs' else f'{g} ({gt_shape[0]},{gt_shape[1]},{gt_shape[2]})')
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    _write_text(out_path, lines)
    return len(lines)


def _shape_job(args: tuple) -> tuple[tuple[int, int, int], tuple[int, int, int] | None]:
    gt, lq, verify = args
    out = []
    for f in (gt, lq):
        if f is None:
            out.append(None)
        elif verify:
            img = load_image(f)
            out.append((img.shape[0], img.shape[1], image_shape(f)[2]))
        else:
            out.append(image_shape(f))
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------------------
# LMDB
# ----------------------------------------------------------------------------------------------------------
def lmdb_key(name: str, folder: str) -> str:
    """BasicSR's LMDB key of an image: its relative path without extension (ASCII, no '.', no space)."""
    key = osp.splitext(name)[0].replace(os.sep, '/')
    if not key.isascii() or '.' in key or ' ' in key or not key:
        raise DatasetError(f'{osp.join(folder, name)}: cannot be an LMDB key {key!r} (BasicSR keys must be ASCII, '
                           "without '.' (it takes the key before the first '.') and without spaces); rename the file")
    return key


def _decode_job(path: str) -> tuple[int, int, int, int]:
    """Header check (image, pixel limit), then one OpenCV decode, as make_lmdb_from_imgs will read it.

    Returns (h, w, c, raw bytes); DatasetError naming the file if it is not an image or does not decode.
    """
    h, w, _ = image_shape(path)
    try:
        raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        raw = None
    if raw is None or raw.shape[:2] != (h, w):
        raise DatasetError(f'unreadable image {path}: OpenCV cannot decode it (truncated or corrupt?)')
    return h, w, 1 if raw.ndim == 2 else raw.shape[2], raw.nbytes


def _verify_for_lmdb(folder: str, names: Sequence[str], workers: int, progress: bool) -> list[tuple]:
    return _map(_decode_job, [osp.join(folder, n) for n in names], workers, f'check {osp.basename(folder)}',
                progress)


def _write_lmdb(folder: str, names: Sequence[str], keys: Sequence[str], tmp_path: str,
                stats: Sequence[tuple], compress_level: int, workers: int, progress: bool) -> None:
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    raw_total = sum(s[3] for s in stats)
    # PNG at level >= 1 is at most a little above the raw size; LMDB pages add up to a page per value
    map_size = int(raw_total * 1.5) + 8192 * len(names) + (64 << 20)
    quiet = contextlib.ExitStack()
    if not progress:  # make_lmdb_from_imgs prints and draws its own bars
        quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
        quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
    with quiet:
        make_lmdb_from_imgs(folder, tmp_path, list(names), list(keys), compress_level=compress_level,
                            multiprocessing_read=workers > 1, n_thread=max(1, workers), map_size=map_size)


def make_lmdb(folder: str, lmdb_path: str | None = None, recursive: bool = False, compress_level: int = 1,
              workers: int = 1, overwrite: bool = False, progress: bool = True) -> list[str]:
    """GT-only (or any single-folder) LMDB of every image in ``folder`` (keys: names without extension).

    Returns the keys. ``lmdb_path`` defaults to ``folder + '.lmdb'``.
    """
    lmdb_path = lmdb_path or folder.rstrip('/\\') + '.lmdb'
    if not lmdb_path.endswith('.lmdb'):
        raise DatasetError(f"LMDB path must end with '.lmdb': {lmdb_path}")
    if osp.lexists(lmdb_path) and not overwrite:
        raise DatasetError(f'{lmdb_path} already exists; pass --overwrite (overwrite=True) to replace it')
    names = list_images(folder, recursive)
    keys = _unique_keys(folder, names)
    stats = _verify_for_lmdb(folder, names, workers, progress)
    with staged_outputs([lmdb_path], overwrite) as (tmp, ):
        _write_lmdb(folder, names, keys, tmp, stats, compress_level, workers, progress)
    return keys


def _unique_keys(folder: str, names: Sequence[str]) -> list[str]:
    keys, seen = [], {}
    for n in names:
        k = lmdb_key(n, folder)
        if k in seen:
            raise DatasetError(f'{folder}: {seen[k]} and {n} have the same LMDB key {k!r} (BasicSR #16)')
        seen[k] = n
        keys.append(k)
    return keys


def make_paired_lmdb(gt_folder: str, lq_folder: str, gt_lmdb: str | None = None, lq_lmdb: str | None = None,
                     scale: int | None = None, filename_tmpl: str = '{}', compress_level: int = 1,
                     workers: int = 1, overwrite: bool = False, progress: bool = True) -> list[str]:
    """GT and LQ LMDBs with the same keys (the GT names) for ``PairedImageDataset`` with ``io_backend: lmdb``.

    Every pair is decoded and checked (names, and with ``scale`` the sizes) before anything is written; both
    databases are renamed into place together at the end. Returns the keys.
    """
    gt_lmdb = gt_lmdb or gt_folder.rstrip('/\\') + '.lmdb'
    lq_lmdb = lq_lmdb or lq_folder.rstrip('/\\') + '.lmdb'
    for p in (gt_lmdb, lq_lmdb):
        if not p.endswith('.lmdb'):
            raise DatasetError(f"LMDB path must end with '.lmdb': {p}")
        if osp.lexists(p) and not overwrite:
            raise DatasetError(f'{p} already exists; pass --overwrite (overwrite=True) to replace it')
    pairs = pair_names(gt_folder, lq_folder, filename_tmpl)
    keys = _unique_keys(gt_folder, [g for g, _ in pairs])
    gt_stats = _verify_for_lmdb(gt_folder, [g for g, _ in pairs], workers, progress)
    lq_stats = _verify_for_lmdb(lq_folder, [q for _, q in pairs], workers, progress)
    if scale:
        for (g, q), gs, qs in zip(pairs, gt_stats, lq_stats):
            check_pair_size(osp.join(gt_folder, g), gs, osp.join(lq_folder, q), qs, scale)
    with staged_outputs([gt_lmdb, lq_lmdb], overwrite) as (gt_tmp, lq_tmp):
        _write_lmdb(gt_folder, [g for g, _ in pairs], keys, gt_tmp, gt_stats, compress_level, workers, progress)
        _write_lmdb(lq_folder, [q for _, q in pairs], keys, lq_tmp, lq_stats, compress_level, workers, progress)
    return keys


# ----------------------------------------------------------------------------------------------------------
# one-shot recipes
# ----------------------------------------------------------------------------------------------------------
def _merge_hr(hr_folders: Sequence[str], out_folder: str, mod: int, workers: int, overwrite: bool,
              progress: bool) -> None:
    """Copy several HR folders into one, cropped to a multiple of ``mod`` (PNG); names must not collide."""
    jobs, seen = [], {}
    with staged_outputs([out_folder], overwrite) as (tmp, ):
        os.makedirs(tmp)
        for folder in hr_folders:
            for n in list_images(folder):
                o = osp.splitext(n)[0] + '.png'
                if o in seen:
                    raise DatasetError(f'{osp.join(folder, n)} and {seen[o]} have the same name; the HR folders '
                                       'cannot be merged')
                seen[o] = osp.join(folder, n)
                jobs.append((seen[o], osp.join(tmp, o), mod))
        _map(_modcrop_job, jobs, workers, 'HR (mod-crop)', progress)


def _modcrop_job(args: tuple) -> None:
    src, dst, mod = args
    save_png(dst, mod_crop(load_image(src), mod))


def prepare_dataset(recipe: str, hr_folders: Sequence[str], out_folder: str, scales: Sequence[int] = (4, ),
                    lr_folders: Sequence[str] | None = None, crop_size: int = DIV2K_CROP_SIZE,
                    step: int = DIV2K_STEP, thresh_size: int = DIV2K_THRESH_SIZE, mod: int | None = None,
                    lmdb: bool = False, min_size: int = 0, workers: int = 1, overwrite: bool = False,
                    progress: bool = True) -> dict[str, str]:
    """One-shot preparation; returns the produced paths by role.

    ``div2k`` / ``df2k`` (paired synthetic SR, under ``out_folder``):
      ``HR/`` (the HR folders merged and cropped to a multiple of ``mod``; DIV2K default: the lcm of the
      scales, DF2K default: 12 as LDL/AESOP), ``LRx{s}/`` (bicubic, or the given ``lr_folders`` which must then
      pair exactly with the HR), ``HR_sub/`` and ``LRx{s}_sub/`` (sub-images), ``meta_info_HR_sub.txt`` and with
      ``lmdb`` ``HR_sub.lmdb`` / ``LRx{s}_sub.lmdb``.
    ``imagenet`` (GT-only, the images stay where they are): ``meta_info_GT.txt`` listing every image under the
      (single) HR folder recursively, relative to it, with its size (images smaller than ``min_size`` on
      either side are left out); with ``lmdb`` also ``GT.lmdb`` (keys: relative paths without extension).
    """
    if recipe not in RECIPES:
        raise DatasetError(f'unknown recipe {recipe!r}; choose one of {", ".join(RECIPES)}')
    if not hr_folders:
        raise DatasetError('no HR folder given')
    for f in hr_folders:
        list_images(f, recursive=recipe == 'imagenet')  # named error for a missing or empty folder
    os.makedirs(out_folder, exist_ok=True)
    out: dict[str, str] = {}
    if recipe == 'imagenet':
        return _prepare_gt_only(hr_folders, out_folder, lmdb, min_size, workers, overwrite, progress)
    scales = sorted(set(int(s) for s in scales))
    if lr_folders and len(lr_folders) != len(scales):
        raise DatasetError(f'{len(lr_folders)} LR folders given for {len(scales)} scales')
    if mod is None:
        mod = 12 if recipe == 'df2k' else math.lcm(*scales)
    for s in scales:
        if mod % s:
            raise DatasetError(f'mod {mod} is not a multiple of scale {s}')
    hr = out['HR'] = osp.join(out_folder, 'HR')
    if lr_folders:
        if len(hr_folders) != 1:
            raise DatasetError('given LR folders need exactly one HR folder')
        hr = out['HR'] = hr_folders[0]
    else:
        _merge_hr(hr_folders, hr, mod, workers, overwrite, progress)
    for i, s in enumerate(scales):
        lr = out[f'LRx{s}'] = osp.join(out_folder, f'LRx{s}')
        if lr_folders:
            lr = out[f'LRx{s}'] = lr_folders[i]
            _check_given_lr(hr, lr, s)
        else:
            bicubic_downscale(hr, lr, s, mod=s, workers=workers, overwrite=overwrite, progress=progress)
    out['HR_sub'] = osp.join(out_folder, 'HR_sub')
    extract_subimages(hr, out['HR_sub'], crop_size, step, thresh_size, 1, workers=workers, overwrite=overwrite,
                      progress=progress)
    for s in scales:
        out[f'LRx{s}_sub'] = osp.join(out_folder, f'LRx{s}_sub')
        extract_subimages(out[f'LRx{s}'], out[f'LRx{s}_sub'], crop_size, step, thresh_size, s, workers=workers,
                          overwrite=overwrite, progress=progress)
    out['meta_info'] = osp.join(out_folder, 'meta_info_HR_sub.txt')
    write_meta_info(out['HR_sub'], out['meta_info'], overwrite=overwrite, progress=progress)
    if lmdb:
        out['HR_sub.lmdb'] = osp.join(out_folder, 'HR_sub.lmdb')
        for s in scales:
            lr_db = out[f'LRx{s}_sub.lmdb'] = osp.join(out_folder, f'LRx{s}_sub.lmdb')
            if s == scales[0]:
                make_paired_lmdb(out['HR_sub'], out[f'LRx{s}_sub'], out['HR_sub.lmdb'], lr_db, scale=s,
                                 workers=workers, overwrite=overwrite, progress=progress)
            else:
                pair_names(out['HR_sub'], out[f'LRx{s}_sub'])
                make_lmdb(out[f'LRx{s}_sub'], lr_db, workers=workers, overwrite=overwrite, progress=progress)
    return out


def _check_given_lr(hr: str, lr: str, scale: int) -> None:
    stems = {}
    for n in list_images(lr):
        stems[strip_scale_suffix(osp.splitext(n)[0], scale)] = n
    for g in list_images(hr):
        stem = osp.splitext(g)[0]
        if stem not in stems:
            raise DatasetError(f'no LR x{scale} image in {lr} for {osp.join(hr, g)} (tried {stem} and {stem}x{scale})')
        check_pair_size(osp.join(hr, g), image_shape(osp.join(hr, g)), osp.join(lr, stems[stem]),
                        image_shape(osp.join(lr, stems[stem])), scale)


def _prepare_gt_only(hr_folders: Sequence[str], out_folder: str, lmdb: bool, min_size: int, workers: int,
                     overwrite: bool, progress: bool) -> dict[str, str]:
    if len(hr_folders) != 1:
        raise DatasetError('the imagenet recipe takes one HR folder (its sub-folders are searched)')
    root = hr_folders[0]
    names = list_images(root, recursive=True)
    for n in names:
        _check_meta_name(n, root)
    shapes = _map(image_shape, [osp.join(root, n) for n in names], workers, 'headers', progress)
    kept = [(n, s) for n, s in zip(names, shapes) if min(s[:2]) >= min_size]
    if not kept:
        raise DatasetError(f'no image in {root} has both sides >= min_size {min_size}')
    out = {'GT': root, 'meta_info': osp.join(out_folder, 'meta_info_GT.txt')}
    if osp.lexists(out['meta_info']) and not overwrite:
        raise DatasetError(f'{out["meta_info"]} already exists; pass --overwrite (overwrite=True) to replace it')
    _write_text(out['meta_info'], [f'{n} ({s[0]},{s[1]},{s[2]})' for n, s in kept])
    if lmdb:
        out['GT.lmdb'] = osp.join(out_folder, 'GT.lmdb')
        kept_names = [n for n, _ in kept]
        keys = _unique_keys(root, kept_names)
        if osp.lexists(out['GT.lmdb']) and not overwrite:
            raise DatasetError(f'{out["GT.lmdb"]} already exists; pass --overwrite (overwrite=True) to replace it')
        stats = _verify_for_lmdb(root, kept_names, workers, progress)
        with staged_outputs([out['GT.lmdb']], overwrite) as (tmp, ):
            _write_lmdb(root, kept_names, keys, tmp, stats, 1, workers, progress)
    return out


def describe_outputs(paths: dict[str, str]) -> list[tuple[str, str, int]]:
    """(role, path, number of entries) for a Markdown summary."""
    rows = []
    for role, p in paths.items():
        if p.endswith('.lmdb') and osp.isdir(p):
            n = sum(1 for _ in open(osp.join(p, 'meta_info.txt')))
        elif osp.isdir(p):
            n = len(image_io.list_images(p))
        elif osp.isfile(p):
            n = sum(1 for _ in open(p))
        else:
            n = 0
        rows.append((role, p, n))
    return rows


__all__ = [
    'DatasetError', 'list_images', 'load_image', 'save_png', 'staged_outputs', 'crop_positions', 'extract_subimages',
    'mod_crop', 'bicubic_resize', 'bicubic_downscale', 'pair_names', 'write_meta_info', 'lmdb_key', 'make_lmdb',
    'make_paired_lmdb', 'prepare_dataset', 'describe_outputs', 'RECIPES', 'strip_scale_suffix'
]
