"""The GPU check (issue 17): everything that only runs on CUDA, in one script, <= 8 minutes on one GPU.

    python scripts/bench/gpu_check.py                 # on a machine with a CUDA GPU
    python scripts/bench/gpu_check.py --device cpu    # the same checks on CPU (fp32/bf16, gloo): a dry run

1. One training step (two, the first untimed) of each model from its quickstart option file, random weights,
   synthetic batch, in fp32, bf16 and fp16 (GradScaler), all with channels_last, plus bf16 + torch.compile:
   finite losses, the generator's weights moved, the GradScaler on for fp16 only.
2. Golden equivalence on CUDA (the released networks' official outputs, tests/data/golden, weights from the fill
   rule of tests/golden_rule.py): fp32 with TF32 off within 1e-3 and code indices identical; fp16 / bf16
   autocast reported as PSNR vs the golden image and index agreement.
3. ``basicsr-ext-infer`` in fp16 and bf16 (and fp32) on 3 photos with the quickstart TVQ&RAP trained in memory
   first (``scripting.train_quickstart_tvqrap``, its default 150 + 600 + 5 steps): exit 0, PSNR of the
   low-precision outputs vs fp32 reported.
4. A 1-process NCCL process group (BasicSR's ``init_dist('pytorch')`` as patched by basicsr_ext) and one DDP
   training step of the RAP model (``dist: true``).
5. ``scripts/bench/bench_infer.py`` on CUDA (64², 128², 256², the CLI comparison at 128²), its tables printed.
6. Last (compilation is the slowest part): the bf16 + channels_last + torch.compile training step of each model.

Prints one table (check, variant, status, seconds, detail), then the bench_infer tables, and exits 1 when any
check failed or could not run within ``--budget-s``. Without CUDA (and without ``--device cpu``) it prints one
line and exits 0. Paste the table into the README ("GPU check") when a GPU was at hand.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import os.path as osp
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

import torch


def skipped_without_cuda(argv: list[str]) -> bool:
    """True (after printing the one line) when the check targets CUDA and there is none: decided before the
    package is imported, so the skip costs only ``import torch``."""
    if '--device' in argv and argv.index('--device') + 1 < len(argv) and argv[argv.index('--device') + 1] != 'cuda':
        return False
    if any(a.startswith('--device=') and a != '--device=cuda' for a in argv) or torch.cuda.is_available():
        return False
    print(f'gpu_check: skipped, no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda or "none"})')
    return True


if __name__ == '__main__' and skipped_without_cuda(sys.argv[1:]):
    sys.exit(0)

import basicsr_ext  # noqa: E402,F401  (compat first)

from basicsr_ext.scripting import (REPO_ROOT, markdown_table, option_file, photo_rgb01,  # noqa: E402
                                   random_frozen_checkpoints, train_quickstart_tvqrap, training_options)
from basicsr_ext.utils import precision as P  # noqa: E402
from basicsr_ext.utils.checkpoint import atomic_save  # noqa: E402

MODELS = (('AESOP AE', 'aesop_autoencoder.yml'), ('AESOP', 'aesop_rrdb.yml'), ('TVQ tokenizer', 'tvq_tokenizer.yml'),
          ('TVQ&RAP stage II', 'tvqrap_stage2.yml'), ('TVQ&RAP RAP', 'tvqrap_rap.yml'))
GOLDEN_RULE = osp.join(REPO_ROOT, 'tests', 'golden_rule.py')
TOL = 1e-3


class Report:
    """Rows of the one table; ``failed`` counts FAIL and NOT RUN rows."""

    def __init__(self, budget_s: float) -> None:
        self.rows: list[list[str]] = []
        self.t0, self.budget = time.perf_counter(), budget_s
        self.failed = 0

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def add(self, check: str, variant: str, ok: bool | None, seconds: float | None, detail: str = '') -> None:
        status = 'ok' if ok else 'NOT RUN' if ok is None else 'FAIL'
        self.failed += not ok
        self.rows.append([check, variant, status, '' if seconds is None else f'{seconds:.1f}', detail])
        print(f'  {status:7s} {check} [{variant}] {detail}', flush=True)

    def run(self, check: str, variant: str, fn: Callable[[], tuple[bool, str]], min_left: float = 0.0) -> None:
        """Run ``fn`` -> (ok, detail); an exception is a FAIL row with its first line; NOT RUN past the budget."""
        if self.left() < min_left:
            self.add(check, variant, None, None, f'time budget spent ({self.budget:.0f} s)')
            return
        t = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as e:  # noqa: BLE001 - every failure is a row, the other checks still run
            ok, detail = False, f'{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e) else ""}'
            traceback.print_exc(limit=4)
        self.add(check, variant, ok, time.perf_counter() - t, detail)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


# ------------------------------------------------------------------------------------------ 1. training steps
def train_variants(device: torch.device) -> list[tuple[str, dict[str, Any]]]:
    cl = {'channels_last': True}
    out = [('fp32 + channels_last', dict(cl))]
    if device.type == 'cuda' or P.cpu_has_bf16():
        out.append(('bf16 + channels_last', dict(cl, use_amp=True, amp_dtype='bf16')))
    if device.type == 'cuda':
        out += [('fp16 + GradScaler + channels_last', dict(cl, use_amp=True, amp_dtype='fp16')),
                ('bf16 + channels_last + compile', dict(cl, use_amp=True, amp_dtype='bf16', compile=True))]
    return out


def model_options(file: str, work: str, device: torch.device, switches: dict[str, Any],
                  dist: bool = False) -> dict:
    """A quickstart option file for an in-process step: random weights, random frozen networks (AESOP AE, TVQ
    tokenizer) saved to ``work``, the engine ``switches`` in ``train:``."""
    opt = training_options(option_file('quickstart', file), work, num_gpu=1 if device.type == 'cuda' else 0,
                           pretrained=False)
    random_frozen_checkpoints(opt, work)
    opt['train'].update(switches)
    opt['dist'] = dist
    return opt


def synthetic_batch(opt: dict) -> dict[str, torch.Tensor]:
    """GT crops of the option's size from a photo (+ their bicubic LR), the option's batch size."""
    train = opt['datasets']['train']
    size, scale = int(train.get('gt_size', 64)), int(opt.get('scale', 4))
    batch = int(train.get('batch_size_per_gpu', 2))
    img = torch.from_numpy(photo_rgb01('astronaut')).permute(2, 0, 1)
    h, w = img.shape[-2:]
    gt = torch.stack([img[:, (40 * i) % (h - size + 1):(40 * i) % (h - size + 1) + size,
                          (60 * i) % (w - size + 1):(60 * i) % (w - size + 1) + size] for i in range(batch)])
    lq = torch.nn.functional.interpolate(gt, scale_factor=1 / scale, mode='bicubic', antialias=True).clamp(0, 1)
    return {'gt': gt, 'lq': lq}


def train_step_check(file: str, device: torch.device, switches: dict[str, Any], dist: bool = False
                     ) -> tuple[bool, str]:
    from basicsr.models import build_model

    from basicsr_ext.scripting import timed_step
    from basicsr_ext.utils.options import ConfigError
    note = ''
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as work:
        opt = model_options(file, work, device, switches, dist)
        try:
            model = build_model(opt)
        except ConfigError as e:  # a model that refuses channels_last (VGG-style discriminator) runs without
            if not switches.get('channels_last') or 'channels_last' not in str(e):
                raise
            opt['train']['channels_last'] = False
            model = build_model(opt)
            note = 'channels_last refused by the model, run without; '
        bare = model.get_bare_model(model.net_g)
        before = [p.detach().clone() for p in bare.parameters() if p.requires_grad]
        data = synthetic_batch(opt)
        timed_step(model, data, 1)
        seconds = timed_step(model, data, 2)
        logs = model.get_current_log()
        bad = [k for k, v in logs.items() if not math.isfinite(float(v))]
        moved = sum(not torch.equal(a, p.detach()) for a, p in zip(before, (p for p in bare.parameters()
                                                                           if p.requires_grad)))
        scaler = getattr(model, 'grad_scaler', None)
        want_scaler = switches.get('amp_dtype') == 'fp16' and switches.get('use_amp')
        scaler_ok = scaler is not None and scaler.is_enabled() == bool(want_scaler)
        if want_scaler and scaler_ok:
            scaler_ok = math.isfinite(scaler.get_scale()) and scaler.get_scale() > 0
        ddp = isinstance(model.net_g, torch.nn.parallel.DistributedDataParallel)
        ok = not bad and moved > 0 and scaler_ok and (ddp or not dist)
        detail = (note + f'step {seconds * 1000:.0f} ms, {moved}/{len(before)} weights moved, '
                  + ', '.join(f'{k} {float(v):.4g}' for k, v in list(logs.items())[:3]))
        if bad:
            detail += f'; non-finite: {bad}'
        if not scaler_ok:
            detail += f'; GradScaler enabled={scaler.is_enabled() if scaler else None} (expected {bool(want_scaler)})'
        if dist:
            detail += f'; DDP={ddp}'
    return ok, detail


# ------------------------------------------------------------------------------------------ 2. golden outputs
def _golden_rule():
    spec = importlib.util.spec_from_file_location('gpu_check_golden_rule', GOLDEN_RULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden_cases() -> list[tuple[str, Callable[[], tuple[torch.nn.Module, dict]], Callable]]:
    """(name, build(net, case), run(net, case) -> {golden key: (ours, kind)}) for each golden file."""
    from basicsr.archs import build_network

    from basicsr_ext.archs.patchgan_arch import TVQPatchGANDiscriminator
    from basicsr_ext.archs.tvq_arch import TVQTokenizer
    from basicsr_ext.archs.tvqrap_arch import TVQRAPNet
    rule = _golden_rule()

    def tokenizer():
        full = rule.fill('tvqrap_sr_stage3.json')
        net = TVQTokenizer()
        net.load_state_dict({k: full[k] for k in net.state_dict()}, strict=True)
        return net, rule.load_golden('tvq_tokenizer')['cases'][0]

    def run_tokenizer(net, case):
        out = net(case['input_01'], case['lr8_01'])
        return {'structure_latent': (out['structure_latent'], 'float'),
                'texture_feature_h8': (out['texture_feature'], 'float'),
                'reconstruction': (out['reconstruction_raw'], 'image_pm1'),
                'reconstruction_01': (out['reconstruction'], 'image'),
                'indices': (out['indices'], 'indices')}

    def sr():
        sd, _ = TVQRAPNet.convert_official_state_dict(rule.fill('tvqrap_sr_stage3.json'))
        net = TVQRAPNet()
        net.load_state_dict(sd, strict=True)
        return net, rule.load_golden('tvqrap_sr')['cases'][0]

    def run_sr(net, case):
        pred = net.predict(case['input_01'])
        return {'structure_latent_pred': (pred['structure_latent_pred'], 'float'),
                'logits': (pred['logits'], 'float'),
                'indices': (pred['logits'].float().argmax(-1).view(case['indices'].shape), 'indices'),
                'sr_01': (net(case['input_01']), 'image')}

    def aesop():
        net = build_network({'type': 'AESOPAutoEncoder', 'dec_opt': {  # the released AE: RRDBNet-23 decoder
            'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32}})
        net.load_state_dict(rule.fill('aesop_autoencoder_rrdbnet'), strict=True)
        return net, rule.load_golden('aesop_ae')['cases'][0]

    def run_aesop(net, case):
        recon, bottleneck = net(case['input'], return_bottleneck=True)
        return {'reconstruction': (recon, 'image'), 'bottleneck': (bottleneck, 'image')}

    def disc():
        net = TVQPatchGANDiscriminator()
        net.load_state_dict(rule.fill('tvqrap_discriminator.json'), strict=True)
        return net, rule.load_golden('tvq_discriminator')['cases'][0]

    def run_disc(net, case):
        return {'logit_map': (net(case['input_01']), 'float')}

    return [('AESOP AE', aesop, run_aesop), ('TVQ tokenizer', tokenizer, run_tokenizer),
            ('TVQ&RAP SR', sr, run_sr), ('PatchGAN D', disc, run_disc)]


def golden_check(build: Callable, run: Callable, device: torch.device, precision: str) -> tuple[bool, str]:
    """fp32: max |ours - golden| <= 1e-3 and indices identical (TF32 and cuDNN autotuning off). bf16/fp16: PSNR
    vs the golden images and index agreement, reported only (the fill rule's synthetic weights are not trained
    weights: an fp16 overflow there is a finding, not a failure)."""
    net, case = build()
    net = net.to(device).eval()
    case = {k: v.to(device) if torch.is_tensor(v) else v for k, v in case.items()}
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    # exact fp32: no TF32, and no autotuned (e.g. Winograd / FFT) convolution algorithms
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = False
    try:
        with torch.no_grad(), P.inference_autocast(device, precision):
            out = run(net, case)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved
    ok, parts = True, []
    for key, (ours, kind) in out.items():
        ref = case[key]
        if kind == 'indices':
            agree = float((ours.cpu() == ref.cpu()).float().mean())
            ok &= agree == 1.0 if precision == 'fp32' else True
            parts.append(f'{key} {100 * agree:.2f} %')
            continue
        ours = ours.float()
        if not bool(torch.isfinite(ours).all()):  # fp32: a failure; fp16/bf16 on synthetic weights: reported
            ok &= precision != 'fp32'
            parts.append(f'{key} NON-FINITE')
            continue
        err = float((ours - ref.float()).abs().max())
        if precision == 'fp32':
            ok &= err <= TOL
            parts.append(f'{key} {err:.1e}')
        elif kind.startswith('image'):
            parts.append(f'{key} {_psnr(ours, ref.float(), 2.0 if kind == "image_pm1" else 1.0):.1f} dB')
        else:
            parts.append(f'{key} max {err:.2g}')
    return ok, ', '.join(parts)


# ------------------------------------------------------------------------------------------ 3. the CLI
def cli_check(device: torch.device, precisions: list[str]) -> list[tuple[str, bool, float, str]]:
    """basicsr-ext-infer on 3 photos with the quickstart TVQ&RAP (trained here, on ``device``) in each precision."""
    import cv2
    import numpy as np

    from basicsr_ext.utils.image_io import read_image
    results = []
    with tempfile.TemporaryDirectory(prefix='gpu_check_cli_') as work:
        opt, params = train_quickstart_tvqrap(work, device=device.type)
        weights = osp.join(work, 'tvqrap.pth')
        atomic_save({'params': params}, weights)
        src = osp.join(work, 'in')
        os.makedirs(src)
        for name in ('chelsea', 'coffee', 'rocket'):
            img = photo_rgb01(name)
            cv2.imwrite(osp.join(src, f'{name}.png'),
                        np.round(cv2.resize(img, (img.shape[1] // 4, img.shape[0] // 4),
                                            interpolation=cv2.INTER_AREA)[..., ::-1] * 255).astype(np.uint8))
        arch = [f'{k}={v}' for k, v in opt.items() if k != 'type']
        outputs = {}
        for prec in precisions:
            out = osp.join(work, prec)
            cmd = [sys.executable, osp.join(REPO_ROOT, 'basicsr_ext', 'infer.py'), '-i', src, '-o', out,
                   '--arch', opt['type'], '--arch-opt', *arch, '--weights', weights, '--precision', prec,
                   '--device', str(device), '--no-progress']
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE='1'))
            seconds = time.perf_counter() - t
            ok = proc.returncode == 0
            outputs[prec] = out
            detail = (proc.stderr.strip().splitlines() or [''])[-1][:160] if not ok else ''
            if ok and prec != 'fp32' and 'fp32' in outputs:
                vals = []
                for name in ('chelsea', 'coffee', 'rocket'):
                    a, _ = read_image(osp.join(outputs['fp32'], f'{name}_out.png'))
                    b, _ = read_image(osp.join(out, f'{name}_out.png'))
                    vals.append(_psnr(torch.from_numpy(a), torch.from_numpy(b)))
                detail = 'PSNR vs fp32 ' + ', '.join(f'{v:.1f}' for v in vals) + ' dB (8-bit outputs)'
            results.append((prec, ok, seconds, detail))
    return results


# ------------------------------------------------------------------------------------------ 4. NCCL + DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def ddp_check(device: torch.device) -> tuple[bool, str]:
    """1-process group through BasicSR's (patched) init_dist, an all_reduce and one DDP step of the RAP model."""
    import torch.distributed as dist
    from basicsr.utils.dist_util import init_dist
    env = dict(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(_free_port()), RANK='0', WORLD_SIZE='1', LOCAL_RANK='0')
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        init_dist('pytorch')
        backend = dist.get_backend()
        t = torch.ones(3, device=device)
        dist.all_reduce(t)
        ok_reduce = bool((t.cpu() == 1).all())
        ok, detail = train_step_check('tvqrap_rap.yml', device, {'channels_last': True}, dist=True)
        want = 'nccl' if device.type == 'cuda' else 'gloo'
        return ok and ok_reduce and backend == want, f'backend {backend}, all_reduce ok={ok_reduce}; {detail}'
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--device', default='cuda', help='cuda (default) or cpu (dry run of the same checks)')
    parser.add_argument('--budget-s', type=float, default=480, help='checks not started by then fail (%(default)s)')
    parser.add_argument('--skip', nargs='*', default=[], choices=['train', 'golden', 'cli', 'ddp', 'bench'],
                        help='sections to leave out')
    parser.add_argument('--bench-args', default='--sizes 64 128 256 --reps 5 --cli --cli-sizes 128',
                        help='arguments of bench_infer.py (%(default)s)')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and skipped_without_cuda([]):
        return 0
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
        bf16 = torch.cuda.is_bf16_supported()
        hw = (f'{name}, capability {".".join(map(str, torch.cuda.get_device_capability(device)))}, bf16 {bf16}, '
              f'torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {torch.cuda.nccl.version()}')
    else:
        hw = f'{P.cpu_description()}, torch {torch.__version__} (dry run on CPU)'
    print(f'gpu_check on {hw}', flush=True)
    rep = Report(args.budget_s)
    from basicsr_ext.scripting import quiet_basicsr
    quiet_basicsr()

    variants = train_variants(device)
    if 'train' not in args.skip:
        for label, file in MODELS:
            for variant, switches in variants:
                if not switches.get('compile'):
                    rep.run(f'train step: {label}', variant,
                            lambda f=file, s=switches: train_step_check(f, device, s), min_left=60)
    if 'golden' not in args.skip:
        precisions = ['fp32'] + (['fp16', 'bf16'] if device.type == 'cuda' else [])
        for name, build, run in golden_cases():
            for prec in precisions:
                rep.run(f'golden: {name}', prec + (' (TF32 off)' if prec == 'fp32' else ' autocast'),
                        lambda b=build, r=run, p=prec: golden_check(b, r, device, p), min_left=30)
    if 'cli' not in args.skip:
        precs = ['fp32', 'fp16', 'bf16'] if device.type == 'cuda' else ['fp32'] + (['bf16'] if P.cpu_has_bf16()
                                                                                   else [])
        if rep.left() < 30:
            rep.add('basicsr-ext-infer', ', '.join(precs), None, None, 'time budget spent')
        else:
            try:
                for prec, ok, seconds, detail in cli_check(device, precs):
                    rep.add('basicsr-ext-infer (trained TVQ&RAP, 3 photos)', prec, ok, seconds, detail)
            except Exception as e:  # noqa: BLE001
                rep.add('basicsr-ext-infer', ', '.join(precs), False, None, f'{type(e).__name__}: {e}'[:160])
    if 'ddp' not in args.skip:
        rep.run('1-process ' + ('NCCL' if device.type == 'cuda' else 'gloo') + ' + DDP step (RAP)',
                'fp32 + channels_last', lambda: ddp_check(device), min_left=30)
    bench_out = ''
    if 'bench' not in args.skip:
        if rep.left() < 45:
            rep.add('bench_infer.py', args.bench_args, None, None, 'time budget spent')
        else:
            cmd = [sys.executable, osp.join(REPO_ROOT, 'scripts', 'bench', 'bench_infer.py'), '--device',
                   str(device), *args.bench_args.split()]
            t = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30.0, rep.left()),
                                      env=dict(os.environ, HF_HUB_OFFLINE='1'))
                bench_out = proc.stdout
                rep.add('bench_infer.py', args.bench_args, proc.returncode == 0, time.perf_counter() - t,
                        '' if proc.returncode == 0 else (proc.stderr.strip().splitlines() or [''])[-1][:160])
            except subprocess.TimeoutExpired as e:
                bench_out = (e.stdout or b'').decode() if isinstance(e.stdout, bytes) else (e.stdout or '')
                rep.add('bench_infer.py', args.bench_args, False, time.perf_counter() - t, 'timed out (budget)')
    if 'train' not in args.skip:  # compilation is the slowest part: last, so that it cannot crowd the rest out
        for label, file in MODELS:
            for variant, switches in variants:
                if switches.get('compile'):
                    rep.run(f'train step: {label}', variant,
                            lambda f=file, s=switches: train_step_check(f, device, s), min_left=60)
    total = time.perf_counter() - rep.t0
    print(f'\n### GPU check: {hw}; {total:.0f} s\n')
    print(markdown_table(['check', 'variant', 'status', 's', 'detail'], rep.rows, align='llrrl'))
    if bench_out:
        print('\n' + bench_out[bench_out.find('###'):] if '###' in bench_out else bench_out)
    print(f'\ngpu_check: {len(rep.rows)} checks, {rep.failed} failed or not run, {total:.0f} s')
    return 1 if rep.failed else 0


if __name__ == '__main__':
    sys.exit(main())
