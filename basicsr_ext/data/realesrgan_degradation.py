"""Real-ESRGAN's second-order degradation and training-pair queue, device-agnostic: the one module that both
real-world AESOP and TVQ&RAP stages II/III train with (:class:`RealESRGANPairs`).

BasicSR's ``RealESRGANModel.feed_data`` cannot be reused as is: its constructor and queue hard-code CUDA
(no CPU training), it always applies the second degradation, while TVQ&RAP applies the second stage with
probability 0.5 (paper notes §4, "Degradation"), and its queue is lost at a resume. So the same steps, in the
same order, are called here from BasicSR's functions (``filter2D``, ``random_add_gaussian_noise_pt``,
``random_add_poisson_noise_pt``, ``DiffJPEG``, ``USMSharp``; kernels from ``random_mixed_kernels`` /
``circular_lowpass_kernel`` with ``RealESRGANDataset``'s sampling rules) with one extra option,
``second_order_prob`` (the official TVQ&RAP name; ``second_degradation_prob`` is accepted as an alias):

- with probability ``second_order_prob`` the second blur / resize / noise are applied (as in BasicSR);
  otherwise they are skipped and the image goes straight to the final step;
- the final step is always applied: [resize to GT/scale + final sinc] and JPEG, in random order (BasicSR).

Option keys are BasicSR's Real-ESRGAN keys (``resize_prob``, ``resize_range``, ``gaussian_noise_prob``,
``noise_range``, ``poisson_scale_range``, ``gray_noise_prob``, ``jpeg_range``, ``second_blur_prob``,
``resize_prob2``, ... ``jpeg_range2``) read from the option root, plus ``second_order_prob`` (default 1.0
= BasicSR's behaviour). The option root of a file that holds these keys is checked for unknown keys
(:func:`basicsr_ext.data.checks.check_degradation_keys`): a misspelt key is an error, not a silent default.
"""
from __future__ import annotations

import math
import random
from collections.abc import Mapping

import numpy as np
import torch
from torch.nn import functional as F
from basicsr.data.transforms import paired_random_crop
from basicsr.data.degradations import (circular_lowpass_kernel, random_add_gaussian_noise_pt,
                                       random_add_poisson_noise_pt, random_mixed_kernels)
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.img_process_util import filter2D

from basicsr_ext.data.checks import DatasetError

DEGRADATION_KEYS = ('resize_prob', 'resize_range', 'gaussian_noise_prob', 'noise_range', 'poisson_scale_range',
                    'gray_noise_prob', 'jpeg_range', 'second_blur_prob', 'resize_prob2', 'resize_range2',
                    'gaussian_noise_prob2', 'noise_range2', 'poisson_scale_range2', 'gray_noise_prob2',
                    'jpeg_range2')
#: the probability of the second stage: the official TVQ&RAP name first, then our earlier name (an alias)
SECOND_ORDER_KEYS = ('second_order_prob', 'second_degradation_prob')
#: every degradation key read from the option root
ROOT_DEGRADATION_KEYS = DEGRADATION_KEYS + SECOND_ORDER_KEYS
KERNEL_KEYS = ('kernel_list', 'kernel_prob', 'blur_sigma', 'betag_range', 'betap_range',
               'sinc_prob', 'kernel_list2', 'kernel_prob2', 'blur_sigma2', 'betag_range2',
               'betap_range2', 'sinc_prob2', 'final_sinc_prob')
#: kernel keys of a dataset block (``KERNEL_KEYS`` + the optional maximum sizes)
KERNEL_BLOCK_KEYS = KERNEL_KEYS + ('blur_kernel_size', 'blur_kernel_size2')
_KERNEL_SIZES = [2 * v + 1 for v in range(3, 11)]  # 7 .. 21, as in RealESRGANDataset


def second_order_prob(opt: Mapping) -> float:
    """The probability of the second degradation stage: ``second_order_prob`` (official TVQ&RAP key) or its
    alias ``second_degradation_prob``; 1.0 (BasicSR: always) when neither is given. Both with different values,
    or a value outside [0, 1], is an error."""
    given = {k: opt[k] for k in SECOND_ORDER_KEYS if opt.get(k) is not None}
    values = {float(v) for v in given.values()}
    if len(values) > 1:
        raise ValueError(f'second_order_prob and its alias second_degradation_prob disagree ({given}); give one')
    prob = values.pop() if values else 1.0
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f'second_order_prob must be a probability in [0, 1], got {prob}')
    return prob


def kernel_sizes(max_size: int | None) -> list[int]:
    """Odd kernel sizes 7 .. ``max_size`` (default 21). RealESRGANDataset and the official TVQ&RAP dataset
    draw 7 .. 21 for both kernels whatever ``blur_kernel_size`` / ``blur_kernel_size2`` say (the official
    TVQ&RAP file says 15 for the second kernel, ignored); here the key is honoured as a maximum, so the paper
    option files set ``blur_kernel_size2: 21`` to draw the official 7 .. 21."""
    sizes = [k for k in _KERNEL_SIZES if k <= int(max_size or 21)]
    if not sizes:
        raise ValueError(f'blur_kernel_size must be at least 7, got {max_size}')
    return sizes


def _one_kernel(kernel_list, kernel_prob, sigma, betag, betap, sinc_prob, max_size) -> np.ndarray:
    size = random.choice(kernel_sizes(max_size))
    if np.random.uniform() < sinc_prob:
        omega_c = np.random.uniform(np.pi / 3, np.pi) if size < 13 else np.random.uniform(np.pi / 5, np.pi)
        kernel = circular_lowpass_kernel(omega_c, size, pad_to=False)
    else:
        kernel = random_mixed_kernels(kernel_list, kernel_prob, size, sigma, sigma, [-math.pi, math.pi], betag,
                                      betap, noise_range=None)
    pad = (21 - size) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad)))


def sample_realesrgan_kernels(opt: Mapping) -> dict[str, torch.Tensor]:
    """kernel1, kernel2 and sinc_kernel (21x21 each) with RealESRGANDataset's distributions and option keys
    (kernel sizes up to ``blur_kernel_size`` / ``blur_kernel_size2``, see :func:`kernel_sizes`)."""
    k1 = _one_kernel(opt['kernel_list'], opt['kernel_prob'], opt['blur_sigma'], opt['betag_range'],
                     opt['betap_range'], opt['sinc_prob'], opt.get('blur_kernel_size'))
    k2 = _one_kernel(opt['kernel_list2'], opt['kernel_prob2'], opt['blur_sigma2'], opt['betag_range2'],
                     opt['betap_range2'], opt['sinc_prob2'], opt.get('blur_kernel_size2'))
    if np.random.uniform() < opt['final_sinc_prob']:
        size = random.choice(_KERNEL_SIZES)
        sinc = torch.FloatTensor(circular_lowpass_kernel(np.random.uniform(np.pi / 3, np.pi), size, pad_to=21))
    else:
        sinc = torch.zeros(21, 21)
        sinc[10, 10] = 1
    return {'kernel1': torch.FloatTensor(k1), 'kernel2': torch.FloatTensor(k2), 'sinc_kernel': sinc}


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """BasicSR's ``filter2D`` (it ``view``s its input: DiffJPEG/interpolate outputs may be non-contiguous)."""
    return filter2D(x.contiguous(), kernel)


def _random_resize(x: torch.Tensor, prob, scale_range, size: tuple[int, int] | None = None,
                   base: tuple[int, int] | None = None) -> torch.Tensor:
    kind = random.choices(['up', 'down', 'keep'], prob)[0]
    if kind == 'up':
        s = np.random.uniform(1, scale_range[1])
    elif kind == 'down':
        s = np.random.uniform(scale_range[0], 1)
    else:
        s = 1
    mode = random.choice(['area', 'bilinear', 'bicubic'])
    if base is None:
        return F.interpolate(x, scale_factor=s, mode=mode)
    return F.interpolate(x, size=(int(base[0] * s), int(base[1] * s)), mode=mode)


def _random_noise(x: torch.Tensor, gaussian_prob, sigma_range, poisson_range, gray_prob) -> torch.Tensor:
    if np.random.uniform() < gaussian_prob:
        return random_add_gaussian_noise_pt(x, sigma_range=sigma_range, clip=True, rounds=False, gray_prob=gray_prob)
    return random_add_poisson_noise_pt(x, scale_range=poisson_range, gray_prob=gray_prob, clip=True, rounds=False)


class RealESRGANDegradation(torch.nn.Module):
    """``(gt [0,1], kernel1, kernel2, sinc_kernel) -> lq`` on any device; the LR is made from the USM-sharpened
    GT (``usm: true``, Real-ESRGAN / TVQ&RAP), the caller keeps the un-sharpened GT for its losses."""

    def __init__(self, opt: Mapping, scale: int) -> None:
        super().__init__()
        missing = [k for k in DEGRADATION_KEYS if k not in opt]
        if missing:
            raise KeyError(f'Real-ESRGAN degradation options missing at the option root: {", ".join(missing)}')
        self.opt = {k: opt[k] for k in DEGRADATION_KEYS}
        from basicsr_ext.data.checks import check_degradation_keys
        check_degradation_keys(opt, opt.get('opt_path'))
        self.second_prob = second_order_prob(opt)
        self.scale = int(scale)
        self.jpeger = DiffJPEG(differentiable=False)
        self.usm_sharpener = USMSharp()

    @torch.no_grad()
    def forward(self, gt: torch.Tensor, kernel1: torch.Tensor, kernel2: torch.Tensor, sinc_kernel: torch.Tensor,
                usm: bool = True) -> torch.Tensor:
        o = self.opt
        h, w = gt.shape[2:4]
        out = _filter(self.usm_sharpener(gt) if usm else gt, kernel1)
        # first degradation: blur, resize, noise, JPEG
        out = _random_resize(out, o['resize_prob'], o['resize_range'])
        out = _random_noise(out, o['gaussian_noise_prob'], o['noise_range'], o['poisson_scale_range'],
                            o['gray_noise_prob'])
        out = self.jpeger(out.clamp(0, 1), quality=out.new_zeros(out.size(0)).uniform_(*o['jpeg_range']))
        # second degradation (TVQ&RAP: with probability second_order_prob)
        if np.random.uniform() < self.second_prob:
            if np.random.uniform() < o['second_blur_prob']:
                out = _filter(out, kernel2)
            out = _random_resize(out, o['resize_prob2'], o['resize_range2'], base=(h / self.scale, w / self.scale))
            out = _random_noise(out, o['gaussian_noise_prob2'], o['noise_range2'], o['poisson_scale_range2'],
                                o['gray_noise_prob2'])
        # final: [resize back + sinc] and JPEG, in random order (BasicSR)
        size = (h // self.scale, w // self.scale)
        jpeg_q = out.new_zeros(out.size(0)).uniform_(*o['jpeg_range2'])
        if np.random.uniform() < 0.5:
            out = _filter(F.interpolate(out, size=size, mode=random.choice(['area', 'bilinear', 'bicubic'])),
                           sinc_kernel)
            out = self.jpeger(out.clamp(0, 1), quality=jpeg_q)
        else:
            out = self.jpeger(out.clamp(0, 1), quality=jpeg_q)
            out = _filter(F.interpolate(out, size=size, mode=random.choice(['area', 'bilinear', 'bicubic'])),
                           sinc_kernel)
        return (out * 255.0).round().clamp(0, 255) / 255.0


class TrainingPairQueue:
    """Real-ESRGAN's training-pair pool (BasicSR ``_dequeue_and_enqueue``), on the tensors' device.

    Until the pool is full, batches pass through and are stored; then each batch is swapped for a random
    batch drawn from the shuffled pool. :meth:`state_dict` goes into the training state, so that a resumed run
    draws the same pairs as an uninterrupted one.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.lq: torch.Tensor | None = None
        self.gt: torch.Tensor | None = None
        self.ptr = 0

    @torch.no_grad()
    def __call__(self, lq: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size <= 0:
            return lq, gt
        b = lq.size(0)
        if self.lq is None or self.lq.shape[1:] != lq.shape[1:] or self.gt.shape[1:] != gt.shape[1:]:
            if self.size % b != 0:
                raise ValueError(f'queue_size {self.size} must be divisible by the batch size {b}')
            self.lq = lq.new_zeros((self.size, *lq.shape[1:]))
            self.gt = gt.new_zeros((self.size, *gt.shape[1:]))
            self.ptr = 0
        if self.ptr == self.size:
            idx = torch.randperm(self.size, device=self.lq.device)
            self.lq, self.gt = self.lq[idx], self.gt[idx]
            lq_out, gt_out = self.lq[:b].clone(), self.gt[:b].clone()
            self.lq[:b], self.gt[:b] = lq, gt
            return lq_out, gt_out
        self.lq[self.ptr:self.ptr + b], self.gt[self.ptr:self.ptr + b] = lq, gt
        self.ptr += b
        return lq, gt

    def state_dict(self) -> dict:
        """The pool (8-bit where that is lossless: 4x smaller training states) and its fill pointer."""
        if self.lq is None:
            return {}
        return {'lq': _pack(self.lq), 'gt': _pack(self.gt), 'ptr': self.ptr}

    def load_state_dict(self, state: Mapping) -> None:
        if state:
            self.lq, self.gt, self.ptr = _unpack(state['lq']), _unpack(state['gt']), int(state['ptr'])


def _pack(x: torch.Tensor) -> torch.Tensor:
    q = (x * 255).round().clamp(0, 255).to(torch.uint8)
    return q.cpu() if torch.equal(q.to(x.dtype) / 255, x) else x.cpu()


def _unpack(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x


class RealESRGANPairs(torch.nn.Module):
    """``(lq, gt)`` training pairs from a GT-only batch with Real-ESRGAN kernels (``GTOnlyDataset`` with
    ``return_kernels``, BasicSR's ``RealESRGANDataset``): :class:`RealESRGANDegradation` of the USM-sharpened GT,
    a paired random crop to the option root's ``gt_size`` when the GT is larger, then the
    :class:`TrainingPairQueue` of ``queue_size`` pairs (its state: :meth:`TrainingPairQueue.state_dict`).
    The returned GT is the un-sharpened one; :meth:`usm` sharpens it for losses that want the USM GT."""

    def __init__(self, opt: Mapping, scale: int, queue_size: int) -> None:
        super().__init__()
        self.degradation = RealESRGANDegradation(opt, scale)
        self.queue = TrainingPairQueue(queue_size)
        self.gt_size, self.scale = opt.get('gt_size'), int(scale)

    @torch.no_grad()
    def forward(self, data: Mapping, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if 'kernel1' not in data:
            raise DatasetError('the training batch has neither lq nor Real-ESRGAN kernels: use a dataset that returns '
                               'them (GTOnlyDataset with return_kernels: true, RealESRGANDataset)')
        gt = data['gt'].to(device)
        lq = self.degradation(gt, *(data[k].to(device) for k in ('kernel1', 'kernel2', 'sinc_kernel')))
        if self.gt_size and gt.shape[-1] != self.gt_size:
            gt, lq = paired_random_crop(gt, lq, self.gt_size, self.scale)
        return self.queue(lq.contiguous(), gt)

    def usm(self, x: torch.Tensor) -> torch.Tensor:
        return self.degradation.usm_sharpener(x)
