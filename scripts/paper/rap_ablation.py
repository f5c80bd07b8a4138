"""Small-scale RAP ablation (TVQ&RAP tvqrap.md §7 "Ablation: RAP"): from one stage-II checkpoint, continue
(a) with the code-level losses only (0.5 CE + 1.0 feature MSE) and (b) with RAP (image losses through the
straight-through estimator and the frozen decoder: MSE + LPIPS + adaptive hinge GAN), for the same iterations,
the same batches and the same optimizer; then compare index accuracy (argmax index == the tokenizer's index of
the GT) and SR quality on held-out crops.

Everything runs in memory on CPU with the quickstart's reduced-width networks (options/quickstart/) and the
photos bundled with scikit-image: a tokenizer (stage I, TVQTokenizerModel), a stage-II predictor
(TVQRAPModel, ``stage: code``), then the two branches, each with its option file's recipe (schedules fitted to
the iteration counts; by default stage I and stage II run their quickstart files' lengths, 2000 and 600
iterations, as the README's table). LR = bicubic x4 (antialiased) of random 128x128 GT
crops (a 4x4 structure grid at H/32).
LPIPS (loss of branch (b) and metric) is used only when its pretrained weights are on disk; otherwise branch (b)
is MSE + GAN. The paper's finding: RAP lowers index accuracy (6.8% -> 4.4%) while every perceptual metric
improves; at this scale expect the accuracy/quality trade-off, not the paper's numbers. README "Paper demos"
holds the measured table.

    python scripts/paper/rap_ablation.py [--tok-iters 2000] [--stage2-iters 600] [--iters 150] [--threads 2]
    python scripts/paper/rap_ablation.py --device cuda --bf16 --tok-iters 5000 --stage2-iters 5000 --iters 1000 --batch 8
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import basicsr_ext  # noqa: F401  (compat first)
import numpy as np
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img

from basicsr_ext import scripting
from basicsr_ext.utils.comparison import laplacian_ratio
from basicsr_ext.utils.options import load_option_file

CROP = 128      # the held-out tiles and the training crops (a 4x4 grid of the H/32 structure latent)
MAX_SIDE = 512  # as the quickstart's photos


def _figures(sr: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (Y, crop 4) and sharpness (mean |Laplacian| of the SR over the GT's, crop 4: a perceptual figure
    that needs no downloaded weights) of a batch in [0, 1]."""
    pairs = [(tensor2img([sr[i]]), tensor2img([gt[i]])) for i in range(len(gt))]
    return {'psnr': float(np.mean([calculate_psnr(a, b, crop_border=4, test_y_channel=True) for a, b in pairs])),
            'sharpness': float(np.mean([laplacian_ratio(a, b) for a, b in pairs]))}


def evaluate_sr(model, crops: torch.Tensor, lpips) -> dict[str, float]:
    """Index accuracy (via the model's validation hooks), PSNR (Y, crop 4), sharpness and LPIPS on ``crops``."""
    model.start_validation()
    model.feed_data(scripting.bicubic_x4_pair(crops))
    model.test()
    out = model.output
    lp = float(lpips.to(out.device).distance(out, crops.to(out.device)).mean()) if lpips is not None else None
    acc = model.finish_validation().get('index_acc', float('nan'))
    return {'index_acc': acc, **_figures(out.detach().cpu().float(), crops), 'lpips': lp}


def bicubic_row(crops: torch.Tensor, lpips) -> dict:
    """The reference row: bicubic x4 upsampling of the same LR."""
    from torch.nn import functional as F
    up = F.interpolate(scripting.bicubic_x4_pair(crops)['lq'], scale_factor=4, mode='bicubic',
                       align_corners=False).clamp(0, 1)
    lp = float(lpips.distance(up, crops).mean()) if lpips is not None else None
    return {'branch': 'bicubic (reference)', 'iters': '-', 'index_acc': None, **_figures(up, crops), 'lpips': lp}


def format_table(rows: list[dict]) -> str:
    return scripting.markdown_table(
        ['branch', 'iterations', 'index accuracy', 'PSNR (Y)', 'sharpness', 'LPIPS'],
        [[r['branch'], r['iters'], '-' if r['index_acc'] is None else f"{100 * r['index_acc']:.1f}%",
          f"{r['psnr']:.2f}", f"{r['sharpness']:.3f}", scripting.fmt(r['lpips'], '.4f')]
         for r in rows], align='lrrrrr')


def file_iters(file: str) -> int:
    """``train.total_iter`` of a quickstart option file: the default lengths follow the files, not a copy."""
    return int(load_option_file(scripting.option_file('quickstart', file))['train']['total_iter'])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--tok-iters', type=int, default=file_iters('tvq_tokenizer.yml'),
                        help='stage-I iterations (%(default)s: options/quickstart/tvq_tokenizer.yml\'s total_iter)')
    parser.add_argument('--stage2-iters', type=int, default=file_iters('tvqrap_stage2.yml'),
                        help='stage-II iterations (%(default)s: options/quickstart/tvqrap_stage2.yml\'s total_iter)')
    parser.add_argument('--iters', type=int, default=150, help='iterations of each branch (%(default)s)')
    parser.add_argument('--batch', type=int, default=2, help='batch size (%(default)s, as the option files)')
    parser.add_argument('--lr', type=float, default=1e-4, help='Adam learning rate of both branches (%(default)s)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (%(default)s)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'], help='training device (%(default)s)')
    parser.add_argument('--bf16', action='store_true', help='bf16 autocast in training (GPU, or a CPU with AMX)')
    args = parser.parse_args(argv)
    if min(args.tok_iters, args.stage2_iters, args.iters) < 1:
        parser.error('iteration counts must be >= 1')
    torch.set_num_threads(args.threads)
    scripting.quiet_basicsr()
    log = lambda m: print(m, flush=True)  # noqa: E731
    photos = [scripting.photo_rgb01(n, MAX_SIDE) for n in scripting.TOY_TRAIN_PHOTOS]
    crops = scripting.photo_crops(scripting.TOY_TEST_PHOTOS, CROP, MAX_SIDE)
    lpips = scripting.lpips_or_none()
    log(f'{crops.shape[0]} held-out crops; LPIPS (loss of RAP and metric): '
        f'{"on" if lpips is not None else "off (weights not on disk): RAP = MSE + GAN"}')
    t0 = time.time()
    rows = [bicubic_row(crops, lpips)]
    with tempfile.TemporaryDirectory() as work:
        tok_path, s2_path = os.path.join(work, 'tok.pth'), os.path.join(work, 'stage2.pth')
        torch.manual_seed(args.seed)
        opt = scripting.quickstart_options('tvq_tokenizer.yml', work)
        opt['train']['perceptual_opt'] = None
        scripting.fit_schedule(opt, args.tok_iters)
        scripting.on_device(opt, args.device, args.bf16)
        sample = scripting.crop_sampler(photos, args.batch, CROP, seed=args.seed)
        tok = scripting.train_steps(opt, lambda: {'gt': sample()}, args.tok_iters, log, 'stage I')
        scripting.save_net_g(tok, tok_path)

        torch.manual_seed(args.seed)
        opt = scripting.quickstart_options('tvqrap_stage2.yml', work)
        opt['path'].update(pretrain_network_tok=tok_path, pretrain_network_g=None)
        scripting.fit_schedule(opt, args.stage2_iters)
        scripting.on_device(opt, args.device, args.bf16)
        sample = scripting.crop_sampler(photos, args.batch, CROP, seed=args.seed + 1)
        s2 = scripting.train_steps(opt, lambda: scripting.bicubic_x4_pair(sample()), args.stage2_iters, log, 'stage II')
        scripting.save_net_g(s2, s2_path)
        rows.append({'branch': 'stage II (start)', 'iters': 0, **evaluate_sr(s2, crops, lpips)})

        for branch, file in (('(a) code-level only', 'tvqrap_stage2.yml'), ('(b) RAP', 'tvqrap_rap.yml')):
            torch.manual_seed(args.seed)
            opt = scripting.quickstart_options(file, work)
            opt['path'].update(pretrain_network_tok=tok_path, pretrain_network_g=s2_path, param_key_g='params')
            scripting.fit_schedule(opt, args.iters)
            scripting.on_device(opt, args.device, args.bf16)
            opt['train']['optim_g']['lr'] = args.lr
            if opt['train'].get('optim_d'):
                opt['train']['optim_d']['lr'] = args.lr
            if opt['train']['stage'] == 'rap' and lpips is not None:
                opt['train']['perceptual_opt'] = {'type': 'LPIPSLoss', 'loss_weight': 1.0, 'pretrained': True}
            # the same batches for both branches
            sample = scripting.crop_sampler(photos, args.batch, CROP, seed=args.seed + 2)
            model = scripting.train_steps(opt, lambda s=sample: scripting.bicubic_x4_pair(s()), args.iters, log, branch)
            rows.append({'branch': branch, 'iters': args.iters, **evaluate_sr(model, crops, lpips)})
    log(f'\nRAP ablation on held-out crops (x4 bicubic LR; {time.time() - t0:.0f} s):\n')
    print(format_table(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
