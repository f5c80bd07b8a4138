"""The validation loop of every model of ours (a mixin under :class:`basicsr_ext.models.engine.EngineMixin`).

- sharded over ranks in DDP (each rank validates its share, metric sums are all-reduced: no rank idles into a
  collective timeout); images written atomically;
- metrics registered with ``needs_lq`` (LR-PSNR) get the LR input as ``img_lq``;
- a dataset block's ``val_metrics: [names]`` restricts ``val.metrics`` for that set (e.g. no-reference metrics
  only for a set without GT);
- ``val.key_metric`` (on ``val.key_dataset``, default the first validation set) saves ``net_g_best.pth`` when that
  metric improves;
- hooks: :meth:`start_validation`, :meth:`after_validation_image`, :meth:`finish_validation` (extra numbers to
  log, e.g. codebook usage), :meth:`validation_images`.
"""
from __future__ import annotations

import os
from copy import deepcopy

import numpy as np
import torch
import torch.distributed as dist
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, tensor2img

from basicsr_ext.metrics.metric_util import metric_needs_lq
from basicsr_ext.utils.image_io import write_image_atomic
from basicsr_ext.utils.options import ConfigError


class ValidationMixin:
    """BasicSR's ``validation`` / ``nondist_validation`` / ``dist_validation`` for a model with a ``test()``."""

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        super().validation(dataloader, current_iter, tb_logger, save_img)
        self._save_best_by_key_metric(dataloader.dataset.opt['name'], current_iter)

    def _save_best_by_key_metric(self, dataset_name: str, current_iter: int) -> None:
        """``val.key_metric`` on ``val.key_dataset`` (default: the first validation set) → net_g_best.pth."""
        val_opt = self.opt.get('val') or {}
        key = val_opt.get('key_metric')
        if not key or not self.opt.get('is_train') or not hasattr(self, 'best_metric_results'):
            return
        val_names = [d.get('name') for phase, d in (self.opt.get('datasets') or {}).items() if phase.startswith('val')]
        key_dataset = val_opt.get('key_dataset') or (val_names[0] if val_names else dataset_name)
        if key_dataset not in val_names and val_names:
            raise ConfigError(f'val.key_dataset: {key_dataset!r} is not one of the validation sets {val_names}')
        if dataset_name != key_dataset:
            return
        record = self.best_metric_results.get(dataset_name, {}).get(key)
        if record is None:
            raise ConfigError(f"val.key_metric: {key!r} is not one of val.metrics ({list(self.opt['val']['metrics'])})")
        if record['iter'] == current_iter and self.opt.get('rank', 0) == 0:
            ema = hasattr(self, 'net_g_ema')
            self.save_network([self.net_g_ema, self.net_g] if ema else self.net_g, 'net_g', 'best',
                              param_key=['params_ema', 'params'] if ema else 'params')
            get_root_logger().info(f'Saved net_g_best.pth: {key} = {record["val"]:.4f} at iter {current_iter}')

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """Every rank validates its share of the images; metric sums are all-reduced."""
        self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def validation_images(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(result, gt) as BasicSR uint8 images for the current batch; override for other visuals."""
        visuals = self.get_current_visuals()
        gt = tensor2img([visuals['gt']]) if 'gt' in visuals else None
        return tensor2img([visuals['result']]), gt

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        metrics_opt = (self.opt.get('val') or {}).get('metrics') or {}
        subset = dataloader.dataset.opt.get('val_metrics')  # e.g. no-reference metrics only for a set without GT
        if subset is not None and metrics_opt:
            unknown = [m for m in subset if m not in metrics_opt]
            if unknown:
                raise ConfigError(f'datasets.{dataset_name}.val_metrics: {unknown} are not in val.metrics '
                                  f'({list(metrics_opt)})')
            metrics_opt = {k: v for k, v in metrics_opt.items() if k in subset}
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        if metrics_opt:
            self._initialize_best_metric_results(dataset_name)
        sums = torch.zeros(len(metrics_opt) + 1, dtype=torch.float64)
        pbar = None
        if self.opt['val'].get('pbar', False) and rank == 0:
            from tqdm import tqdm
            pbar = tqdm(total=len(dataloader), unit='image')
        self.start_validation()
        for idx, val_data in enumerate(dataloader):
            if idx % world != rank:
                continue
            img_name = os.path.splitext(os.path.basename(val_data.get('lq_path', val_data.get('gt_path'))[0]))[0]
            self.feed_data(val_data)
            self.test()
            sr_img, gt_img = self.validation_images()
            lq_img = tensor2img([self.lq]) if hasattr(self, 'lq') and any(map(metric_needs_lq, metrics_opt.values())) \
                else None  # e.g. LR-PSNR
            self.after_validation_image()
            if save_img:
                folder, suffix = (img_name, current_iter) if self.opt['is_train'] else \
                    (dataset_name, self.opt['val'].get('suffix') or self.opt['name'])
                save_path = os.path.join(self.opt['path']['visualization'], folder, f'{img_name}_{suffix}.png')
                write_image_atomic(save_path, sr_img, channel_order='bgr')  # uint8 BGR, as BasicSR's imwrite
            data = {'img': sr_img} if gt_img is None else {'img': sr_img, 'img2': gt_img}
            for i, metric_opt in enumerate(metrics_opt.values()):
                with_lq = lq_img is not None and metric_needs_lq(metric_opt)
                sums[i] += float(calculate_metric(dict(data, img_lq=lq_img) if with_lq else data,
                                                  deepcopy(metric_opt)))
            sums[-1] += 1
            if pbar is not None:
                pbar.update(world)
                pbar.set_description(f'Test {img_name}')
        if pbar is not None:
            pbar.close()
        if world > 1:
            dist.all_reduce(sums)
        extra = self.finish_validation()
        self.metric_results = {name: float(sums[i]) / max(1.0, float(sums[-1])) for i, name in enumerate(metrics_opt)}
        for name, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, name, value, current_iter)
        if rank == 0 and (self.metric_results or extra):
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
            if extra:
                get_root_logger().info('\t'.join(f'# {k}: {v:.4f}' for k, v in extra.items()))
                for k, v in extra.items() if tb_logger else ():
                    tb_logger.add_scalar(f'metrics/{dataset_name}/{k}', v, current_iter)

    def start_validation(self) -> None:
        """Hook before the validation loop (e.g. reset codebook counters)."""

    def after_validation_image(self) -> None:
        """Hook after each validation image; frees the batch by default."""
        for name in ('lq', 'gt', 'output'):
            if hasattr(self, name):
                delattr(self, name)

    def finish_validation(self) -> dict[str, float]:
        """Hook after the loop; returns extra metrics to log (all-reduce them yourself in DDP)."""
        return {}
