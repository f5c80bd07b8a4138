"""Exact resume on the data side: RNG states as tensors, and BasicSR's sampler continuing an interrupted epoch.

:class:`ResumableEnlargedSampler` is BasicSR's ``EnlargedSampler`` (same constructor, same sampling) that, after a
resume, skips the samples the interrupted epoch already consumed. The model arms it from the training state
(:data:`_PENDING_RESUME`, set by every model's ``resume_training``: ``basicsr_ext.utils.training_state``);
``basicsr_ext.patches`` (entry ``resumable_sampler``) makes BasicSR's train pipeline build it.
"""
from __future__ import annotations

from typing import Iterator

from basicsr.data.data_sampler import EnlargedSampler

# the RNG helpers and the pending resume live with the training state (one place); the names stay importable here
from basicsr_ext.utils.training_state import PENDING_RESUME as _PENDING_RESUME  # noqa: F401
from basicsr_ext.utils.training_state import get_rng_state, set_rng_state  # noqa: F401


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
