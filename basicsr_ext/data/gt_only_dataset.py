"""GT-only image dataset for the TVQ&RAP stages (paper notes §4): folder or LMDB, three cropping recipes.

BasicSR has no GT-only training dataset with these crops: ``RealESRGANDataset`` pads/crops to a hard-coded 400
and always makes kernels, ``SingleImageDataset`` reads LQ. Stage I crops 512 at random (reflect-padding small
images); stages II/III (official ``Imagenet_stage2_Dataset``) take a square at a random position and bring it to
``gt_size`` (:func:`random_square_resize`).
"""
from __future__ import annotations

import os.path as osp
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from torch.utils import data
from basicsr.data.data_util import paths_from_lmdb
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

from basicsr_ext.data.realesrgan_degradation import KERNEL_BLOCK_KEYS, KERNEL_KEYS, sample_realesrgan_kernels
from basicsr_ext.utils.image_io import decode_image_bytes, list_images

RESIZE_MODES = ('random_crop', 'random_square_resize', 'center_square_resize', 'none')


def reflect_pad_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad the bottom/right edges by reflection (``BORDER_REFLECT_101``) until the image is at least
    ``height`` x ``width``, as the official TVQ&RAP datasets do: each round pads a side by at most its current
    length, so an image under half the target is mirrored again around the new edge (a 1-pixel side repeats)."""
    h, w = img.shape[:2]
    while h < height or w < width:
        img = cv2.copyMakeBorder(img, 0, min(max(0, height - h), h), 0, min(max(0, width - w), w),
                                 cv2.BORDER_REFLECT_101)
        h, w = img.shape[:2]
    return img


def random_crop_reflect(img: np.ndarray, size: int) -> np.ndarray:
    """Random ``size`` x ``size`` crop; a side shorter than ``size`` is reflect-padded first (stage I)."""
    img = reflect_pad_to(img, size, size)
    h, w = img.shape[:2]
    top, left = np.random.randint(0, h - size + 1), np.random.randint(0, w - size + 1)
    return img[top:top + size, left:left + size]


def random_square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """The official TVQ&RAP stage II/III crop (``Imagenet_stage2_Dataset``): a square of side
    ``max(min(h, w), size)`` at a random position, reflect-padded (:func:`reflect_pad_to`) when a side is shorter
    than ``size``, then brought to ``size`` x ``size`` with cv2 INTER_AREA when it is larger.

    So an image with ``min(h, w) <= size`` is never resized (reflect-pad + random crop at full resolution), and
    a larger one gives its largest square at a random position, area-downscaled (never upscaled): every sample is
    ``size`` x ``size``, so batches collate. Reading "never resized" for larger images too would be a plain
    random ``size`` crop with reflect padding: that is ``random_crop``.
    """
    h, w = img.shape[:2]
    side = max(min(h, w), size)
    img = reflect_pad_to(img, side, side)
    h, w = img.shape[:2]
    top, left = np.random.randint(0, h - side + 1), np.random.randint(0, w - side + 1)
    img = img[top:top + side, left:left + side]
    if side != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def center_square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Largest centred square (side = min(h, w)) resized to ``size`` with cv2 INTER_AREA (our reading of the
    paper notes' "largest square resized"; the official code is :func:`random_square_resize`)."""
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[top:top + side, left:left + side]
    if side != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


@DATASET_REGISTRY.register()
class GTOnlyDataset(data.Dataset):
    """GT images only: returns ``{'gt': RGB float CHW in [0, 1], 'gt_path'}`` (+ Real-ESRGAN kernels).

    Options (:attr:`KEYS`; any other key in the block is refused with a did-you-mean, see
    :func:`basicsr_ext.data.checks.check_dataset_keys`):
        dataroot_gt: folder, or ``*.lmdb`` with ``io_backend.type: lmdb`` (keys from its ``meta_info.txt``).
        meta_info_file: optional list of relative paths (first token per line) for a folder.
        io_backend: ``{type: disk|lmdb}``.
        gt_size: output side (required unless ``resize_mode: none``).
        resize_mode:
            ``random_crop`` (default; stage I): a random gt_size crop, reflect-padding images smaller than gt_size.
            ``random_square_resize`` (stages II/III, official): a square of side max(min(h, w), gt_size) at a
            random position, reflect-padded when the image is smaller, INTER_AREA-resized to gt_size when the
            square is larger (:func:`random_square_resize`). Flips/rotations are applied before the crop,
            as in the official dataset.
            ``center_square_resize``: the largest centred square, INTER_AREA-resized to gt_size (upscaled when
            smaller) - our earlier reading of the paper notes, kept by name.
            ``none``: the whole image (e.g. validation).
        use_hflip / use_rot: flips and 90° rotations (train phase only).
        return_kernels: also return ``kernel1``, ``kernel2``, ``sinc_kernel`` for the model's Real-ESRGAN
            degradation, sampled like ``RealESRGANDataset`` (same option keys: ``blur_kernel_size``,
            ``kernel_list``, ``kernel_prob``, ``blur_sigma``, ``betag_range``, ``betap_range``, ``sinc_prob``,
            the ``*2`` variants and ``final_sinc_prob``). ``blur_kernel_size`` / ``blur_kernel_size2`` are the
            largest odd size drawn from 7 (default 21 = the official 7 .. 21).
    """

    #: the keys this dataset reads, besides BasicSR's common ones (checks.COMMON_DATASET_KEYS)
    KEYS = ('dataroot_gt', 'meta_info_file', 'io_backend', 'gt_size', 'resize_mode', 'use_hflip', 'use_rot',
            'return_kernels') + KERNEL_BLOCK_KEYS

    def __init__(self, opt: Mapping[str, Any]) -> None:
        super().__init__()
        from basicsr_ext.data.checks import check_dataset_keys
        check_dataset_keys(opt)
        self.opt = opt
        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        self.file_client = None
        self.gt_folder = opt['dataroot_gt']
        self.resize_mode = opt.get('resize_mode', 'random_crop')
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f'GTOnlyDataset: resize_mode {self.resize_mode!r} is not one of {RESIZE_MODES}')
        self.gt_size = opt.get('gt_size')
        if self.resize_mode != 'none' and not self.gt_size:
            raise ValueError(f'GTOnlyDataset: gt_size is required with resize_mode {self.resize_mode}')
        self.return_kernels = bool(opt.get('return_kernels', False))
        if self.return_kernels:
            missing = [k for k in KERNEL_KEYS if k not in opt]
            if missing:
                raise ValueError(f'GTOnlyDataset: return_kernels needs the options {", ".join(missing)}')
        if self.io_backend_opt['type'] == 'lmdb':
            if not self.gt_folder.endswith('.lmdb'):
                raise ValueError(f"GTOnlyDataset: dataroot_gt should end with '.lmdb', got {self.gt_folder}")
            if not osp.isfile(osp.join(self.gt_folder, 'meta_info.txt')):
                raise FileNotFoundError(f'GTOnlyDataset: {self.gt_folder}/meta_info.txt not found')
            self.io_backend_opt['db_paths'] = [self.gt_folder]
            self.io_backend_opt['client_keys'] = ['gt']
            self.paths = paths_from_lmdb(self.gt_folder)
        elif opt.get('meta_info_file'):
            with open(opt['meta_info_file']) as f:
                self.paths = [osp.join(self.gt_folder, line.strip().split(' ')[0]) for line in f if line.strip()]
        else:
            if not osp.isdir(self.gt_folder):
                raise FileNotFoundError(f'GTOnlyDataset: dataroot_gt folder not found: {self.gt_folder}')
            self.paths = list_images(self.gt_folder, recursive=True)
        if not self.paths:
            raise ValueError(f'GTOnlyDataset: no images found in {self.gt_folder}')

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        if self.file_client is None:
            backend = dict(self.io_backend_opt)
            self.file_client = FileClient(backend.pop('type'), **backend)
        path = self.paths[index]
        img = decode_image_bytes(self.file_client.get(path, 'gt'), float32=True, name=path)  # BGR, [0, 1]
        train = self.opt.get('phase') == 'train'
        if self.resize_mode == 'random_square_resize':  # official order: flip first, then pad / crop / resize
            if train:
                img = augment(img, self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
            img = random_square_resize(img, int(self.gt_size))
        else:
            if self.resize_mode == 'random_crop':
                img = random_crop_reflect(img, int(self.gt_size))
            elif self.resize_mode == 'center_square_resize':
                img = center_square_resize(img, int(self.gt_size))
            if train:
                img = augment(img, self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        out = {'gt': img2tensor(np.ascontiguousarray(img), bgr2rgb=True, float32=True), 'gt_path': path}
        if self.return_kernels:
            out.update(sample_realesrgan_kernels(self.opt))
        return out

