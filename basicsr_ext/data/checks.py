"""Dataset options are checked when the dataset is BUILT, not when iteration N reads a bad file.

BasicSR 1.4.2 builds a dataset from its options without looking at the data: a missing folder, a GT/LQ count
mismatch, an LMDB whose ``meta_info.txt`` names keys the database lacks, or a pair whose sizes disagree with the
scale surface later as ``AssertionError``, ``ZeroDivisionError`` or ``'NoneType' object has no attribute 'astype'``
(BasicSR #243, Real-ESRGAN #703, BasicSR #16). :func:`checked_build_dataset` takes the place of BasicSR's
``build_dataset`` (``basicsr_ext.patches``, entry ``dataset_checks``) so that, for the types in :data:`DATASET_CHECKS`
(``PairedImageDataset``, ``SingleImageDataset``, ``RealESRGANDataset``, ``GTOnlyDataset``), with disk or LMDB
backends, these fail at build with a :class:`DatasetError` naming the option, file or key:

- a missing folder / LMDB / meta-info file, an empty folder, database or meta-info file; an LMDB whose
  ``data.mdb`` is shorter than its meta page says (truncated: reading it would be a SIGBUS, exit 135);
- an LMDB whose ``meta_info.txt`` names keys missing from the database, or the reverse; GT/LQ LMDBs with
  different keys;
- a meta-info line that escapes the dataset root (absolute path or a ``..`` component);
- GT/LQ name or count mismatches between folders (with ``filename_tmpl``); files that are not images;
- GT/LQ sizes that disagree with ``scale`` (LMDB: from ``meta_info.txt``, every entry; folders: from image
  headers), and, for ``phase: train``, GT images smaller than ``gt_size``.

Dataset-block options (both optional):

- ``check: true|false`` (default true) switches the build-time checks off for that dataset.
- ``check_max_files: N`` (default 1000; ``null`` = all) caps how many image headers are read (spread evenly
  over the sorted list). Existence is checked for every file a meta-info lists (one ``stat`` each); LMDB keys
  and ``meta_info.txt`` sizes are always checked in full (no image is decoded).

Whatever the option, every dataset built through ``build_dataset`` also gets (a) an empty-dataset error at build
and (b) sample errors that name the file: an exception while loading sample ``i`` (undecodable or missing
LMDB value, truncated file, size mismatch found by BasicSR's crop, a GT that is not LQ x scale) is re-raised as
a :class:`DatasetError` naming the sample's path(s) and dataset. BasicSR's ``imfrombytes`` is replaced (in
BasicSR's modules only, entry ``safe_imfrombytes``) by :func:`safe_imfrombytes`: same pixels for valid images, an
error instead of ``None`` for missing/undecodable bytes, and ``read_image``'s pixel limit before OpenCV allocates.
Our own datasets decode through :func:`basicsr_ext.utils.image_io.decode_image_bytes` directly.

The dataset object keeps its class name and ``isinstance`` relations (a same-named subclass with the same
layout); it pickles as the original class would.

Option keys (always checked, ``check: false`` does not switch this off): a key that nothing reads is refused
with a did-you-mean naming the option file and block (:func:`check_option_keys`, run right after BasicSR's
``parse_options``; again at build and by ``GTOnlyDataset`` / ``RealESRGANDegradation`` themselves):

- dataset blocks: :data:`COMMON_DATASET_KEYS` + the keys of the type (:data:`STOCK_DATASET_KEYS` for stock
  BasicSR image datasets, the ``KEYS`` tuple of our dataset classes); other types are not checked;
- the option root of a file with Real-ESRGAN degradation keys (:func:`check_degradation_keys`): BasicSR's root
  keys, ``network_*``, the degradation keys (``second_order_prob``, alias ``second_degradation_prob``) and the
  degrading models' keys. A degradation key in a dataset block, or a kernel key at the root, is named as misplaced.
"""
from __future__ import annotations

import os
import os.path as osp
import re
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

from basicsr_ext.utils.image_io import is_image_file

DEFAULT_CHECK_MAX_FILES = 1000
_SHAPE_RE = re.compile(r'\(\s*(\d+)\s*,\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)')


class DatasetError(ValueError):
    """A dataset (folder, LMDB, meta-info file, image) that cannot be used; the message names the file or key."""


# ----------------------------------------------------------------------------------------------------------
# small readers shared with basicsr_ext.data.prep
# ----------------------------------------------------------------------------------------------------------
def image_shape(path: str) -> tuple[int, int, int]:
    """(height, width, channels) from the image header only (PIL, lazy); DatasetError naming the file.

    The declared size is checked against :func:`basicsr_ext.utils.image_io.get_max_pixels` (same limit as
    ``read_image``). Channels: 1 for grayscale modes, 4 with alpha, else 3.
    """
    from PIL import Image, UnidentifiedImageError

    from basicsr_ext.utils.image_io import get_max_pixels
    if not osp.isfile(path):
        raise DatasetError(f'image file not found: {path}')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            with Image.open(path) as im:
                (w, h), mode = im.size, im.mode
    except UnidentifiedImageError:
        raise DatasetError(f'{path}: not an image (unknown or corrupt header)') from None
    except Image.DecompressionBombError:
        w, h, mode = 1 << 20, 1 << 20, 'RGB'  # the limit check below names it
    except Exception as e:  # noqa: BLE001 - a malformed header can raise many types in PIL's plugins
        raise DatasetError(f'{path}: unreadable image header ({type(e).__name__}: {str(e)[:200]})') from None
    if w <= 0 or h <= 0:
        raise DatasetError(f'{path}: invalid declared image size {w}x{h}')
    if w * h > get_max_pixels():
        raise DatasetError(f'{path}: declared size {w}x{h} exceeds the pixel limit {get_max_pixels()}')
    channels = 1 if mode in ('1', 'L', 'I', 'I;16', 'I;16B', 'I;16L', 'F') else 4 if mode in ('RGBA', 'LA', 'PA') \
        else 3
    return h, w, channels


def check_relative_name(name: str, where: str) -> None:
    """A meta-info entry must stay inside its dataset root: no absolute path, no ``..`` component."""
    parts = re.split(r'[\\/]+', name)
    if osp.isabs(name) or name.startswith(('/', '\\')) or re.match(r'^[A-Za-z]:', name) or '..' in parts:
        raise DatasetError(f'{where}: {name!r} escapes the dataset root (absolute path or ".." component); '
                           'meta-info entries must be paths relative to the dataroot')


def read_meta_info(path: str, what: str = 'meta-info file') -> list[tuple[int, str, tuple[int, int, int] | None]]:
    """Lines of a BasicSR meta-info file as ``(line_no, first_token, (h, w, c) | None)``.

    Errors (DatasetError naming file and line): missing file, not UTF-8, blank line in the middle, no entries.
    """
    if not isinstance(path, str) or not path:
        raise DatasetError(f'{what}: expected a file path, got {path!r}')
    if not osp.isfile(path):
        raise DatasetError(f'{what} not found: {path}')
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().split('\n')
    except UnicodeDecodeError as e:
        raise DatasetError(f'{path}: not a UTF-8 text file ({e.reason} at byte {e.start})') from None
    except OSError as e:
        raise DatasetError(f'{path}: cannot read ({e.strerror or e})') from None
    if lines and lines[-1] == '':
        lines.pop()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise DatasetError(f'{path}, line {i}: empty line (BasicSR would read it as an image named "")')
        token = line.strip().split(' ')[0]
        m = _SHAPE_RE.search(line[len(line) - len(line.lstrip()) + len(token):])
        shape = None
        if m:
            shape = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
        out.append((i, token, shape))
    if not out:
        raise DatasetError(f'{path}: lists no images (empty file)')
    return out


def lmdb_meta_keys(lmdb_path: str) -> dict[str, tuple[int, int, int] | None]:
    """Keys of an LMDB as BasicSR derives them from ``meta_info.txt`` (``line.split('.')[0]``) -> (h, w, c)."""
    meta = osp.join(lmdb_path, 'meta_info.txt')
    entries = read_meta_info(meta, what='LMDB meta_info.txt')
    with open(meta, encoding='utf-8') as f:
        raw = f.read().split('\n')
    keys: dict[str, tuple[int, int, int] | None] = {}
    for line_no, _, shape in entries:
        key = (raw[line_no - 1] + '\n').split('.')[0]  # exactly what BasicSR's paths_from_lmdb does
        if key.endswith('\n') or not key.strip():
            raise DatasetError(f'{meta}, line {line_no}: expected "<key>.png (h,w,c) <level>", got '
                               f'{raw[line_no - 1][:80]!r} (BasicSR takes the key before the first ".")')
        if key in keys:
            raise DatasetError(f'{meta}, line {line_no}: key {key!r} is listed twice')
        keys[key] = shape
    return keys


def check_lmdb_size(env: Any, lmdb_path: str) -> None:
    """Refuse an LMDB whose ``data.mdb`` is shorter than its own meta page says (a truncated copy or download).

    LMDB memory-maps the file: reading a page past its end kills the process with SIGBUS (exit 135) at whatever
    iteration first touches it. The meta page (read with ``pread`` when the environment opens, so safe) names the
    last page in use: the file must hold ``(last_pgno + 1) * psize`` bytes.
    """
    data = osp.join(lmdb_path, 'data.mdb')
    try:
        size = os.path.getsize(data)
        need = (int(env.info()['last_pgno']) + 1) * int(env.stat()['psize'])
    except Exception as e:  # noqa: BLE001 - lmdb.Error, OSError: either way the database cannot be used
        raise DatasetError(f'{data}: cannot read the LMDB meta page ({type(e).__name__}: {str(e)[:200]})') from None
    if size < need:
        raise DatasetError(f'{data} is truncated: {size} bytes, but its meta page says the database uses {need} '
                           f'bytes ({need // int(env.stat()["psize"])} pages); copy or rebuild the LMDB '
                           '(reading it would crash training with SIGBUS)')


def check_lmdb_files(opt: Mapping[str, Any]) -> None:
    """:func:`check_lmdb_size` for every ``dataroot_*`` LMDB of a dataset block with ``io_backend.type: lmdb``
    (any dataset type, whatever ``check`` says: it opens the database and reads its meta page, nothing more)."""
    backend = opt.get('io_backend')
    if not isinstance(backend, Mapping) or backend.get('type') != 'lmdb':
        return
    import lmdb
    for key, path in opt.items():
        if not (isinstance(key, str) and key.startswith('dataroot') and isinstance(path, str)):
            continue
        data = osp.join(path, 'data.mdb')
        if not osp.isfile(data):
            continue  # the type's own check (or BasicSR) names a missing database
        try:
            env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True, max_readers=4)
        except lmdb.Error as e:
            raise DatasetError(f"dataset {opt.get('name', '?')!r}: {key} {data}: cannot open the LMDB "
                               f'({type(e).__name__}: {str(e)[:200]})') from None
        try:
            check_lmdb_size(env, path)
        except DatasetError as e:
            raise DatasetError(f"dataset {opt.get('name', '?')!r}: {key} {e}") from None
        finally:
            env.close()


def lmdb_db_keys(lmdb_path: str) -> set[str]:
    """All keys stored in an LMDB (read-only, no lock; values are not read); a truncated ``data.mdb`` is refused
    first (:func:`check_lmdb_size`)."""
    import lmdb
    data = osp.join(lmdb_path, 'data.mdb')
    if not osp.isfile(data):
        raise DatasetError(f'{lmdb_path}: no data.mdb in the LMDB folder')
    try:
        env = lmdb.open(lmdb_path, readonly=True, lock=False, readahead=False, subdir=True, max_readers=4)
    except lmdb.Error as e:
        raise DatasetError(f'{data}: cannot open the LMDB ({type(e).__name__}: {str(e)[:200]})') from None
    try:
        check_lmdb_size(env, lmdb_path)
        with env.begin(write=False) as txn:
            return {k.decode('ascii', 'backslashreplace') for k in txn.cursor().iternext(keys=True, values=False)}
    except lmdb.Error as e:
        raise DatasetError(f'{lmdb_path}: cannot read the LMDB keys ({type(e).__name__}: {str(e)[:200]})') from None
    finally:
        env.close()


def _first(items: Iterable[str], n: int = 5) -> str:
    items = sorted(items)
    more = f' (+{len(items) - n} more)' if len(items) > n else ''
    return ', '.join(repr(k) for k in items[:n]) + more


def spread(items: Sequence[Any], limit: int | None) -> list[Any]:
    """At most ``limit`` items, evenly spread over ``items`` (all when ``limit`` is None or large enough)."""
    if limit is None or len(items) <= limit:
        return list(items)
    if limit <= 0:
        return []
    step = (len(items) - 1) / max(1, limit - 1)
    return [items[round(i * step)] for i in range(limit)]


# ----------------------------------------------------------------------------------------------------------
# the checks
# ----------------------------------------------------------------------------------------------------------
class _Ctx:
    """What a check needs from one dataset block."""

    def __init__(self, opt: Mapping[str, Any]) -> None:
        self.opt = opt
        self.label = f"dataset {opt.get('name', '?')!r} ({opt.get('type')})"
        backend = opt.get('io_backend') or {}
        self.backend = backend.get('type', 'disk') if isinstance(backend, Mapping) else 'disk'
        limit = opt.get('check_max_files', DEFAULT_CHECK_MAX_FILES)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise DatasetError(f'{self.label}: check_max_files must be a non-negative integer or null, got {limit!r}')
        self.limit = limit
        self.phase = opt.get('phase', 'train')
        scale = opt.get('scale')
        self.scale = int(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0 \
            else None

    def err(self, msg: str) -> DatasetError:
        return DatasetError(f'{self.label}: {msg}')

    def path_option(self, key: str) -> str:
        value = self.opt.get(key)
        if value is None or value == '':
            raise self.err(f'option {key} is missing')
        if not isinstance(value, str):
            raise self.err(f'option {key} must be a path, got {type(value).__name__} {value!r}')
        return value

    def folder(self, key: str) -> str:
        path = self.path_option(key)
        if not osp.exists(path):
            raise self.err(f'{key} {path!r} does not exist (relative paths are resolved from {os.getcwd()})')
        if not osp.isdir(path):
            raise self.err(f'{key} {path!r} is not a folder')
        return path

    def lmdb(self, key: str) -> tuple[str, dict[str, tuple[int, int, int] | None]]:
        """Check one LMDB (meta_info.txt keys == database keys); return (path, key -> shape)."""
        path = self.folder(key)
        if not path.endswith('.lmdb'):
            raise self.err(f"{key} {path!r} must end with '.lmdb' for io_backend lmdb")
        try:
            meta = lmdb_meta_keys(path)
        except DatasetError as e:
            raise self.err(str(e)) from None
        db = lmdb_db_keys(path)
        if not db:
            raise self.err(f'LMDB {path} holds no images')
        missing = set(meta) - db
        if missing:
            raise self.err(f'{path}/meta_info.txt names {len(missing)} key(s) missing from the database: '
                           f'{_first(missing)}')
        extra = db - set(meta)
        if extra:
            raise self.err(f'{path} holds {len(extra)} key(s) not listed in its meta_info.txt: {_first(extra)}')
        return path, meta

    def meta_file(self, key: str, root: str, must_exist: bool = True) -> list[tuple[str, tuple[int, int, int] | None]]:
        """A meta-info file of relative paths under ``root``: escape and existence checks; [(path, shape)]."""
        if key in self.opt and self.opt[key] is None:
            raise self.err(f'option {key} is null: give a file or remove the key')
        path = self.path_option(key)
        try:
            entries = read_meta_info(path, what=f'{key}')
        except DatasetError as e:
            raise self.err(str(e)) from None
        out = []
        for line_no, name, shape in entries:
            check_relative_name(name, f'{self.label}: {path}, line {line_no}')
            full = osp.join(root, name)
            if must_exist and not osp.isfile(full):
                raise self.err(f'{path}, line {line_no}: {full} does not exist')
            out.append((full, shape))
        return out

    def sizes(self, files: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        return {f: self._shape(f) for f in spread(files, self.limit)}

    def _shape(self, f: str) -> tuple[int, int, int]:
        try:
            return image_shape(f)
        except DatasetError as e:
            raise self.err(str(e)) from None

    def pair_sizes(self, gt_name: str, gt: tuple[int, int, int], lq_name: str, lq: tuple[int, int, int]) -> None:
        """GT size must be LQ size x scale (train: exactly; val/test: GT may exceed by < scale, BasicSR crops)."""
        s = self.scale
        if s is None:
            return
        for gt_side, lq_side in ((gt[0], lq[0]), (gt[1], lq[1])):
            ok = gt_side == lq_side * s if self.phase == 'train' else lq_side * s <= gt_side < (lq_side + 1) * s
            if not ok:
                raise self.err(f'size mismatch for scale {s}: GT {gt_name} is {gt[0]}x{gt[1]} (HxW) but LQ {lq_name} '
                               f'is {lq[0]}x{lq[1]}; expected GT = LQ x {s}')

    def gt_size(self, name: str, shape: tuple[int, int, int]) -> None:
        gt_size = self.opt.get('gt_size')
        if self.phase == 'train' and isinstance(gt_size, int) and min(shape[:2]) < gt_size:
            raise self.err(f'GT {name} is {shape[0]}x{shape[1]}, smaller than gt_size {gt_size}')


def _folder_images(ctx: _Ctx, key: str, recursive: bool = False) -> list[str]:
    """Image names (relative) in a folder as BasicSR's scandir sees them; non-image files and emptiness fail."""
    from basicsr.utils import scandir
    folder = ctx.folder(key)
    names = sorted(scandir(folder, recursive=recursive))
    if recursive:
        names = [n for n in names if is_image_file(n)]
    else:
        bad = [n for n in names if not is_image_file(n)]
        if bad:
            raise ctx.err(f'{key} {folder} contains non-image files, which BasicSR would try to decode: {_first(bad)}')
    if not names:
        raise ctx.err(f'{key} {folder} contains no images')
    return names


DatasetCheck = Callable[[_Ctx], None]
DATASET_CHECKS: dict[str, DatasetCheck] = {}


def register_dataset_check(*names: str) -> Callable[[DatasetCheck], DatasetCheck]:
    """Register a build-time check for dataset ``type`` names."""

    def deco(fn: DatasetCheck) -> DatasetCheck:
        for name in names:
            DATASET_CHECKS[name] = fn
        return fn

    return deco


@register_dataset_check('PairedImageDataset')
def check_paired(ctx: _Ctx) -> None:
    tmpl = ctx.opt.get('filename_tmpl', '{}')
    if ctx.backend == 'lmdb':
        gt_path, gt = ctx.lmdb('dataroot_gt')
        lq_path, lq = ctx.lmdb('dataroot_lq')
        only_gt, only_lq = set(gt) - set(lq), set(lq) - set(gt)
        if only_gt or only_lq:
            raise ctx.err(f'GT LMDB {gt_path} and LQ LMDB {lq_path} hold different keys: only in GT: '
                          f'{_first(only_gt) or "-"}; only in LQ: {_first(only_lq) or "-"}')
        for key in sorted(gt):
            if gt[key] is not None and lq[key] is not None:
                ctx.pair_sizes(f'{key} ({gt_path})', gt[key], f'{key} ({lq_path})', lq[key])
            if gt[key] is not None:
                ctx.gt_size(f'{key} ({gt_path})', gt[key])
        return
    gt_root, lq_root = ctx.folder('dataroot_gt'), ctx.folder('dataroot_lq')
    if ctx.opt.get('meta_info_file') is not None:
        pairs = []
        for gt_file, _ in ctx.meta_file('meta_info_file', gt_root):
            base, ext = osp.splitext(osp.basename(gt_file))
            lq_file = osp.join(lq_root, f'{tmpl.format(base)}{ext}')
            if not osp.isfile(lq_file):
                raise ctx.err(f'no LQ image for GT {gt_file}: {lq_file} does not exist')
            pairs.append((gt_file, lq_file))
    else:
        gt_names, lq_names = _folder_images(ctx, 'dataroot_gt'), _folder_images(ctx, 'dataroot_lq')
        expected = {}
        for name in gt_names:
            base, ext = osp.splitext(name)
            expected[name] = f'{tmpl.format(base)}{ext}'
        lq_set = set(lq_names)
        no_lq = [g for g, q in expected.items() if q not in lq_set]
        no_gt = lq_set - set(expected.values())
        if no_lq or no_gt or len(gt_names) != len(lq_names):
            raise ctx.err(f'GT folder {gt_root} ({len(gt_names)} images) and LQ folder {lq_root} ({len(lq_names)} '
                          f'images) do not pair up with filename_tmpl {tmpl!r}: GT without LQ: {_first(no_lq) or "-"}; '
                          f'LQ without GT: {_first(no_gt) or "-"}')
        pairs = [(osp.join(gt_root, g), osp.join(lq_root, q)) for g, q in expected.items()]
    for gt_file, lq_file in spread(pairs, ctx.limit):
        gt_shape, lq_shape = ctx._shape(gt_file), ctx._shape(lq_file)
        ctx.pair_sizes(gt_file, gt_shape, lq_file, lq_shape)
        ctx.gt_size(gt_file, gt_shape)


def _check_one_folder(ctx: _Ctx, key: str, use_meta: bool, meta_key: str = 'meta_info_file',
                      recursive: bool = False) -> None:
    """A one-folder dataset: its LMDB checked whole, or the images its meta file names (``use_meta``) or its folder
    holds, decoded for their sizes."""
    if ctx.backend == 'lmdb':
        ctx.lmdb(key)
        return
    root = ctx.folder(key)
    if use_meta:
        files = [f for f, _ in ctx.meta_file(meta_key, root)]
    else:
        files = [osp.join(root, n) for n in _folder_images(ctx, key, recursive)]
    ctx.sizes(files)


@register_dataset_check('SingleImageDataset')
def check_single(ctx: _Ctx) -> None:
    # BasicSR tests the key's presence, not its value
    _check_one_folder(ctx, 'dataroot_lq', use_meta='meta_info_file' in ctx.opt)


@register_dataset_check('RealESRGANDataset')
def check_realesrgan(ctx: _Ctx) -> None:
    if ctx.backend != 'lmdb':
        ctx.folder('dataroot_gt')  # a missing folder is named first
        if ctx.opt.get('meta_info') is None:
            raise ctx.err("option meta_info is missing: RealESRGANDataset reads its GT list from 'meta_info' "
                          "(note: not 'meta_info_file')")
    _check_one_folder(ctx, 'dataroot_gt', use_meta=True, meta_key='meta_info')


@register_dataset_check('GTOnlyDataset')
def check_gt_only(ctx: _Ctx) -> None:
    _check_one_folder(ctx, 'dataroot_gt', use_meta=bool(ctx.opt.get('meta_info_file')), recursive=True)


# ----------------------------------------------------------------------------------------------------------
# option keys: a misspelt or misplaced key is refused (did you mean ...?) instead of silently ignored
# ----------------------------------------------------------------------------------------------------------
#: keys any dataset block may carry, whatever its type
COMMON_DATASET_KEYS = (
    'name', 'type',
    'phase', 'scale',  # written into every block by parse_options (block name, root ``scale``)
    # read by BasicSR 1.4.2's build_dataloader / train.py
    'batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio', 'prefetch_mode', 'num_prefetch_queue',
    'pin_memory', 'persistent_workers',
    'use_shuffle',  # BasicSR < 1.4 loader key, found in official configs (1.4.2 always shuffles train sets)
    'check', 'check_max_files',  # this module's build-time checks
    'val_metrics',  # every model of ours (models/validation.py): the subset of val.metrics computed on this set
)

#: the keys each stock BasicSR 1.4.2 image dataset reads (from its source; ``io_backend`` holds the backend's
#: own keys), besides :data:`COMMON_DATASET_KEYS`. ``RealESRGANDataset`` itself ignores ``gt_size`` (it crops
#: 400): official Real-ESRGAN / AESOP files carry it and AESOPRealESRGANModel compares it with the discriminator.
#: Its kernel keys are :data:`basicsr_ext.data.realesrgan_degradation.KERNEL_BLOCK_KEYS`. Video datasets, and
#: types neither listed here nor declaring ``KEYS``, are not checked.
STOCK_DATASET_KEYS: dict[str, tuple[str, ...]] = {
    'PairedImageDataset': ('dataroot_gt', 'dataroot_lq', 'meta_info_file', 'io_backend', 'filename_tmpl', 'gt_size',
                           'use_hflip', 'use_rot', 'color', 'mean', 'std'),
    'SingleImageDataset': ('dataroot_lq', 'meta_info_file', 'io_backend', 'color', 'mean', 'std'),
    'RealESRGANDataset': ('dataroot_gt', 'meta_info', 'io_backend', 'use_hflip', 'use_rot', 'gt_size',
                          '<kernel keys>'),  # placeholder: KERNEL_BLOCK_KEYS, filled in by dataset_keys()
    'RealESRGANPairedDataset': ('dataroot_gt', 'dataroot_lq', 'meta_info', 'io_backend', 'filename_tmpl', 'gt_size',
                                'use_hflip', 'use_rot', 'mean', 'std'),
    'FFHQDataset': ('dataroot_gt', 'io_backend', 'use_hflip', 'mean', 'std'),
}

#: option-root keys BasicSR 1.4.2 reads or writes (parse_options, train.py, base models), and ours (opt_path)
BASICSR_ROOT_KEYS = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'path', 'train', 'val',
                     'logger', 'dist_params', 'find_unused_parameters', 'is_train', 'dist', 'rank', 'world_size',
                     'auto_resume', 'root_path', 'opt_path')
#: option-root keys of the models that degrade on the fly, besides the degradation keys and ``network_*``:
#: BasicSR's RealESRGANModel (``gt_size``, ``queue_size``, ``high_order_degradation``, ``*_gt_usm``),
#: AESOPRealESRGANModel (``aesop_gt_usm``), TVQRAPModel (``gt_size``, ``queue_size``)
DEGRADATION_MODEL_ROOT_KEYS = ('gt_size', 'queue_size', 'high_order_degradation', 'gt_usm', 'l1_gt_usm',
                               'percep_gt_usm', 'gan_gt_usm', 'aesop_gt_usm')
#: models whose degradation is BasicSR's ``RealESRGANModel.feed_data``: the second stage is always applied
ALWAYS_SECOND_ORDER_MODELS = ('RealESRGANModel', 'RealESRNetModel', 'AESOPRealESRGANModel')


def _degradation_keys() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(root degradation keys, dataset-block kernel keys), from realesrgan_degradation (imported lazily: torch)."""
    from basicsr_ext.data.realesrgan_degradation import KERNEL_BLOCK_KEYS, ROOT_DEGRADATION_KEYS
    return ROOT_DEGRADATION_KEYS, KERNEL_BLOCK_KEYS


def dataset_keys(type_name: Any) -> tuple[str, ...] | None:
    """The keys a dataset block of ``type_name`` may hold, or None when they are not known (not checked).

    Stock BasicSR types: :data:`COMMON_DATASET_KEYS` + :data:`STOCK_DATASET_KEYS`. Our types: the common keys
    + the ``KEYS`` tuple the registered class declares.
    """
    stock = STOCK_DATASET_KEYS.get(str(type_name))
    if stock is not None:
        if '<kernel keys>' in stock:
            stock = tuple(k for k in stock if k != '<kernel keys>') + _degradation_keys()[1]
        return COMMON_DATASET_KEYS + stock
    from basicsr.utils.registry import DATASET_REGISTRY
    try:
        cls = DATASET_REGISTRY.get(str(type_name))
    except KeyError:
        return None
    declared = getattr(cls, 'KEYS', None)
    return None if declared is None else COMMON_DATASET_KEYS + tuple(declared)


def _refuse_unknown(unknown: Sequence[str], allowed: Iterable[str], where: str, reader: str,
                    placement: Callable[[str], str]) -> None:
    from basicsr_ext.utils.options import OptionError, did_you_mean
    allowed = sorted(set(allowed))
    hints = [f'{key!r}{placement(key) or did_you_mean(key, allowed)}' for key in unknown]
    raise OptionError(f'{where}: unknown key(s) {", ".join(hints)}; {reader} reads: {", ".join(allowed)}')


def check_dataset_keys(opt: Mapping[str, Any], source: str | None = None, block: str | None = None) -> None:
    """Refuse keys a dataset block's type does not read (OptionError naming file, block, key, did-you-mean).

    ``source``: the option file (or None); ``block``: e.g. ``datasets:train`` (default: the dataset's name).
    Types whose keys are unknown (see :func:`dataset_keys`) are not checked.
    """
    if not isinstance(opt, Mapping):
        return
    allowed = dataset_keys(opt.get('type'))
    if allowed is None:
        return
    unknown = [k for k in opt if k not in allowed]
    if not unknown:
        return
    root_keys = set(_degradation_keys()[0]) | (set(DEGRADATION_MODEL_ROOT_KEYS) - {'gt_size'})

    def placement(key: str) -> str:
        if key in root_keys:
            return ' (a degradation key: it belongs at the top level of the option file, not in a dataset block)'
        return ''

    block = block or f"dataset {opt.get('name', '?')!r}"
    where = ', '.join(p for p in (source, f"{block} ({opt.get('type')})") if p)
    _refuse_unknown(unknown, allowed, where, str(opt.get('type')), placement)


def check_degradation_keys(opt: Mapping[str, Any], source: str | None = None) -> None:
    """The option root of a file with Real-ESRGAN degradation keys: refuse unknown keys (did-you-mean).

    Allowed: :data:`BASICSR_ROOT_KEYS`, ``network_*``, the degradation keys (with ``second_order_prob`` and its
    alias ``second_degradation_prob``) and :data:`DEGRADATION_MODEL_ROOT_KEYS`. A file without degradation keys
    is not checked (its root is BasicSR's business). ``second_order_prob`` below 1 with a model that always
    applies the second stage (:data:`ALWAYS_SECOND_ORDER_MODELS`) is refused too: it would be ignored.
    """
    root_deg, kernel_keys = _degradation_keys()
    if not isinstance(opt, Mapping) or not any(k in opt for k in root_deg):
        return
    where = f'{source or "option file"} (top level, Real-ESRGAN degradation)'
    allowed = set(BASICSR_ROOT_KEYS) | set(root_deg) | set(DEGRADATION_MODEL_ROOT_KEYS)
    unknown = [k for k in opt if k not in allowed and not str(k).startswith('network_')]
    if unknown:
        dataset_only = set(kernel_keys) | {k for v in STOCK_DATASET_KEYS.values() for k in v} | \
            set(COMMON_DATASET_KEYS)

        def placement(key: str) -> str:
            if key in dataset_only:
                return ' (a dataset key: it belongs in the datasets:train block)'
            return ''
        _refuse_unknown(unknown, allowed | {'network_*'}, where, 'the option root', placement)
    from basicsr_ext.data.realesrgan_degradation import second_order_prob
    from basicsr_ext.utils.options import OptionError
    try:
        prob = second_order_prob(opt)
    except ValueError as e:
        raise OptionError(f'{where}: {e}') from None
    if prob < 1.0 and opt.get('model_type') in ALWAYS_SECOND_ORDER_MODELS:
        raise OptionError(f"{where}: second_order_prob {prob} would be ignored: model_type {opt['model_type']} "
                          "degrades with BasicSR's RealESRGANModel.feed_data, which always applies the second "
                          'stage (remove the key, or use a model that honours it, e.g. TVQRAPModel)')


def check_option_keys(opt: Mapping[str, Any], source: str | None = None) -> None:
    """Every dataset block (:func:`check_dataset_keys`) and the degradation root (:func:`check_degradation_keys`)
    of a parsed option file; run after BasicSR's ``parse_options`` (:func:`_checked_parse_options`, applied by
    ``basicsr_ext.patches``, entry ``option_keys``), naming ``source``."""
    source = source or (opt.get('opt_path') if isinstance(opt, Mapping) else None)
    for phase, block in ((opt or {}).get('datasets') or {}).items():
        check_dataset_keys(block, source, f'datasets:{phase}')
    check_degradation_keys(opt, source)


def check_dataset_options(opt: Mapping[str, Any]) -> None:
    """Refuse unknown keys (:func:`check_dataset_keys`), then run the build-time check registered for
    ``opt['type']`` (nothing for other types, or with check: false)."""
    if not isinstance(opt, Mapping):
        raise DatasetError(f'a dataset block must be a mapping of options, got {type(opt).__name__}')
    check_dataset_keys(opt)  # always: a misspelt key is not a data check to switch off
    check_lmdb_files(opt)  # always, any type: a truncated LMDB is a SIGBUS, not a slow check
    check = opt.get('check', True)
    if check is False or check is None:
        return
    if check is not True:
        raise DatasetError(f"dataset {opt.get('name', '?')!r}: option check must be true or false, got {check!r}")
    fn = DATASET_CHECKS.get(str(opt.get('type')))
    if fn is not None:
        fn(_Ctx(opt))


# ----------------------------------------------------------------------------------------------------------
# sample errors that name the file
# ----------------------------------------------------------------------------------------------------------
def _describe_sample(dataset: Any, index: int) -> str:
    paths = getattr(dataset, 'paths', None)
    try:
        entry = paths[index]
    except Exception:  # noqa: BLE001 - only for the message
        return f'index {index}'
    if isinstance(entry, Mapping):
        return ', '.join(f'{k[:-5] if k.endswith("_path") else k} {v}' for k, v in entry.items())
    return str(entry)


def _named_getitem(self, index):
    """An exception while loading a sample becomes a DatasetError naming the sample and the dataset."""
    try:
        sample = self._checked_base.__getitem__(self, index)
        _check_pair_shapes(self, sample)
        return sample
    except DatasetError as e:
        if 'cannot load sample' in str(e):
            raise
        opt = getattr(self, 'opt', {}) or {}
        raise DatasetError(f"dataset {opt.get('name', '?')!r} ({opt.get('type', type(self).__name__)}): cannot load "
                           f'sample {index} ({_describe_sample(self, index)}): {e}') from None
    except Exception as e:
        if isinstance(e, IndexError) and isinstance(index, int) and not 0 <= index < len(self):
            raise
        opt = getattr(self, 'opt', {}) or {}
        label = f"dataset {opt.get('name', '?')!r} ({opt.get('type', type(self).__name__)})"
        hint = ''
        if isinstance(e, (AttributeError, TypeError)) and 'NoneType' in str(e):
            hint = ' (the image bytes could not be read or decoded: missing LMDB key, truncated or corrupt file)'
        raise DatasetError(f'{label}: cannot load sample {index} ({_describe_sample(self, index)}): '
                           f'{type(e).__name__}: {str(e)[:300]}{hint}') from e


def _check_pair_shapes(dataset: Any, sample: Any) -> None:
    """A sample with both ``gt`` and ``lq`` tensors must have GT = LQ x scale (BasicSR only checks in training)."""
    if not isinstance(sample, Mapping) or 'gt' not in sample or 'lq' not in sample:
        return
    gt, lq = sample['gt'], sample['lq']
    scale = (getattr(dataset, 'opt', None) or {}).get('scale')
    if not isinstance(scale, int) or getattr(gt, 'ndim', 0) < 2 or getattr(lq, 'ndim', 0) < 2:
        return
    if tuple(gt.shape[-2:]) != (lq.shape[-2] * scale, lq.shape[-1] * scale):
        raise DatasetError(f'GT {tuple(gt.shape[-2:])} is not LQ {tuple(lq.shape[-2:])} x {scale}')


def _named_reduce(self):
    return _restore_checked, (self._checked_base, self.__dict__)


_CHECKED_CLASSES: dict[type, type] = {}


def _checked_class(cls: type) -> type:
    """A subclass of ``cls`` with the same name and layout whose ``__getitem__`` names failing samples."""
    if cls not in _CHECKED_CLASSES:
        _CHECKED_CLASSES[cls] = type(cls.__name__, (cls, ), {
            '__module__': cls.__module__, '__qualname__': cls.__qualname__, '__slots__': (), '_checked_base': cls,
            '_basicsr_ext_named_errors': True, '__getitem__': _named_getitem, '__reduce__': _named_reduce})
    return _CHECKED_CLASSES[cls]


def _restore_checked(base: type, state: dict) -> Any:
    obj = base.__new__(base)
    obj.__dict__.update(state)
    obj.__class__ = _checked_class(base)
    return obj


def name_sample_errors(dataset: Any) -> Any:
    """Give ``dataset`` (in place) sample errors that name the file; isinstance checks keep working."""
    cls = type(dataset)
    if getattr(cls, '_basicsr_ext_named_errors', False) or not hasattr(cls, '__getitem__'):
        return dataset
    try:
        dataset.__class__ = _checked_class(cls)
    except TypeError:  # a class with __slots__ or a C layout: leave it as it is
        pass
    return dataset


#: dataset blocks checked before the pipeline created its folders (``basicsr_ext.preflight``), as copies
_PRECHECKED: list[Any] = []


def mark_prechecked(dataset_opt: Mapping[str, Any]) -> None:
    """Record that :func:`check_dataset_options` passed for this block: building the same (equal) block
    does not repeat the checks."""
    import copy
    _PRECHECKED.append(copy.deepcopy(dict(dataset_opt)))
    del _PRECHECKED[:-16]


def checked_build_dataset(dataset_opt: Mapping[str, Any], _build: Callable | None = None) -> Any:
    """``basicsr.data.build_dataset`` with the build-time checks, an empty-dataset error and named sample errors."""
    if not (isinstance(dataset_opt, Mapping) and any(dict(dataset_opt) == done for done in _PRECHECKED)):
        check_dataset_options(dataset_opt)
    build = _build or _stock_build_dataset()
    dataset = build(dataset_opt)
    try:
        n = len(dataset)
    except TypeError:
        n = None
    if n == 0:
        raise DatasetError(f"dataset {dataset_opt.get('name', '?')!r} ({dataset_opt.get('type')}) is empty: "
                           'check dataroot_* and meta_info paths (relative paths are resolved from '
                           f'{os.getcwd()})')
    return name_sample_errors(dataset)


def _stock_build_dataset() -> Callable:
    """BasicSR's own ``build_dataset`` (the patched name keeps it as ``__wrapped__``)."""
    from basicsr.data import build_dataset
    return getattr(build_dataset, '__wrapped__', build_dataset)


def safe_imfrombytes(content: Any, flag: str = 'color', float32: bool = False) -> Any:
    """BasicSR's ``imfrombytes`` with errors instead of ``None`` surprises, and the pixel limit of ``read_image``.

    :func:`basicsr_ext.utils.image_io.decode_image_bytes` (same pixels for valid images) whose failures are
    DatasetErrors (the sample wrapper adds the dataset and path): ``None`` bytes (a key missing from an LMDB),
    undecodable bytes, a header declaring more than :func:`~basicsr_ext.utils.image_io.get_max_pixels` pixels
    (refused before OpenCV allocates it). ``basicsr_ext.patches`` (entry ``safe_imfrombytes``) puts it in
    place of BasicSR's.
    """
    from basicsr_ext.utils.image_io import ImageError, decode_image_bytes
    try:
        return decode_image_bytes(content, flag=flag, float32=float32)
    except ImageError as e:
        raise DatasetError(e.reason) from None


def _checked_parse_options(parse: Callable) -> Callable:
    """``parse_options`` followed by :func:`check_option_keys` (unknown keys named with the option file)."""
    if getattr(parse, '_basicsr_ext_keys_checked', False):
        return parse

    def parse_options(root_path, is_train=True):
        opt, args = parse(root_path, is_train=is_train)
        check_option_keys(opt, getattr(args, 'opt', None) or opt.get('opt_path'))
        return opt, args

    parse_options._basicsr_ext_keys_checked = True
    parse_options.__doc__ = parse.__doc__
    return parse_options
