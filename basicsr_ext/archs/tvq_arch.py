"""TVQ tokenizer (stage I of TVQ&RAP, paper notes §2): the official ``VQAutoEncoder``, with its attribute names.

Module tree (paper defaults = official options; keys/shapes = manifest ``tvqrap_tokenizer_stage1.json``)::

    encoder.blocks        HR encoder X (H) -> x_low (256 ch, H/8, taken after blocks.12) -> F^L (64 ch, H/32)
    generator.blocks_1    structure path F^L -> S (256 ch, H/8)
    generator.blocks_2    texture head concat(S, x_low) -> T (256 ch, H/8)
    quantize.embedding    1024 x 256 codebook (only T is quantised)
    generator.blocks_3    decoder S + q -> image
    lq_encoder / lq_generator   auxiliary auto-encoder of X downscaled x8 (area) -> latent (64 ch, H/32)

Everything inside works in [-1, 1]; the public interface takes and returns [0, 1] (``x01 * 2 - 1`` in,
``(y + 1) / 2`` out, no clamping so that losses see the raw output).

Input sizes: no padding. The HR side must be a multiple of :attr:`TVQTokenizer.size_multiple` (128 with the
paper options: the H/16 Swin group needs H/16 to be a multiple of the 8-pixel window; 64 for the vanilla VQ
baseline); anything else raises ValueError naming the size and the multiple. Training crops (512) and
the official test sizes satisfy this; callers with other sizes pad themselves.

``structure=False`` is the vanilla-VQ baseline of the paper's ablation (§7 "TVQ vs vanilla VQ"). The paper does
not publish its architecture, so we choose the smallest change: the same HR encoder truncated at H/8 (blocks
0-12, i.e. up to x_low), a texture head ``blocks_2`` taking x_low alone (ResBlock(256->256), ResBlock, GN, conv),
the same quantiser, and the same decoder ``blocks_3`` fed q alone. There is no structure path, no
H/16-H/32 encoder stages and no auxiliary auto-encoder; ``structure_latent`` is None.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_ext.archs.tvq_blocks import (GN_GROUPS, Downsample, SwinLayers, Upsample, check_multiple, lcm,
                                          normalize, zero_init_residual_branches)
from basicsr_ext.archs.tvq_blocks import ResBlock as ResBlockBase


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook (squared L2, computed in fp32, no EMA / l2-norm / k-means), §2 "Quantizer".

    loss = commit_weight * mean||sg(q) - z||^2 + beta * mean||q - sg(z)||^2 (official: commit_weight 1, beta 0.25
    on the codebook term, the CodeFormer convention); the output is the straight-through copy z + sg(q - z).
    Init uniform(+-1/K) (official) or uniform(+-``init_scale``).

    Small-scale note (README "Scaling TVQ&RAP down"): with codes of size ~1/K and the commitment term pulling the
    texture feature T onto them, a reduced tokenizer's texture path dies (codes ~0.02 against a structure feature
    ~20; zeroing the codes changes nothing). ``commit_weight: 0`` with ``init_scale`` ~ the scale of T keeps it alive.
    """

    def __init__(self, codebook_size: int = 1024, emb_dim: int = 256, beta: float = 0.25,
                 commit_weight: float = 1.0, init_scale: float | None = None) -> None:
        super().__init__()
        self.codebook_size, self.emb_dim, self.beta = codebook_size, emb_dim, beta
        self.commit_weight = float(commit_weight)
        self.embedding = nn.Embedding(codebook_size, emb_dim)
        bound = 1.0 / codebook_size if init_scale is None else float(init_scale)
        nn.init.uniform_(self.embedding.weight, -bound, bound)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> indices (B, h, w) of the nearest code (squared L2, fp32)."""
        b, c, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, c)
            emb = self.embedding.weight.float()
            d = (flat ** 2).sum(1, keepdim=True) + (emb ** 2).sum(1) - 2 * flat @ emb.t()
            return d.argmin(1).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) -> codes (B, C, h, w), fp32."""
        return self.embedding.weight.float()[indices].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (straight-through q (B, C, h, w) fp32, codebook loss scalar, indices (B, h, w))."""
        indices = self.nearest(z)
        with torch.autocast(device_type=z.device.type, enabled=False):
            zf = z.float()
            q = self.lookup(indices)
            loss = (self.commit_weight * torch.mean((q.detach() - zf) ** 2)
                    + self.beta * torch.mean((q - zf.detach()) ** 2))
            q_st = zf + (q - zf).detach()
        return q_st, loss, indices


class BlockStack(nn.Module):
    """A plain ``blocks`` list run in order (official ``encoder`` / ``lq_encoder`` / ``lq_generator`` naming)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward_with_tap(self, x: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run every block; return (output, output of ``blocks[index]``) - the encoder's skip tap
        (x_low of the tokenizer, y_low of the predictor, paper notes §2-§3)."""
        tapped = None
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == index:
                tapped = x
        if tapped is None:
            raise IndexError(f'tap index {index} is outside the {len(self.blocks)} blocks')
        return x, tapped


def build_structure_path(structure_ch: int, mid_ch: int, emb_dim: int, img_size: int, num_heads: int,
                         window_size: int, depth: int = 2, norm_groups: int = GN_GROUPS) -> nn.Sequential:
    """``generator.blocks_1``: F^L (H/32) -> conv, 5 ResBlocks, up, ResBlock->mid, 2 x (Swin + ResBlock) at H/16,
    up, ResBlock mid->emb, ResBlock -> S (emb_dim, H/8)."""
    ResBlock = partial(ResBlockBase, groups=norm_groups)  # noqa: N806
    r16 = (img_size // 16, img_size // 16)
    blocks: list[nn.Module] = [nn.Conv2d(structure_ch, structure_ch, 3, 1, 1)]
    blocks += [ResBlock(structure_ch) for _ in range(5)]
    blocks += [Upsample(structure_ch), ResBlock(structure_ch, mid_ch)]
    for _ in range(2):
        blocks += [SwinLayers(mid_ch, r16, [depth], num_heads, window_size), ResBlock(mid_ch)]
    blocks += [Upsample(mid_ch), ResBlock(mid_ch, emb_dim), ResBlock(emb_dim)]
    return nn.Sequential(*blocks)


def build_texture_head(in_ch: int, emb_dim: int, norm_groups: int = GN_GROUPS) -> nn.Sequential:
    """``generator.blocks_2``: ResBlock(in->emb), ResBlock, GroupNorm, conv3x3 -> T (pre-quantisation)."""
    g = norm_groups
    return nn.Sequential(ResBlockBase(in_ch, emb_dim, g), ResBlockBase(emb_dim, groups=g), normalize(emb_dim, g),
                         nn.Conv2d(emb_dim, emb_dim, 3, 1, 1))


def build_decoder(emb_dim: int, dec_ch: Sequence[int], img_size: int, num_heads: int, window_size: int,
                  depth: int = 2, out_ch: int = 3, norm_groups: int = GN_GROUPS) -> nn.Sequential:
    """``generator.blocks_3``: (S + q) at H/8 -> ResBlock, 2 x (Swin + ResBlock), then per x2 level an Upsample and
    3 ResBlocks (channels ``dec_ch`` for H/4, H/2, H), GroupNorm, conv3x3 -> image in [-1, 1] (no tanh)."""
    ResBlock = partial(ResBlockBase, groups=norm_groups)  # noqa: N806
    r8 = (img_size // 8, img_size // 8)
    blocks: list[nn.Module] = [ResBlock(emb_dim)]
    for _ in range(2):
        blocks += [SwinLayers(emb_dim, r8, [depth], num_heads, window_size), ResBlock(emb_dim)]
    ch = emb_dim
    for c in dec_ch:
        blocks += [Upsample(ch), ResBlock(ch, c), ResBlock(c), ResBlock(c)]
        ch = c
    blocks += [normalize(ch, norm_groups), nn.Conv2d(ch, out_ch, 3, 1, 1)]
    return nn.Sequential(*blocks)


class TVQGenerator(nn.Module):
    """Container with the official names ``blocks_1`` (structure path), ``blocks_2`` (texture head),
    ``blocks_3`` (decoder); any of them may be None (the SR net has no texture head)."""

    def __init__(self, blocks_1: nn.Module | None, blocks_2: nn.Module | None, blocks_3: nn.Module | None) -> None:
        super().__init__()
        self.blocks_1, self.blocks_2, self.blocks_3 = blocks_1, blocks_2, blocks_3


@ARCH_REGISTRY.register()
class TVQTokenizer(nn.Module):
    """Texture Vector-Quantization tokenizer (paper §2; official ``VQAutoEncoder``).

    Args (defaults = official ``TVQRAP_stage1.yml`` network, 35,555,110 parameters):
        structure: True = TVQ (structure path + texture head + aux AE); False = vanilla VQ baseline (module doc).
        enc_ch: encoder ResBlock widths at H, H/2, H/4, H/8, H/16 (H/8 width = x_low channels).
        latent_mid_ch: widths of the H/32 ResBlock pairs before the structure width (official 256, 128).
        structure_ch: F^L channels (64). struct_mid_ch: width of the structure path at H/16 (128).
        emb_dim / codebook_size / beta: quantiser (256, 1024, 0.25).
        dec_ch: decoder widths at H/4, H/2, H (128, 128, 64).
        aux_ch: aux LR auto-encoder widths at X/8 and X/16 (32, 64).
        enc_depths: Swin depths of the encoder groups at H/8 and H/16 (4, 2); gen_depth: Swin depth in the
        generator groups (2); num_heads (8); window_size (8).
        img_size: HR size the persistent ``attn_mask`` buffers are built for (256 in the official checkpoints).
        commit_weight (1.0) / codebook_init_scale (None = uniform +-1/K): quantiser options for reduced nets, see
        :class:`VectorQuantizer` (official values by default).
        norm_groups: groups of every GroupNorm (32 = official). Reduced widths need fewer so that a group is not a
        single channel; 0 = no normalisation (:class:`~basicsr_ext.archs.tvq_blocks.ChannelAffine`), what the
        32-channel quickstart tokenizer uses (it learns colour, README "Scaling TVQ&RAP down"). The state dict is
        the same for any value.
        zero_init_residual: start every residual branch at zero (:func:`zero_init_residual_branches`; False =
        official initialisation). For reduced nets trained for minutes; the state dict is the same.
    """

    def __init__(self, structure: bool = True, enc_ch: Sequence[int] = (64, 128, 128, 256, 256),
                 latent_mid_ch: Sequence[int] = (256, 128), structure_ch: int = 64, struct_mid_ch: int = 128,
                 emb_dim: int = 256, codebook_size: int = 1024, beta: float = 0.25,
                 dec_ch: Sequence[int] = (128, 128, 64), aux_ch: Sequence[int] = (32, 64),
                 enc_depths: Sequence[int] = (4, 2), gen_depth: int = 2, num_heads: int = 8, window_size: int = 8,
                 img_size: int = 256, norm_groups: int = GN_GROUPS, commit_weight: float = 1.0,
                 codebook_init_scale: float | None = None, zero_init_residual: bool = False) -> None:
        super().__init__()
        ResBlock = partial(ResBlockBase, groups=norm_groups)  # noqa: N806
        self.norm_groups = norm_groups
        c0, c1, c2, c3, c4 = enc_ch
        self.structure = structure
        self.window_size = window_size
        self.size_multiple = lcm(32, 16 * window_size) if structure else lcm(8, 8 * window_size)
        check_multiple(img_size, img_size, self.size_multiple, 'TVQTokenizer img_size')
        r8, r16 = (img_size // 8,) * 2, (img_size // 16,) * 2
        enc: list[nn.Module] = [nn.Conv2d(3, c0, 3, 1, 1), ResBlock(c0), ResBlock(c0)]
        enc += [Downsample(c0), ResBlock(2 * c0, c1), ResBlock(c1)]
        enc += [Downsample(c1), ResBlock(2 * c1, c2), ResBlock(c2)]
        enc += [Downsample(c2), ResBlock(2 * c2, c3), SwinLayers(c3, r8, [enc_depths[0]], num_heads, window_size),
                ResBlock(c3)]
        self.xlow_index = len(enc) - 1
        if structure:
            m0, m1 = latent_mid_ch
            enc += [Downsample(c3), ResBlock(2 * c3, c4),
                    SwinLayers(c4, r16, [enc_depths[1]], num_heads, window_size), ResBlock(c4)]
            enc += [Downsample(c4), ResBlock(2 * c4, m0), ResBlock(m0), ResBlock(m0, m1), ResBlock(m1),
                    ResBlock(m1, structure_ch), ResBlock(structure_ch), ResBlock(structure_ch),
                    normalize(structure_ch, norm_groups), nn.Conv2d(structure_ch, structure_ch, 3, 1, 1)]
        self.encoder = BlockStack(enc)
        self.quantize = VectorQuantizer(codebook_size, emb_dim, beta, commit_weight, codebook_init_scale)
        self.generator = TVQGenerator(
            build_structure_path(structure_ch, struct_mid_ch, emb_dim, img_size, num_heads, window_size, gen_depth,
                                 norm_groups) if structure else None,
            build_texture_head(emb_dim + c3 if structure else c3, emb_dim, norm_groups),
            build_decoder(emb_dim, dec_ch, img_size, num_heads, window_size, gen_depth, norm_groups=norm_groups))
        if structure:
            a0, a1 = aux_ch
            self.lq_encoder = BlockStack([
                nn.Conv2d(3, a0, 3, 1, 1), ResBlock(a0), ResBlock(a0), Downsample(a0, bias=True),
                ResBlock(2 * a0, a1), ResBlock(a1), Downsample(a1, bias=True), ResBlock(2 * a1, structure_ch),
                ResBlock(structure_ch)])
            self.lq_generator = BlockStack([
                nn.Conv2d(structure_ch, a1, 3, 1, 1), ResBlock(a1), ResBlock(a1), Upsample(a1), ResBlock(a1),
                ResBlock(a1), Upsample(a1), ResBlock(a1, a0), ResBlock(a0), normalize(a0, norm_groups),
                nn.Conv2d(a0, 3, 3, 1, 1)])
        else:
            self.lq_encoder = None
            self.lq_generator = None
        if zero_init_residual:
            zero_init_residual_branches(self)

    # ------------------------------------------------------------------ helpers
    @property
    def codebook(self) -> torch.Tensor:
        """The (K, C) codebook weight."""
        return self.quantize.embedding.weight

    def get_last_layer(self) -> nn.Parameter:
        """Final decoder conv weight (where the VQGAN adaptive GAN weight takes its gradient norms)."""
        return self.generator.blocks_3[-1].weight

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) -> codes (B, C, h, w)."""
        return self.quantize.lookup(indices)

    def structure_path(self, structure_latent: torch.Tensor) -> torch.Tensor:
        """F^L (B, 64, H/32, W/32) -> S (B, 256, H/8, W/8) (``generator.blocks_1``)."""
        if not self.structure:
            raise RuntimeError('structure_path() is undefined for the vanilla VQ tokenizer (structure=False)')
        return self.generator.blocks_1(structure_latent)

    def decode_features(self, structure_feature: torch.Tensor | None, quant: torch.Tensor) -> torch.Tensor:
        """Decoder ``blocks_3`` on S + q (q alone without structure) -> image in [-1, 1] (raw)."""
        return self.generator.blocks_3(quant if structure_feature is None else structure_feature + quant)

    @staticmethod
    def downscale8(x01: torch.Tensor) -> torch.Tensor:
        """X downscaled x8 by area averaging (= cv2 INTER_AREA for an integer factor)."""
        return F.interpolate(x01, scale_factor=0.125, mode='area')

    # ------------------------------------------------------------------ public API
    def encode(self, x01: torch.Tensor) -> dict[str, Any]:
        """x in [0, 1] (B, 3, H, W) -> dict(indices, structure_latent, texture_skip, structure_feature,
        texture_feature, quant, codebook_loss) (all latents in the official space)."""
        check_multiple(x01.shape[-2], x01.shape[-1], self.size_multiple, 'TVQTokenizer input')
        h, x_low = self.encoder.forward_with_tap(x01 * 2 - 1, self.xlow_index)
        if self.structure:
            structure_latent = h
            s = self.generator.blocks_1(structure_latent)
            t = self.generator.blocks_2(torch.cat([s, x_low], dim=1))
        else:
            structure_latent, s = None, None
            t = self.generator.blocks_2(x_low)
        quant, loss, indices = self.quantize(t)
        return dict(indices=indices, structure_latent=structure_latent, texture_skip=x_low, structure_feature=s,
                    texture_feature=t, quant=quant, codebook_loss=loss)

    def decode(self, indices: torch.Tensor | None = None, codes: torch.Tensor | None = None,
               structure_latent: torch.Tensor | None = None) -> torch.Tensor:
        """Image in [0, 1] from code indices (B, h, w) or codes (B, C, h, w) (+ F^L when structure=True)."""
        if codes is None:
            if indices is None:
                raise ValueError('decode() needs indices or codes')
            codes = self.lookup(indices)
        s = None
        if self.structure:
            if structure_latent is None:
                raise ValueError('decode() of the TVQ tokenizer needs structure_latent (F^L)')
            s = self.structure_path(structure_latent)
        return (self.decode_features(s, codes) + 1) / 2

    def aux_forward(self, lr8_01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Aux LR auto-encoder on X/8 in [0, 1] -> (latent (B, 64, H/32, W/32), reconstruction in [-1, 1])."""
        latent = self.lq_encoder(lr8_01 * 2 - 1)
        return latent, self.lq_generator(latent)

    def forward(self, x01: torch.Tensor, lr8_01: torch.Tensor | None = None) -> dict[str, Any]:
        """:meth:`encode` plus ``reconstruction`` ([0, 1]), ``reconstruction_raw`` ([-1, 1]) and, with structure,
        ``aux_latent``, ``aux_reconstruction`` ([0, 1]), ``align_loss`` = mean||F^L - sg(aux_latent)||^2 and
        ``aux_recon_loss`` = MSE(aux reconstruction, X/8) in [-1, 1] (§2 "Stage I losses"). ``lr8_01`` defaults
        to the area x8 downscale of ``x01``."""
        out = self.encode(x01)
        raw = self.decode_features(out['structure_feature'], out['quant'])
        out['reconstruction_raw'] = raw
        out['reconstruction'] = (raw + 1) / 2
        if self.structure:
            if lr8_01 is None:
                lr8_01 = self.downscale8(x01)
            latent, aux_raw = self.aux_forward(lr8_01)
            out['aux_latent'] = latent
            out['aux_reconstruction'] = (aux_raw + 1) / 2
            out['align_loss'] = torch.mean((out['structure_latent'].float() - latent.detach().float()) ** 2)
            out['aux_recon_loss'] = F.mse_loss(aux_raw.float(), (lr8_01 * 2 - 1).float())
        return out
