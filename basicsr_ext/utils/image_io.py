"""Images are untrusted input: read with a header check first, decode to one documented format, write atomically.

:func:`read_image` returns ``(img, info)``:

- ``img``: float32, H x W x 3 in [0, 1], channel order ``'rgb'`` (default) or ``'bgr'`` (BasicSR's order).
  Grayscale files are replicated to three channels (``info.channels == 1`` says so); ``gray='keep'`` returns
  H x W x 1 instead. 8-bit values are divided by 255, 16-bit by 65535; float files (TIFF) are clipped to [0, 1].
- ``info``: :class:`ImageInfo` with the path, container format, size, colour channels (1 or 3), bit depth
  (8, 16 or 32 for float), the original PIL mode, and ``alpha`` (H x W float32 in [0, 1], or ``None``).
- Palette images are expanded (their transparency becomes ``alpha``); CMYK JPEGs are converted to RGB.
- By default the pixel data is returned as stored: EXIF orientation is **not** applied (SR outputs and ground
  truth are compared pixel grid to pixel grid). ``orient=True`` (inference: a phone photo comes out upright)
  applies it as PIL's ``ImageOps.exif_transpose`` does, to the image and its alpha; ``info.orientation`` is the
  EXIF value found (1 when none), ``info.width``/``info.height`` the size returned.

Before anything is decoded, the header is read (PIL, lazy) and the declared width x height is checked against
``max_pixels`` (default 20000 x 20000, env ``BASICSR_EXT_MAX_PIXELS``): a file declaring a huge size is refused
without allocating it. Every failure (missing, zero bytes, not an image, truncated, corrupt, too large, a decode
that disagrees with its header) is an :class:`ImageError` that names the file and the reason; the extension is
ignored (the content decides). Decoding is OpenCV's (the decoder BasicSR uses, so metrics match BasicSR), with
PIL as the fallback for what OpenCV cannot read.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from basicsr_ext.utils.atomic import write_bytes_atomic

DEFAULT_MAX_PIXELS = 20000 * 20000
MAX_PIXELS_ENV = 'BASICSR_EXT_MAX_PIXELS'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.gif')
_GRAY_MODES = {'1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'}
_PIL_LOCK = threading.Lock()


class ImageError(ValueError):
    """An image file that cannot be used: missing, empty, not an image, truncated, corrupt or too large."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f'{path}: {reason}')
        self.path = path
        self.reason = reason


@dataclass
class ImageInfo:
    """What :func:`read_image` learned about a file (see the module docstring)."""

    path: str
    format: str
    width: int
    height: int
    channels: int
    bit_depth: int
    mode: str
    alpha: np.ndarray | None = field(default=None, repr=False)
    orientation: int = 1

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None


def get_max_pixels(max_pixels: int | None = None) -> int:
    """The pixel limit: the argument, else env ``BASICSR_EXT_MAX_PIXELS``, else 20000 x 20000."""
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get(MAX_PIXELS_ENV)
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ValueError(f'{MAX_PIXELS_ENV}={env!r} is not a number of pixels') from None
    return DEFAULT_MAX_PIXELS


@contextlib.contextmanager
def _pil_open(data: bytes | str):
    """Open bytes (or a file path: read lazily, header first) with PIL, its own bomb check replaced by ours (the
    header limit) and its warnings silenced."""
    with _PIL_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                with Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data) as im:
                    yield im
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1..8) of an open image; 1 when absent or unreadable. Never decodes pixels
    (PIL's PNG ``getexif`` loads the whole image when no eXIf chunk precedes the pixel data: not asked then)."""
    if im.format == 'PNG' and 'exif' not in im.info:
        return 1
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a corrupt EXIF block is no reason to refuse the pixels
        return 1
    return value if 1 <= value <= 8 else 1


def apply_exif_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``arr`` (H x W or H x W x C) as PIL's ``ImageOps.exif_transpose`` turns an image of that EXIF orientation:
    2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 anticlockwise."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def image_header(path: str, max_pixels: int | None = None) -> tuple[str, int, int, str, int]:
    """(format, width, height, mode, EXIF orientation) of an image file from its header only (nothing decoded);
    ImageError naming the file when it is missing, not an image, or declares more than ``max_pixels`` pixels."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageError(path, 'file not found' if not os.path.exists(path) else 'not a regular file')
    if os.path.getsize(path) == 0:
        raise ImageError(path, 'empty file (0 bytes)')
    return _read_header(path, path, get_max_pixels(max_pixels), with_orientation=True)


def _read_header(data: bytes | str, path: str, max_pixels: int, with_orientation: bool = False) -> tuple:
    """(format, width, height, mode[, orientation]) from the header only (``data``: the bytes, or the file path
    read lazily); the limit is checked before any decoding."""
    orientation = 1
    try:
        with _pil_open(data) as im:
            fmt, (w, h), mode = im.format or '?', im.size, im.mode
            if with_orientation:
                orientation = _exif_orientation(im)
    except UnidentifiedImageError:
        raise ImageError(path, 'not a recognised image format (unknown or corrupt header)') from None
    except Exception as e:  # noqa: BLE001 - any parser failure on a malformed header is a bad file
        raise ImageError(path, f'corrupt image header ({type(e).__name__}: {str(e)[:200]})') from None
    if w <= 0 or h <= 0:
        raise ImageError(path, f'invalid declared size {w}x{h}')
    if w * h > max_pixels:
        raise ImageError(path, f'declared size {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} '
                         f'(raise it with max_pixels= or {MAX_PIXELS_ENV})')
    return (fmt, w, h, mode, orientation) if with_orientation else (fmt, w, h, mode)


def _decode_cv2(data: bytes) -> np.ndarray | None:
    log = getattr(getattr(cv2, 'utils', None), 'logging', None)  # silence OpenCV's warnings on bad files
    old = log.getLogLevel() if log is not None else None
    try:
        if log is not None:
            log.setLogLevel(log.LOG_LEVEL_SILENT)
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    finally:
        if log is not None:
            log.setLogLevel(old)
    if arr is None or arr.size == 0:
        return None
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]  # BGR -> RGB
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., [2, 1, 0, 3]]  # BGRA -> RGBA
    elif arr.ndim == 3 and arr.shape[2] == 2:  # gray + alpha
        arr = np.concatenate([np.repeat(arr[..., :1], 3, axis=2), arr[..., 1:]], axis=2)
    return arr


def _decode_pil(data: bytes, path: str) -> np.ndarray:
    try:
        with _pil_open(data) as im:
            im.load()
            mode = im.mode
            if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N'):
                return np.asarray(im).astype(np.uint16)
            if mode == 'I':
                return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
            if mode == 'F':
                return np.asarray(im, dtype=np.float32)
            if mode in ('1', 'L'):
                return np.asarray(im.convert('L'))
            has_alpha = mode in ('RGBA', 'LA', 'La', 'RGBa', 'PA') or 'transparency' in im.info
            return np.asarray(im.convert('RGBA' if has_alpha else 'RGB'))
    except Exception as e:  # noqa: BLE001 - truncated/corrupt streams raise many types in PIL's plugins
        raise ImageError(path, f'cannot decode ({type(e).__name__}: {str(e)[:200]}); truncated or corrupt?') \
            from None


def _to_float(arr: np.ndarray) -> tuple[np.ndarray, int]:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, 8
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0, 16
    if arr.dtype in (np.float32, np.float64, np.float16):
        return np.nan_to_num(np.clip(arr.astype(np.float32), 0.0, 1.0)), 32
    if arr.dtype in (np.int8, np.int16, np.int32, np.uint32):
        return np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0), 16
    raise TypeError(f'unsupported pixel type {arr.dtype}')


def read_image(path: str, max_pixels: int | None = None, channel_order: str = 'rgb',
               gray: str = 'rgb', orient: bool = False) -> tuple[np.ndarray, ImageInfo]:
    """Read one untrusted image file; see the module docstring for the returned format.

    Args:
        path: the file (its extension is ignored: the content decides).
        max_pixels: refuse files whose header declares more pixels (default: :func:`get_max_pixels`).
        channel_order: ``'rgb'`` or ``'bgr'`` for the colour channels of ``img``.
        gray: ``'rgb'`` replicates grayscale to 3 channels; ``'keep'`` returns H x W x 1.
        orient: apply the EXIF orientation (see the module docstring).

    Raises:
        ImageError: naming the file and the reason.
    """
    if channel_order not in ('rgb', 'bgr'):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    path = os.fspath(path)
    limit = get_max_pixels(max_pixels)
    if not os.path.exists(path):
        raise ImageError(path, 'file not found')
    if not os.path.isfile(path):
        raise ImageError(path, 'not a regular file')
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise ImageError(path, f'cannot read the file ({e.strerror or e})') from None
    if not data:
        raise ImageError(path, 'empty file (0 bytes)')
    fmt, w, h, mode, orientation = _read_header(data, path, limit, with_orientation=True)

    arr = _decode_cv2(data)
    if arr is None or arr.shape[:2] != (h, w):
        arr = _decode_pil(data, path)
    if arr.ndim not in (2, 3) or arr.shape[:2] != (h, w):
        raise ImageError(path, f'decoded size {arr.shape[1]}x{arr.shape[0]} differs from the declared {w}x{h}')
    try:
        arr_f, bit_depth = _to_float(arr)
    except TypeError as e:
        raise ImageError(path, str(e)) from None
    if arr_f.ndim == 2:
        arr_f = arr_f[..., None]
    alpha = None
    if arr_f.shape[2] in (2, 4):
        alpha = np.ascontiguousarray(arr_f[..., -1])
        arr_f = arr_f[..., :-1]
    if arr_f.shape[2] not in (1, 3):
        raise ImageError(path, f'unsupported number of channels: {arr_f.shape[2]}')
    channels = 1 if (arr_f.shape[2] == 1 or mode in _GRAY_MODES) else 3
    if arr_f.shape[2] == 1 and gray == 'rgb':
        arr_f = np.repeat(arr_f, 3, axis=2)
    elif arr_f.shape[2] == 3 and gray == 'keep' and channels == 1:
        arr_f = arr_f[..., :1]
    if channel_order == 'bgr' and arr_f.shape[2] == 3:
        arr_f = arr_f[..., ::-1]
    if orient and orientation != 1:
        arr_f = apply_exif_orientation(arr_f, orientation)
        alpha = None if alpha is None else np.ascontiguousarray(apply_exif_orientation(alpha, orientation))
        h, w = arr_f.shape[:2]
    info = ImageInfo(path=path, format=fmt, width=w, height=h, channels=channels, bit_depth=bit_depth,
                     mode=mode, alpha=alpha, orientation=orientation)
    return np.ascontiguousarray(arr_f, dtype=np.float32), info


def decode_image_bytes(content: bytes | None, flag: str = 'color', float32: bool = False,
                       name: str = '<image bytes>', max_pixels: int | None = None) -> np.ndarray:
    """BasicSR's ``imfrombytes`` (OpenCV, BGR, ``flag`` color|grayscale|unchanged, ``float32`` → [0, 1]) for
    untrusted bytes: the same pixels for a valid image, an :class:`ImageError` naming ``name`` instead of a
    ``None`` image, and the pixel limit (:func:`get_max_pixels`) checked from the header before OpenCV allocates.

    ``None`` (a key missing from an LMDB) and undecodable or truncated bytes are errors. Formats PIL cannot
    parse but OpenCV can are left to OpenCV.
    """
    if content is None:
        raise ImageError(name, 'no image bytes (a key missing from the LMDB, or an unreadable file)')
    flags = {'color': cv2.IMREAD_COLOR, 'grayscale': cv2.IMREAD_GRAYSCALE, 'unchanged': cv2.IMREAD_UNCHANGED}
    if flag not in flags:
        raise ValueError(f'flag must be one of {sorted(flags)}, got {flag!r}')
    limit = get_max_pixels(max_pixels)
    try:
        with _pil_open(content) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - PIL does not know every format OpenCV reads: leave it to OpenCV
        w = h = 0
    if w * h > limit:
        raise ImageError(name, f'image header declares {w}x{h} pixels, over the limit {limit}')
    try:
        img = cv2.imdecode(np.frombuffer(content, np.uint8), flags[flag])
    except cv2.error:
        img = None
    if img is None:
        raise ImageError(name, f'cannot decode {len(content)} image bytes (truncated or corrupt)')
    if float32:
        img = img.astype(np.float32) / 255.
    return img


def quantize(img: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Float [0, 1] -> uint8 / uint16 with rounding (integer arrays pass through)."""
    if img.dtype in (np.uint8, np.uint16):
        return img
    if bit_depth not in (8, 16):
        raise ValueError(f'bit_depth must be 8 or 16, got {bit_depth}')
    peak = 255.0 if bit_depth == 8 else 65535.0
    out = np.clip(np.nan_to_num(img.astype(np.float32)), 0.0, 1.0) * peak
    return np.rint(out).astype(np.uint8 if bit_depth == 8 else np.uint16)


def write_image_atomic(path: str, img: np.ndarray, bit_depth: int = 8, alpha: np.ndarray | None = None,
                       channel_order: str = 'rgb', params: Sequence[int] | None = None) -> None:
    """Encode ``img`` by the extension of ``path`` (OpenCV) and write it atomically.

    Args:
        img: H x W, H x W x 1 or H x W x 3; float in [0, 1] (quantised to ``bit_depth``) or uint8/uint16.
        bit_depth: 8 or 16 for float input (16 needs PNG or TIFF).
        alpha: optional H x W alpha in the same range convention as ``img``; appended as the 4th channel.
        channel_order: order of ``img``'s colour channels (``'rgb'`` or ``'bgr'``).
        params: OpenCV encoder parameters (e.g. ``[cv2.IMWRITE_JPEG_QUALITY, 95]``).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower() or '.png'
    arr = quantize(np.asarray(img), bit_depth)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and channel_order == 'rgb':
        arr = arr[..., ::-1]
    if alpha is not None:
        a = quantize(np.asarray(alpha), 16 if arr.dtype == np.uint16 else 8).astype(arr.dtype)
        if a.ndim == 3:
            a = a[..., 0]
        if a.shape != arr.shape[:2]:
            raise ValueError(f'alpha size {a.shape} differs from the image size {arr.shape[:2]}')
        color = arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)
        arr = np.concatenate([color, a[..., None]], axis=2)
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr), list(params or []))
    if not ok:
        raise ImageError(path, f'OpenCV could not encode a {arr.dtype} image as {ext}')
    write_bytes_atomic(path, buf.tobytes())


def is_image_file(name: str) -> bool:
    """Whether ``name`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str, recursive: bool = False, relative: bool = False) -> list[str]:
    """The one image lister: sorted image files of ``folder`` by extension (case-insensitive, :data:`IMAGE_EXTENSIONS`),
    hidden files and folders skipped (``._x.png`` resource forks, our own ``.name.*.tmp`` temporaries).

    Paths are ``folder``-joined, or with ``relative=True`` relative to ``folder`` with ``/`` separators (LMDB keys,
    meta_info names). A missing folder lists nothing; callers that must refuse one say so themselves.
    """
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for f in files:
            if not f.startswith('.') and is_image_file(f):
                path = os.path.join(root, f)
                out.append(os.path.relpath(path, folder).replace(os.sep, '/') if relative else path)
        if not recursive:
            break
    return sorted(out)


def match_by_stem(ref_stems: Sequence[str], files: Sequence[str]) -> dict[str, str]:
    """Reference stem -> file whose stem is the same, or the stem + optional ``x<scale>`` + optional ``_<suffix>``.

    Tolerates BasicSR's result names (``baby_AESOP.png``, ``babyx4_out.png``). The longest matching reference
    stem wins (``img_1_out`` is ``img_1``, not ``img``); an exact stem beats a suffixed one.
    """
    stems = sorted(set(ref_stems), key=len, reverse=True)
    out: dict[str, str] = {}
    exact: set[str] = set()
    for f in sorted(files):
        r = os.path.splitext(os.path.basename(f))[0]
        for g in stems:
            if r == g:
                out[g] = f
                exact.add(g)
                break
            if re.fullmatch(re.escape(g) + r'(x\d+)?(_.*)?', r):
                if g not in out:
                    out[g] = f
                break
    return out


def write_figure_atomic(fig: Any, path: str, dpi: int = 100) -> None:
    """Save a matplotlib figure as PNG (exact figure size, no tight bbox) atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=dpi)
    write_bytes_atomic(path, buf.getvalue())
