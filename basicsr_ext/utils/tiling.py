"""Padding to an architecture's multiple and tiled inference with blended overlaps: the one place for both.

Used by validation (e.g. SwinIR's window padding, TVQ&RAP's multiple of 32/64, tvqrap.md §5), by
``basicsr_ext.infer`` and by the benchmarks.

- :func:`pad_to_multiple` pads the bottom/right edge (reflect; replicate where the image is too small to
  reflect) and returns the original size; :func:`crop_to` cuts the upscaled result back to ``scale x`` size.
- :func:`tiled_forward` runs ``fn`` on overlapping tiles of the padded image and blends them with weights that
  are 0 on each tile's outer quarter-overlap and a raised cosine across the middle, so seams are invisible.
  Choice (the official TVQ&RAP code averages overlapping tiles uniformly, tvqrap.md §5): uniform averaging
  keeps half the weight on pixels that saw the tile edge, which leaves a visible step.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = 'reflect') -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (N, C, H, W) at the bottom/right so H and W are multiples of ``multiple``; returns (x, (H, W)).

    ``mode`` is any ``F.pad`` mode. ``reflect`` pads larger than the image are done by repeated reflection;
    a 1-pixel side cannot be reflected and is replicated. The one padding helper of the package (archs,
    validation, inference).
    """
    h, w = x.shape[-2:]
    multiple = max(1, int(multiple))
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    if mode == 'constant':
        return F.pad(x, (0, pw, 0, ph), mode='constant', value=0.0), (h, w)
    if mode != 'reflect':
        return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)
    while ph or pw:
        sh, sw = min(ph, x.shape[-2] - 1), min(pw, x.shape[-1] - 1)
        if (ph and sh <= 0) or (pw and sw <= 0):  # 1-pixel side: reflection impossible, replicate the rest
            return F.pad(x, (0, pw, 0, ph), mode='replicate'), (h, w)
        x = F.pad(x, (0, sw, 0, sh), mode='reflect')
        ph, pw = ph - sh, pw - sw
    return x, (h, w)


def crop_to(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The top-left ``h x w`` of ``y`` (undo :func:`pad_to_multiple` after a ``scale x`` network)."""
    return y[..., :h, :w]


def padded_forward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int,
                   multiple: int = 1, mode: str = 'reflect') -> torch.Tensor:
    """``fn`` on ``x`` padded to ``multiple``, cropped back to exactly ``scale x`` the input size."""
    xp, (h, w) = pad_to_multiple(x, multiple, mode)
    y = fn(xp)
    expected = (xp.shape[-2] * scale, xp.shape[-1] * scale)
    if tuple(y.shape[-2:]) != expected:
        raise ValueError(f'the network returned {tuple(y.shape[-2:])} for a {tuple(xp.shape[-2:])} input; '
                         f'expected {expected} at scale {scale} (check --scale / the arch scale)')
    return crop_to(y, h * scale, w * scale)


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts covering ``[0, length)`` every ``stride``; the last tile is shifted back to end at ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, max(1, stride)))
    starts.append(length - tile)
    return starts


def _ramp(n: int, overlap: int, left: bool, right: bool, device, dtype) -> torch.Tensor:
    """1-D blending weights of one tile at the sides that border another tile.

    Within an overlap of ``overlap`` samples: weight 0 for the outer quarter (the pixels that saw the tile edge
    through the receptive field), a raised cosine over the middle half, 1 for the inner quarter. The ramps of
    two neighbours are mirror images, so they sum to 1 wherever both cover.
    """
    w = torch.ones(n, device=device, dtype=dtype)
    overlap = min(overlap, n // 2)
    margin, ramp = overlap // 4, overlap - 2 * (overlap // 4)
    if overlap > 0:
        t = (torch.arange(ramp, device=device, dtype=dtype) + 0.5) / ramp
        up = torch.cat([torch.zeros(margin, device=device, dtype=dtype), 0.5 - 0.5 * torch.cos(math.pi * t),
                        torch.ones(margin, device=device, dtype=dtype)])
        if left:
            w[:overlap] = up
        if right:
            w[n - overlap:] = torch.minimum(w[n - overlap:], up.flip(0))
    return w


def tiled_forward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int, tile: int = 0,
                  overlap: int = 32, multiple: int = 1, pad_mode: str = 'reflect') -> torch.Tensor:
    """``fn(x)`` for a ``scale x`` network, tile by tile when ``tile > 0`` and ``x`` is larger than a tile.

    The image is padded to ``multiple`` once (as an untiled run would be), the tile side is rounded down to a
    multiple, so every tile sees exactly the context of the untiled run except near its own edges; those
    pixels get weight 0 in the blend (see :func:`_ramp`). Keep ``overlap`` >= 2x the network's receptive
    radius (in input pixels) for seamless output.

    Args:
        fn: the network (N, C, h, w) -> (N, C', h*scale, w*scale); called with no_grad by the caller.
        x: the input (N, C, H, W).
        scale: the upscaling factor (1 for an auto-encoder).
        tile: tile side in input pixels (0: the whole image at once).
        overlap: input pixels shared by neighbouring tiles.
        multiple: the image (and every tile) is padded to this multiple (e.g. a window size).
        pad_mode: padding mode (see :func:`pad_to_multiple`).

    Returns:
        (N, C', H*scale, W*scale), float32 when tiled (accumulated in float32), else ``fn``'s dtype.
    """
    n, _, h, w = x.shape
    multiple = max(1, int(multiple))
    if tile <= 0 or (h <= tile and w <= tile):
        return padded_forward(fn, x, scale, multiple, pad_mode)
    xp, _ = pad_to_multiple(x, multiple, pad_mode)
    hp, wp = xp.shape[-2:]
    tile = max(multiple, int(tile) // multiple * multiple)
    overlap = max(0, min(int(overlap), tile // 2))
    # tiles start on the multiple's grid (the windows / unshuffle cells of the untiled run) unless that leaves no
    # overlap; the overlap then grows to what the grid allows
    stride = (tile - overlap) // multiple * multiple or tile - overlap
    overlap = tile - stride
    out = weight = None
    ys, xs = _starts(hp, tile, stride), _starts(wp, tile, stride)
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            y1, x1 = min(y0 + tile, hp), min(x0 + tile, wp)
            patch = padded_forward(fn, xp[..., y0:y1, x0:x1], scale, multiple, pad_mode).float()
            if out is None:
                out = patch.new_zeros((n, patch.shape[1], hp * scale, wp * scale))
                weight = patch.new_zeros((1, 1, hp * scale, wp * scale))
            # a shifted last tile overlaps its neighbour by more than ``overlap``: the weights are normalised
            # below, and the zero margins still keep every tile's edge pixels out of the result
            wy = _ramp((y1 - y0) * scale, overlap * scale, i > 0, i < len(ys) - 1, patch.device, patch.dtype)
            wx = _ramp((x1 - x0) * scale, overlap * scale, j > 0, j < len(xs) - 1, patch.device, patch.dtype)
            wmap = wy[:, None] * wx[None, :]
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] += patch * wmap
            weight[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] += wmap
    return crop_to(out / weight.clamp_min(1e-8), h * scale, w * scale)


def arch_multiple(net: torch.nn.Module) -> int:
    """The input-size multiple of a network: the one helper that validation, inference and the benchmarks ask.

    Our archs declare ``size_multiple`` (TVQRAPNet's ``pad_multiple``, the padding its own forward applies, e.g.
    the official test script's 64, is a multiple of it and wins). BasicSR's archs: the lcm of every submodule's
    ``window_size`` (SwinIR's window attention) and of ``RRDBNet``'s pixel-unshuffle factor at scale 2 (2) or
    1 (4); 1 when nothing constrains the size.
    """
    for name in ('pad_multiple', 'size_multiple'):
        value = getattr(net, name, None)
        if isinstance(value, int) and value > 0:
            return value
    multiple = 1
    for mod in net.modules():
        ws = getattr(mod, 'window_size', None)
        for v in (ws if isinstance(ws, (tuple, list)) else (ws,)):
            if isinstance(v, int) and v > 0:
                multiple = math.lcm(multiple, v)
    if type(net).__name__ == 'RRDBNet':
        multiple = math.lcm(multiple, {1: 4, 2: 2}.get(int(getattr(net, 'scale', 4)), 1))
    return multiple
