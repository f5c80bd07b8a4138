"""Each compat patch: its effect asserted, or the failure it fixes reproduced without it."""
import os
import subprocess
import sys

import pytest
import torch

import basicsr_ext
from basicsr_ext import compat

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_plain_basicsr_import_fails_without_compat_here():
    """The failure the first two patches fix: on this stack, `import basicsr` alone crashes."""
    probe = _run('import torchvision')
    if probe.returncode == 0:
        pytest.skip('this torchvision loads its C extension: the op-schema patch is not needed here')
    assert 'torchvision::nms' in probe.stderr or 'operator' in probe.stderr


def test_import_with_compat_works_and_registers():
    out = _run('import basicsr_ext, basicsr, torchvision.transforms.functional_tensor as ft; '
               'from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY; print("ok")')
    assert out.returncode == 0, out.stderr
    assert 'ok' in out.stdout


def test_apply_is_idempotent_and_import_twice_is_harmless():
    first = compat.apply()
    assert compat.apply() == first
    out = _run('import basicsr_ext, importlib; importlib.import_module("basicsr_ext"); '
               'import basicsr_ext.archs, basicsr_ext.models; print("ok")')
    assert out.returncode == 0 and 'ok' in out.stdout, out.stderr


def test_nms_fallback_matches_greedy_definition():
    import torchvision
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 9, 9]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    keep = torchvision.ops.nms(boxes, scores, 0.5)
    assert keep.tolist() == [3, 2]
    assert compat._nms_reference(boxes, scores, 0.5).tolist() == [3, 2]


def test_dist_patch_uses_gloo_and_ddp_without_device_ids(tmp_path):
    """--launcher pytorch on CPU: basicsr's init_dist divides by cuda.device_count() == 0 without the patch."""
    import basicsr.utils.dist_util as dist_util
    assert getattr(dist_util.init_dist, '_basicsr_ext', False)
    code = (
        'import os; os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", '
        'MASTER_PORT="29611")\n'
        'import basicsr_ext, torch\n'
        'from basicsr.utils.dist_util import init_dist\n'
        'from basicsr.models.base_model import BaseModel\n'
        'init_dist("pytorch")\n'
        'print(torch.distributed.get_backend())\n'
        'class M(BaseModel): pass\n'
        'm = M.__new__(M); m.opt = {"dist": True, "num_gpu": 0}; m.device = torch.device("cpu")\n'
        'net = m.model_to_device(torch.nn.Linear(2, 2))\n'
        'print(type(net).__name__, net.device_ids)\n'
        'torch.distributed.destroy_process_group()\n')
    out = _run(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'gloo' in out.stdout and 'DistributedDataParallel None' in out.stdout


def test_resume_state_loads_on_cpu(tmp_path):
    """basicsr's load_resume_state maps to torch.cuda.current_device(): fails on CPU; ours maps to CPU."""
    import basicsr.train as btrain
    state_dir = tmp_path / 'experiments' / 'demo' / 'training_states'
    state_dir.mkdir(parents=True)
    (tmp_path / 'experiments' / 'demo' / 'models').mkdir()
    torch.save({'epoch': 1, 'iter': 10, 'optimizers': [], 'schedulers': []}, state_dir / '10.state')
    torch.save({'epoch': 2, 'iter': 20, 'optimizers': [], 'schedulers': []}, state_dir / '20.state')
    opt = {'auto_resume': True, 'name': 'demo', 'root_path': str(tmp_path), 'num_gpu': 0,
           'path': {'models': str(tmp_path / 'experiments' / 'demo' / 'models')}}
    state = btrain.load_resume_state(opt)
    assert state['iter'] == 20
    assert opt['path']['resume_state'].endswith('20.state')
