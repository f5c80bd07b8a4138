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
  16-bit. A corrupt, unreadable or too large file is reported and skipped; the others continue; the exit
  code is 1 if any failed. Outputs ``<stem>_<suffix>.<ext>`` are written atomically.
"""
from __future__ import annotations

import argparse
import logging
import os.path as osp
import sys
import time
from contextlib import nullcontext
from typing import Any, Sequence

if __package__ in (None, ''):  # run as a script: import the package from the repository root, not this folder
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

import basicsr_ext  # noqa: E402,F401
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from basicsr_ext.utils.checkpoint import CheckpointError, load_weights_into  # noqa: E402
from basicsr_ext.utils.image_io import ImageError, list_images, read_image, write_image_atomic  # noqa: E402
from basicsr_ext.utils.options import OptionError, load_option_file, yaml_load_safe  # noqa: E402
from basicsr_ext.utils.tiling import arch_multiple, tiled_forward  # noqa: E402

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


class Upscaler:
    """A loaded network plus how to run it (scale, multiple, tiles, precision)."""

    def __init__(self, net: torch.nn.Module, scale: int | None = None, tile: int = 0, tile_overlap: int = 32,
                 multiple: int | None = None, device: str | torch.device | None = None,
                 precision: str = 'fp32') -> None:
        self.device = torch.device(device) if device else torch.device(
            'cuda' if torch.cuda.is_available() else 'cpu')
        if precision == 'fp16' and self.device.type != 'cuda':
            raise OptionError('--half needs a CUDA device (fp16 on CPU is slow or unsupported); use --bf16')
        self.net = net.to(self.device).eval()
        self.multiple = int(multiple) if multiple else arch_multiple(net)
        self.scale = int(scale) if scale else probe_scale(self.net, self.multiple, self.device)
        self.tile, self.tile_overlap = int(tile), int(tile_overlap)
        self.amp_dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(precision)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """H x W x 3 float RGB [0, 1] -> (H*s) x (W*s) x 3 float RGB [0, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).unsqueeze(0).to(self.device)
        ctx = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with torch.no_grad(), ctx:
            y = tiled_forward(self.net, x, self.scale, self.tile, self.tile_overlap, self.multiple)
        return y[0].float().clamp_(0, 1).permute(1, 2, 0).cpu().numpy()


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """The alpha channel, upscaled separately with bicubic (OpenCV), clipped to [0, 1]."""
    h, w = alpha.shape[:2]
    return np.clip(cv2.resize(alpha, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def process_file(up: Upscaler, src: str, out_dir: str, suffix: str, ext: str,
                 max_pixels: int | None = None) -> str:
    """Read, upscale and write one image; returns the output path. Raises ImageError for a bad file."""
    img, info = read_image(src, max_pixels=max_pixels)
    out = up(img)
    if info.channels == 1:
        out = out.mean(axis=2, keepdims=True)
    alpha = upscale_alpha(info.alpha, up.scale) if info.alpha is not None else None
    bit_depth = 16 if info.bit_depth == 16 and ext in ('.png', '.tif', '.tiff') else 8
    stem = osp.splitext(osp.basename(src))[0]
    dst = osp.join(out_dir, f'{stem}_{suffix}{ext}' if suffix else f'{stem}{ext}')
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
    p.add_argument('-o', '--output', required=True, help='output folder')
    p.add_argument('--opt', help='option file: network_g (+ path.pretrain_network_g, param_key_g, scale)')
    p.add_argument('--arch', help='registered arch type (e.g. RRDBNet, SwinIR, TVQRAPNet); overrides --opt type')
    p.add_argument('--arch-opt', nargs='*', default=[], metavar='KEY=VALUE', help='arch kwargs (YAML values)')
    p.add_argument('--weights', help='checkpoint (default: path.pretrain_network_g of --opt)')
    p.add_argument('--param-key', default=None, help='checkpoint key (default params_ema, then params, then raw)')
    p.add_argument('--scale', type=int, default=None, help='upscaling factor (default: measured from the net)')
    p.add_argument('--tile', type=int, default=0, help='tile side in LR pixels (0: whole image)')
    p.add_argument('--tile-overlap', type=int, default=32, help='LR pixels shared by neighbouring tiles')
    p.add_argument('--multiple', type=int, default=None, help='pad LR to this multiple (default: from the arch)')
    p.add_argument('--suffix', default='out', help='output name <stem>_<suffix>.<ext> (empty: <stem>.<ext>)')
    p.add_argument('--ext', default='png', help='output format: png (default, keeps 16-bit), tif, jpg, webp')
    p.add_argument('--device', default=None, help='cpu, cuda, cuda:1 (default: cuda if available)')
    prec = p.add_mutually_exclusive_group()
    prec.add_argument('--half', action='store_true', help='fp16 autocast (CUDA)')
    prec.add_argument('--bf16', action='store_true', help='bf16 autocast')
    p.add_argument('--max-pixels', type=int, default=None,
                   help='refuse inputs larger than this many pixels (default 20000*20000, env BASICSR_EXT_MAX_PIXELS)')
    p.add_argument('--no-progress', action='store_true', help='no tqdm progress bar')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 all written, 1 some failed, 2 bad options or weights)."""
    args = build_parser().parse_args(argv)
    if not logger.handlers:
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.INFO)
    try:
        net, meta = build_sr_network(args.arch, parse_arch_opts(args.arch_opt), args.opt)
        weights = args.weights or meta['weights']
        if not weights:
            raise OptionError('no weights: give --weights ckpt.pth (or path.pretrain_network_g in --opt)')
        load_weights_into(net, weights, args.param_key or meta['param_key'] or 'params_ema', True, logger)
        up = Upscaler(net, args.scale or meta['scale'], args.tile, args.tile_overlap, args.multiple, args.device,
                      'fp16' if args.half else 'bf16' if args.bf16 else 'fp32')
    except (OptionError, CheckpointError) as e:
        logger.error(f'error: {e}')
        return 2
    ext = '.' + args.ext.lower().lstrip('.')
    files = collect_inputs(args.input)
    if not files:
        logger.error(f'error: no images found in {args.input}')
        return 2
    logger.info(f'{len(files)} image(s), x{up.scale}, multiple {up.multiple}, tile {up.tile or "off"}, '
                f'device {up.device}')
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
            failed.append((src, 'out of GPU memory: try --tile 256 (or smaller), --half/--bf16'))
        except (RuntimeError, ValueError, MemoryError) as e:
            failed.append((src, f'{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}'))
        if failed and failed[-1][0] == src:
            msg = f'skipped {src}: {failed[-1][1]}'
            (bar.write(msg, file=sys.stderr) if bar is not None else logger.warning(msg))
    if bar is not None:
        bar.close()
    logger.info(f'done in {time.time() - t0:.1f}s: {written} written to {args.output}, {len(failed)} failed')
    for src, reason in failed:
        logger.info(f'  FAILED {src}: {reason}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
