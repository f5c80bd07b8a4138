"""Training-step time of AESOP vs the LDL baseline with the same generator and batch (aesop.md §1, pitfall 9).

Both models are built from the repository's option files (``train_aesop_<g>.yml`` / ``train_ldl_<g>.yml``),
so they differ only in ``aesop_opt`` (1 * L_AESOP: two AE passes, one backpropagated) vs ``pixel_opt``
(0.01 * L1). Steps of the two models alternate in one process (warm-up, then the median of N), so machine
load hits both alike. The AE weights are random (timing only); with ``--perceptual`` the VGG19 weights are
random too (no download).

    python scripts/bench/bench_aesop.py                       # reduced widths, CPU
    python scripts/bench/bench_aesop.py --size paper --device cuda --batch 16 --perceptual
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import basicsr_ext  # noqa: F401  (compat first)
import torch
from basicsr.models import build_model

from basicsr_ext.scripting import markdown_table, option_file, timed_step, training_options
from basicsr_ext.utils.checkpoint import atomic_save

REDUCED = {
    'RRDBNet': {'num_feat': 32, 'num_block': 4, 'num_grow_ch': 16},
    'SwinIR': {'embed_dim': 60, 'depths': [2, 2], 'num_heads': [6, 6]},
    'VGGStyleDiscriminator': {'num_feat': 16},
    'ae': {'num_feat': 64, 'num_block': 1, 'num_grow_ch': 16,
           'dec_opt': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 32, 'num_block': 4,
                       'num_grow_ch': 16}},
}


def random_vgg() -> None:
    """Let BasicSR's VGGFeatureExtractor build VGG19 with random weights instead of downloading them."""
    from basicsr.archs import vgg_arch
    tv_vgg19 = vgg_arch.vgg.vgg19
    vgg_arch.VGG_PRETRAIN_PATH = os.path.join(tempfile.gettempdir(), 'no-such-vgg19.pth')
    vgg_arch.vgg.vgg19 = lambda pretrained=False, **kw: tv_vgg19(weights=None)


def model_options(kind: str, args: argparse.Namespace, ae_path: str) -> dict:
    """An option file of the repository, with the benchmark's size, batch and device."""
    opt = training_options(option_file(f'train_{kind}_{args.generator}.yml'), tempfile.gettempdir(),
                           num_gpu=1 if args.device == 'cuda' else 0, pretrained=False)
    train = opt['train']
    train.update(use_amp=args.amp, amp_dtype='bf16')
    if not args.perceptual:
        train.pop('perceptual_opt', None)
    gt = args.gt_size
    opt['datasets']['train']['gt_size'] = gt
    opt['network_d']['input_size'] = gt
    if args.size == 'reduced':
        opt['network_g'].update(REDUCED[opt['network_g']['type']])
        opt['network_d'].update(REDUCED['VGGStyleDiscriminator'])
    if 'aesop_opt' in train:
        if args.size == 'reduced':
            train['aesop_opt']['autoencoder_arch'] = {'type': 'AESOPAutoEncoder', **REDUCED['ae']}
        train['aesop_opt']['autoencoder_load'] = {'path': ae_path, 'key': 'params_ema'}
    return opt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--generator', choices=['rrdb', 'swinir'], default='rrdb')
    parser.add_argument('--size', choices=['reduced', 'paper'], default='reduced', help='network widths')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--gt-size', type=int, default=128, choices=[128, 256])
    parser.add_argument('--iters', type=int, default=10, help='timed steps per model (median reported)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true', help='train.use_amp with bf16')
    parser.add_argument('--perceptual', action='store_true', help='include the VGG19 perceptual loss (random weights)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--count-flops', action='store_true',
                        help='also count the FLOPs of one step of each model (device-independent ratio)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.perceptual:
        random_vgg()

    from basicsr.archs import build_network
    with tempfile.TemporaryDirectory() as tmp:
        probe = model_options('aesop', args, '')
        ae = build_network(dict(probe['train']['aesop_opt']['autoencoder_arch']))
        ae_path = os.path.join(tmp, 'ae.pth')
        atomic_save({'params_ema': ae.state_dict()}, ae_path)
        models = {kind: build_model(model_options(kind, args, ae_path)) for kind in ('ldl', 'aesop')}
    device = torch.device(args.device)
    lq = torch.rand(args.batch, 3, args.gt_size // 4, args.gt_size // 4, device=device)
    gt = torch.rand(args.batch, 3, args.gt_size, args.gt_size, device=device)

    times: dict[str, list[float]] = {k: [] for k in models}
    for it in range(1, args.warmup + args.iters + 1):
        for kind, model in models.items():  # alternate: load changes hit both alike
            t = timed_step(model, {'lq': lq, 'gt': gt}, it)
            if it > args.warmup:
                times[kind].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    dev = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({args.threads} threads)'
    print(f'\n{args.generator} ({args.size} widths), batch {args.batch}, GT {args.gt_size}, {dev}, '
          f'amp={args.amp}, perceptual={args.perceptual}; median of {args.iters} steps after {args.warmup} warm-up\n')
    labels = {'ldl': 'LDL baseline: 0.01 * L1 + artifact + GAN', 'aesop': 'AESOP: 1 * L_AESOP + artifact + GAN'}
    print(markdown_table(['model', 'generator loss', 'step time (s)', 'min (s)', 'max (s)'],
                         [[kind, labels[kind], f'{med[kind]:.4f}', f'{min(times[kind]):.4f}', f'{max(times[kind]):.4f}']
                          for kind in ('ldl', 'aesop')]))
    ratio = med['aesop'] / med['ldl']
    print(f'\nAESOP / LDL step-time ratio: {ratio:.2f}x (target <= 1.3x)')
    if args.count_flops:
        from torch.utils.flop_counter import FlopCounterMode
        flops = {}
        for kind, model in models.items():
            model.feed_data({'lq': lq, 'gt': gt})
            with FlopCounterMode(display=False) as counter:
                model.optimize_parameters(args.warmup + args.iters + 1)
            flops[kind] = counter.get_total_flops()
        print(f"FLOPs per step: LDL {flops['ldl'] / 1e9:.1f} G, AESOP {flops['aesop'] / 1e9:.1f} G, "
              f"ratio {flops['aesop'] / flops['ldl']:.2f}x")


if __name__ == '__main__':
    main()
