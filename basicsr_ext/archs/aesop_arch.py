"""The AESOP auto-encoder (aesop.md §2): a learned x4 downsampler into LR space, then BasicSR's RRDBNet x4.

The bottleneck *is* an LR-size RGB image: ``conv_first`` (two 3x3 convs 3 -> nf/16 -> nf/16, no activation)
-> two ``PixelUnshuffle(2)`` (nf channels at H/4 x W/4) -> ``body`` (RRDB blocks) -> ``conv_last`` (two 3x3
convs nf -> nf -> 3, no activation). The decoder is BasicSR's ``RRDBNet`` (reused, not copied), so PSNR RRDB
and RealESRNet weights load into ``decoder`` unchanged.

Released checkpoint layout (``AE_RRDBdecoder_100K.pth``, ``RealAE_RRDBdecoder_100K.pth``, key ``params_ema``):
the official class registers the encoder modules twice, as ``conv_first``/``body``/``conv_last`` and again as
``encoder.0``/``encoder.2``/``encoder.3`` of an ``nn.Sequential`` (``encoder.1`` = the parameter-free
unshuffles). This class mirrors that attribute layout (same modules, same registration order: decoder,
conv_first, down, body, conv_last, encoder), so the released files load with ``strict=True`` and every tensor
is filled. :meth:`convert_official_state_dict` also accepts files holding only one of the two copies.

:func:`load_frozen_autoencoder` builds and loads the frozen AE that both the AESOP loss and AE-PSNR use.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from basicsr.archs import build_network
from basicsr.archs.arch_util import default_init_weights
from basicsr.archs.rrdbnet_arch import RRDB, RRDBNet
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_ext.utils.checkpoint import CheckpointError, load_weights_into

#: encoder attribute -> its index in the ``encoder`` Sequential (the official duplicate names)
ENCODER_ALIASES = {'conv_first': 'encoder.0', 'body': 'encoder.2', 'conv_last': 'encoder.3'}
_DECODER_DEFAULTS = {'num_in_ch': 3, 'num_out_ch': 3, 'scale': 4, 'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32}


@ARCH_REGISTRY.register()
class AESOPAutoEncoder(nn.Module):
    """AESOP's frozen-loss auto-encoder, x4 only (official ``AutoEncoder_RRDBNet``).

    Args:
        dec_opt: RRDBNet arguments of the decoder (``num_in_ch``, ``num_out_ch``, ``num_feat``, ``num_block``,
            ``num_grow_ch``; defaults 3, 3, 64, 23, 32). An optional ``type`` must be ``RRDBNet``; ``scale``
            must be 4.
        enc_opt: accepted and ignored: the official configs pass a placeholder ``{placeholder: 0}`` here, and
            the official encoder has no options. Set the encoder size with the arguments below instead.
        num_feat: encoder width after the two unshuffles (64 official; must be divisible by 16). The image
            passes ``conv_first`` through ``num_feat // 16`` full-resolution channels: keep num_feat >= 48,
            or colour cannot get through (16 gives a one-channel, colour-blind encoder).
        num_block: RRDB blocks in the encoder body (2 official).
        num_grow_ch: RRDB growth channels in the encoder body (32 official).
        num_in_ch: image channels (3).
    """

    #: H and W must be multiples of 4 (two PixelUnshuffle(2)); validation and inference pad to it
    size_multiple = 4

    def __init__(self, dec_opt: Mapping[str, Any] | None = None, enc_opt: Mapping[str, Any] | None = None,
                 num_feat: int = 64, num_block: int = 2, num_grow_ch: int = 32, num_in_ch: int = 3) -> None:
        super().__init__()
        if num_feat % 16:
            raise ValueError(f'AESOPAutoEncoder: num_feat must be divisible by 16 (two PixelUnshuffle(2) of '
                             f'num_feat // 16 channels), got {num_feat}')
        dec = dict(_DECODER_DEFAULTS)
        dec.update(dict(dec_opt or {}))
        dec_type = dec.pop('type', 'RRDBNet')
        if dec_type != 'RRDBNet':
            raise ValueError(f"AESOPAutoEncoder: dec_opt.type must be 'RRDBNet', got {dec_type!r}")
        if dec['scale'] != 4:
            raise ValueError(f"AESOPAutoEncoder is x4 only (two PixelUnshuffle(2)); dec_opt.scale={dec['scale']}")
        self.enc_opt = dict(enc_opt or {})  # kept for reference only (ignored, see docstring)
        self.scale = 4
        # registration order = the official state-dict order: decoder, conv_first, body, conv_last, encoder
        self.decoder = RRDBNet(**dec)
        mid = num_feat // 16
        self.conv_first = nn.Sequential(nn.Conv2d(num_in_ch, mid, 3, 1, 1), nn.Conv2d(mid, mid, 3, 1, 1))
        self.down = nn.Sequential(nn.PixelUnshuffle(2), nn.PixelUnshuffle(2))
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_last = nn.Sequential(nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.Conv2d(num_feat, dec['num_in_ch'],
                                                                                         3, 1, 1))
        default_init_weights([self.conv_first, self.conv_last], 0.1)
        # the same modules again, under the official duplicate names encoder.0/.1/.2/.3
        self.encoder = nn.Sequential(self.conv_first, self.down, self.body, self.conv_last)

    @staticmethod
    def _check_size(x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f'AESOPAutoEncoder needs H and W divisible by 4 (x4 bottleneck); got {h}x{w}. '
                             'Crop or pad the image to a multiple of 4.')

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image (N, 3, H, W) in [0, 1] -> LR-size bottleneck (N, 3, H/4, W/4)."""
        self._check_size(x)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bottleneck (N, 3, h, w) -> reconstruction (N, 3, 4h, 4w)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, return_bottleneck: bool = False):
        """Reconstruction AE(x); with ``return_bottleneck=True`` the tuple (reconstruction, bottleneck)."""
        z = self.encode(x)
        out = self.decoder(z)
        return (out, z) if return_bottleneck else out

    def convert_official_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, str | None]:
        """Complete a file that holds only one copy of the encoder (``conv_first.*``... or ``encoder.N.*``).

        The released files hold both copies and pass through unchanged (layout ``None``).
        """
        sd = dict(state_dict)
        added = 0
        for short, long in ENCODER_ALIASES.items():
            for k in list(sd):
                for src, dst in ((short + '.', long + '.'), (long + '.', short + '.')):
                    if k.startswith(src):
                        twin = dst + k[len(src):]
                        if twin not in sd:
                            sd[twin] = sd[k]
                            added += 1
        return sd, ('single-copy AESOP encoder' if added else None)


#: the AE block of every official config (``train.aesop_opt.autoencoder_arch``)
DEFAULT_AUTOENCODER_ARCH = {'type': 'AESOPAutoEncoder', 'enc_opt': {'placeholder': 0},
                            'dec_opt': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64,
                                        'num_block': 23, 'num_grow_ch': 32}}
#: official arch names that mean our class
_ARCH_ALIASES = {'AutoEncoder_RRDBNet': 'AESOPAutoEncoder'}


def load_frozen_autoencoder(autoencoder_arch: Mapping[str, Any] | None,
                            autoencoder_load: Mapping[str, Any] | None) -> nn.Module:
    """Build the AE from its option dict, load ``{path, key}`` strictly, freeze it (no grad, eval): the frozen AE
    of the AESOP loss (``losses.aesop_loss``) and of AE-PSNR (``metrics.fidelity_metric``).

    Raises CheckpointError naming the path and key when the file is missing, lacks the key, or does not fit.
    """
    arch = dict(autoencoder_arch or DEFAULT_AUTOENCODER_ARCH)
    arch['type'] = _ARCH_ALIASES.get(arch.get('type', 'AESOPAutoEncoder'), arch.get('type', 'AESOPAutoEncoder'))
    net = build_network(arch)
    if not autoencoder_load or not autoencoder_load.get('path'):
        raise CheckpointError('AESOP auto-encoder: autoencoder_load.path is required (the pretrained AE checkpoint, '
                              'e.g. AE_RRDBdecoder_100K.pth with key params_ema); a random AE gives a meaningless loss '
                              'or AE-PSNR')
    path, key = str(autoencoder_load['path']), autoencoder_load.get('key', 'params_ema')
    try:  # the one loader: weights-only, key -> params_ema -> params, official layout translated, strict
        load_weights_into(net, path, key, strict=True, logger=get_root_logger())
    except CheckpointError as e:
        raise CheckpointError(f'AESOP auto-encoder (autoencoder_load: path {path}, key {key!r}): {e}; '
                              'check autoencoder_arch against the checkpoint') from None
    for p in net.parameters():
        p.requires_grad_(False)
    get_root_logger().info(f'Loaded the frozen AESOP auto-encoder from {path} (key {key!r}).')
    return net.eval()
