"""The AESOP loss (aesop.md §1): L_AESOP = loss_weight * mean |AE(I_SR) - AE(I_HR)| with a frozen, pretrained AE.

"AE space" is the image *after* the decoder. The AE is frozen (``requires_grad=False``, ``eval()``), but the
gradient passes through it to the SR image: AE(SR) runs with autograd, only AE(HR) runs under ``no_grad``.
No clamping or normalisation: RGB in [0, 1] goes in as it is (official behaviour). The AE always runs in fp32,
also inside an autocast region of the caller.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn
from torch.nn import functional as F

# the AE loader lives with the AE (the fidelity metric uses it too); the names stay importable here
from basicsr_ext.archs.aesop_arch import DEFAULT_AUTOENCODER_ARCH, load_frozen_autoencoder  # noqa: F401
from basicsr_ext.utils.checkpoint import CheckpointError, check_finite, load_checkpoint, pick_state_dict

_CRITERIA = {'l1': F.l1_loss, 'l2': F.mse_loss, 'mse': F.mse_loss}


@LOSS_REGISTRY.register()
class AESOPLoss(nn.Module):
    """Auto-encoded supervision (official ``AutoEncoderLoss``; option names kept).

    Args:
        autoencoder_arch: network options of the AE (``type`` + kwargs); default the official AE block.
            The official arch name ``AutoEncoder_RRDBNet`` is accepted as an alias of ``AESOPAutoEncoder``.
        autoencoder_load: ``{path, key}`` of the pretrained AE (``key`` default ``params_ema``).
        loss_weight: weight of the loss (1.0 in every AESOP config).
        criterion: ``l1`` (default, official) or ``l2``/``mse``.
        reduction: ``mean`` (official: over N*C*H*W) or ``sum``.
    """

    def __init__(self, autoencoder_arch: Mapping[str, Any] | None = None,
                 autoencoder_load: Mapping[str, Any] | None = None, loss_weight: float = 1.0,
                 criterion: str = 'l1', reduction: str = 'mean', as_loss_map: bool = False) -> None:
        super().__init__()
        if criterion not in _CRITERIA:
            raise ValueError(f'AESOPLoss: criterion must be one of {sorted(_CRITERIA)}, got {criterion!r}')
        if reduction not in ('mean', 'sum'):
            raise ValueError(f"AESOPLoss: reduction must be 'mean' or 'sum', got {reduction!r}")
        if as_loss_map:
            raise ValueError('AESOPLoss: as_loss_map (official ablation) is not supported: the official code '
                             'multiplies by an undefined weight and crashes')
        self.loss_weight = float(loss_weight)
        self.criterion = criterion
        self.reduction = reduction
        self.autoencoder = load_frozen_autoencoder(autoencoder_arch, autoencoder_load)

    @classmethod
    def check_pretrained(cls, block: Mapping[str, Any]) -> None:
        """What the constructor of ``block`` (a ``train:`` option block) needs on disk, checked before the model is
        built (``basicsr_ext.preflight``): ``autoencoder_load.path`` exists, reads weights-only, and the weights
        under its ``key`` (``params_ema`` → ``params`` → the raw dict, as the loader picks them) are finite. Names
        and shapes are checked against the AE when the loss is built."""
        load = block.get('autoencoder_load') or {}
        path = load.get('path') if isinstance(load, Mapping) else None
        if not path:
            raise CheckpointError('AESOP auto-encoder: autoencoder_load.path is required (the pretrained AE '
                                  'checkpoint, e.g. AE_RRDBdecoder_100K.pth with key params_ema)')
        path, key = str(path), load.get('key', 'params_ema')
        try:
            _, state_dict = pick_state_dict(load_checkpoint(path), key, path)
            check_finite(state_dict, path)
        except CheckpointError as e:
            raise CheckpointError(f'AESOP auto-encoder (autoencoder_load: path {path}, key {key!r}): {e}') from None

    def train(self, mode: bool = True) -> 'AESOPLoss':
        """The AE stays in eval mode whatever the owner does (frozen loss network)."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """``loss_weight * criterion(AE(sr), AE(hr))``; gradients reach ``sr``, never the AE or ``hr``.

        AE(HR) runs without a graph (no_grad); AE(SR) with autograd. Both in fp32 (autocast disabled here).
        Two passes rather than one batched pass: the batched pass would backpropagate through the HR half too
        (scripts/bench/bench_aesop.py measures the step).
        """
        with torch.autocast(sr.device.type, enabled=False):
            with torch.no_grad():
                target = self.autoencoder(hr.detach().float())
            pred = self.autoencoder(sr.float())
            loss = _CRITERIA[self.criterion](pred, target, reduction=self.reduction)
        return self.loss_weight * loss
