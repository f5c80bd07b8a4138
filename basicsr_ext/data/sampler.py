"""Exact resume on the data side: RNG states as tensors, and BasicSR's sampler continuing an interrupted epoch.

:class:`ResumableEnlargedSampler` is BasicSR's ``EnlargedSampler`` (same constructor, same sampling) that, after a
resume, skips the samples the interrupted epoch already consumed. The model arms it from the training state
(:data:`_PENDING_RESUME`, set by ``EngineMixin.resume_training``); ``basicsr_ext.patches`` (entry
``resumable_sampler``) makes BasicSR's train pipeline build it.
"""
from __future__ import annotations

import random
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from basicsr.data.data_sampler import EnlargedSampler


def get_rng_state() -> dict[str, torch.Tensor]:
    """torch / numpy / python RNG states, all as tensors (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        'torch': torch.get_rng_state(),
        'numpy_keys': torch.from_numpy(np_state[1].astype(np.int64)),
        'numpy_meta': torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        'numpy_gauss': torch.tensor([np_state[4]], dtype=torch.float64),
        'python': torch.tensor(list(py_internal), dtype=torch.int64),
        'python_meta': torch.tensor([py_version, 0 if py_gauss is None else 1], dtype=torch.int64),
        'python_gauss': torch.tensor([0.0 if py_gauss is None else py_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.stack([s for s in torch.cuda.get_rng_state_all()]) if torch.cuda.device_count() else \
            torch.empty(0)
    return state


def set_rng_state(state: Mapping[str, torch.Tensor]) -> None:
    torch.set_rng_state(state['torch'].cpu().to(torch.uint8))
    meta = state['numpy_meta'].tolist()
    np.random.set_state(('MT19937', state['numpy_keys'].numpy().astype(np.uint32), int(meta[0]), int(meta[1]),
                         float(state['numpy_gauss'][0])))
    version, has_gauss = state['python_meta'].tolist()
    gauss = float(state['python_gauss'][0]) if has_gauss else None
    random.setstate((int(version), tuple(int(v) for v in state['python'].tolist()), gauss))
    if 'cuda' in state and torch.cuda.is_available() and state['cuda'].numel():
        for i, s in enumerate(state['cuda'][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu().to(torch.uint8), i)


_PENDING_RESUME: dict[str, Any] = {}


class ResumableEnlargedSampler(EnlargedSampler):
    """BasicSR's EnlargedSampler that, after a resume, continues the interrupted epoch where it stopped.

    BasicSR restarts the interrupted epoch from its first sample; this skips the samples already consumed
    (``(iter - epoch * batches_per_epoch) * batch_size``) and restores the RNG states saved with the state
    right before the first resumed sample is drawn, so a resumed run sees exactly the batches and random
    crops of an uninterrupted one (exact with ``num_worker_per_gpu: 0``; workers re-seed per epoch).
    """

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        pending = _PENDING_RESUME.get('state')
        if pending is not None and pending['epoch'] == self.epoch:
            _PENDING_RESUME.clear()
            batch = pending['batch_size']
            per_epoch = len(indices) // batch  # the loader drops the last incomplete batch
            consumed = max(0, pending['iter'] - self.epoch * per_epoch) * batch
            indices = indices[consumed:]
            if pending.get('rng') is not None:
                set_rng_state(pending['rng'])
        return iter(indices)
