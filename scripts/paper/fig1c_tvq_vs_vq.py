"""Small-scale reproduction of TVQ&RAP Fig. 1c (tvqrap.md §7): reconstruction quality of texture VQ (TVQ) vs
vanilla VQ at equal codebook sizes.

Both tokenizers are the quickstart's reduced-width ``TVQTokenizer`` (options/quickstart/tvq_tokenizer.yml: no
normalisation (``norm_groups: 0``), zero-initialised residual branches, the official quantizer (beta 0.25, commitment
1.0), warm-up + cosine LR, gradient clipping 0.3, dead-code re-initialisation),
``structure: true`` (TVQ: continuous structure latent at H/32 + quantised texture) vs ``structure: false`` (vanilla
VQ: everything through the codebook), trained by ``TVQTokenizerModel`` with the same recipe, batches and number of
iterations on random 128x128 crops (a 4x4 structure grid; 64 crops leave a 2x2 grid that is all border) of
scikit-image's bundled photos, and evaluated on the 128x128 tiles of two held-out photos: reconstruction PSNR (RGB),
codebook usage and perplexity, and LPIPS-VGG when its weights are on disk.

Choices for a CPU demo (the paper trains 100K-450K iterations on ImageNet and reports rFID): no GAN and no LPIPS
loss (MSE + codebook (+ aux AE + alignment for TVQ)), EMA off, the option file's schedule fitted to ``--iters``
(800 by default: half the 1600 of the README's table, so that the eight tokenizers fit 30 minutes on 2 cores;
warm-up and dead-code re-initialisation scaled with it).
README "Paper demos" holds the measured table and what it shows.

    python scripts/paper/fig1c_tvq_vs_vq.py [--iters 800] [--sizes 4 16 64 256] [--out fig1c.png] [--threads 2]
    python scripts/paper/fig1c_tvq_vs_vq.py --device cuda --bf16 --iters 5000 --batch 8   # the longer run, one GPU
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import basicsr_ext  # noqa: F401  (compat first)
import numpy as np
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img

from basicsr_ext import scripting
from basicsr_ext.losses.vq_loss import LPIPSLoss
from basicsr_ext.utils.image_io import write_figure_atomic

TRAIN_PHOTOS, TEST_PHOTOS = scripting.TOY_TRAIN_PHOTOS, scripting.TOY_TEST_PHOTOS
CROP = 128      # a 4x4 grid of the H/32 structure latent
MAX_SIDE = 512  # as the quickstart's photos


def evaluate_tokenizer(model, crops: torch.Tensor, lpips: LPIPSLoss | None) -> dict[str, float]:
    """Reconstruction PSNR (RGB, 8-bit), LPIPS (if available) and codebook usage over ``crops`` (one batch)."""
    model.start_validation()
    model.feed_data({'gt': crops})
    model.test()
    out = model.output
    psnrs = [calculate_psnr(tensor2img([out[i]]), tensor2img([crops[i]]), crop_border=0) for i in range(len(crops))]
    lp = float(lpips.to(out.device).distance(out, crops.to(out.device)).mean()) if lpips is not None else None
    usage = model.finish_validation()
    return {'psnr': float(np.mean(psnrs)), 'lpips': lp, **usage}


def save_plot(rows: list[dict], path: str) -> None:
    """PSNR vs codebook size for TVQ and VQ (written atomically)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    for method, style in (('TVQ', 'o-'), ('VQ', 's--')):
        pts = sorted((r['codes'], r['psnr']) for r in rows if r['method'] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=method)
    ax.set_xscale('log', base=2)
    ax.set_xlabel('codebook size')
    ax.set_ylabel('reconstruction PSNR (dB)')
    ax.set_title('TVQ vs VQ (small-scale Fig. 1c)')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        write_figure_atomic(fig, path, dpi=120)
    finally:
        plt.close(fig)


def format_table(rows: list[dict]) -> str:
    return scripting.markdown_table(
        ['codebook size', 'method', 'r-PSNR (dB)', 'r-LPIPS', 'codes used', 'perplexity'],
        [[r['codes'], r['method'], f"{r['psnr']:.2f}", scripting.fmt(r['lpips'], '.4f'),
          f"{100 * r['codebook_usage']:.0f}%", f"{r['codebook_perplexity']:.1f}"]
         for r in sorted(rows, key=lambda r: (r['codes'], r['method']))], align='rlrrrr')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--iters', type=int, default=800, help='training iterations per tokenizer (%(default)s)')
    parser.add_argument('--sizes', type=int, nargs='+', default=[4, 16, 64, 256], help='codebook sizes')
    parser.add_argument('--batch', type=int, default=2, help='batch size (%(default)s; the quickstart file\'s)')
    parser.add_argument('--out', default='fig1c_tvq_vs_vq.png', help='plot file (%(default)s)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (%(default)s)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'], help='training device (%(default)s)')
    parser.add_argument('--bf16', action='store_true', help='bf16 autocast in training (GPU, or a CPU with AMX)')
    args = parser.parse_args(argv)
    if args.iters < 1 or any(s < 2 for s in args.sizes):
        parser.error('--iters must be >= 1 and codebook sizes >= 2')
    torch.set_num_threads(args.threads)
    scripting.quiet_basicsr()
    photos = [scripting.photo_rgb01(n, MAX_SIDE) for n in TRAIN_PHOTOS]
    crops = scripting.photo_crops(TEST_PHOTOS, CROP, MAX_SIDE)
    lpips = scripting.lpips_or_none()
    print(f'{len(TRAIN_PHOTOS)} training photos, {crops.shape[0]} held-out {CROP}x{CROP} crops; LPIPS: '
          f'{"on" if lpips is not None else "off (weights not on disk)"}', flush=True)
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as work:
        for codes in args.sizes:
            for method, structure in (('TVQ', True), ('VQ', False)):
                torch.manual_seed(args.seed)
                opt = scripting.quickstart_options('tvq_tokenizer.yml', work, structure=structure, codebook_size=codes)
                opt['train'].update(gan_opt=None, perceptual_opt=None)
                scripting.fit_schedule(opt, args.iters)
                scripting.on_device(opt, args.device, args.bf16)
                sample = scripting.crop_sampler(photos, args.batch, CROP, seed=args.seed)
                model = scripting.train_steps(opt, lambda s=sample: {'gt': s()}, args.iters, label=f'{method}-{codes}',
                                              log=lambda m: print(m, flush=True))
                rows.append({'codes': codes, 'method': method, **evaluate_tokenizer(model, crops, lpips)})
    save_plot(rows, args.out)
    print(f'\nReconstruction of held-out crops after {args.iters} iterations each ({time.time() - t0:.0f} s):\n')
    print(format_table(rows))
    print(f'\nplot: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
