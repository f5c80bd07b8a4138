"""GT-only image dataset for the TVQ&RAP stages (paper notes §4): folder or LMDB, two cropping recipes.

BasicSR has no GT-only training dataset with these crops: ``RealESRGANDataset`` pads/crops to a hard-coded 400
and always makes kernels, ``SingleImageDataset`` reads LQ. Stage I crops 512 at random (reflect-padding small
images); stages II/III take the largest centred square and resize it with INTER_AREA.
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
from basicsr.utils import FileClient, imfrombytes, img2tensor, scandir
from basicsr.utils.registry import DATASET_REGISTRY

from basicsr_ext.data.realesrgan_degradation import KERNEL_KEYS, sample_realesrgan_kernels

RESIZE_MODES = ('random_crop', 'center_square_resize', 'none')
_IMG_EXT = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff', '.JPEG', '.PNG', '.JPG')


def random_crop_reflect(img: np.ndarray, size: int) -> np.ndarray:
    """Random ``size`` x ``size`` crop; a side shorter than ``size`` is reflect-padded first (stage I)."""
    h, w = img.shape[:2]
    if h < size or w < size:
        img = cv2.copyMakeBorder(img, 0, max(0, size - h), 0, max(0, size - w), cv2.BORDER_REFLECT_101)
        h, w = img.shape[:2]
    top, left = np.random.randint(0, h - size + 1), np.random.randint(0, w - size + 1)
    return img[top:top + size, left:left + size]


def center_square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Largest centred square (side = min(h, w)) resized to ``size`` with cv2 INTER_AREA (stages II/III)."""
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

    Options:
        dataroot_gt: folder, or ``*.lmdb`` with ``io_backend.type: lmdb`` (keys from its ``meta_info.txt``).
        meta_info_file: optional list of relative paths (first token per line) for a folder.
        io_backend: ``{type: disk|lmdb}``.
        gt_size: output side (required unless ``resize_mode: none``).
        resize_mode: ``random_crop`` (default; stage I, reflect-pads images smaller than gt_size),
            ``center_square_resize`` (stages II/III), ``none`` (whole image, e.g. validation).
        use_hflip / use_rot: flips and 90° rotations (train phase only).
        return_kernels: also return ``kernel1``, ``kernel2``, ``sinc_kernel`` for the model's Real-ESRGAN
            degradation, sampled like ``RealESRGANDataset`` (same option keys: ``blur_kernel_size``,
            ``kernel_list``, ``kernel_prob``, ``blur_sigma``, ``betag_range``, ``betap_range``, ``sinc_prob``,
            the ``*2`` variants and ``final_sinc_prob``).
    """

    def __init__(self, opt: Mapping[str, Any]) -> None:
        super().__init__()
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
            self.paths = sorted(osp.join(self.gt_folder, p) for p in scandir(self.gt_folder, recursive=True)
                                if p.endswith(_IMG_EXT))
        if not self.paths:
            raise ValueError(f'GTOnlyDataset: no images found in {self.gt_folder}')

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        if self.file_client is None:
            backend = dict(self.io_backend_opt)
            self.file_client = FileClient(backend.pop('type'), **backend)
        path = self.paths[index]
        img = imfrombytes(self.file_client.get(path, 'gt'), float32=True)
        if self.resize_mode == 'random_crop':
            img = random_crop_reflect(img, int(self.gt_size))
        elif self.resize_mode == 'center_square_resize':
            img = center_square_resize(img, int(self.gt_size))
        if self.opt.get('phase') == 'train':
            img = augment(img, self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        out = {'gt': img2tensor(np.ascontiguousarray(img), bgr2rgb=True, float32=True), 'gt_path': path}
        if self.return_kernels:
            out.update(sample_realesrgan_kernels(self.opt))
        return out

