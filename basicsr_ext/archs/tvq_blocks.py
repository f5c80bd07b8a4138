"""Building blocks shared by the TVQ tokenizer and the TVQ&RAP SR network (paper notes §2-§3), written once.

Numerics follow the official TVQ-RAP code (CodeFormer / SwinIR lineage), see ``/golden/README``:

- :class:`ResBlock`: pre-activation GroupNorm(``groups``, default 32 as the official code, eps=1e-6) -> swish -> conv3x3, twice; a 1x1 ``conv_out`` skip
  only when the channel count changes. swish(x) = x * sigmoid(x).
- :class:`Downsample`: conv3x3 C -> C/2, then PixelUnshuffle(2) (2C channels out). The HR encoder and the LR
  encoder of the SR net use no bias, the auxiliary LR auto-encoder does (``bias`` flag, per the manifests).
- :class:`Upsample`: nearest x2, then conv3x3 (with bias).
- Swin parts (SwinIR): window attention with a learned relative-position bias, qkv bias, scale head_dim^-0.5,
  LayerNorm eps 1e-5, exact (erf) GELU, MLP ratio 4, blocks alternating shift 0 / window//2, shifted-window mask
  -100. The mask for the construction resolution is a persistent ``attn_mask`` buffer (it is in the official
  checkpoints); any other runtime size gets its own mask (cached per size/device). No padding inside: feature
  maps must be multiples of the window (:func:`check_multiple` / :func:`basicsr_ext.utils.tiling.pad_to_multiple` at the net borders).
- :class:`SwinLayers` holds ``swin_blks`` (a list of :class:`RSTB`) and works on (B, C, H, W) maps; tokens are
  the map flattened row-major. ``RSTB(conv=True)`` is SwinIR's RSTB (group -> conv3x3 -> + input);
  ``RSTB(conv=False)`` is "RSTB_AR" (group + input, no conv).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

GN_GROUPS = 32
GN_EPS = 1e-6
MASK_VALUE = -100.0


class ChannelAffine(nn.Module):
    """``norm_groups: 0``: no normalisation, only the per-channel scale and shift of the GroupNorm it replaces (same
    ``weight`` / ``bias`` keys and shapes, initialised 1 / 0, so it starts as the identity). Not in the paper: a
    reduced tokenizer with GroupNorm learns colour several times slower (README "Scaling TVQ&RAP down":
    continuous tokenizer after 800 its 17.8 dB RGB with one group, 23.0 dB without normalisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.num_channels = channels
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    #: 16-bit channels_last maps with fewer channels than this take the row-tiled path of :meth:`forward`
    TILE_BELOW_CHANNELS = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight.to(x.dtype), self.bias.to(x.dtype)
        n, c, h, wd = x.shape
        rows = max(1, 64 // c)
        if (x.element_size() == 2 and c < self.TILE_BELOW_CHANNELS and not x.is_contiguous()
                and (n * h * wd) % rows == 0 and x.is_contiguous(memory_format=torch.channels_last)):
            # Same products, laid out for speed: in bf16 a channels_last map broadcast over a 16-wide inner
            # dimension runs 1.7-2.6x slower (fwd+bwd of 2x16x128^2: 2.43 vs 1.14 ms, one EPYC core; fp32 gains
            # nothing and keeps the broadcast; scripts/bench/bench_channel_affine.py), so rows of ``rows`` pixels x
            # C channels take the tiled scale and shift.
            y = torch.addcmul(b.repeat(rows), x.permute(0, 2, 3, 1).reshape(-1, c * rows), w.repeat(rows))
            return y.view(n, h, wd, c).permute(0, 3, 1, 2)
        return torch.addcmul(b.view(1, -1, 1, 1), x, w.view(1, -1, 1, 1))


def normalize(channels: int, groups: int = GN_GROUPS) -> nn.Module:
    """GroupNorm(groups, C, eps=1e-6, affine); the official tokenizer uses 32 groups (eps 1e-5 moves outputs past
    1e-3). Reduced-width nets pass fewer groups (``norm_groups``) so that each group keeps several channels: with
    32 channels and 32 groups every GroupNorm is an instance norm and per-image channel means never reach the
    decoder's output (issue "training that visibly works", README "Scaling the methods down"). ``groups=0`` gives
    :class:`ChannelAffine` (no normalisation; the state dict keeps the same keys)."""
    if groups == 0:
        return ChannelAffine(channels)
    if groups < 1 or channels % groups:
        raise ValueError(f'GroupNorm({groups}) needs a channel count divisible by {groups}, got {channels} '
                         f'(set norm_groups to 0 or a divisor of every width)')
    return nn.GroupNorm(groups, channels, eps=GN_EPS, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.silu(x)


class ResBlock(nn.Module):
    """Pre-activation residual block: (GN -> swish -> conv3x3) x 2, plus a 1x1 ``conv_out`` skip if C changes."""

    def __init__(self, in_channels: int, out_channels: int | None = None, groups: int = GN_GROUPS) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = normalize(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = normalize(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.conv_out = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        skip = self.conv_out(x) if self.in_channels != self.out_channels else x
        return h + skip


def zero_init_residual_branches(module: nn.Module) -> None:
    """Zero the last layer of every residual branch under ``module``: ``conv2`` of each :class:`ResBlock`, the
    attention ``proj`` and ``mlp.fc2`` of each :class:`SwinBlock`. Not in the paper (the official code keeps
    PyTorch's default initialisation); it is torchvision's ``zero_init_residual`` (Goyal et al. 2017). Every
    residual block then starts as the identity, so a reduced deep tokenizer starts as a short conv chain
    (convs, pixel (un)shuffles, 1x1 skips) and learns much faster at small scale (README "Scaling TVQ&RAP down")."""
    for m in module.modules():
        layers = (m.conv2,) if isinstance(m, ResBlock) else (m.attn.proj, m.mlp.fc2) if isinstance(m, SwinBlock) else ()
        for layer in layers:
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class Downsample(nn.Module):
    """conv3x3 C -> C/2 then PixelUnshuffle(2): H/2 x W/2 with 2C channels."""

    def __init__(self, channels: int, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels // 2, 3, 1, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(self.conv(x), 2)


class Upsample(nn.Module):
    """Nearest x2 then conv3x3 (same channel count)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


# ----------------------------------------------------------------------------------------------------------
# Swin (SwinIR) window attention
# ----------------------------------------------------------------------------------------------------------
def relative_position_index(window_size: int) -> torch.Tensor:
    """(N, N) int64 index into the (2w-1)^2 bias table, N = w*w (SwinIR convention)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
    coords = coords.flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return rel[:, :, 0] * (2 * window_size - 1) + rel[:, :, 1]


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/ws * W/ws, ws*ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: -> (B, H, W, C)."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, N, N) additive mask: 0 within a region of the rolled map, -100 across regions (SwinIR)."""
    img = torch.zeros(1, h, w, 1)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    cnt = 0
    for hs in cuts:
        for wsl in cuts:
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws).squeeze(-1)  # (nW, N)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative-position bias (qkv with bias)."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'Swin dim {dim} is not divisible by num_heads {num_heads}')
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer('relative_position_index', relative_position_index(window_size), persistent=True)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0).to(attn.dtype)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask.to(attn.dtype)[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """SwinIR transformer block on tokens (B, H*W, C): x + WA(LN(x)), then x + MLP(LN(x)).

    ``input_resolution`` fixes the shape of the persistent ``attn_mask`` buffer of shifted blocks (official key);
    another runtime size uses a mask built for that size.
    """

    def __init__(self, dim: int, input_resolution: Sequence[int], num_heads: int, window_size: int = 8,
                 shift_size: int = 0, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.input_resolution = (int(input_resolution[0]), int(input_resolution[1]))
        self.window_size, self.shift_size = window_size, shift_size
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size {shift_size} must be in [0, window_size={window_size})')
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self._mask_cache: dict = {}
        if shift_size > 0:
            h, w = self.input_resolution
            check_multiple(h, w, window_size, 'Swin construction resolution')
            self.register_buffer('attn_mask', shifted_window_mask(h, w, window_size, shift_size), persistent=True)
        else:
            self.attn_mask = None

    def _mask(self, h: int, w: int, device: torch.device) -> torch.Tensor | None:
        if self.shift_size == 0:
            return None
        if (h, w) == self.input_resolution:
            return self.attn_mask
        key = (h, w, str(device))
        if key not in self._mask_cache:
            self._mask_cache[key] = shifted_window_mask(h, w, self.window_size, self.shift_size).to(device)
        return self._mask_cache[key]

    def forward(self, x: torch.Tensor, x_size: Sequence[int]) -> torch.Tensor:
        h, w = int(x_size[0]), int(x_size[1])
        b, n, c = x.shape
        ws, s = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = self.attn(window_partition(x, ws), mask=self._mask(h, w, x.device))
        x = window_reverse(windows, ws, h, w)
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = shortcut + x.reshape(b, n, c)
        return x + self.mlp(self.norm2(x))


class SwinGroup(nn.Module):
    """SwinIR ``BasicLayer``: ``blocks`` alternating shift 0 / window//2."""

    def __init__(self, dim: int, input_resolution: Sequence[int], depth: int, num_heads: int,
                 window_size: int = 8, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinBlock(dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                      mlp_ratio) for i in range(depth)])

    def forward(self, x: torch.Tensor, x_size: Sequence[int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, x_size)
        return x


class RSTB(nn.Module):
    """Residual Swin group: ``x + conv3x3(group(x))`` (SwinIR RSTB) or, with ``conv=False``, ``x + group(x)``
    ("RSTB_AR"). Works on tokens (B, H*W, C)."""

    def __init__(self, dim: int, input_resolution: Sequence[int], depth: int, num_heads: int,
                 window_size: int = 8, mlp_ratio: float = 4.0, conv: bool = True) -> None:
        super().__init__()
        self.residual_group = SwinGroup(dim, input_resolution, depth, num_heads, window_size, mlp_ratio)
        self.use_conv = conv
        if conv:
            self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, x_size: Sequence[int]) -> torch.Tensor:
        y = self.residual_group(x, x_size)
        if self.use_conv:
            b, _, c = y.shape
            y = self.conv(y.transpose(1, 2).reshape(b, c, x_size[0], x_size[1])).flatten(2).transpose(1, 2)
        return x + y


class SwinLayers(nn.Module):
    """A list ``swin_blks`` of :class:`RSTB` applied to a (B, C, H, W) map (tokens row-major, h then w)."""

    def __init__(self, dim: int, input_resolution: Sequence[int], depths: Sequence[int], num_heads: int = 8,
                 window_size: int = 8, mlp_ratio: float = 4.0, conv: bool = False) -> None:
        super().__init__()
        self.window_size = window_size
        self.swin_blks = nn.ModuleList([
            RSTB(dim, input_resolution, d, num_heads, window_size, mlp_ratio, conv) for d in depths])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        check_multiple(h, w, self.window_size, 'Swin feature map')
        t = x.flatten(2).transpose(1, 2)
        for blk in self.swin_blks:
            t = blk(t, (h, w))
        return t.transpose(1, 2).reshape(b, c, h, w)


# ----------------------------------------------------------------------------------------------------------
# size helpers (used at the borders of the nets)
# ----------------------------------------------------------------------------------------------------------
def check_multiple(h: int, w: int, multiple: int, what: str = 'input') -> None:
    """Raise ValueError naming the size and the required multiple."""
    if h % multiple or w % multiple or h <= 0 or w <= 0:
        raise ValueError(f'{what} size {h}x{w} must be a positive multiple of {multiple} '
                         f'(no padding inside the network)')


def lcm(*values: int) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out
