"""BasicSR's ``EnlargedSampler`` continuing an interrupted epoch after a resume: the data side of exact resume.

:class:`ResumableEnlargedSampler` samples as BasicSR's (same constructor) and takes a resume point (``resume=``:
``basicsr_ext.utils.training_state.resume_point`` of the training state). ``basicsr_ext.patches`` (entry
``resumable_sampler``) makes BasicSR's train pipeline build it and hands it the point of the state that
``load_resume_state`` returned.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from basicsr.data.data_sampler import EnlargedSampler

from basicsr_ext.utils.training_state import set_rng_state


class ResumableEnlargedSampler(EnlargedSampler):
    """BasicSR's EnlargedSampler that, after a resume, continues the interrupted epoch where it stopped.

    BasicSR restarts the interrupted epoch from its first sample; this skips the samples already consumed
    (``(iter - epoch * batches_per_epoch) * batch_size``) and restores the RNG states saved with the state
    right before the first resumed sample is drawn, so a resumed run sees exactly the batches and random
    crops of an uninterrupted one (exact with ``num_worker_per_gpu: 0``; workers re-seed per epoch).

    Args:
        resume: ``{'epoch', 'iter', 'batch_size', 'rng'}`` (``rng``: this rank's saved RNG states or None);
            used once, by the epoch it names.
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int, ratio: int = 1,
                 resume: Mapping[str, Any] | None = None) -> None:
        super().__init__(dataset, num_replicas, rank, ratio)
        self.resume = resume

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        point = self.resume
        if point is not None and point['epoch'] == self.epoch:
            self.resume = None
            batch = point['batch_size']
            per_epoch = len(indices) // batch  # the loader drops the last incomplete batch
            indices = indices[max(0, point['iter'] - self.epoch * per_epoch) * batch:]
            if point.get('rng') is not None:
                set_rng_state(point['rng'])
        return iter(indices)
