"""Make PyPI ``basicsr==1.4.2`` work unmodified on torch 2.13 / torchvision 0.28 / numpy 2, on CPU and GPU.

Imported (and applied) first by ``basicsr_ext/__init__.py``, before anything imports torchvision or basicsr.
Each patch is applied only when it is needed and says why in one comment. Nothing of ours is imported here.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import torch

_APPLIED: dict[str, bool] = {}
_TV_LIB = None  # keeps the torch.library.Library for the torchvision op schemas alive


def _nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy IoU non-maximum suppression in plain torch (the semantics of torchvision.ops.nms)."""
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


def _patch_torchvision_ops() -> bool:
    """torchvision's CUDA wheel cannot load its C extension next to a CPU torch, and then `import torchvision`
    crashes on `register_fake("torchvision::nms")`; define the op schemas and a pure-torch nms (only then)."""
    global _TV_LIB
    if 'torchvision' in sys.modules:
        return False
    spec = importlib.util.find_spec('torchvision')
    if spec is None or spec.origin is None:
        return False
    so_dir = os.path.dirname(spec.origin)
    candidates = [os.path.join(so_dir, f) for f in os.listdir(so_dir) if f.startswith('_C') and f.endswith('.so')]
    try:
        for lib in candidates[:1]:
            torch.ops.load_library(lib)
        if candidates:
            return False  # the real extension loaded: nothing to patch
    except (OSError, RuntimeError):
        pass
    _TV_LIB = torch.library.Library('torchvision', 'DEF')
    _TV_LIB.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    _TV_LIB.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    _TV_LIB.impl('nms', _nms_reference, 'CPU')
    import torchvision.ops  # noqa: F401  (imports cleanly now)
    import torchvision.ops.boxes

    def nms(boxes, scores, iou_threshold):
        return torch.ops.torchvision.nms(boxes, scores, iou_threshold)

    torchvision.ops.nms = torchvision.ops.boxes.nms = nms
    return True


def _patch_functional_tensor() -> bool:
    """basicsr/data/degradations.py imports `torchvision.transforms.functional_tensor`, renamed to
    `_functional_tensor` in torchvision 0.17; alias the old name (only when it is missing)."""
    try:
        importlib.import_module('torchvision.transforms.functional_tensor')
        return False
    except ModuleNotFoundError:
        sys.modules['torchvision.transforms.functional_tensor'] = importlib.import_module(
            'torchvision.transforms._functional_tensor')
        return True


def _patch_dist() -> bool:
    """basicsr's `_init_dist_pytorch/_slurm` call torch.cuda.set_device unconditionally and use NCCL, and
    `BaseModel.model_to_device` passes CUDA device_ids to DDP: on CPU use gloo and DDP without device ids."""
    import basicsr.models.base_model as base_model
    import basicsr.utils.dist_util as dist_util
    import basicsr.utils.options as options
    from torch.nn.parallel import DistributedDataParallel

    if getattr(dist_util.init_dist, '_basicsr_ext', False):
        return False
    original_init_dist = dist_util.init_dist

    def init_dist(launcher, backend='nccl', **kwargs):
        if torch.cuda.is_available() and torch.distributed.is_nccl_available():
            if launcher == 'pytorch':  # torchrun sets LOCAL_RANK; basicsr used RANK % num_gpus
                torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
            return original_init_dist(launcher, backend, **kwargs)
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
    dist_util.init_dist = init_dist
    options.init_dist = init_dist

    def model_to_device(self, net):
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

    base_model.BaseModel.model_to_device = model_to_device
    return True


def _patch_resume() -> bool:
    """basicsr.train.load_resume_state maps the state to `torch.cuda.current_device()` (fails on CPU) and
    unpickles without weights_only; replace it (train_pipeline looks the name up at call time)."""
    import basicsr.train as btrain
    if getattr(btrain.load_resume_state, '_basicsr_ext', False):
        return False

    def load_resume_state(opt):
        from basicsr.utils import scandir
        from basicsr.utils.misc import check_resume

        from basicsr_ext.utils.checkpoint import load_checkpoint
        path = None
        if opt['auto_resume']:
            state_dir = os.path.join(opt.get('root_path', '.'), 'experiments', opt['name'], 'training_states')
            if os.path.isdir(state_dir):
                states = [v for v in scandir(state_dir, suffix='.state', recursive=False, full_path=False)
                          if v[:-len('.state')].isdigit()]
                if states:
                    path = os.path.join(state_dir, f"{max(int(v[:-len('.state')]) for v in states)}.state")
                    opt['path']['resume_state'] = path
        elif opt['path'].get('resume_state'):
            path = opt['path']['resume_state']
        if path is None:
            return None
        if torch.cuda.is_available() and opt.get('num_gpu', 0) != 0:
            device_id = torch.cuda.current_device()
            state = load_checkpoint(path, map_location=lambda storage, loc: storage.cuda(device_id))
        else:
            state = load_checkpoint(path, map_location='cpu')
        check_resume(opt, state['iter'])
        return state

    load_resume_state._basicsr_ext = True
    btrain.load_resume_state = load_resume_state
    return True


def apply() -> dict[str, bool]:
    """Apply every patch that this environment needs; idempotent. Returns {patch: applied now}."""
    if _APPLIED:
        return dict(_APPLIED)
    _APPLIED['torchvision_ops'] = _patch_torchvision_ops()
    _APPLIED['functional_tensor'] = _patch_functional_tensor()
    _APPLIED['dist'] = _patch_dist()
    _APPLIED['resume'] = _patch_resume()
    return dict(_APPLIED)
