"""Demonstrate what L_AESOP penalises (aesop.md §1): the fidelity-bias part of an image, not its texture.

Trains a small AESOP auto-encoder briefly on the photos bundled with scikit-image (HR reconstruction + LR
reconstruction against the bicubic LR), then perturbs a held-out HR crop in four ways of equal pixel L1:

- texture in the null space of bicubic x4 downsampling (random noise minus its least-squares projection onto
  the row space of the downsampler, so the bicubic LR does not change),
- the same noise unprojected,
- a colour shift,
- a Gaussian blur,

and prints pixel L1, L_AESOP (``AESOPLoss`` built from the trained checkpoint) and their ratio. Expected: the
null-space texture costs far less in L_AESOP than in L1; the colour shift and the blur cost both.

    python scripts/paper/aesop_demo.py [--steps 400] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import basicsr_ext  # noqa: F401  (compat first)
import numpy as np
import torch
from basicsr.losses import build_loss
from torch.nn import functional as F

from basicsr_ext.archs.aesop_arch import AESOPAutoEncoder
from basicsr_ext.scripting import load_photo, markdown_table
from basicsr_ext.utils.checkpoint import atomic_save

# encoder as the paper (num_feat 64: 4 full-resolution channels before the unshuffles; fewer than 48 would
# squeeze colour through fewer than 3 channels), one RRDB; a small decoder
AE_OPT = {'num_feat': 64, 'num_block': 1, 'num_grow_ch': 16,
          'dec_opt': {'num_feat': 32, 'num_block': 1, 'num_grow_ch': 16}}
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'hubble_deep_field', 'stereo_motorcycle',
          'colorwheel')
HELD_OUT = 'astronaut'


def bicubic_down(x: torch.Tensor) -> torch.Tensor:
    """The x4 bicubic downsampler (antialiased, MATLAB-like); linear in x."""
    return F.interpolate(x, scale_factor=0.25, mode='bicubic', antialias=True, align_corners=False)


def null_space_projection(noise: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """noise - D^T (D D^T)^-1 D noise, by conjugate gradients: the part of ``noise`` that D maps to 0."""
    def d_t(y: torch.Tensor) -> torch.Tensor:  # the adjoint of D, by autograd
        with torch.enable_grad():
            x = torch.zeros_like(noise, requires_grad=True)
            (g,) = torch.autograd.grad(bicubic_down(x), x, grad_outputs=y)
        return g

    b = bicubic_down(noise)
    y = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum()
    for _ in range(iters):
        ap = bicubic_down(d_t(p))
        alpha = rs / (p * ap).sum()
        y = y + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum()
        if rs_new.sqrt() < 1e-7 * b.norm():
            break
        p = r + rs_new / rs * p
        rs = rs_new
    return noise - d_t(y)


def load_photos(size: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Bundled photos as RGB tensors in [0, 1] (grey -> 3 channels), plus the held-out test crop."""
    train, test = [], None
    for name in PHOTOS:
        img = load_photo(name)[..., ::-1]  # BGR -> RGB
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
        h, w = (t.shape[1] // 4) * 4, (t.shape[2] // 4) * 4
        t = t[:, :h, :w]
        if name == HELD_OUT:
            test = t[:, 160:160 + size, 160:160 + size].clone()  # the face/suit region
            t = t[:, :, 256:]  # train on the other half only
        train.append(t)
    return train, test[None]


def random_batch(photos: list[torch.Tensor], batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
    out = []
    for _ in range(batch):
        img = photos[int(torch.randint(len(photos), (1,), generator=gen))]
        y = int(torch.randint(img.shape[1] - size + 1, (1,), generator=gen))
        x = int(torch.randint(img.shape[2] - size + 1, (1,), generator=gen))
        crop = img[:, y:y + size, x:x + size]
        if torch.rand(1, generator=gen) < 0.5:
            crop = crop.flip(-1)
        out.append(crop)
    return torch.stack(out)


def train_autoencoder(photos: list[torch.Tensor], steps: int, batch: int, size: int, seed: int) -> AESOPAutoEncoder:
    """HR-recon L1 + LR-recon L1 (bottleneck vs bicubic LR), as the synthetic AESOP AE (aesop.md §2)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ae = AESOPAutoEncoder(**AE_OPT)
    opt = torch.optim.Adam(ae.parameters(), lr=2e-3, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    for step in range(1, steps + 1):
        hr = random_batch(photos, batch, size, gen)
        rec, z = ae(hr, return_bottleneck=True)
        loss = F.l1_loss(rec, hr) + F.l1_loss(z, bicubic_down(hr))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, steps // 5) == 0 or step == steps:
            print(f'  AE step {step:4d}/{steps}: L1 HR recon + L1 LR recon = {loss.item():.4f}', flush=True)
    return ae.eval()


def perturbations(x: torch.Tensor, magnitude: float, seed: int) -> dict[str, torch.Tensor]:
    """Four perturbations of ``x``, each scaled to mean |delta| = magnitude."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=gen)
    sigma, k = 1.5, 7
    ax = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-ax ** 2 / (2 * sigma ** 2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, k, k)
    blurred = F.conv2d(F.pad(x, (k // 2,) * 4, mode='reflect'), kernel, groups=3)
    deltas = {
        'texture in the null space of bicubic x4': null_space_projection(noise),
        'white noise (unprojected)': noise,
        'colour shift (+R, -B)': torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1).expand_as(x).clone(),
        'Gaussian blur (sigma 1.5)': blurred - x,
    }
    return {name: x + d * (magnitude / d.abs().mean()) for name, d in deltas.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=400, help='AE training steps (default 400)')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--size', type=int, default=32, help='training crop size (multiple of 4)')
    parser.add_argument('--test-size', type=int, default=96, help='held-out crop size (multiple of 4)')
    parser.add_argument('--magnitude', type=float, default=0.03, help='pixel L1 of every perturbation')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.time()
    photos, hr = load_photos(args.test_size)
    print(f'Training a small AESOP auto-encoder on {len(photos)} bundled photos ({args.steps} steps)...')
    ae = train_autoencoder(photos, args.steps, args.batch, args.size, args.seed)
    with tempfile.TemporaryDirectory() as tmp:  # the loss loads the AE as users do: a checkpoint + key
        path = os.path.join(tmp, 'ae.pth')
        atomic_save({'params_ema': ae.state_dict()}, path)
        loss = build_loss({'type': 'AESOPLoss', 'loss_weight': 1.0, 'criterion': 'l1',
                           'autoencoder_arch': {'type': 'AESOPAutoEncoder', **AE_OPT},
                           'autoencoder_load': {'path': path, 'key': 'params_ema'}})
    with torch.no_grad():
        recon_psnr = -10 * torch.log10(F.mse_loss(ae(hr), hr)).item()
        rows = []
        for name, x in perturbations(hr, args.magnitude, args.seed).items():
            pix = (x - hr).abs().mean().item()
            lr_change = (bicubic_down(x) - bicubic_down(hr)).abs().mean().item()
            aesop = loss(x, hr).item()
            rows.append((name, pix, lr_change, aesop, aesop / pix))

    print(f'\nHeld-out crop: {HELD_OUT} {args.test_size}x{args.test_size}; AE reconstruction PSNR '
          f'{recon_psnr:.2f} dB; {time.time() - start:.0f} s\n')
    print(markdown_table(['perturbation (equal pixel L1)', 'pixel L1', 'bicubic-LR L1', 'L_AESOP', 'L_AESOP / L1'],
                         [[name, f'{pix:.4f}', f'{lr_change:.5f}', f'{aesop:.5f}', f'{ratio:.3f}']
                          for name, pix, lr_change, aesop, ratio in rows]))
    texture = rows[0][4]
    others = min(rows[2][4], rows[3][4])
    print(f'\nThe null-space texture costs {texture:.3f} of its L1 in L_AESOP; the colour shift / blur cost '
          f'{rows[2][4]:.3f} / {rows[3][4]:.3f} ({others / max(texture, 1e-12):.1f}x more per unit of L1).')


if __name__ == '__main__':
    main()
