"""Padding to an architecture's multiple and tiled inference with blended overlaps: the one place for both.

Used by validation (e.g. SwinIR's window padding, TVQ&RAP's multiple of 32/64, tvqrap.md §5), by
``basicsr_ext.infer`` and by the benchmarks.

- :func:`pad_to_multiple` pads the bottom/right edge (reflect; replicate where the image is too small to
  reflect) and returns the original size; :func:`crop_to` cuts the upscaled result back to ``scale x`` size.
- :func:`tiled_forward` runs ``fn`` on overlapping tiles of the padded image and blends them with weights that
  are 0 on each tile's outer quarter-overlap and a raised cosine across the middle, so seams are invisible.
  Choice (the official TVQ&RAP code averages overlapping tiles uniformly, tvqrap.md §5): uniform averaging
  keeps half the weight on pixels that saw the tile edge, which leaves a visible step.
- GroupNorm networks (the TVQ tokenizer, TVQ&RAP): a tile's own statistics differ from the image's, and a deep
  low-resolution path (H/32) sees far past any practical overlap, so independent tiles give another image (9-20 dB
  from the untiled output on tiny nets). With ``norm_net`` the tiles run in lock-step (:func:`_lockstep`): every
  GroupNorm takes the statistics of the whole image, and each tile's halo is refreshed from its neighbours there,
  so tiled == untiled (to float precision) once the halo (half the overlap) covers the receptive field *between
  two GroupNorms* rather than the network's. ``val.tile_norm`` / ``--tile-norm``: ``global`` (default) or
  ``tile`` (independent tiles).
"""
from __future__ import annotations

import math
import threading
from contextlib import AbstractContextManager, ExitStack, contextmanager
from functools import partial
from typing import Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


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


def _axis(length: int, tile: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(start, end, core start, core end) of the tiles along one axis; the cores partition ``[0, length)``, cut in
    the middle of each overlap."""
    spans = [(s, min(s + tile, length)) for s in _starts(length, tile, stride)]
    cuts = [0] + [(nxt + end) // 2 for (_, end), (nxt, _) in zip(spans, spans[1:])] + [length]
    return [(s, e, cuts[k], cuts[k + 1]) for k, (s, e) in enumerate(spans)]


def to_feature(v: int, size: int, feature_size: int) -> int:
    """Input coordinate ``v`` of a ``size``-pixel side at a feature map of ``feature_size`` pixels, rounded half up:
    the same at every tile that sees it, so the cores of :func:`tile_layout` partition every feature map."""
    return (2 * v * feature_size + size) // (2 * size)


class Tile(NamedTuple):
    """One tile of :func:`tile_layout`, in padded-input pixels: ``box`` (y0, y1, x0, x1) is what the network sees,
    ``core`` (same form, inside ``box``) the part of the image the tile owns (the cores partition the image);
    ``row``/``col`` its grid position, ``rows``/``cols`` the grid size."""
    box: tuple[int, int, int, int]
    core: tuple[int, int, int, int]
    row: int
    col: int
    rows: int
    cols: int


def tile_layout(h: int, w: int, tile: int, overlap: int, multiple: int = 1) -> tuple[list[Tile], int]:
    """The tiles of an ``h x w`` image already padded to ``multiple``, and the overlap actually used.

    The tile side is rounded down to a multiple; tiles start on the multiple's grid (the windows / unshuffle cells
    of the untiled run) unless that leaves no overlap; the overlap then grows to what the grid allows.
    """
    multiple = max(1, int(multiple))
    tile = max(multiple, int(tile) // multiple * multiple)
    overlap = max(0, min(int(overlap), tile // 2))
    stride = (tile - overlap) // multiple * multiple or tile - overlap
    overlap = tile - stride
    ys, xs = _axis(h, tile, stride), _axis(w, tile, stride)
    tiles = [Tile((y0, y1, x0, x1), (cy0, cy1, cx0, cx1), i, j, len(ys), len(xs))
             for i, (y0, y1, cy0, cy1) in enumerate(ys) for j, (x0, x1, cx0, cx1) in enumerate(xs)]
    return tiles, overlap


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
                  overlap: int = 32, multiple: int = 1, pad_mode: str = 'reflect',
                  norm_net: nn.Module | None = None) -> torch.Tensor:
    """``fn(x)`` for a ``scale x`` network, tile by tile when ``tile > 0`` and ``x`` is larger than a tile.

    The image is padded to ``multiple`` once (as an untiled run would be) and cut by :func:`tile_layout`, so every
    tile sees exactly the context of the untiled run except near its own edges; those pixels get weight 0 in the
    blend (see :func:`_ramp`). Keep ``overlap`` >= 2x the network's receptive radius (in input pixels) for
    seamless output.

    With ``norm_net``, every ``nn.GroupNorm`` of that network normalises with the statistics of the whole image,
    as in the untiled run, instead of each tile's own: the tiles run in lock-step (:func:`_lockstep`). Without it
    (or for a network without GroupNorm) each tile runs on its own.

    Args:
        fn: the network (N, C, h, w) -> (N, C', h*scale, w*scale); called with no_grad by the caller.
        x: the input (N, C, H, W).
        scale: the upscaling factor (1 for an auto-encoder).
        tile: tile side in input pixels (0: the whole image at once).
        overlap: input pixels shared by neighbouring tiles.
        multiple: the image (and every tile) is padded to this multiple (e.g. a window size).
        pad_mode: padding mode (see :func:`pad_to_multiple`).
        norm_net: the network whose GroupNorm layers take whole-image statistics (``val.tile_norm: global``).

    Returns:
        (N, C', H*scale, W*scale), float32 when tiled (accumulated in float32), else ``fn``'s dtype.
    """
    n, _, h, w = x.shape
    multiple = max(1, int(multiple))
    if tile <= 0 or (h <= tile and w <= tile):
        return padded_forward(fn, x, scale, multiple, pad_mode)
    xp, _ = pad_to_multiple(x, multiple, pad_mode)
    hp, wp = xp.shape[-2:]
    tiles, overlap = tile_layout(hp, wp, tile, overlap, multiple)

    def job(t: Tile) -> Callable[[], torch.Tensor]:
        y0, y1, x0, x1 = t.box
        return lambda: padded_forward(fn, xp[..., y0:y1, x0:x1], scale, multiple, pad_mode)

    norms = norm_layers(norm_net) if norm_net is not None else []
    patches = _lockstep(tiles, [job(t) for t in tiles], norms, xp) if norms else \
        ((k, job(t)()) for k, t in enumerate(tiles))
    out = weight = None
    for k, patch in patches:
        t = tiles[k]
        y0, y1, x0, x1 = t.box
        patch = patch.float()
        if out is None:
            out = patch.new_zeros((n, patch.shape[1], hp * scale, wp * scale))
            weight = patch.new_zeros((1, 1, hp * scale, wp * scale))
        # a shifted last tile overlaps its neighbour by more than ``overlap``: the weights are normalised
        # below, and the zero margins still keep every tile's edge pixels out of the result
        wy = _ramp((y1 - y0) * scale, overlap * scale, t.row > 0, t.row < t.rows - 1, patch.device, patch.dtype)
        wx = _ramp((x1 - x0) * scale, overlap * scale, t.col > 0, t.col < t.cols - 1, patch.device, patch.dtype)
        wmap = wy[:, None] * wx[None, :]
        out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] += patch * wmap
        weight[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] += wmap
    return crop_to(out / weight.clamp_min(1e-8), h * scale, w * scale)


# ----------------------------------------------------------------------------------------------------------
# GroupNorm with whole-image statistics: the tiles in lock-step
# ----------------------------------------------------------------------------------------------------------
#: ``val.tile_norm``: ``global`` = every GroupNorm takes the statistics of the whole image (tiled == untiled up to
#: the receptive field); ``tile`` = each tile its own (less memory, visibly different for GroupNorm nets)
TILE_NORMS = ('global', 'tile')


def norm_layers(net: nn.Module) -> list[nn.GroupNorm]:
    """The layers whose statistics span the whole feature map: every ``nn.GroupNorm`` of ``net``."""
    return [m for m in net.modules() if isinstance(m, nn.GroupNorm)]


_running = threading.local()  # .worker: the _Worker of the tile this thread runs


class _Abort(BaseException):
    """Unwinds a parked tile after another tile failed."""


class _Worker:
    """One tile in its own thread; it parks at every GroupNorm until the statistics of all tiles are combined."""

    def __init__(self, index: int, job: Callable[[], torch.Tensor], tile: Tile, parked: threading.Semaphore) -> None:
        self.index, self.job, self.parked = index, job, parked
        y0, y1, x0, x1 = tile.box
        cy0, cy1, cx0, cx1 = tile.core
        self.tile, self.neighbours = tile, []
        self.size, self.core = (y1 - y0, x1 - x0), (cy0 - y0, cy1 - y0, cx0 - x0, cx1 - x0)
        self.go = threading.Semaphore(0)
        self.result = self.error = self.layer = self.stats = self.norm = self.x = None
        self.done = self.abort = False

    def run(self, state: Callable[[], AbstractContextManager]) -> None:
        self.go.acquire()
        try:
            if not self.abort:
                _running.worker = self
                with state():
                    self.result = self.job()
        except _Abort:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self.error = e
        finally:
            _running.worker = None
            self.done = True
            self.parked.release()

    def park(self, layer: nn.GroupNorm, x: torch.Tensor, stats: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Hand this tile's input ``x`` and statistics over, wait for every tile's; returns the global (mean, rstd).
        Meanwhile the halo of ``x`` may be refreshed in place (:func:`_exchange_halos`)."""
        self.layer, self.x, self.stats = layer, x, stats
        self.parked.release()
        self.go.acquire()
        self.x = None
        if self.abort:
            raise _Abort
        return self.norm


def _core_stats(x: torch.Tensor, worker: _Worker) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(pixels k, per-channel mean (N, C), per-channel sum of squared deviations (N, C)) of the tile's core, mapped to
    the resolution of ``x`` (a feature map of the tile: H/32 ... 4H). Not 4-D: the whole tensor."""
    if x.dim() == 4:
        (th, tw), (cy0, cy1, cx0, cx1) = worker.size, worker.core
        fh, fw = x.shape[-2:]
        x = x[..., to_feature(cy0, th, fh):to_feature(cy1, th, fh), to_feature(cx0, tw, fw):to_feature(cx1, tw, fw)]
    x = x.float().flatten(2)
    k = x.shape[-1]
    if k == 0:
        return 0, x.new_zeros(x.shape[:2]), x.new_zeros(x.shape[:2])
    var, mean = torch.var_mean(x, dim=-1, correction=0)
    return k, mean, var * k


def _combine(stats: list[tuple], layer: nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, group) mean and 1/std of the whole image from the tiles' per-channel statistics (Chan et al.'s
    pairwise update, float64 where the device has it)."""
    stats = [s for s in stats if s[0] > 0]
    mean = torch.stack([s[1] for s in stats])
    dtype = torch.float32 if mean.device.type == 'mps' else torch.float64
    t, n, c = mean.shape
    g = layer.num_groups
    k = torch.tensor([float(s[0]) for s in stats], dtype=dtype, device=mean.device).view(t, 1, 1, 1)
    mean = mean.to(dtype).view(t, n, g, c // g)
    m2 = torch.stack([s[2] for s in stats]).to(dtype).view(t, n, g, c // g)
    total = k.sum() * (c // g)
    grand = (mean * k).sum((0, 3)) / total
    var = (m2.sum((0, 3)) + (k * (mean - grand[None, :, :, None]) ** 2).sum((0, 3))) / total
    return grand.float(), torch.rsqrt(var + layer.eps).float()


def _exchange_halos(workers: list[_Worker], image: torch.Tensor) -> None:
    """Overwrite, in place, each tile's GroupNorm input outside its core (its halo) with the values of the tiles
    that own those pixels, at that feature map's resolution. The cores hold what the untiled run computes as long as
    each halo covers the receptive field since the previous GroupNorm, so the tiles stay exact through the whole
    network instead of drifting from their edges inwards; in place, so that the tile's other references (the
    residual skip that is this same tensor) see it too. Skipped where it cannot be exact or safe: not 4-D, grad
    mode, tiles sharing storage (with each other or with the input image ``image``), or tiles off the feature map's
    pixel grid."""
    x = workers[0].x
    if x.dim() != 4 or torch.is_grad_enabled():
        return
    storages = {w.x.untyped_storage().data_ptr() for w in workers}
    if len(storages) < len(workers) or image.untyped_storage().data_ptr() in storages:
        return
    (th, tw), (fh, fw) = workers[0].size, x.shape[-2:]
    if any(v * fh % th for w in workers for v in w.tile.box[:2]) or \
            any(v * fw % tw for w in workers for v in w.tile.box[2:]):
        return  # tiles off the feature map's pixel grid
    for w in workers:
        by0, _, bx0, _ = w.tile.box
        oy, ox = by0 * fh // th, bx0 * fw // tw
        for src, (r0, r1, c0, c1) in w.neighbours:
            sy, sx = src.tile.box[0] * fh // th, src.tile.box[2] * fw // tw
            r0, r1 = to_feature(r0, th, fh), to_feature(r1, th, fh)
            c0, c1 = to_feature(c0, tw, fw), to_feature(c1, tw, fw)
            if r0 < r1 and c0 < c1:
                w.x[..., r0 - oy:r1 - oy, c0 - ox:c1 - ox].copy_(src.x[..., r0 - sy:r1 - sy, c0 - sx:c1 - sx])


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype | None]:
    try:
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # torch < 2.4
        if device_type == 'cpu':
            return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        if device_type == 'cuda':
            return torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
        return False, None


def _group_norm(layer: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """The forward of a GroupNorm while tiles run in lock-step: whole-image statistics, F.group_norm's arithmetic
    (fp32; fp32 out under autocast, as autocast runs group_norm)."""
    worker = getattr(_running, 'worker', None)
    if worker is None:  # a call outside the tiles (another thread)
        return nn.GroupNorm.forward(layer, x)
    mean, rstd = worker.park(layer, x, _core_stats(x, worker))
    n, c = x.shape[:2]
    per = c // layer.num_groups
    scale, shift = rstd.repeat_interleave(per, 1), -mean.repeat_interleave(per, 1)
    shift = shift * scale
    if layer.affine:
        scale, shift = scale * layer.weight.float(), shift * layer.weight.float() + layer.bias.float()
    shape = (n, c) + (1,) * (x.dim() - 2)
    y = x.float() * scale.view(shape) + shift.view(shape)
    return y if _autocast_state(x.device.type)[0] else y.to(x.dtype)


def _thread_state(device: torch.device) -> Callable[[], AbstractContextManager]:
    """The calling thread's grad / inference mode, autocast and current stream (thread-local in PyTorch), as a
    context to re-enter in the tile threads."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()
    casts = [(dt, *_autocast_state(dt)) for dt in dict.fromkeys(('cpu', device.type))]
    backend = getattr(torch, device.type, None) if device.type != 'cpu' else None
    stream = backend.current_stream(device) if hasattr(backend, 'current_stream') and hasattr(backend, 'stream') \
        else None

    @contextmanager
    def state():
        with ExitStack() as stack:
            if inference:
                stack.enter_context(torch.inference_mode())
            stack.enter_context(torch.set_grad_enabled(grad))
            for dt, enabled, dtype in casts:
                if enabled:
                    stack.enter_context(torch.autocast(dt, dtype=dtype))
            if stream is not None:
                stack.enter_context(backend.stream(stream))
            yield
    return state


def _lockstep(tiles: list[Tile], jobs: list[Callable[[], torch.Tensor]], norms: list[nn.GroupNorm],
              image: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """Run ``jobs`` (one per tile) so that every GroupNorm in ``norms`` sees the statistics of all tiles.

    One thread per tile, but one running at a time (a coroutine: GroupNorms sit deep inside module calls, where a
    generator cannot yield): a tile runs until its next GroupNorm, hands over the per-channel mean / squared
    deviations of its core (the part of the image it owns, at that feature map's resolution; the overlap is
    counted once) and parks. When every tile is parked at the same layer, this thread (in the same grad / inference
    mode) combines the statistics and refreshes the halos (:func:`_exchange_halos`); then each tile, in turn,
    normalises with them and runs on to the next GroupNorm. Yields (tile index, output) as the tiles finish.

    Cost: the activations every tile holds at a GroupNorm stay alive together (about those of the untiled run at
    that layer, times the tiles' area over the image's), plus one tile's working set; so it saves the
    temporaries (convolution outputs, attention maps), not the feature maps. ``tile_norm: tile`` is the
    low-memory choice. Time: a thread switch, a small reduction and the halo copies per tile and GroupNorm.
    """
    parked = threading.Semaphore(0)
    workers = [_Worker(k, job, t, parked) for k, (t, job) in enumerate(zip(tiles, jobs))]
    state = _thread_state(image.device)
    threads = [threading.Thread(target=w.run, args=(state,), name=f'tile-{w.index}', daemon=True) for w in workers]
    for w in workers:  # the tiles whose cores lie in w's box, and where
        y0, y1, x0, x1 = w.tile.box
        for src in workers:
            cy0, cy1, cx0, cx1 = src.tile.core
            r0, r1, c0, c1 = max(y0, cy0), min(y1, cy1), max(x0, cx0), min(x1, cx1)
            if src is not w and r0 < r1 and c0 < c1:
                w.neighbours.append((src, (r0, r1, c0, c1)))
    saved = [layer.__dict__.get('forward') for layer in norms]
    for layer in norms:
        layer.forward = partial(_group_norm, layer)
    try:
        for thread in threads:
            thread.start()
        while True:
            for w in workers:
                if w.done:
                    continue
                w.go.release()
                parked.acquire()
                if w.error is not None:
                    raise w.error
                if w.done:
                    yield w.index, w.result
                    w.result = None
            waiting = [w for w in workers if not w.done]
            if not waiting:
                return
            if len(waiting) != len(workers) or any(w.layer is not waiting[0].layer for w in waiting):
                raise RuntimeError('tiled inference with whole-image GroupNorm statistics: the tiles took different '
                                   'paths through the network (use val.tile_norm: tile for this network)')
            norm = _combine([w.stats for w in waiting], waiting[0].layer)
            _exchange_halos(waiting, image)
            for w in waiting:
                w.norm, w.stats = norm, None
    finally:
        for w in workers:
            if not w.done:
                w.abort = True
                w.go.release()
        for thread in threads:
            thread.join()
        for layer, forward in zip(norms, saved):
            del layer.forward
            if forward is not None:
                layer.forward = forward


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
