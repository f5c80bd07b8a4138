"""What PyPI ``basicsr==1.4.2`` needs to run on today's stack (torch 2.13, torchvision 0.28, numpy 2, CPU or GPU).

Implementations only: nothing here changes BasicSR or torchvision when imported. ``basicsr_ext.patches`` decides
when each is needed and applies it (entries ``torchvision_ops``, ``dist_cpu``, ``resume_cpu``). This module imports
only the standard library and torch at its top (BasicSR lazily, inside the functions that need it), and nothing
of ours: what it needs from us (the weights-only checkpoint loader) is passed in.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch


# ----------------------------------------------------------------------------------------------------------
# torchvision_ops: a pure-torch nms for a torchvision whose C extension cannot load
# ----------------------------------------------------------------------------------------------------------
def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy IoU non-maximum suppression in plain torch (the semantics of ``torchvision.ops.nms``)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    keep = []
    while order.numel() > 0:
        i = order[0]
        keep.append(i)
        if order.numel() == 1:
            break
        rest = order[1:]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return torch.stack(keep).to(torch.int64)


_nms_reference = nms_reference  # the name older tests and notes use


def torchvision_extension_loads(so_dir: str) -> bool:
    """Whether torchvision's compiled ops (``_C*.so`` in ``so_dir``) load next to this torch."""
    candidates = sorted(f for f in os.listdir(so_dir) if f.startswith('_C') and f.endswith(('.so', '.pyd')))
    if not candidates:
        return False
    try:
        torch.ops.load_library(os.path.join(so_dir, candidates[0]))
    except (OSError, RuntimeError):
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# dist_cpu: torchrun / slurm on CPU with gloo, DDP without CUDA device ids
# ----------------------------------------------------------------------------------------------------------
def make_init_dist(original: Callable) -> Callable:
    """BasicSR's ``init_dist`` that also works without CUDA.

    basicsr 1.4.2's ``_init_dist_pytorch/_slurm`` call ``torch.cuda.set_device`` unconditionally (a
    ZeroDivisionError on CPU) and use NCCL. With CUDA and NCCL: the original (torchrun's LOCAL_RANK picks the
    device). Otherwise: gloo from the launcher's environment variables.
    """
    def init_dist(launcher, backend='nccl', **kwargs):
        if torch.cuda.is_available() and torch.distributed.is_nccl_available():
            if launcher == 'pytorch':  # torchrun sets LOCAL_RANK; basicsr used RANK % num_gpus
                torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
            return original(launcher, backend, **kwargs)
        import torch.multiprocessing as mp
        if mp.get_start_method(allow_none=True) is None:
            mp.set_start_method('spawn')
        if launcher == 'slurm':
            import subprocess
            os.environ.setdefault('MASTER_PORT', str(kwargs.get('port') or 29500))
            node_list = os.environ['SLURM_NODELIST']
            os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
            os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
            os.environ['RANK'] = os.environ['SLURM_PROCID']
            os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        elif launcher != 'pytorch':
            raise ValueError(f'Invalid launcher type: {launcher}')
        torch.distributed.init_process_group(backend='gloo')

    init_dist._basicsr_ext = True
    return init_dist


def model_to_device(self, net):
    """``BaseModel.model_to_device`` that builds DDP without ``device_ids`` on CPU (1.4.2 always passes a CUDA id)."""
    from torch.nn.parallel import DistributedDataParallel
    net = net.to(self.device)
    if self.opt['dist']:
        find_unused = self.opt.get('find_unused_parameters', False)
        if self.device.type == 'cuda':
            net = DistributedDataParallel(
                net, device_ids=[torch.cuda.current_device()], find_unused_parameters=find_unused)
        else:
            net = DistributedDataParallel(net, find_unused_parameters=find_unused)
    elif self.opt['num_gpu'] > 1:
        net = torch.nn.DataParallel(net)
    return net


model_to_device._basicsr_ext = True


# ----------------------------------------------------------------------------------------------------------
# resume_cpu: load the training state where the pipeline saved it, on CPU when there is no GPU
# ----------------------------------------------------------------------------------------------------------
def make_load_resume_state(load_checkpoint: Callable[..., Any],
                           problem: Callable[[Any, str, dict], str | None] | None = None,
                           error: type[Exception] = RuntimeError) -> Callable[[dict], Any]:
    """``basicsr.train.load_resume_state`` that works on CPU, reads states without unpickling code, and resumes
    from the newest *usable* state.

    basicsr 1.4.2 maps the state to ``torch.cuda.current_device()`` (an AssertionError without CUDA), unpickles
    it fully, looks for ``--auto_resume`` states in ``experiments/<name>`` relative to the working directory
    whatever ``root_path`` the pipeline writes to, and stops at the newest state even when it is a 0-byte file
    left by a kill. This one looks in ``opt['path']['training_states']`` (where the pipeline saves them), keeps
    only ``<iteration>.state`` files, and loads with ``load_checkpoint`` (ours: ``torch.load(weights_only=True)``
    with errors naming the file) onto the GPU when one is used, else the CPU. With ``--auto_resume``, a state
    that fails to load (``error``) or that ``problem(state, path, opt)`` objects to is skipped with a one-line
    warning on stderr and the next older one is tried; when none is usable, ``error`` names the folder.
    """
    import sys

    def load(path, opt):
        if torch.cuda.is_available() and opt.get('num_gpu', 0) != 0:
            device_id = torch.cuda.current_device()
            return load_checkpoint(path, map_location=lambda storage, loc: storage.cuda(device_id))
        return load_checkpoint(path, map_location='cpu')

    def newest_usable(state_dir, opt):
        from basicsr.utils import scandir
        iters = sorted((int(v[:-len('.state')]) for v in scandir(state_dir, suffix='.state', recursive=False)
                        if v[:-len('.state')].isdigit()), reverse=True)
        skipped = []
        for it in iters:
            path = os.path.join(state_dir, f'{it}.state')
            try:
                state = load(path, opt)
                why = problem(state, path, opt) if problem is not None else None
            except error as e:
                why = str(e)
            if why is None:
                for reason in skipped:
                    print(f'warning: --auto_resume skipped {reason}', file=sys.stderr, flush=True)
                if skipped:
                    print(f'warning: --auto_resume resumes from {path} instead', file=sys.stderr, flush=True)
                return path, state
            skipped.append(why)
        if skipped:
            raise error(f'--auto_resume: none of the {len(iters)} training states in {state_dir} can be resumed '
                        f'from (newest: {skipped[0]}); remove them to start afresh, or set path.resume_state')
        return None, None

    def load_resume_state(opt):
        from basicsr.utils.misc import check_resume

        path = state = None
        if opt['auto_resume']:
            state_dir = opt['path'].get('training_states') or os.path.join(
                opt.get('root_path', '.'), 'experiments', opt['name'], 'training_states')
            if os.path.isdir(state_dir):
                path, state = newest_usable(state_dir, opt)
                if path is not None:
                    opt['path']['resume_state'] = path
        elif opt['path'].get('resume_state'):
            path = opt['path']['resume_state']
            state = load(path, opt)
        if path is None:
            return None
        check_resume(opt, state['iter'])
        return state

    load_resume_state._basicsr_ext = True
    return load_resume_state
