"""TVQ&RAP SR network (paper notes §3; official ``CodeFormer`` class, minus the unused tokenizer parts).

Module tree (official names; defaults = ``TVQRAP_stage3.yml``, keys/shapes = manifest ``tvqrap_sr_stage3.json``
after dropping :data:`OFFICIAL_UNUSED_PREFIXES`)::

    lqencoder.blocks      LR Y (h = H/4): conv 3->64, ResBlocks 64->128->128->128, Downsample -> 256 @ h/2,
                          2 ResBlocks, SwinLayers(2 RSTB of 6 blocks + conv), 2 ResBlocks -> y_low (after blocks.9),
                          Downsample -> 512 @ h/4, ResBlocks 512->256->128, Downsample -> 256 @ h/8,
                          ResBlocks 256->256->128
    exactor.blocks        structure regressor, 4 ResBlocks 128->128->64->64->64 -> F^L_hat (64, H/32)
    generator.blocks_1    frozen structure path F^L_hat -> S_hat (256, H/8)
    blocks_fuse           concat(sg(S_hat), y_low) -> ResBlock(512->256), RSTB(6 + conv), ResBlock
    ft_layers_low         2 RSTB_AR (6 Swin blocks each + residual, no conv) on the H/8 tokens
    idx_pred_layer_low    LayerNorm(256) + Linear(256 -> 1024, no bias): logits (B, h*w, K), row-major tokens
    quantize.embedding    frozen codebook (1024 x 256)
    generator.blocks_3    frozen decoder of S_hat + z

``quantize`` and ``generator`` are frozen (official ``fix_modules``: requires_grad False) but gradients flow
through them: into the predictor via :func:`straight_through_codes`, into the structure branch via S_hat + z
(the predictor's copy of S_hat is detached).

Parameter count (paper notes §3, analytic) vs measured on this class with default options:

    part                      spec     measured
    LR encoder (lqencoder)    20.7M    20,705,888
    exactor                   0.56M       563,264
    blocks_fuse               8.4M      8,423,472
    ft_layers_low             9.5M      9,498,720
    idx_pred_layer_low        0.26M       262,656
    quantize (frozen)         0.26M       262,144
    blocks_1 (frozen)         4.3M      4,314,016
    blocks_3 (frozen)         9.8M      9,819,171
    total (inference path)    ~53.9M   53,849,331  (14,395,331 frozen)

With the tokenizer's blocks_2 (3,674,624) this gives ~57.5M, the paper's "57M". The official class also
carries the unused HR encoder and aux auto-encoder (75,009,110 in total).

Input sizes: the net needs the LR side to be a multiple of :attr:`TVQRAPNet.size_multiple` = 32 (three x2
downsamples, then the 8-pixel window at h/4 in the structure path). :meth:`predict` / :meth:`forward_ste` raise
ValueError otherwise; :meth:`forward` (inference) reflect-pads bottom/right to ``pad_multiple`` and crops the
output to exactly 4h x 4w. The official test script pads to 64 (set ``pad_multiple: 64`` to mimic it on
non-multiple sizes); our default is the structural 32 (less padding, same result on multiples of 64).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_ext.archs.tvq_arch import BlockStack, TVQGenerator, VectorQuantizer, build_decoder, build_structure_path
from basicsr_ext.archs.tvq_blocks import (GN_GROUPS, Downsample, SwinLayers, check_multiple, lcm,
                                         zero_init_residual_branches)
from basicsr_ext.archs.tvq_blocks import ResBlock as ResBlockBase
from basicsr_ext.utils.tiling import pad_to_multiple
from basicsr_ext.utils.checkpoint import CheckpointError, describe_key_mismatch, extract_state_dict, load_checkpoint

#: Subtrees of the official CodeFormer state dict that the SR forward never uses (tokenizer leftovers).
OFFICIAL_UNUSED_PREFIXES = ('encoder.', 'lq_encoder.', 'lq_generator.', 'generator.blocks_2.')
#: Subtrees taken from a stage-I TVQTokenizer checkpoint (frozen here).
TOKENIZER_PREFIXES = ('generator.blocks_1.', 'generator.blocks_3.', 'quantize.')
OFFICIAL_LAYOUT = 'TVQ-RAP official CodeFormer'


def straight_through_codes(logits: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """RAP straight-through estimator (§3 step 5): logits (B, N, K), codebook (K, C) -> codes (B, N, C).

    Forward: exactly the code of argmax(logits). Backward: through softmax(logits) only, the codebook gets no
    gradient — the gradient of z = [soft + sg(hard - soft)] @ sg(E). We write it as
    E[argmax] + soft @ sg(E) - sg(soft @ sg(E)), which has the same gradient and makes the forward value exact
    (the literal form yields (1 - eps) * code). No Gumbel noise, no temperature. Computed in fp32.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        cb = codebook.detach().float()
        soft = logits.float().softmax(dim=-1)
        hard = cb[soft.argmax(dim=-1)]
        mixed = soft @ cb
        return hard + (mixed - mixed.detach())


@ARCH_REGISTRY.register()
class TVQRAPNet(nn.Module):
    """TVQ&RAP x4 SR network: LR -> F^L_hat (regressed) + code logits -> frozen TVQ decoder (§3).

    Args (defaults = official options):
        lq_ch: LR encoder widths at h (conv_in, ResBlocks) (64, 128). emb_dim (256) is the width at h/2 (y_low),
        low_ch: width at h/4 and h/8 (128). structure_ch (64): F^L_hat channels.
        lq_depths (6, 6): RSTBs of the LR encoder; fuse_depth (6): RSTB of blocks_fuse; ft_depths (6, 6): RSTB_AR
        groups of the predictor. num_heads 8, window_size 8.
        struct_mid_ch, dec_ch, gen_depth, codebook_size: the tokenizer's generator/quantiser (see TVQTokenizer).
        img_size: LR size for which the persistent attn_mask buffers are built (64 = the official 256 GT).
        pad_multiple: inference padding multiple of :meth:`forward` (None = structural 32; official test: 64).
        tokenizer_path / tokenizer_param_key: load blocks_1, blocks_3 and quantize from a stage-I checkpoint.
        fix_modules: frozen top-level modules (official ``['quantize', 'generator']``).
        norm_groups: groups of every GroupNorm (32 = official; 0 = none); must equal the tokenizer's ``norm_groups``.
        zero_init_residual: start every residual branch at zero (``tvq_blocks.zero_init_residual_branches``; False =
        official initialisation); the frozen tokenizer parts are then loaded over it.
    """

    def __init__(self, lq_ch: Sequence[int] = (64, 128), emb_dim: int = 256, low_ch: int = 128,
                 structure_ch: int = 64, struct_mid_ch: int = 128, dec_ch: Sequence[int] = (128, 128, 64),
                 codebook_size: int = 1024, lq_depths: Sequence[int] = (6, 6), fuse_depth: int = 6,
                 ft_depths: Sequence[int] = (6, 6), gen_depth: int = 2, num_heads: int = 8, window_size: int = 8,
                 img_size: int = 64, pad_multiple: int | None = None, tokenizer_path: str | None = None,
                 tokenizer_param_key: str = 'params_ema',
                 fix_modules: Sequence[str] = ('quantize', 'generator'), norm_groups: int = GN_GROUPS,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        ResBlock = partial(ResBlockBase, groups=norm_groups)  # noqa: N806
        self.norm_groups = norm_groups
        c_in, c_lr = lq_ch
        self.size_multiple = lcm(8, 4 * window_size)
        self.pad_multiple = lcm(self.size_multiple, pad_multiple or self.size_multiple)
        check_multiple(img_size, img_size, self.size_multiple, 'TVQRAPNet img_size')
        r2 = (img_size // 2, img_size // 2)
        self.lqencoder = BlockStack([
            nn.Conv2d(3, c_in, 3, 1, 1), ResBlock(c_in, c_lr), ResBlock(c_lr), ResBlock(c_lr),
            Downsample(c_lr), ResBlock(2 * c_lr, emb_dim), ResBlock(emb_dim),
            SwinLayers(emb_dim, r2, lq_depths, num_heads, window_size, conv=True), ResBlock(emb_dim), ResBlock(emb_dim),
            Downsample(emb_dim), ResBlock(2 * emb_dim, emb_dim), ResBlock(emb_dim, low_ch),
            Downsample(low_ch), ResBlock(2 * low_ch), ResBlock(2 * low_ch, low_ch)])
        self.ylow_index = 9
        self.exactor = BlockStack([ResBlock(low_ch), ResBlock(low_ch, structure_ch), ResBlock(structure_ch),
                                   ResBlock(structure_ch)])
        self.quantize = VectorQuantizer(codebook_size, emb_dim)
        self.generator = TVQGenerator(
            build_structure_path(structure_ch, struct_mid_ch, emb_dim, 4 * img_size, num_heads, window_size,
                                 gen_depth, norm_groups),
            None,
            build_decoder(emb_dim, dec_ch, 4 * img_size, num_heads, window_size, gen_depth, norm_groups=norm_groups))
        self.blocks_fuse = nn.Sequential(
            ResBlock(2 * emb_dim, emb_dim), SwinLayers(emb_dim, r2, [fuse_depth], num_heads, window_size, conv=True),
            ResBlock(emb_dim))
        self.ft_layers_low = SwinLayers(emb_dim, r2, ft_depths, num_heads, window_size, conv=False)
        self.idx_pred_layer_low = nn.Sequential(nn.LayerNorm(emb_dim), nn.Linear(emb_dim, codebook_size, bias=False))
        if zero_init_residual:
            zero_init_residual_branches(self)
        self.fix_modules = tuple(fix_modules)
        for name in self.fix_modules:
            for p in getattr(self, name).parameters():
                p.requires_grad_(False)
        if tokenizer_path is not None:
            self.load_tokenizer(tokenizer_path, tokenizer_param_key)

    # ------------------------------------------------------------------ weights
    def load_tokenizer(self, path_or_state_dict: str | Mapping[str, torch.Tensor],
                       param_key: str | None = 'params_ema') -> None:
        """Copy ``generator.blocks_1``, ``generator.blocks_3`` and ``quantize`` from a stage-I TVQTokenizer
        checkpoint (or state dict); strict on those subtrees, CheckpointError naming the file otherwise."""
        if isinstance(path_or_state_dict, Mapping):
            name = '<tokenizer state dict>'
            sd = extract_state_dict(path_or_state_dict, param_key, name)
        else:
            name = str(path_or_state_dict)
            sd = extract_state_dict(load_checkpoint(name), param_key, name)
        own = {k: v for k, v in self.state_dict().items() if k.startswith(TOKENIZER_PREFIXES)}
        sub = {k: v for k, v in sd.items() if k.startswith(TOKENIZER_PREFIXES)}
        missing = [k for k in own if k not in sub]
        unexpected = [k for k in sub if k not in own]
        if missing or unexpected:
            raise CheckpointError(describe_key_mismatch(missing, unexpected, name)
                                  + ' (expected a stage-I TVQTokenizer checkpoint)')
        wrong = [k for k in own if tuple(own[k].shape) != tuple(sub[k].shape)]
        if wrong:
            k = wrong[0]
            raise CheckpointError(f'tokenizer checkpoint {name}: {len(wrong)} tensors of the wrong shape '
                                  f'(first: {k} {tuple(sub[k].shape)} vs {tuple(own[k].shape)})')
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(sub[k])

    @staticmethod
    def convert_official_state_dict(sd: Mapping[str, torch.Tensor]) -> tuple[dict, str | None]:
        """Drop the official CodeFormer's unused tokenizer subtrees: ``encoder.*``, ``lq_encoder.*``,
        ``lq_generator.*``, ``generator.blocks_2.*`` (:data:`OFFICIAL_UNUSED_PREFIXES`); nothing else is touched,
        so any other mismatch still fails a strict load. Returns (state dict, layout name or None)."""
        out = {k: v for k, v in sd.items() if not k.startswith(OFFICIAL_UNUSED_PREFIXES)}
        return out, (OFFICIAL_LAYOUT if len(out) != len(sd) else None)

    # ------------------------------------------------------------------ helpers
    @property
    def codebook(self) -> torch.Tensor:
        return self.quantize.embedding.weight

    def get_last_layer(self) -> nn.Parameter:
        """The predictor's final Linear weight: the adaptive GAN weight of stage III is taken here (§4)."""
        return self.idx_pred_layer_low[-1].weight

    def decode_features(self, structure_feature: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Frozen decoder on S_hat + z -> SR in [-1, 1] (raw)."""
        return self.generator.blocks_3(structure_feature + codes)

    def _tokens_to_map(self, tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        b, _, h, w = like.shape
        return tokens.transpose(1, 2).reshape(b, tokens.shape[-1], h, w)

    # ------------------------------------------------------------------ public API
    def predict(self, lr01: torch.Tensor) -> dict[str, torch.Tensor]:
        """LR in [0, 1] (B, 3, h, w), h, w multiples of 32 -> dict(logits (B, h/2*w/2, K) row-major,
        structure_latent_pred F^L_hat (B, 64, h/8, w/8), structure_feature S_hat (B, 256, h/2, w/2))."""
        check_multiple(lr01.shape[-2], lr01.shape[-1], self.size_multiple, 'TVQRAPNet LR input')
        x, y_low = self.lqencoder.forward_with_tap(lr01 * 2 - 1, self.ylow_index)
        f_l = self.exactor(x)
        s = self.generator.blocks_1(f_l)
        feat = self.ft_layers_low(self.blocks_fuse(torch.cat([s.detach(), y_low], dim=1)))
        logits = self.idx_pred_layer_low(feat.flatten(2).transpose(1, 2))
        return dict(logits=logits, structure_latent_pred=f_l, structure_feature=s)

    def forward_ste(self, lr01: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training forward of RAP (stage III): dict(sr_raw [-1, 1], sr01, logits, indices (B, h/2, w/2),
        structure_latent_pred); the image loss reaches the logits through :func:`straight_through_codes`."""
        pred = self.predict(lr01)
        s = pred['structure_feature']
        z = self._tokens_to_map(straight_through_codes(pred['logits'], self.codebook), s)
        raw = self.decode_features(s, z)
        b, _, h, w = s.shape
        return dict(sr_raw=raw, sr01=(raw + 1) / 2, logits=pred['logits'],
                    indices=pred['logits'].argmax(dim=-1).view(b, h, w),
                    structure_latent_pred=pred['structure_latent_pred'])

    def forward(self, lr01: torch.Tensor) -> torch.Tensor:
        """Inference: reflect-pad to ``pad_multiple``, argmax codes, decode, crop to 4h x 4w; SR in [0, 1]
        (not clamped)."""
        h, w = lr01.shape[-2:]
        x, _ = pad_to_multiple(lr01, self.pad_multiple)
        pred = self.predict(x)
        s = pred['structure_feature']
        b, _, hh, ww = s.shape
        codes = self.quantize.lookup(pred['logits'].argmax(dim=-1).view(b, hh, ww))
        raw = self.decode_features(s, codes)
        return ((raw + 1) / 2)[..., :4 * h, :4 * w]
