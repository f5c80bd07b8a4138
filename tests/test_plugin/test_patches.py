"""basicsr_ext.patches: one test per entry (``test_patch_<name>``) that it is applied and does what it says, and
that nothing else in the package changes BasicSR."""
import ast
import builtins
import os
import subprocess
import sys
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
import yaml

import basicsr
import basicsr.data as bdata
import basicsr.test as btest
import basicsr.train as btrain
import basicsr.utils.options as bopt
from basicsr_ext import patches
from basicsr_ext.data.checks import DatasetError
from basicsr_ext.utils.options import OptionError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, 'basicsr_ext')
DONE = (patches.APPLIED, patches.ALREADY)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=180,
                          env=dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', **env))


def _state(name: str) -> str:
    return patches.status()[name]


# ---- the list itself ---------------------------------------------------------------------------------------------
def test_every_entry_is_described_applied_once_and_tested():
    names = [p.name for p in patches.PATCHES]
    assert len(names) == len(set(names))
    for p in patches.PATCHES:
        assert p.kind in (patches.COMPAT, patches.UPGRADE) and p.targets and p.reason and p.changes, p.name
        assert p.test == f'tests/test_plugin/test_patches.py::test_patch_{p.name}'
        assert callable(globals().get(f'test_patch_{p.name}')), f'{p.name}: no test'
    first = patches.status()
    assert set(first.values()) <= {patches.APPLIED, patches.ALREADY, patches.NOT_NEEDED}
    assert patches.apply_all() == first  # idempotent: nothing is applied twice
    # documented order: the torchvision entries first, then every entry that needs basicsr
    flags = [p.before_basicsr for p in patches.PATCHES]
    assert flags == sorted(flags, reverse=True) and flags[0]


@pytest.mark.e2e
def test_python_m_patches_prints_the_list():
    out = subprocess.run([sys.executable, '-m', 'basicsr_ext.patches'], capture_output=True, text=True, cwd=ROOT,
                         timeout=180, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert out.returncode == 0, out.stderr[-2000:]
    for p in patches.PATCHES:
        assert p.name in out.stdout
    assert 'pending' not in out.stdout and 'RuntimeWarning' not in out.stderr
    assert patches.table(markdown=True).count('\n') == len(patches.PATCHES) + 1


def _basicsr_aliases(tree: ast.AST) -> set[str]:
    """Names a module binds to BasicSR or torchvision modules/objects (import ... as x, from basicsr... import x)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split('.')[0] in ('basicsr', 'torchvision'):
                    names.add(a.asname or a.name.split('.')[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] in ('basicsr', 'torchvision'):
            names.update(a.asname or a.name for a in node.names)
    return names


def test_nothing_outside_patches_changes_basicsr():
    """No module of ours but patches.py assigns an attribute of a BasicSR/torchvision object or module, calls
    setattr on one, or writes sys.modules."""
    offenders = []
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            path = os.path.join(folder, f)
            if not f.endswith('.py') or path == os.path.join(PACKAGE, 'patches.py'):
                continue
            tree = ast.parse(open(path, encoding='utf-8').read(), path)
            aliases = _basicsr_aliases(tree)
            for node in ast.walk(tree):
                targets = []
                if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    base = t
                    while isinstance(base, (ast.Attribute, ast.Subscript)):
                        base = base.value
                    sys_modules = isinstance(t, ast.Subscript) and isinstance(t.value, ast.Attribute) and \
                        t.value.attr == 'modules' and getattr(t.value.value, 'id', None) == 'sys'
                    if sys_modules or (isinstance(t, (ast.Attribute, ast.Subscript)) and isinstance(base, ast.Name)
                                       and base.id in aliases):
                        offenders.append(f'{path}:{node.lineno}')
                if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'setattr' and node.args and \
                        isinstance(node.args[0], ast.Name) and node.args[0].id in aliases:
                    offenders.append(f'{path}:{node.lineno}')
    assert not offenders, offenders


# ---- one test per entry ------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_patch_torchvision_ops():
    """Without it, on this stack, `import torchvision` (so `import basicsr`) crashes; with it nms is the greedy one."""
    import torchvision
    state = _state('torchvision_ops')
    probe = _run('import torchvision')
    if state == patches.NOT_NEEDED:
        assert probe.returncode == 0
        pytest.skip('this torchvision loads its C extension: the entry is not needed here')
    assert state in DONE
    assert probe.returncode != 0 and 'torchvision::nms' in probe.stderr
    assert getattr(torchvision.ops.nms, '_basicsr_ext', False)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 9, 9]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert torchvision.ops.batched_nms(boxes, scores, torch.tensor([0, 1, 0, 0]), 0.5).tolist() == [3, 1, 2]


def test_patch_functional_tensor():
    import torchvision.transforms.functional_tensor as ft
    from basicsr.data import degradations
    assert _state('functional_tensor') in DONE + (patches.NOT_NEEDED, )
    assert degradations.rgb_to_grayscale is ft.rgb_to_grayscale
    img = torch.rand(1, 3, 4, 4)
    assert ft.rgb_to_grayscale(img).shape == (1, 1, 4, 4)


@pytest.mark.e2e
def test_patch_dist_cpu():
    """--launcher pytorch on CPU: basicsr's init_dist divides by cuda.device_count() == 0 without the patch."""
    import basicsr.utils.dist_util as dist_util
    assert _state('dist_cpu') in DONE
    assert dist_util.init_dist is bopt.init_dist and getattr(dist_util.init_dist, '_basicsr_ext', False)
    code = (
        'import os; os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", '
        'MASTER_PORT="29611")\n'
        'import torch\n'
        'from basicsr.utils.dist_util import init_dist\n'
        'from basicsr.models.base_model import BaseModel\n'
        'init_dist("pytorch")\n'
        'print(torch.distributed.get_backend())\n'
        'class M(BaseModel): pass\n'
        'm = M.__new__(M); m.opt = {"dist": True, "num_gpu": 0}; m.device = torch.device("cpu")\n'
        'net = m.model_to_device(torch.nn.Linear(2, 2))\n'
        'print(type(net).__name__, net.device_ids)\n'
        'torch.distributed.destroy_process_group()\n')
    out = _run(code)  # a fresh process importing basicsr only: the autoload hook applies the patches
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'gloo' in out.stdout and 'DistributedDataParallel None' in out.stdout


def test_patch_resume_cpu(tmp_path, capsys):
    """basicsr's load_resume_state maps to torch.cuda.current_device(): fails on CPU; ours maps to CPU, reads the
    states where the pipeline saved them and refuses a state that needs unpickling code."""
    assert _state('resume_cpu') in DONE
    states = tmp_path / 'exp' / 'training_states'
    states.mkdir(parents=True)
    (tmp_path / 'exp' / 'models').mkdir()
    torch.save({'epoch': 1, 'iter': 10, 'optimizers': [], 'schedulers': []}, states / '10.state')
    torch.save({'epoch': 2, 'iter': 20, 'optimizers': [], 'schedulers': []}, states / '20.state')
    (states / 'notes.state').write_text('not a state')
    opt = {'auto_resume': True, 'name': 'demo', 'num_gpu': 0,
           'path': {'models': str(tmp_path / 'exp' / 'models'), 'training_states': str(states)}}
    state = btrain.load_resume_state(opt)
    assert state['iter'] == 20 and opt['path']['resume_state'] == str(states / '20.state')
    assert basicsr.load_resume_state is btrain.load_resume_state  # the copy `from .train import *` made too
    torch.save({'iter': 30, 'bad': print}, states / '30.state')  # a function: not weights-only loadable
    (states / '40.state').write_bytes(b'')  # what a kill during BasicSR's torch.save leaves
    from basicsr_ext.utils.checkpoint import CheckpointError
    again = dict(opt, path=dict(opt['path']))
    assert btrain.load_resume_state(again)['iter'] == 20  # --auto_resume: the newest usable state
    assert again['path']['resume_state'] == str(states / '20.state')
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and '(0 bytes)' in err[0] and '40.state' in err[0] and '30.state' in err[1] and '20.state' in err[2], err
    with pytest.raises(CheckpointError, match='30.state'):  # named explicitly: refused, not replaced
        btrain.load_resume_state(dict(opt, auto_resume=False, path=dict(opt['path'], resume_state=str(
            states / '30.state'))))
    for name in ('10', '20'):
        (states / f'{name}.state').write_bytes(b'')
    with pytest.raises(CheckpointError, match='none of the 4 training states'):
        btrain.load_resume_state(dict(opt, path=dict(opt['path'])))


class _Payload:
    """Unpickling this runs ``touch <sentinel>`` (in a loader that is not weights-only)."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return os.system, (f'touch {self.sentinel}', )


def test_patch_safe_load_network(tmp_path, monkeypatch):
    """BasicSR's load_network unpickles fully (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 makes torch.load run a payload);
    ours is weights-only whatever the variable says, refuses NaN weights and names the file."""
    from basicsr.models.base_model import BaseModel
    from basicsr.models.sr_model import SRModel

    from basicsr_ext.utils.checkpoint import CheckpointError, load_network
    assert _state('safe_load_network') in DONE
    assert BaseModel.load_network is load_network and SRModel.load_network is load_network
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    model = BaseModel.__new__(BaseModel)
    net = torch.nn.Conv2d(3, 4, 3)
    sentinel = tmp_path / 'pwned'
    bad = tmp_path / 'payload.pth'
    torch.save({'params': net.state_dict(), 'x': _Payload(sentinel)}, bad)
    with pytest.raises(CheckpointError, match='payload.pth.*arbitrary unpickling'):
        model.load_network(net, str(bad))
    assert not sentinel.exists()
    nan = {k: v.clone() for k, v in net.state_dict().items()}
    nan['bias'][1] = float('nan')
    torch.save({'params': nan}, tmp_path / 'nan.pth')
    with pytest.raises(CheckpointError, match=r"nan.pth: tensor 'bias' .*1 NaN"):
        model.load_network(net, str(tmp_path / 'nan.pth'))
    with pytest.raises(CheckpointError, match='not found'):
        model.load_network(net, str(tmp_path / 'missing.pth'))
    good = torch.nn.Conv2d(3, 4, 3)
    torch.save({'params': {f'module.{k}': v for k, v in good.state_dict().items()}}, tmp_path / 'good.pth')
    model.load_network(net, str(tmp_path / 'good.pth'), param_key='params_ema')  # BasicSR: falls back to params
    assert torch.equal(net.weight, good.weight)
    # the control: the stock loader does run this payload under the variable
    patches._STOCK['load_network'](model, net, str(bad))
    assert sentinel.exists()


def test_patch_safe_basicsr_loads(tmp_path, monkeypatch):
    """BasicSR's archs call torch.load without weights_only (a payload runs under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD);
    the modules that do see a torch whose load is weights-only, VGG's pretrained file and inception's load_url go
    through the weights-only hub loader (the cases: tests/test_untrusted/test_basicsr_weight_files.py)."""
    import basicsr.archs.inception as inception
    import basicsr.archs.spynet_arch as spynet_arch
    import basicsr.archs.vgg_arch as vgg_arch

    from basicsr_ext.utils.checkpoint import CheckpointError, load_hub_weights, weights_only_load
    assert _state('safe_basicsr_loads') in DONE
    for module in (vgg_arch, spynet_arch, inception):
        assert module.torch.load is weights_only_load and module.torch.zeros is torch.zeros
    assert torch.load is not weights_only_load  # torch itself is untouched
    assert inception.load_url is load_hub_weights and isinstance(vgg_arch.vgg, patches._SafePretrainedVGG)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    sentinel = tmp_path / 'pwned'
    bad = tmp_path / 'spynet.pth'
    torch.save({'params': {}, 'x': _Payload(sentinel)}, bad)
    with pytest.raises(CheckpointError, match='spynet.pth.*arbitrary unpickling'):
        spynet_arch.SpyNet(load_path=str(bad))
    assert not sentinel.exists()
    torch.load(str(bad))  # the control: what BasicSR's own call does under the variable
    assert sentinel.exists()


def test_patch_atomic_exact_resume(tmp_path, monkeypatch):
    """BasicSR's save_network/save_training_state write under the final name (a kill leaves half a file there) and
    keep no RNG state; ours write atomically and save the RNG states (the resume point of the sampler)."""
    from basicsr.models.base_model import BaseModel
    from basicsr.models.sr_model import SRModel

    from basicsr_ext.utils import checkpoint, training_state
    from basicsr_ext.utils.checkpoint import CheckpointError, load_checkpoint
    assert _state('atomic_exact_resume') in DONE
    assert SRModel.save_network is checkpoint.save_network
    assert SRModel.save_training_state is training_state.save_training_state
    assert SRModel.resume_training is training_state.resume_training
    (tmp_path / 'models').mkdir()
    model = BaseModel.__new__(BaseModel)
    net = torch.nn.Linear(4, 4)
    model.opt = {'rank': 0, 'dist': False, 'num_gpu': 0, 'datasets': {'train': {'batch_size_per_gpu': 3}},
                 'path': {'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'states')}}
    model.optimizers = [torch.optim.Adam(net.parameters())]
    model.schedulers = [torch.optim.lr_scheduler.MultiStepLR(model.optimizers[0], [10])]
    model.save_network(net, 'net_g', 5)
    model.save_training_state(1, 5)
    state = load_checkpoint(str(tmp_path / 'states' / '5.state'))
    assert state['iter'] == 5 and len(state['rng']) == 1 and torch.equal(state['rng'][0]['torch'],
                                                                          torch.get_rng_state())
    real_save = torch.save

    def killed_save(obj, f, *args, **kwargs):  # half the bytes, then the process is "killed"
        real_save(obj, f, *args, **kwargs)
        with open(f, 'r+b') as fh:
            fh.truncate(os.path.getsize(f) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', killed_save)
    for save in (lambda: model.save_network(net, 'net_g', 6), lambda: model.save_training_state(1, 6)):
        with pytest.raises(KeyboardInterrupt):
            save()
    assert sorted(os.listdir(tmp_path / 'models')) == ['net_g_5.pth']  # nothing under a final name, no temp file
    assert sorted(os.listdir(tmp_path / 'states')) == ['5.state']
    with pytest.raises(KeyboardInterrupt):  # the control: BasicSR's leaves half a file under the final name
        patches._STOCK['save_network'](model, net, 'net_g', 7)
    monkeypatch.setattr(torch, 'save', real_save)
    with pytest.raises(CheckpointError):
        load_checkpoint(str(tmp_path / 'models' / 'net_g_7.pth'))
    model.opt['path']['resume_state'] = str(tmp_path / 'states' / '5.state')
    model.resume_training(state)
    assert training_state.resume_point(state, model.opt) == {'epoch': 1, 'iter': 5, 'batch_size': 3,
                                                             'rng': state['rng'][0]}
    with pytest.raises(CheckpointError, match=r'5.state: holds 2 optimizers, the model \(BaseModel\) has 1'):
        model.resume_training(dict(state, optimizers=state['optimizers'] * 2))


def _hostile_option_file(tmp_path, sentinel):
    path = tmp_path / 'bad.yml'
    path.write_text(f'name: demo\nmodel_type: SRModel\nnum_gpu: 0\ndatasets: {{}}\n'
                    f'x: !!python/object/apply:os.system ["touch {sentinel}"]\n')
    return str(path)


def test_patch_safe_options(tmp_path, monkeypatch):
    from basicsr_ext.utils import options as ours
    assert _state('safe_options') in DONE
    sentinel = tmp_path / 'pwned'
    bad = _hostile_option_file(tmp_path, sentinel)
    # BasicSR's own names, in every module that imported them
    for mod in (bopt, btrain, btest, basicsr):
        monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', bad])
        with pytest.raises(OptionError, match='line 5'):
            mod.parse_options(str(tmp_path), is_train=True)
    loader, dumper = bopt.ordered_yaml()
    assert loader is ours.SafeOrderedLoader
    with pytest.raises(OptionError):
        yaml.load(open(bad).read(), Loader=loader)
    assert not sentinel.exists()
    assert yaml.dump(OrderedDict(a=1), Dumper=dumper).strip() == 'a: 1'
    # yaml_load (BasicSR after 1.4.2) reads a path and closes the file
    good = tmp_path / 'good.yml'
    good.write_text('name: x\nlr: !!float 2e-4\n')
    opened = []
    real_open = builtins.open

    def tracking_open(*args, **kwargs):
        f = real_open(*args, **kwargs)
        opened.append(f)
        return f

    monkeypatch.setattr(builtins, 'open', tracking_open)
    assert ours.yaml_load(str(good)) == {'name': 'x', 'lr': 2e-4}
    monkeypatch.setattr(builtins, 'open', real_open)
    assert opened and all(f.closed for f in opened)
    assert ours.yaml_load('a: [1, 2]') == {'a': [1, 2]}
    if hasattr(bopt, 'yaml_load'):
        assert bopt.yaml_load is ours.yaml_load


def test_patch_safe_options_applies_force_yml_before_seeding(tmp_path, monkeypatch):
    """BasicSR 1.4.2 seeds before it applies --force_yml, so `--force_yml manual_seed=N` left the seed unchanged
    (only the logged option said N). Ours seeds with the forced value."""
    import random

    import torch

    from basicsr_ext.utils import options as ours
    path = tmp_path / 'seed.yml'
    path.write_text('name: seed_demo\nmodel_type: SRModel\nnum_gpu: 0\nmanual_seed: 0\ndatasets: {}\npath: {}\n')

    def draws(*force):
        monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', str(path), *force])
        opt, _ = ours.parse_options(str(tmp_path), is_train=False)
        return opt['manual_seed'], random.random(), torch.rand(1).item()

    seed0, seed7 = draws(), draws('--force_yml', 'manual_seed=7')
    assert seed0[0] == 0 and seed7[0] == 7
    assert seed7[1:] != seed0[1:]
    random.seed(7)
    torch.manual_seed(7)
    assert seed7[1:] == (random.random(), torch.rand(1).item())


def test_patch_quiet_option_dump(tmp_path):
    """BasicSR logs the ~200-line option dump to the console too; with the entry it goes to the log file only."""
    import logging

    from basicsr_ext.utils.options import OptionDump
    assert _state('quiet_option_dump') in DONE
    assert btrain.dict2str is btest.dict2str and btrain.dict2str is not bopt.dict2str
    logger = logging.getLogger('basicsr')
    saved = logger.handlers[:], logger.propagate, logger.level
    console = logging.StreamHandler(stream=open(tmp_path / 'console', 'w'))
    log_file = logging.FileHandler(tmp_path / 'train.log')
    logger.handlers[:] = [console, log_file]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        opt = {'name': 'x', 'train': {'total_iter': 3}}
        text = btrain.dict2str(opt)
        assert isinstance(text, OptionDump) and text == bopt.dict2str(opt)
        logger.info(text)
        logger.info('Start training')
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved
        console.stream.close()
        log_file.close()
    assert 'total_iter' not in (tmp_path / 'console').read_text()
    assert 'Start training' in (tmp_path / 'console').read_text()
    assert 'total_iter' in (tmp_path / 'train.log').read_text()


def test_patch_option_keys(tmp_path, monkeypatch):
    assert _state('option_keys') in DONE
    path = tmp_path / 'typo.yml'
    path.write_text(f'name: t\nmodel_type: SRModel\nnum_gpu: 0\nscale: 4\ndatasets:\n  val:\n    name: v\n'
                    f'    type: PairedImageDataset\n    dataroot_gt: {tmp_path}\n    dataroot_lq: {tmp_path}\n'
                    "    io_backend: {type: disk}\n    filename_tmp: '{}'\n")
    monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', str(path)])
    for mod in (bopt, btest):
        with pytest.raises(OptionError, match=r"'filename_tmp' \(did you mean 'filename_tmpl'\?\)") as e:
            mod.parse_options(str(tmp_path), is_train=False)
        assert str(path) in str(e.value) and 'datasets:val' in str(e.value)


def test_patch_preflight(tmp_path, monkeypatch):
    """Without it, BasicSR builds datasets and the model after make_exp_dirs moved the experiment aside; with it
    these checks fail in parse_options, before any folder exists."""
    from basicsr_ext.data import checks
    from basicsr_ext.utils.checkpoint import CheckpointError
    assert _state('preflight') in DONE
    for sub, size in (('gt', 16), ('lq', 4)):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / 'a.png'), np.zeros((size, size, 3), np.uint8))
    opt = {'name': 'pre', 'model_type': 'SRModel', 'num_gpu': 0, 'scale': 4,
           'datasets': {'train': {'name': 't', 'type': 'PairedImageDataset', 'dataroot_gt': str(tmp_path / 'gt'),
                                  'dataroot_lq': str(tmp_path / 'lq'), 'io_backend': {'type': 'disk'},
                                  'gt_size': 16, 'batch_size_per_gpu': 1}},
           'network_g': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1},
           'path': {'pretrain_network_g': None},
           'train': {'total_iter': 10, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}, 'logger': {}}
    path = tmp_path / 'o.yml'

    def parse(**changes):
        import copy
        o = copy.deepcopy(opt)
        for dotted, value in changes.items():
            node, keys = o, dotted.split('__')
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = value
        path.write_text(yaml.safe_dump(o))
        monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(path)])
        return btrain.parse_options(str(tmp_path), is_train=True)

    parsed, _ = parse()
    assert not (tmp_path / 'experiments').exists()
    assert any(parsed['datasets']['train'] == done for done in checks._PRECHECKED)  # not checked again at build
    with pytest.raises(OptionError, match=r"o.yml, network_g \(RRDBNet\): unknown key\(s\) 'num_blocks' "
                                          r"\(did you mean 'num_block'\?\)"):
        parse(network_g__num_blocks=2)
    with pytest.raises(OptionError, match=r"unknown model type 'SRModle' \(did you mean 'SRModel'\?\)"):
        parse(model_type='SRModle')
    with pytest.raises(OptionError, match=r"train:pixel_opt \(L1Loss\): unknown key\(s\) 'loss_weigth'"):
        parse(train__pixel_opt={'type': 'L1Loss', 'loss_weigth': 1.0})
    with pytest.raises(OptionError, match=r"RRDBNet needs 'num_out_ch'"):
        parse(network_g={'type': 'RRDBNet', 'num_in_ch': 3})
    with pytest.raises(DatasetError, match='dataroot_lq'):
        parse(datasets__train__dataroot_lq=str(tmp_path / 'nowhere'))
    with pytest.raises(CheckpointError, match=r'path:pretrain_network_g: checkpoint file not found'):
        parse(path__pretrain_network_g=str(tmp_path / 'nowhere.pth'))
    assert not (tmp_path / 'experiments').exists()


def test_patch_installed_root(tmp_path, monkeypatch):
    assert _state('installed_root') in DONE
    site_root = os.path.dirname(os.path.dirname(os.path.abspath(basicsr.__file__)))
    monkeypatch.chdir(tmp_path)
    clone = tmp_path / 'clone'
    clone.mkdir()
    assert patches.effective_root(site_root) == str(tmp_path)  # pip's basicsr: root_path is site-packages
    assert patches.effective_root(str(clone)) == str(clone)  # any other root (a clone) is kept
    opt_path = tmp_path / 'o.yml'
    opt_path.write_text('name: rooted\nmodel_type: SRModel\nnum_gpu: 0\ndatasets: {}\nlogger: {}\n')
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(opt_path)])
    opt, _ = btrain.parse_options(site_root, is_train=True)
    assert opt['path']['experiments_root'] == os.path.join(str(tmp_path), 'experiments', 'rooted')
    opt['root_path'] = site_root  # what train_pipeline does right after parse_options
    opt['auto_resume'] = False
    assert btrain.load_resume_state(opt) is None and opt['root_path'] == str(tmp_path)  # tb_logger/ goes here


def test_patch_resumable_sampler():
    from basicsr.data.data_sampler import EnlargedSampler

    from basicsr_ext.data import sampler
    assert _state('resumable_sampler') in DONE
    assert btrain.EnlargedSampler is sampler.ResumableEnlargedSampler
    assert issubclass(btrain.EnlargedSampler, EnlargedSampler) and EnlargedSampler.__module__ == \
        'basicsr.data.data_sampler'  # the stock class itself is unchanged
    data = list(range(10))
    full = btrain.EnlargedSampler(data, 1, 0, 2)
    full.set_epoch(1)
    order = list(full)
    resumed = btrain.EnlargedSampler(data, 1, 0, 2, resume={'epoch': 1, 'iter': 5 + 2, 'batch_size': 4,
                                                            'rng': None})  # 5 batches/epoch
    resumed.set_epoch(1)
    assert list(resumed) == order[2 * 4:]


def test_patch_dataset_checks(tmp_path):
    assert _state('dataset_checks') in DONE
    assert bdata.build_dataset is btrain.build_dataset is btest.build_dataset is basicsr.build_dataset
    opt = dict(name='ds', type='PairedImageDataset', phase='val', scale=4, io_backend={'type': 'disk'},
               dataroot_gt=str(tmp_path / 'missing'), dataroot_lq=str(tmp_path / 'missing'))
    with pytest.raises(DatasetError, match=r"dataroot_gt .*missing' does not exist"):
        bdata.build_dataset(opt)
    for sub, size in (('gt', 16), ('lq', 4)):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / 'a.png'), np.zeros((size, size, 3), np.uint8))
    ds = bdata.build_dataset(dict(opt, dataroot_gt=str(tmp_path / 'gt'), dataroot_lq=str(tmp_path / 'lq')))
    assert type(ds).__name__ == 'PairedImageDataset' and isinstance(ds, bdata.paired_image_dataset.PairedImageDataset)
    (tmp_path / 'gt' / 'a.png').write_bytes(b'\x89PNG broken')  # passes the header-free count, fails at load
    with pytest.raises(DatasetError, match=r"cannot load sample 0 \(.*a.png"):
        ds[0]


def test_patch_safe_imfrombytes():
    import basicsr.data.paired_image_dataset as paired
    import basicsr.utils as butils

    import basicsr_ext.data.gt_only_dataset as gt_only
    from basicsr_ext.data.checks import safe_imfrombytes
    assert _state('safe_imfrombytes') in DONE
    assert butils.imfrombytes is paired.imfrombytes is basicsr.imfrombytes is safe_imfrombytes
    assert not hasattr(gt_only, 'imfrombytes')  # ours read through utils.image_io, never patched
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    png = cv2.imencode('.png', img)[1].tobytes()
    assert np.array_equal(butils.imfrombytes(png), cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR))
    assert np.allclose(butils.imfrombytes(png, float32=True), img.astype(np.float32) / 255.)
    with pytest.raises(DatasetError, match='no image bytes'):
        butils.imfrombytes(None)  # stock: TypeError deep inside numpy
    with pytest.raises(DatasetError, match='cannot decode'):
        butils.imfrombytes(png[:20])  # stock: returns None


def test_patch_script_errors(monkeypatch, capsys):
    """BasicSR's train.py/test.py run as the program get an excepthook that prints a user error as one line when
    they call parse_options; an imported pipeline does not; other exceptions keep their traceback (subprocess
    cases: tests/test_untrusted/test_stock_entry_errors.py)."""
    assert _state('script_errors') in DONE
    path = os.path.join(os.path.dirname(btrain.__file__), 'train.py')
    tracebacks = []
    monkeypatch.setattr(sys, 'excepthook', lambda *exc: tracebacks.append(exc[0]))
    monkeypatch.setattr(sys, 'argv', ['train.py'])  # no -opt: argparse exits after the hook is set
    caller = compile('try:\n    parse_options(".", True)\nexcept SystemExit:\n    pass\n', path, 'exec')
    exec(caller, {'__name__': 'basicsr_fork.train', '__file__': path, 'parse_options': btrain.parse_options})
    assert not getattr(sys.excepthook, '_basicsr_ext', False)  # imported code: left alone
    exec(caller, {'__name__': '__main__', '__file__': path, 'parse_options': btrain.parse_options})
    hook = sys.excepthook
    assert getattr(hook, '_basicsr_ext', False)
    exec(caller, {'__name__': '__main__', '__file__': path, 'parse_options': btrain.parse_options})
    assert sys.excepthook is hook  # once
    capsys.readouterr()
    hook(OptionError, OptionError('bad.yml, network_g: unknown key'), None)
    assert capsys.readouterr().err == 'error: OptionError: bad.yml, network_g: unknown key\n'
    hook(ValueError, ValueError('a bug'), None)
    assert tracebacks == [ValueError] and capsys.readouterr().err == ''


def test_patch_script_pipelines():
    """A pipeline run as __main__ (python -m basicsr.train, a clone's basicsr/train.py) gets the patched names
    when it calls parse_options. Here: BasicSR's train.py executed into a fresh namespace, as runpy does."""
    assert _state('script_pipelines') in DONE
    path = os.path.join(os.path.dirname(btrain.__file__), 'train.py')
    namespace = {'__name__': 'as_a_script', '__file__': path}
    exec(compile(open(path, encoding='utf-8').read(), path, 'exec'), namespace)
    assert namespace['load_resume_state'] is not btrain.load_resume_state  # its own copy, the stock code
    assert namespace['EnlargedSampler'] is not btrain.EnlargedSampler  # imported from basicsr.data.data_sampler
    assert namespace['parse_options'] is btrain.parse_options  # imported after the patches: ours already
    assert sorted(patches.upgrade_pipeline_namespace(namespace)) == ['EnlargedSampler', 'dict2str',
                                                                     'load_resume_state']
    assert namespace['load_resume_state'] is btrain.load_resume_state
    assert namespace['EnlargedSampler'] is btrain.EnlargedSampler
    assert patches.upgrade_pipeline_namespace(namespace) == []
    # what the running pipeline does: parse_options upgrades the namespace of its caller
    fresh = {'__name__': 'as_a_script', '__file__': path}
    exec(compile(open(path, encoding='utf-8').read(), path, 'exec'), fresh)
    caller = compile('try:\n    parse_options(".", True)\nexcept SystemExit:\n    pass\n', path, 'exec')
    argv = sys.argv
    sys.argv = ['train.py']  # no -opt: argparse exits after the upgrade
    try:
        exec(caller, fresh)
    finally:
        sys.argv = argv
    assert fresh['load_resume_state'] is btrain.load_resume_state


def test_readme_lists_every_patch():
    readme = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()
    for row in patches.table(markdown=True).splitlines():
        assert row in readme, f'README table out of date (python -m basicsr_ext.patches --markdown): {row[:80]}'
