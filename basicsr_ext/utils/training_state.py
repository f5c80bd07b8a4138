"""Training states that make a resume exact, saved atomically: the one implementation for BasicSR's models and ours.

:func:`save_training_state` and :func:`resume_training` are written as methods (``self`` is the model):
``basicsr_ext.patches`` (entry ``atomic_exact_resume``) gives them to BasicSR's ``BaseModel``, so every stock model
(SRModel, ESRGANModel, …) and every model of ours (``EngineMixin``) saves and resumes the same way:

- the state holds optimizers, schedulers, the RNG states of torch, numpy and python of every rank (as tensors, so
  ``weights_only=True`` loads them), a model's GradScaler and ``extra_training_state()`` when it has them;
- it is written to a temporary file and renamed (:func:`basicsr_ext.utils.checkpoint.save_checkpoint`): a kill while
  saving leaves the previous state or none, never a half-written ``<iter>.state``;
- :func:`resume_point` tells the train sampler (``basicsr_ext.data.sampler.ResumableEnlargedSampler``, handed the
  point by ``basicsr_ext.patches``) how to skip the samples the interrupted epoch consumed and which RNG states to
  restore right before the first resumed sample is drawn: with ``num_worker_per_gpu: 0`` a resumed run gives the
  weights of an uninterrupted one bit for bit.

:func:`usable_state_problem` is what ``--auto_resume`` asks of each state, newest first (``basicsr_ext.compat``).
"""
from __future__ import annotations

import os
import random
from typing import Any, Mapping

import numpy as np
import torch

from basicsr_ext.utils.checkpoint import CheckpointError, save_checkpoint

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


def save_training_state(self: Any, epoch: int, current_iter: int) -> None:
    """``BaseModel.save_training_state``: optimizers, schedulers, GradScaler, RNG states of every rank, the
    model's extra state; atomic; written by rank 0 (every rank must call it: the RNG states are gathered)."""
    import torch.distributed as dist
    if current_iter == -1:
        return
    rng = get_rng_state()
    if self.opt.get('dist') and dist.is_initialized():
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, rng)
    else:
        gathered = [rng]
    if self.opt.get('rank', 0) != 0:
        return
    scaler = getattr(self, 'grad_scaler', None)
    extra = getattr(self, 'extra_training_state', None)
    state = {'epoch': epoch, 'iter': current_iter,
             'optimizers': [o.state_dict() for o in self.optimizers],
             'schedulers': [s.state_dict() for s in self.schedulers],
             'grad_scaler': scaler.state_dict() if scaler is not None else {},
             'rng': gathered,
             'extra': extra() if callable(extra) else {}}
    save_checkpoint(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))


def resume_training(self: Any, resume_state: Mapping) -> None:
    """``BaseModel.resume_training``: optimizers and schedulers (a count mismatch is a CheckpointError naming the
    state), GradScaler, the model's extra state (the sampler gets :func:`resume_point` from the pipeline)."""
    where = (self.opt.get('path') or {}).get('resume_state') or 'the training state'
    for what, saved, own in (('optimizers', resume_state.get('optimizers'), self.optimizers),
                             ('schedulers', resume_state.get('schedulers'), self.schedulers)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(own):
            n = len(saved) if isinstance(saved, (list, tuple)) else 'no'
            raise CheckpointError(f'{where}: holds {n} {what}, the model ({type(self).__name__}) has {len(own)}: '
                                  'a state of another model or another train: block')
    for o, s in zip(self.optimizers, resume_state['optimizers']):
        o.load_state_dict(s)
    for sch, s in zip(self.schedulers, resume_state['schedulers']):
        sch.load_state_dict(s)
    scaler = getattr(self, 'grad_scaler', None)
    if resume_state.get('grad_scaler') and scaler is not None:
        scaler.load_state_dict(resume_state['grad_scaler'])
    load_extra = getattr(self, 'load_extra_training_state', None)
    if callable(load_extra):
        load_extra(resume_state.get('extra', {}))


def resume_point(resume_state: Mapping | None, opt: Mapping) -> dict[str, Any] | None:
    """Where the train sampler continues (None without a state): ``{'epoch', 'iter', 'batch_size', 'rng'}``, with
    this rank's RNG states (``opt['rank']``) and the train set's ``batch_size_per_gpu``."""
    if not resume_state:
        return None
    rng_all = resume_state.get('rng') or []
    rank = opt.get('rank', 0)
    train = (opt.get('datasets') or {}).get('train') or {}
    return {'epoch': resume_state['epoch'], 'iter': resume_state['iter'],
            'batch_size': train.get('batch_size_per_gpu', 1), 'rng': rng_all[rank] if rank < len(rng_all) else None}


def usable_state_problem(state: Any, path: str, opt: Mapping) -> str | None:
    """Why a loaded ``<iter>.state`` cannot be resumed from (None when it can): not a BasicSR training state, or
    a network file BasicSR's ``check_resume`` will point at (``models/net_<x>_<iter>.pth``) missing or empty
    while that network was saved at other iterations (a kill between the network and the state)."""
    if not isinstance(state, Mapping) or not isinstance(state.get('iter'), int) or 'epoch' not in state:
        return f'{path}: not a training state (no epoch/iter)'
    models = (opt.get('path') or {}).get('models')
    if not models or not os.path.isdir(models):
        return None
    ignored = (opt.get('path') or {}).get('ignore_resume_networks') or ()
    names = os.listdir(models)
    for network in [k for k in opt if isinstance(k, str) and k.startswith('network_')]:
        if network in ignored:
            continue
        base = f"net_{network[len('network_'):]}_"
        if not any(n.startswith(base) and n.endswith('.pth') for n in names):
            continue  # this model never saves that network: nothing to expect
        net_file = os.path.join(models, f"{base}{state['iter']}.pth")
        if not os.path.isfile(net_file) or os.path.getsize(net_file) == 0:
            return f'{path}: its network file {net_file} is missing or empty'
    return None
