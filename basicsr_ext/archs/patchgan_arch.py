"""VQGAN-style PatchGAN discriminator used in TVQ&RAP stages I and III (paper notes §2, "Discriminator").

Official layout (manifest ``tvqrap_discriminator.json``, ``main.*``): conv4x4/s2 + LeakyReLU(0.2); for each of
``n_layers - 1`` layers conv4x4/s2 (no bias) + BatchNorm + LeakyReLU; one conv4x4/s1 (no bias) + BatchNorm +
LeakyReLU; conv4x4/s1 to one logit channel. Channel multiplier doubles per layer, capped at 8. With n_layers=2,
ndf=64: 663,361 parameters, a 64x64 input gives a 14x14 logit map.
"""
from __future__ import annotations

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


@ARCH_REGISTRY.register()
class TVQPatchGANDiscriminator(nn.Module):
    """PatchGAN logit map for images in [0, 1] (``x01 * 2 - 1`` goes into the official network).

    Args (official option names): input_nc (3), ndf (64), n_layers (2).
    Init: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and bias 0 (VQGAN convention).
    """

    #: any input size works (strided convolutions, no windows)
    size_multiple = 1

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 1, H/4 - 2, W/4 - 2) logits (for n_layers=2)."""
        return self.main(x01 * 2 - 1)
