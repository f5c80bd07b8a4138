"""Super-resolve an image or a folder: ``basicsr-ext-infer -i IN -o OUT --opt X.yml`` (or ``--arch``).

    basicsr-ext-infer -i photo.png -o out/ --opt options/test_aesop_rrdb.yml --weights net_g_best.pth
    basicsr-ext-infer -i lr_folder/ -o out/ --arch RRDBNet --arch-opt num_in_ch=3 num_out_ch=3 num_block=23 --weights ESRGAN.pth --tile 256
    python basicsr_ext/infer.py --help

- Network: ``--opt`` reads ``network_g`` (and ``path.pretrain_network_g`` / ``param_key_g`` / ``scale``) from an
  option file, or ``--arch TYPE --arch-opt key=value ...`` builds any registered arch. ``--weights`` takes
  a checkpoint (``params_ema`` -> ``params`` -> raw dict, ``module.`` stripped, weights-only); an arch with
  ``convert_official_state_dict`` translates a released layout (one log line).
- Size: every image is padded to the arch's multiple (``--multiple``; default read from the arch: window size
  etc.) and cropped back to exactly ``scale x`` its size; ``--tile`` runs overlapping tiles blended smoothly
  (``basicsr_ext.utils.tiling``).
- Images are untrusted (``basicsr_ext.utils.image_io``): grayscale stays grayscale (the net sees it as RGB;
  the output is the channel mean), an alpha channel is upscaled separately with bicubic, 16-bit PNG/TIFF stay
  16-bit; the EXIF orientation is applied (a phone photo comes out upright). A corrupt, unreadable or too large
  file is reported and skipped; the others continue; the exit code is 1 if any failed. Outputs
  ``<stem>_<suffix>.<ext>`` are written atomically.
- Nothing lost: an output that would replace one of the inputs (``-o`` = the input folder with ``--suffix ''``)
  is refused before anything runs unless ``--overwrite``; two inputs that would write the same output, or ``-o``
  naming a file, are refused too.
- Before an image is decoded, the memory it needs (decoded input, output buffers and, without ``--tile``, the
  network's full-size feature maps) is estimated from its header and compared with the available RAM and, on a
  CUDA device, with the GPU's free memory (``torch.cuda.mem_get_info``): an image that cannot fit is skipped with
  the figure and the advice (``--tile``) instead of swapping, running out of GPU memory or being killed.
- Precision: ``--precision auto|fp32|bf16|fp16`` (``basicsr_ext.utils.precision``; ``auto``, the default: bf16 on a
  CPU with AMX / avx512_bf16, fp16 on CUDA, fp32 elsewhere; ``--bf16`` / ``--half`` are deprecated aliases).
  channels_last for net and input on CPU and CUDA (``--channels-last on|off`` overrides; a network that cannot
  take a channels_last input falls back to NCHW with one log line). The network is
  set up once; a folder of same-size images pays oneDNN's primitive creation on the first image only.
- An output holding NaN/inf values (a network that overflows, e.g. in fp16) is not written: the image counts as
  failed. The weights file and the key the weights came from are logged; non-finite weights are refused.
"""
from __future__ import annotations

import argparse
import logging
import os.path as osp
import sys
import time
from typing import Any, Sequence

if __package__ in (None, ''):  # run as a script: import the package from the repository root, not this folder
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

import basicsr_ext  # noqa: E402,F401
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from basicsr_ext.utils.checkpoint import CheckpointError, load_weights_into  # noqa: E402
from basicsr_ext.utils.image_io import (ImageError, image_header, list_images, read_image,  # noqa: E402
                                        write_image_atomic)
from basicsr_ext.utils.options import OptionError, load_option_file, yaml_load_safe  # noqa: E402
from basicsr_ext.utils.precision import (PRECISIONS, PrecisionError, cast_matmul_weights,  # noqa: E402
                                         channels_last_input, inference_autocast, precision_dtype,
                                         prefers_channels_last, resolve_precision, slow_precision_warning,
                                         to_channels_last)
from basicsr_ext.utils.tiling import TILE_NORMS, arch_multiple, norm_layers, tiled_forward  # noqa: E402

logger = logging.getLogger('basicsr_ext.infer')


class _StderrHandler(logging.Handler):
    """Log lines to whatever ``sys.stderr`` is at the time (so redirections and captures see them)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(record.getMessage(), file=sys.stderr, flush=True)


def parse_arch_opts(items: Sequence[str] | None) -> dict[str, Any]:
    """``['num_block=6', 'upscale=2']`` -> ``{'num_block': 6, 'upscale': 2}`` (values parsed as safe YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if '=' not in item:
            raise OptionError(f'--arch-opt {item!r}: expected key=value')
        k, v = item.split('=', 1)
        out[k.strip()] = yaml_load_safe(v.strip(), name=f'--arch-opt {item}')
    return out


def build_sr_network(arch: str | None = None, arch_opt: dict[str, Any] | None = None,
                     opt_path: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the generator from ``--arch`` + kwargs or an option file's ``network_g``.

    Returns (net, meta) with meta ``{'weights', 'param_key', 'scale'}`` taken from the option file (or None).
    """
    from basicsr.archs import build_network

    meta: dict[str, Any] = {'weights': None, 'param_key': None, 'scale': None}
    if opt_path:
        opt = load_option_file(opt_path)
        if not isinstance(opt.get('network_g'), dict):
            raise OptionError(f'{opt_path}: no network_g block')
        net_opt = dict(opt['network_g'])
        path = opt.get('path') or {}
        meta.update(weights=path.get('pretrain_network_g'), param_key=path.get('param_key_g'), scale=opt.get('scale'))
        if arch:
            net_opt['type'] = arch
    elif arch:
        net_opt = {'type': arch}
    else:
        raise OptionError('give --opt X.yml (its network_g) or --arch TYPE')
    net_opt.update(arch_opt or {})
    try:
        net = build_network(net_opt)
    except KeyError as e:
        raise OptionError(f'unknown arch {net_opt.get("type")!r}: {e}') from None
    except TypeError as e:
        raise OptionError(f'arch {net_opt.get("type")!r}: bad options {dict(net_opt)}: {e}') from None
    return net, meta


def probe_scale(net: torch.nn.Module, multiple: int, device: torch.device, in_ch: int = 3) -> int:
    """The upscaling factor, measured: output height / input height on a small input."""
    side = max(16, multiple * (-(-16 // multiple)))
    with torch.no_grad():
        y = net(torch.rand(1, in_ch, side, side, device=device))
    if y.shape[-2] % side:
        raise OptionError(f'the network maps {side}x{side} to {tuple(y.shape[-2:])}: not an integer scale')
    return y.shape[-2] // side


class NonFiniteOutputError(ValueError):
    """The network produced NaN or inf values for an image."""


def available_memory() -> int | None:
    """Bytes of RAM available to this process now (psutil, else /proc/meminfo), or None when unknown."""
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported here: try the kernel's own figure
        pass
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_gpu_memory(device: torch.device) -> int | None:
    """Bytes free on the CUDA ``device`` now (``torch.cuda.mem_get_info``: the driver's figure, other processes
    included), or None when unknown (not CUDA, or the query fails)."""
    if device.type != 'cuda':
        return None
    try:
        return int(torch.cuda.mem_get_info(device)[0])
    except (RuntimeError, AssertionError, ValueError, AttributeError):
        return None


class Upscaler:
    """A loaded network plus how to run it (scale, multiple, tiles, precision, memory format).

    Set up once, reused for every image: the network is moved to the device, put in channels_last when that
    helps (:func:`basicsr_ext.utils.precision.prefers_channels_last`) and, for bf16/fp16, its conv / Linear weights
    are stored in that precision (:func:`~basicsr_ext.utils.precision.cast_matmul_weights`, bit-identical to
    autocast's own per-call casts). Only the network call runs under autocast; padding, tiling and blending stay
    fp32. oneDNN keeps the primitives of each input size, so a folder of same-size images pays the set-up on the
    first image only.
    """

    def __init__(self, net: torch.nn.Module, scale: int | None = None, tile: int = 0, tile_overlap: int = 32,
                 multiple: int | None = None, device: str | torch.device | None = None,
                 precision: str = 'fp32', channels_last: bool | None = None, tile_norm: str = 'global') -> None:
        self.device = torch.device(device) if device else torch.device(
            'cuda' if torch.cuda.is_available() else 'cpu')
        try:
            self.precision = resolve_precision(precision, self.device)
        except PrecisionError as e:
            raise OptionError(f'--precision: {e}') from None
        self.net = net.to(self.device).eval()
        self.multiple = int(multiple) if multiple else arch_multiple(net)
        self.scale = int(scale) if scale else probe_scale(self.net, self.multiple, self.device)
        self.tile, self.tile_overlap = int(tile), int(tile_overlap)
        # GroupNorm nets (TVQ&RAP) tiled with whole-image statistics: the tiles run in lock-step, so every tile's
        # feature maps are alive together (utils.tiling._lockstep): memory as untiled, output as untiled
        self.tile_norm, self.has_norms = tile_norm, bool(norm_layers(self.net))
        self.locked = bool(self.tile) and tile_norm == 'global' and self.has_norms
        self.amp_dtype = None if self.precision == 'fp32' else precision_dtype(self.precision)
        self.channels_last = (prefers_channels_last(self.device, self.precision) if channels_last is None
                              else bool(channels_last))
        self.channels_last_auto = channels_last is None
        if self.channels_last:
            to_channels_last(self.net)
        cast_matmul_weights(self.net, self.precision)
        convs = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        self.max_channels = max(convs, default=64)

    def tile_advice(self) -> str:
        """What to try when the feature maps do not fit."""
        if self.has_norms and (self.locked or not self.tile):
            return f'--tile {self.tile or 256} --tile-norm tile (independent tiles: their own GroupNorm statistics)'
        return 'a smaller --tile' if self.tile else '--tile 256'

    def describe(self) -> str:
        """``precision bf16, channels_last`` for the log line."""
        return f'precision {self.precision}, {"channels_last" if self.channels_last else "NCHW"}'

    def run_net(self, x: torch.Tensor) -> torch.Tensor:
        """The network on one (padded) input or tile, in the chosen precision and memory format."""
        if self.channels_last:
            x = channels_last_input(x)
        with inference_autocast(self.device, self.precision):
            try:
                return self.net(x)
            except RuntimeError as e:  # e.g. ``.view`` on a 4-D map: this network needs NCHW
                if not (self.channels_last and self.channels_last_auto and 'view' in str(e)):
                    raise
                logger.warning(f'channels_last: {type(self.net).__name__} cannot take a channels_last input '
                               f'({str(e).splitlines()[0][:120]}); running it in NCHW')
                self.channels_last = False
                self.net.to(memory_format=torch.contiguous_format)
                return self.net(x.contiguous())

    def memory_needed(self, width: int, height: int) -> tuple[int, int]:
        """(bytes for the image buffers in RAM, bytes for the network's feature maps in RAM) to upscale a
        ``width`` x ``height`` image: decoded input and its float copies, the float output, its copies and the
        quantised result; feature maps: two of the widest conv (``max_channels``) at output size (tiles: at tile
        size; on a GPU they are in GPU memory, not counted). An estimate, on the low side."""
        in_px = width * height
        out_px = in_px * self.scale ** 2
        buffers = in_px * (4 + 2 * 3 * 4) + out_px * (3 * 3 * 4 + 2 * 4)
        if self.device.type != 'cpu':
            return buffers, 0
        side = (self.tile + 2 * self.tile_overlap) * self.scale if self.tile and not self.locked else None
        act_px = min(out_px, side * side) if side else out_px
        return buffers, 2 * self.max_channels * 4 * act_px

    def gpu_memory_needed(self, width: int, height: int) -> tuple[int, int]:
        """(bytes of device memory for the image buffers, bytes for the network's feature maps) to upscale a
        ``width`` x ``height`` image on a GPU: the float input and its padded copy, the float output (tiled: the
        fp32 accumulator, its weight map and the normalised result; untiled: the network's output and the cropped
        copy); two of the widest conv's feature maps at output size (tiles: at tile size) in the run's precision.
        The network's weights are already on the device (not in the free figure). An estimate, on the low side."""
        in_px = width * height
        out_px = in_px * self.scale ** 2
        side = (self.tile + 2 * self.tile_overlap) * self.scale if self.tile and not self.locked else None
        act_px = min(out_px, side * side) if side else out_px
        elem = 4 if self.amp_dtype is None else torch.finfo(self.amp_dtype).bits // 8
        output = out_px * (3 * 4 * 3 + 4) if self.tile else out_px * 3 * 4 * 2
        return in_px * 3 * 4 * 2 + output, 2 * self.max_channels * elem * act_px

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """H x W x 3 float RGB [0, 1] -> (H*s) x (W*s) x 3 float RGB [0, 1]; NonFiniteOutputError when the network
        output holds NaN or inf."""
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).unsqueeze(0).to(self.device)
        with torch.inference_mode():
            y = tiled_forward(self.run_net, x, self.scale, self.tile, self.tile_overlap, self.multiple,
                              norm_net=self.net if self.tile_norm == 'global' else None)
        finite = torch.isfinite(y)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            hint = ' (try --precision fp32 or bf16)' if self.amp_dtype == torch.float16 else ''
            raise NonFiniteOutputError(f'the network output holds {bad} NaN/inf values of {y.numel()}: nothing '
                                       f'written{hint}')
        return y[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """The alpha channel, upscaled separately with bicubic (OpenCV), clipped to [0, 1]."""
    h, w = alpha.shape[:2]
    return np.clip(cv2.resize(alpha, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def output_path(src: str, out_dir: str, suffix: str, ext: str) -> str:
    """Where :func:`process_file` writes the result of ``src``: ``<out_dir>/<stem>_<suffix><ext>``."""
    stem = osp.splitext(osp.basename(src))[0]
    return osp.join(out_dir, f'{stem}_{suffix}{ext}' if suffix else f'{stem}{ext}')


def check_outputs(files: Sequence[str], out_dir: str, suffix: str, ext: str, overwrite: bool = False) -> None:
    """Refuse (OptionError, before anything runs) ``-o`` naming a file, an output that would replace an input
    (unless ``overwrite``) and two inputs writing the same output."""
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise OptionError(f'-o {out_dir} is an existing file: -o takes a folder (created when missing)')
    inputs = {osp.normcase(osp.realpath(f)): f for f in files}
    seen: dict[str, str] = {}
    for src in files:
        dst = output_path(src, out_dir, suffix, ext)
        key = osp.normcase(osp.realpath(dst))
        if key in inputs and not overwrite:
            raise OptionError(f'{dst} would overwrite the input {inputs[key]} (-o {out_dir}, --suffix {suffix!r}, '
                              f'--ext {ext.lstrip(".")}): choose another -o or --suffix, or pass --overwrite')
        if key in seen and seen[key] != src:
            raise OptionError(f'{seen[key]} and {src} would both be written to {dst}: give them different names '
                              'or run them separately')
        seen[key] = src


def check_memory(up: Upscaler, src: str, max_pixels: int | None = None, available: int | None = None) -> None:
    """Refuse (ImageError, nothing decoded) an image whose estimated memory, from its header, exceeds the available
    RAM (:meth:`Upscaler.memory_needed`) or, on a CUDA device, the free GPU memory
    (:meth:`Upscaler.gpu_memory_needed` against ``torch.cuda.mem_get_info``), with the figures and what to do."""
    _, w, h, _, _ = image_header(src, max_pixels)
    gib = 1024 ** 3
    size = f'{w}x{h} -> {w * up.scale}x{h * up.scale}'
    gpu_free = available_gpu_memory(up.device)
    if gpu_free is not None:
        buffers, maps = up.gpu_memory_needed(w, h)
        where = f'GiB of GPU memory on {up.device}, {gpu_free / gib:.1f} GiB free'
        if buffers > gpu_free:
            raise ImageError(src, f'{size} needs about {buffers / gib:.1f} {where} for the image buffers alone: '
                             'split or downscale the image, or use --device cpu')
        if buffers + maps > gpu_free:
            tile = up.tile_advice()
            raise ImageError(src, f'{size} needs about {(buffers + maps) / gib:.1f} {where} '
                             f'({maps / gib:.1f} GiB of it the network\'s feature maps): use {tile}' +
                             (' or --precision fp16/bf16' if up.amp_dtype is None else ''))
    available = available_memory() if available is None else available
    if available is None:
        return
    buffers, maps = up.memory_needed(w, h)
    if buffers > available:
        raise ImageError(src, f'{size} needs about {buffers / gib:.1f} GiB of RAM for the image buffers alone, '
                         f'{available / gib:.1f} GiB available: split or downscale the image')
    if buffers + maps > available:
        tile = up.tile_advice()
        raise ImageError(src, f'{size} needs about {(buffers + maps) / gib:.1f} GiB of RAM '
                         f'({maps / gib:.1f} GiB of it the network\'s feature maps), {available / gib:.1f} GiB '
                         f'available: use {tile}')


def process_file(up: Upscaler, src: str, out_dir: str, suffix: str, ext: str,
                 max_pixels: int | None = None) -> str:
    """Check memory, read, upscale and write one image; returns the output path. Raises ImageError for a bad file,
    one too large for the memory, or an output holding NaN/inf (nothing written)."""
    check_memory(up, src, max_pixels)
    img, info = read_image(src, max_pixels=max_pixels, orient=True)
    try:
        out = up(img)
    except NonFiniteOutputError as e:
        raise ImageError(src, str(e)) from None
    if info.channels == 1:
        out = out.mean(axis=2, keepdims=True)
    alpha = upscale_alpha(info.alpha, up.scale) if info.alpha is not None else None
    bit_depth = 16 if info.bit_depth == 16 and ext in ('.png', '.tif', '.tiff') else 8
    dst = output_path(src, out_dir, suffix, ext)
    write_image_atomic(dst, out, bit_depth=bit_depth, alpha=alpha)
    return dst


def collect_inputs(inputs: Sequence[str]) -> list[str]:
    """Files given directly plus the images of given folders (sorted); a missing path is kept (reported later)."""
    files: list[str] = []
    for p in inputs:
        files += list_images(p) if osp.isdir(p) else [p]
    return files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='basicsr-ext-infer', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-i', '--input', nargs='+', required=True, help='image files and/or folders')
    p.add_argument('-o', '--output', required=True, help='output folder (created when missing)')
    p.add_argument('--overwrite', action='store_true',
                   help='allow outputs to replace input files (e.g. -o <input folder> --suffix "")')
    p.add_argument('--opt', help='option file: network_g (+ path.pretrain_network_g, param_key_g, scale)')
    p.add_argument('--arch', help='registered arch type (e.g. RRDBNet, SwinIR, TVQRAPNet); overrides --opt type')
    p.add_argument('--arch-opt', nargs='*', default=[], metavar='KEY=VALUE', help='arch kwargs (YAML values)')
    p.add_argument('--weights', help='checkpoint (default: path.pretrain_network_g of --opt)')
    p.add_argument('--param-key', default=None, help='checkpoint key (default params_ema, then params, then raw)')
    p.add_argument('--scale', type=int, default=None, help='upscaling factor (default: measured from the net)')
    p.add_argument('--tile', type=int, default=0, help='tile side in LR pixels (0: whole image)')
    p.add_argument('--tile-overlap', type=int, default=32, help='LR pixels shared by neighbouring tiles')
    p.add_argument('--tile-norm', choices=TILE_NORMS, default='global',
                   help='GroupNorm nets (TVQ&RAP) with --tile: global (default) = statistics of the whole image, '
                        'tiles run in lock-step, output as untiled, memory about as untiled; tile = each tile its '
                        'own statistics (least memory, another image)')
    p.add_argument('--multiple', type=int, default=None, help='pad LR to this multiple (default: from the arch)')
    p.add_argument('--suffix', default='out', help='output name <stem>_<suffix>.<ext> (empty: <stem>.<ext>)')
    p.add_argument('--ext', default='png', help='output format: png (default, keeps 16-bit), tif, jpg, webp')
    p.add_argument('--device', default=None, help='cpu, cuda, cuda:1 (default: cuda if available)')
    prec = p.add_mutually_exclusive_group()
    prec.add_argument('--precision', choices=PRECISIONS, default=None,
                      help='auto (default): bf16 on a CPU with AMX / avx512_bf16, fp16 on CUDA, fp32 elsewhere')
    prec.add_argument('--half', action='store_true', help='deprecated: --precision fp16')
    prec.add_argument('--bf16', action='store_true', help='deprecated: --precision bf16')
    p.add_argument('--channels-last', choices=('auto', 'on', 'off'), default='auto',
                   help='memory format of the net and input (auto: on for CPU and CUDA, NCHW for a net that '
                        'cannot take it)')
    p.add_argument('--max-pixels', type=int, default=None,
                   help='refuse inputs larger than this many pixels (default 20000*20000, env BASICSR_EXT_MAX_PIXELS)')
    p.add_argument('--no-progress', action='store_true', help='no tqdm progress bar')
    return p


def check_arguments(args: argparse.Namespace) -> None:
    """Numbers argparse accepts but that cannot work: OptionError naming the flag."""
    for flag, value, least, what in (('--tile', args.tile, 0, '0 (off) or a tile side in LR pixels'),
                                     ('--tile-overlap', args.tile_overlap, 0, 'a number of LR pixels >= 0'),
                                     ('--scale', args.scale, 1, 'an upscaling factor >= 1'),
                                     ('--multiple', args.multiple, 1, 'a padding multiple >= 1'),
                                     ('--max-pixels', args.max_pixels, 1, 'a number of pixels >= 1')):
        if value is not None and value < least:
            raise OptionError(f'{flag} {value}: must be {what}')


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 all written, 1 some failed, 2 bad options or weights)."""
    args = build_parser().parse_args(argv)
    if not logger.handlers:
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.INFO)
    ext = '.' + args.ext.lower().lstrip('.')
    precision = args.precision or ('fp16' if args.half else 'bf16' if args.bf16 else 'auto')
    if args.half or args.bf16:
        logger.warning(f'warning: {"--half" if args.half else "--bf16"} is deprecated: use --precision {precision}')
    try:
        check_arguments(args)
        files = collect_inputs(args.input)
        if not files:
            raise OptionError(f'no images found in {args.input}')
        check_outputs(files, args.output, args.suffix, ext, args.overwrite)
        net, meta = build_sr_network(args.arch, parse_arch_opts(args.arch_opt), args.opt)
        weights = args.weights or meta['weights']
        if not weights:
            raise OptionError('no weights: give --weights ckpt.pth (or path.pretrain_network_g in --opt)')
        load_weights_into(net, weights, args.param_key or meta['param_key'] or 'params_ema', True, logger)
        up = Upscaler(net, args.scale or meta['scale'], args.tile, args.tile_overlap, args.multiple, args.device,
                      precision, {'auto': None, 'on': True, 'off': False}[args.channels_last], args.tile_norm)
    except (OptionError, CheckpointError) as e:
        logger.error(f'error: {e}')
        return 2
    slow = slow_precision_warning(up.device, up.precision)
    if slow:
        logger.warning(f'warning: {slow}')
    logger.info(f'{len(files)} image(s), x{up.scale}, multiple {up.multiple}, tile {up.tile or "off"}, '
                f'device {up.device}, {up.describe()}')
    failed: list[tuple[str, str]] = []
    written = 0
    t0 = time.time()
    bar = None
    if not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(files, unit='img', file=sys.stderr)
    for src in (bar if bar is not None else files):
        try:
            process_file(up, src, args.output, args.suffix, ext, args.max_pixels)
            written += 1
        except ImageError as e:
            failed.append((src, e.reason))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            failed.append((src, 'out of GPU memory: try --tile 256 (or smaller), --precision fp16/bf16'))
        except (RuntimeError, ValueError, MemoryError) as e:
            failed.append((src, f'{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}'))
        if failed and failed[-1][0] == src:
            msg = f'skipped {src}: {failed[-1][1]}'
            (bar.write(msg, file=sys.stderr) if bar is not None else logger.warning(msg))
    if bar is not None:
        bar.close()
    logger.info(f'done in {time.time() - t0:.3f}s: {written} written to {args.output}, {len(failed)} failed')
    for src, reason in failed:
        logger.info(f'  FAILED {src}: {reason}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
