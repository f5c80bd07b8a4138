"""Every change basicsr_ext makes to BasicSR (and torchvision), in one list, applied once, in this order.

``basicsr_ext/__init__.py`` calls :func:`apply_all` before it imports anything else of ours; nothing else in the
package assigns into BasicSR or torchvision (our own modules are never patched). Each :class:`Patch` gives its
name, kind (``compat fix``: BasicSR 1.4.2 does not work on today's stack without it; ``behaviour upgrade``:
BasicSR works, ours is safer or stricter), the versions it targets, the reason, what it replaces, and the test
proving it is applied and does what it says. ``python -m basicsr_ext.patches`` prints the list with the state of
each entry in this environment (``--markdown``: the README table).

Order: the two torchvision entries run before ``import basicsr`` (BasicSR imports torchvision at once and would
crash); every later entry needs BasicSR imported and some wrap the one before (``parse_options`` is wrapped by
``safe_options`` → ``option_keys`` → ``preflight`` → ``installed_root`` → ``script_errors`` →
``script_pipelines``). Applying is idempotent: an entry already applied (by an earlier import, or by another copy of this file) is reported as
``already applied``; one this environment does not need (e.g. a torchvision whose C extension loads) as
``not needed``.

The implementations live next to what they belong to (``compat``, ``utils.options``, ``utils.checkpoint``,
``utils.training_state``, ``data.checks``, ``data.sampler``); the few lines specific to a patch are here. At its
top this module imports only the standard library, so a test can load it on its own and apply just the entries
that precede ``import basicsr`` (``apply_all(stage='before_basicsr')``) to look at stock BasicSR.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

COMPAT = 'compat fix'
UPGRADE = 'behaviour upgrade'
APPLIED, ALREADY, NOT_NEEDED, PENDING = 'applied', 'already applied', 'not needed', 'pending'
_TEST_FILE = 'tests/test_plugin/test_patches.py'

# `python -m basicsr_ext.patches` imports the package (which imports this module) before running it as __main__
warnings.filterwarnings('ignore', message=r"'basicsr_ext\.patches' found in sys\.modules", category=RuntimeWarning)


@dataclass(frozen=True)
class Patch:
    name: str
    kind: str
    targets: str
    reason: str
    changes: str
    apply: Callable[[], str]
    before_basicsr: bool = False

    @property
    def test(self) -> str:
        """The test proving this entry is applied and does what it says."""
        return f'{_TEST_FILE}::test_patch_{self.name}'


_STATE: dict[str, str] = {}
_KEEP: list[Any] = []  # objects that must stay alive (the torch.library.Library holding torchvision's op schemas)


def _ours(name: str):
    """``basicsr_ext.<name>``. When this file was loaded on its own (see the docstring), ``compat`` (which imports
    nothing of ours) is loaded from its file too; the entries after ``import basicsr`` need the package."""
    if __name__ in ('basicsr_ext.patches', '__main__'):
        return importlib.import_module(f'basicsr_ext.{name}')
    if name != 'compat':
        raise RuntimeError(f'{__name__} was loaded without its package: only the entries before `import basicsr` '
                           "can be applied (apply_all(stage='before_basicsr'))")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'compat.py')
    spec = importlib.util.spec_from_file_location(f'{__name__}_compat', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rebind(name: str, old: Any, new: Any, modules: Iterable[str] | None = None) -> list[str]:
    """Replace ``name`` by ``new`` in every loaded BasicSR module (or in ``modules``) that holds ``old``.

    BasicSR's modules import names from each other (``from basicsr.utils import imfrombytes``) and ``basicsr``
    star-imports ``train`` and ``test``: a replacement must reach every copy of the name, not only its home.
    """
    done = []
    names = list(modules) if modules is not None else [
        m for m in list(sys.modules) if m == 'basicsr' or m.startswith('basicsr.')]
    for modname in names:
        mod = sys.modules.get(modname)
        if mod is not None and getattr(mod, name, None) is old:
            setattr(mod, name, new)
            done.append(modname)
    return done


# ----------------------------------------------------------------------------------------------------------
# before `import basicsr`
# ----------------------------------------------------------------------------------------------------------
def _torchvision_ops() -> str:
    import torch
    if 'torchvision' in sys.modules:  # imported already: by us (another copy of this file) or it loads fine
        ops = sys.modules.get('torchvision.ops')
        return ALREADY if getattr(getattr(ops, 'nms', None), '_basicsr_ext', False) else NOT_NEEDED
    spec = importlib.util.find_spec('torchvision')
    if spec is None or spec.origin is None:
        return NOT_NEEDED
    compat = _ours('compat')
    if compat.torchvision_extension_loads(os.path.dirname(spec.origin)):
        return NOT_NEEDED
    lib = torch.library.Library('torchvision', 'DEF')
    lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    lib.impl('nms', compat.nms_reference, 'CPU')
    _KEEP.append(lib)
    import torchvision.ops  # imports cleanly now
    import torchvision.ops.boxes

    def nms(boxes, scores, iou_threshold):  # torchvision.ops.nms itself asserts the C extension
        return torch.ops.torchvision.nms(boxes, scores, iou_threshold)

    nms._basicsr_ext = True
    torchvision.ops.nms = torchvision.ops.boxes.nms = nms
    return APPLIED


def _functional_tensor() -> str:
    old, new = 'torchvision.transforms.functional_tensor', 'torchvision.transforms._functional_tensor'
    try:
        module = importlib.import_module(old)
    except ModuleNotFoundError:
        sys.modules[old] = importlib.import_module(new)
        return APPLIED
    return ALREADY if module is sys.modules.get(new) else NOT_NEEDED


# ----------------------------------------------------------------------------------------------------------
# after `import basicsr`
# ----------------------------------------------------------------------------------------------------------
def _dist_cpu() -> str:
    import basicsr.models.base_model as base_model
    import basicsr.utils.dist_util as dist_util
    if getattr(dist_util.init_dist, '_basicsr_ext', False):
        return ALREADY
    compat = _ours('compat')
    _rebind('init_dist', dist_util.init_dist, compat.make_init_dist(dist_util.init_dist))
    base_model.BaseModel.model_to_device = compat.model_to_device
    return APPLIED


def _resume_cpu() -> str:
    import basicsr.train as btrain
    if getattr(btrain.load_resume_state, '_basicsr_ext', False):
        return ALREADY
    _STOCK['load_resume_state'] = btrain.load_resume_state
    checkpoint = _ours('utils.checkpoint')
    ours = _ours('compat').make_load_resume_state(checkpoint.load_checkpoint,
                                                  _ours('utils.training_state').usable_state_problem,
                                                  checkpoint.CheckpointError)
    _rebind('load_resume_state', btrain.load_resume_state, ours)
    return APPLIED


def _safe_load_network() -> str:
    import basicsr.models.base_model as base_model
    ours = _ours('utils.checkpoint').load_network
    if base_model.BaseModel.load_network is ours:
        return ALREADY
    _STOCK['load_network'] = base_model.BaseModel.load_network
    base_model.BaseModel.load_network = ours
    return APPLIED


#: BasicSR modules that call ``torch.load`` (tests/test_untrusted/test_basicsr_weight_files.py checks that this
#: list covers every BasicSR module whose source does): their ``torch`` becomes :class:`_WeightsOnlyTorch`. The two
#: other callers' functions are replaced whole: BaseModel.load_network (safe_load_network) and
#: basicsr.train.load_resume_state (resume_cpu).
_TORCH_LOAD_MODULES = ('basicsr.archs.vgg_arch', 'basicsr.archs.spynet_arch', 'basicsr.archs.basicvsr_arch',
                       'basicsr.archs.tof_arch', 'basicsr.archs.dfdnet_arch', 'basicsr.archs.inception')


class _WeightsOnlyTorch(type(sys)):
    """``torch`` as BasicSR's modules listed in ``_TORCH_LOAD_MODULES`` see it: ``load`` is
    ``utils.checkpoint.weights_only_load``; every other attribute is torch's own (read through, never copied)."""

    def __init__(self, torch_module: Any, load: Callable) -> None:
        super().__init__('torch', torch_module.__doc__)
        self.__dict__.update(_basicsr_ext_torch=torch_module, load=load, __spec__=torch_module.__spec__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__['_basicsr_ext_torch'], name)


class _SafePretrainedVGG(type(sys)):
    """``torchvision.models.vgg`` as ``basicsr.archs.vgg_arch`` sees it: ``vgg19(pretrained=True)`` (what
    VGGFeatureExtractor calls when ``VGG_PRETRAIN_PATH`` is missing) builds the net without weights and loads
    torchvision's released file through ``utils.checkpoint.load_hub_weights`` (weights-only, finite, an offline
    miss names the file and the folders); every other attribute is torchvision's own."""

    def __init__(self, vgg_module: Any, load_hub_weights: Callable) -> None:
        super().__init__(vgg_module.__name__, vgg_module.__doc__)
        self.__dict__.update(_basicsr_ext_vgg=vgg_module, _basicsr_ext_load=load_hub_weights)

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.__dict__['_basicsr_ext_vgg'], name)
        if not (name.startswith('vgg') and callable(real)):
            return real
        load = self.__dict__['_basicsr_ext_load']

        def build(*args: Any, pretrained: bool = False, **kwargs: Any) -> Any:
            kwargs.pop('weights', None)
            net = real(*args, weights=None, **kwargs)
            if pretrained:
                url, also = _ours('preflight').released_vgg(name)
                net.load_state_dict(load(url, check_hash=True, progress=True, also=also))
            return net

        build.__name__ = name
        return build


def _safe_basicsr_loads() -> str:
    import basicsr.archs.inception  # noqa: F401  (the FID network: not imported by `import basicsr`)
    import basicsr.archs.vgg_arch as vgg_arch
    import torch
    checkpoint = _ours('utils.checkpoint')
    if '_basicsr_ext_torch' in getattr(getattr(vgg_arch, 'torch', None), '__dict__', {}):
        return ALREADY  # applied by this module or by another copy of it
    safe_torch = _WeightsOnlyTorch(torch, checkpoint.weights_only_load)
    _rebind('torch', torch, safe_torch, modules=_TORCH_LOAD_MODULES)
    inception = sys.modules['basicsr.archs.inception']
    _STOCK['load_url'] = inception.load_url
    _rebind('load_url', inception.load_url, checkpoint.load_hub_weights, modules=['basicsr.archs.inception'])
    _STOCK['vgg'] = vgg_arch.vgg
    vgg_arch.vgg = _SafePretrainedVGG(vgg_arch.vgg, checkpoint.load_hub_weights)
    return APPLIED


def _atomic_exact_resume() -> str:
    import basicsr.models.base_model as base_model
    checkpoint, state = _ours('utils.checkpoint'), _ours('utils.training_state')
    base = base_model.BaseModel
    if base.save_training_state is state.save_training_state:
        return ALREADY
    for name, new in (('save_network', checkpoint.save_network), ('save_training_state', state.save_training_state),
                      ('resume_training', state.resume_training)):
        _STOCK[name] = getattr(base, name)
        setattr(base, name, new)
    return APPLIED


def _safe_options() -> str:
    import basicsr.utils.options as bopt
    ours = _ours('utils.options')
    if getattr(bopt.ordered_yaml, '__module__', '') == ours.__name__:
        return ALREADY
    _STOCK['parse_options'] = bopt.parse_options
    _rebind('parse_options', bopt.parse_options, ours.parse_options)
    _rebind('ordered_yaml', bopt.ordered_yaml, ours.ordered_yaml)
    if hasattr(bopt, 'yaml_load'):  # BasicSR after 1.4.2
        _rebind('yaml_load', bopt.yaml_load, ours.yaml_load)
    return APPLIED


def _wrap_parse_options(marker: str, wrap: Callable[[Callable], Callable]) -> str:
    """Wrap the current ``parse_options`` everywhere BasicSR holds it (the wrapper carries ``marker`` and the
    inner ones' markers)."""
    import basicsr.utils.options as bopt
    current = bopt.parse_options
    probe = current
    while probe is not None:
        if getattr(probe, marker, False):
            return ALREADY
        probe = getattr(probe, '__wrapped__', None)
    new = functools.update_wrapper(wrap(current), current)  # keeps the inner markers, sets __wrapped__
    setattr(new, marker, True)
    _rebind('parse_options', current, new)
    return APPLIED


def _quiet_option_dump() -> str:
    import basicsr.utils.options as bopt
    if getattr(bopt.dict2str, '_basicsr_ext', False):
        return ALREADY
    stock = bopt.dict2str
    _STOCK['dict2str'] = stock
    # only the pipelines' copies: dict2str calls itself through basicsr.utils.options (nested blocks)
    _rebind('dict2str', stock, _ours('utils.options').make_dict2str(stock),
            modules=['basicsr.train', 'basicsr.test', 'basicsr'])
    return APPLIED


def _option_keys() -> str:
    checks = _ours('data.checks')
    return _wrap_parse_options('_basicsr_ext_keys_checked', checks._checked_parse_options)


def _preflight() -> str:
    return _wrap_parse_options('_basicsr_ext_preflight', _ours('preflight').checked_parse_options)


def effective_root(root_path: Any) -> Any:
    """The folder BasicSR's pipelines write ``experiments/``, ``results/`` and ``tb_logger/`` under.

    BasicSR's ``train.py``/``test.py`` pass the folder above the ``basicsr`` package: a clone's root, but
    ``site-packages`` for an installed basicsr (``python -m basicsr.train``). That one becomes the current working
    directory, where our entry points write and where ``--auto_resume`` looks; any other folder is kept.
    """
    if not isinstance(root_path, (str, os.PathLike)):
        return root_path
    basicsr = sys.modules.get('basicsr')
    if basicsr is None or not getattr(basicsr, '__file__', None):
        return root_path
    parent = os.path.dirname(os.path.dirname(os.path.abspath(basicsr.__file__)))
    if _same_dir(root_path, parent) and _is_site_dir(parent):
        return os.getcwd()
    return root_path


def _same_dir(a: Any, b: Any) -> bool:
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _is_site_dir(path: str) -> bool:
    import site
    import sysconfig
    dirs = list(getattr(site, 'getsitepackages', lambda: [])())
    dirs += [getattr(site, 'getusersitepackages', lambda: '')()]
    dirs += [sysconfig.get_paths().get(k, '') for k in ('purelib', 'platlib')]
    return os.path.basename(os.path.normpath(path)) in ('site-packages', 'dist-packages') or \
        any(d and _same_dir(path, d) for d in dirs)


def _installed_root() -> str:
    import basicsr.train as btrain

    def wrap_parse(parse):
        def parse_options(root_path, is_train=True):
            return parse(effective_root(root_path), is_train=is_train)
        return parse_options

    state = _wrap_parse_options('_basicsr_ext_root', wrap_parse)
    if not getattr(btrain.load_resume_state, '_basicsr_ext_root', False):
        inner = btrain.load_resume_state

        def load_resume_state(opt):  # train_pipeline sets opt['root_path'] after parse_options (tb_logger/)
            if 'root_path' in opt:
                opt['root_path'] = effective_root(opt['root_path'])
            return inner(opt)

        load_resume_state._basicsr_ext = load_resume_state._basicsr_ext_root = True
        load_resume_state.__wrapped__ = inner
        _rebind('load_resume_state', inner, load_resume_state)
        state = APPLIED
    return state


def _resumable_sampler() -> str:
    import basicsr.train as btrain
    from basicsr.data.data_sampler import EnlargedSampler
    resumable, training_state = _ours('data.sampler').ResumableEnlargedSampler, _ours('utils.training_state')
    if btrain.EnlargedSampler is resumable:
        return ALREADY
    _STOCK['EnlargedSampler'] = EnlargedSampler
    _rebind('EnlargedSampler', EnlargedSampler, resumable, modules=['basicsr.train', 'basicsr'])
    inner = btrain.load_resume_state

    def load_resume_state(opt):  # the pipeline builds its train sampler next: hand it the state's resume point
        state = inner(opt)
        _hand_resume_point(sys._getframe(1).f_globals, resumable, training_state.resume_point(state, opt))
        return state

    load_resume_state._basicsr_ext = True
    load_resume_state._basicsr_ext_root = getattr(inner, '_basicsr_ext_root', False)  # entry installed_root: done
    load_resume_state.__wrapped__ = inner
    _rebind('load_resume_state', inner, load_resume_state)
    return APPLIED


def _hand_resume_point(namespace: dict, resumable: type, point: Any) -> None:
    """The calling pipeline's next ``EnlargedSampler(...)`` becomes ``resumable(..., resume=point)``, once (its
    name is ours or such a one-shot; a pipeline with a sampler of its own is left alone)."""
    current = namespace.get('EnlargedSampler')
    if current is not resumable and not getattr(current, '_basicsr_ext_resume', False):
        return
    if point is None:
        namespace['EnlargedSampler'] = resumable
        return

    def sampler_resuming(*args, **kwargs):
        namespace['EnlargedSampler'] = resumable
        return resumable(*args, resume=point, **kwargs)

    sampler_resuming._basicsr_ext_resume = True
    namespace['EnlargedSampler'] = sampler_resuming


def _dataset_checks() -> str:
    import basicsr.data as bdata
    if getattr(bdata.build_dataset, '_basicsr_ext_checked', False):
        return ALREADY
    checks = _ours('data.checks')
    stock = bdata.build_dataset
    _STOCK['build_dataset'] = stock

    def build_dataset(dataset_opt):
        return checks.checked_build_dataset(dataset_opt, _build=stock)

    build_dataset._basicsr_ext_checked = True
    build_dataset.__wrapped__ = stock
    build_dataset.__doc__ = checks.checked_build_dataset.__doc__
    _rebind('build_dataset', stock, build_dataset)
    return APPLIED


def _safe_imfrombytes() -> str:
    import basicsr.utils.img_util as bimg
    safe = _ours('data.checks').safe_imfrombytes
    if bimg.imfrombytes is safe:
        return ALREADY
    _STOCK['imfrombytes'] = bimg.imfrombytes
    _rebind('imfrombytes', bimg.imfrombytes, safe)
    return APPLIED


#: BasicSR objects an entry replaced (stock originals), for :func:`upgrade_pipeline_namespace`
_STOCK: dict[str, Any] = {}


def _is_stock_copy(fn: Any, stock: Any) -> bool:
    """``fn`` is BasicSR's function ``stock`` as defined again by a script run as ``__main__`` (same code), or
    the same function of a BasicSR clone's ``basicsr/train.py``."""
    code, ref = getattr(fn, '__code__', None), getattr(stock, '__code__', None)
    if code is None or ref is None or getattr(fn, '__name__', None) != stock.__name__:
        return False
    if code.co_code == ref.co_code and code.co_names == ref.co_names:
        return True
    return code.co_filename.replace('\\', '/').endswith('basicsr/train.py')


def upgrade_pipeline_namespace(namespace: dict) -> list[str]:
    """Give a pipeline run as a script the names the entries above gave ``basicsr.train`` / ``basicsr.test``.

    ``python -m basicsr.train`` and a clone's ``python basicsr/train.py`` run ``train.py`` as ``__main__``: a
    second namespace, with its own ``load_resume_state`` and the names it imported (``EnlargedSampler``, …)
    before any of its functions ran. Called with that namespace when its pipeline calls ``parse_options``
    (before it uses any of them); replaces only stock BasicSR objects (or identical copies). Returns the names.
    """
    if namespace.get('__name__') in ('basicsr.train', 'basicsr.test'):
        return []
    import basicsr.train as btrain
    done = []
    for name, current in (('load_resume_state', btrain.load_resume_state), ('EnlargedSampler', btrain.EnlargedSampler),
                          ('build_dataset', btrain.build_dataset), ('parse_options', btrain.parse_options),
                          ('dict2str', btrain.dict2str)):
        stock, value = _STOCK.get(name), namespace.get(name)
        if stock is None or value is None or value is current:
            continue
        if value is stock or (name == 'load_resume_state' and _is_stock_copy(value, stock)):
            namespace[name] = current
            done.append(name)
    return done


def _pipeline_namespace() -> dict:
    """The globals of the code that called ``parse_options`` (the first frame outside basicsr_ext's wrappers)."""
    frame = sys._getframe(1)
    while frame is not None and str(frame.f_globals.get('__name__', '')).startswith('basicsr_ext'):
        frame = frame.f_back
    return frame.f_globals if frame is not None else {}


def is_stock_script(namespace: dict) -> bool:
    """``namespace`` is BasicSR's ``train.py``/``test.py`` run as the program (``python -m basicsr.train``, a clone's
    ``python basicsr/train.py``), not a module imported by other code."""
    path = str(namespace.get('__file__') or '').replace('\\', '/')
    return namespace.get('__name__') == '__main__' and path.endswith(('basicsr/train.py', 'basicsr/test.py'))


def user_error_hook(previous: Callable) -> Callable:
    """A ``sys.excepthook`` printing an uncaught user error (``basicsr_ext.USER_ERRORS``: options, checkpoints,
    data, a NaN loss) as the one line our entry points print, ``error: <Type>: <message>``; the interpreter still
    exits with status 1. Any other exception goes to ``previous`` (a traceback)."""
    def excepthook(exc_type, exc, tb):
        errors = getattr(sys.modules.get('basicsr_ext'), 'USER_ERRORS', ())
        if errors and isinstance(exc_type, type) and issubclass(exc_type, errors):
            sys.stdout.flush()
            sys.stderr.write(f'error: {exc_type.__name__}: {exc}\n')
            sys.stderr.flush()
            return
        previous(exc_type, exc, tb)

    excepthook._basicsr_ext = True
    return excepthook


def _script_errors() -> str:
    def wrap(parse):
        def parse_options(root_path, is_train=True):
            if is_stock_script(_pipeline_namespace()) and not getattr(sys.excepthook, '_basicsr_ext', False):
                sys.excepthook = user_error_hook(sys.excepthook)
            return parse(root_path, is_train=is_train)
        return parse_options

    return _wrap_parse_options('_basicsr_ext_script_errors', wrap)


def _script_pipelines() -> str:
    def wrap(parse):
        def parse_options(root_path, is_train=True):
            upgrade_pipeline_namespace(sys._getframe(1).f_globals)
            return parse(root_path, is_train=is_train)
        return parse_options

    return _wrap_parse_options('_basicsr_ext_scripts', wrap)


# ----------------------------------------------------------------------------------------------------------
# the list
# ----------------------------------------------------------------------------------------------------------
PATCHES: tuple[Patch, ...] = (
    Patch('torchvision_ops', COMPAT, 'torchvision 0.28.0 (+cu130 wheel) next to torch 2.13.0+cpu; any torchvision '
          'whose C extension cannot load',
          "torchvision's compiled ops need CUDA libraries a CPU torch lacks; then `import torchvision` (so "
          "`import basicsr`) crashes with 'operator torchvision::nms does not exist'",
          'defines the torchvision::nms/qnms op schemas with a pure-torch CPU nms and points torchvision.ops.nms at '
          'it; only when the extension fails to load',
          _torchvision_ops, before_basicsr=True),
    Patch('functional_tensor', COMPAT, 'basicsr 1.4.2 with torchvision >= 0.17',
          'basicsr/data/degradations.py imports torchvision.transforms.functional_tensor, renamed '
          '_functional_tensor in torchvision 0.17: `import basicsr` fails',
          "sys.modules['torchvision.transforms.functional_tensor'] = the renamed module (only when missing)",
          _functional_tensor, before_basicsr=True),
    Patch('dist_cpu', COMPAT, 'basicsr 1.4.2 on a CPU-only torch (torchrun/slurm)',
          'init_dist calls torch.cuda.set_device and uses NCCL (ZeroDivisionError on CPU); model_to_device gives '
          'DDP a CUDA device id',
          'init_dist (basicsr.utils.dist_util, basicsr.utils.options): gloo without CUDA, the original with it; '
          'BaseModel.model_to_device: DDP without device_ids on CPU',
          _dist_cpu),
    Patch('resume_cpu', COMPAT, 'basicsr 1.4.2',
          'load_resume_state maps the state to torch.cuda.current_device() (fails on CPU), unpickles it fully, '
          'and --auto_resume looks in ./experiments whatever root the pipeline writes to',
          "basicsr.train.load_resume_state: reads opt['path']['training_states'], weights-only, on the GPU in use "
          'or the CPU; --auto_resume takes the newest usable state (an unreadable one, or one whose network file is '
          'missing, is skipped with a warning)',
          _resume_cpu),
    Patch('safe_load_network', UPGRADE, 'basicsr 1.4.2 (every model: path.pretrain_network_*)',
          'BaseModel.load_network calls torch.load without weights_only: a pickle payload in a downloaded .pth runs '
          'code whenever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (else a traceback); NaN/inf weights load silently and '
          'give black images',
          'BaseModel.load_network: weights_only=True passed explicitly (the environment variable cannot override '
          'it), weights checked finite (the first bad tensor named), one CheckpointError naming the file; the '
          'file and key loaded are logged (training states: entry resume_cpu)',
          _safe_load_network),
    Patch('safe_basicsr_loads', UPGRADE, 'basicsr 1.4.2 (VGGFeatureExtractor: PerceptualLoss; SpyNet, BasicVSR, '
          'TOF, DFDNet; the FID Inception)',
          'besides load_network and the training state, BasicSR\'s archs call torch.load without weights_only '
          '(VGG_PRETRAIN_PATH, spynet_path/load_path, the DFDNet dictionary) and torchvision\'s '
          'vgg19(pretrained=True) / load_url unpickle fully: a pickle payload in such a file runs code whenever '
          'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (else a traceback); offline, a missing VGG file is a URLError '
          'traceback',
          "torch.load as seen by every BasicSR module calling it (a torch whose load is weights-only whatever the "
          'arguments or the environment say, weights checked finite, one CheckpointError naming the file); '
          'vgg_arch\'s torchvision vgg*(pretrained=True) and inception\'s load_url: the released file from torch '
          "hub's folder, weights-only; missing offline: a CheckpointError naming the file, the URL and where to "
          'put it',
          _safe_basicsr_loads),
    Patch('atomic_exact_resume', UPGRADE, 'basicsr 1.4.2 (every model)',
          'a kill while saving leaves a half-written net_g_N.pth or a 0-byte N.state under the final name (the '
          'latter stops --auto_resume); a failed save is only a warning; a resumed run draws other random crops '
          'than an uninterrupted one',
          'BaseModel.save_network / save_training_state: temporary file + rename, an error naming the file when '
          'the write fails; the state also holds the RNG states of every rank (the resumable sampler restores '
          'them: entry resumable_sampler); load_resume_state (entry resume_cpu): --auto_resume skips unreadable '
          'states, with a warning',
          _atomic_exact_resume),
    Patch('safe_options', UPGRADE, 'basicsr 1.4.2 (and yaml_load of later BasicSR)',
          'option files are parsed with the full YAML loader: a !!python/object tag in a downloaded .yml runs '
          'code; --force_yml goes through exec',
          'parse_options, ordered_yaml, yaml_load (basicsr.utils.options and every BasicSR module that imported '
          'them): the safe ordered loader (file and line named), --force_yml values parsed as YAML data and applied '
          'before seeding (BasicSR seeds first: --force_yml manual_seed=N changed nothing)',
          _safe_options),
    Patch('quiet_option_dump', UPGRADE, 'basicsr 1.4.2 (train_pipeline, test_pipeline)',
          'the pipelines log every option (about 200 lines) to the console as well as to the log file: an error '
          'a few lines later scrolls away behind them',
          'dict2str in basicsr.train and basicsr.test: the dump goes to the log file only (the console handlers of '
          "BasicSR's logger drop it while a log file is written)",
          _quiet_option_dump),
    Patch('option_keys', UPGRADE, 'basicsr 1.4.2',
          'a misspelt or misplaced dataset/degradation key is silently ignored and the run trains something '
          'else',
          'parse_options is followed by the option-key check (did-you-mean naming the file and block)',
          _option_keys),
    Patch('preflight', UPGRADE, 'basicsr 1.4.2 (train_pipeline, test_pipeline)',
          'make_exp_dirs moves an existing experiments/<name> (results/<name>) aside before the datasets and the '
          'model are built: a mistyped network key, a missing dataset folder or checkpoint archives the good '
          'experiment, then fails with a traceback',
          'parse_options is followed by every check the options allow, before any folder is touched: model_type, '
          'network_* and loss blocks against the constructor (did-you-mean), our models\' option checks, the '
          'dataset checks (not repeated at build), pretrain_network_* files read weights-only and finite, the '
          'weights of every train: loss block (PerceptualLoss\'s VGG, LPIPSLoss, AESOPLoss\'s AE) on disk, a '
          'missing VGG fetched into torch hub\'s cache first (temporary name, renamed; offline: one line naming '
          'the file, its URL and the folders); then a training run\'s models/ and training_states/ lose the '
          '.<name>.<random>.tmp files a kill while saving left there (one line with the count)',
          _preflight),
    Patch('installed_root', UPGRADE, 'basicsr installed from PyPI (python -m basicsr.train / basicsr.test)',
          "train.py/test.py use the folder above the basicsr package as root: for an installed basicsr, "
          "experiments/, results/ and tb_logger/ would be written into site-packages",
          'parse_options and load_resume_state: a root that is the site-packages folder holding basicsr becomes '
          'the current working directory (a clone keeps its root)',
          _installed_root),
    Patch('resumable_sampler', UPGRADE, 'basicsr 1.4.2',
          'after a resume BasicSR restarts the interrupted epoch from its first sample',
          'basicsr.train.EnlargedSampler: ResumableEnlargedSampler; load_resume_state hands the train sampler '
          'the pipeline builds next the resume point of the state (it skips the consumed samples and restores '
          'the saved RNG states); basicsr.data.data_sampler keeps the stock class',
          _resumable_sampler),
    Patch('dataset_checks', UPGRADE, 'basicsr 1.4.2',
          'missing folders, GT/LQ mismatches, broken LMDB meta-info and bad samples surface iterations later as '
          'AssertionError/ZeroDivisionError/NoneType errors',
          'build_dataset (basicsr.data, basicsr.train, basicsr.test): options checked at build, empty-dataset '
          'error, and the dataset becomes a same-named subclass whose sample errors name the file',
          _dataset_checks),
    Patch('safe_imfrombytes', UPGRADE, 'basicsr 1.4.2',
          'imfrombytes returns None for missing or undecodable bytes (a later NoneType error) and decodes any '
          'declared size',
          'imfrombytes in basicsr.utils and every BasicSR module that imported it (not ours): an error naming the '
          'problem, and the pixel limit checked from the header first; same pixels for valid images',
          _safe_imfrombytes),
    Patch('script_errors', UPGRADE, 'basicsr 1.4.2 train.py/test.py run as the program',
          'python -m basicsr.train / basicsr.test or a clone\'s basicsr/train.py end a mistyped key, a missing '
          'dataset folder or a bad checkpoint with a Python traceback (basicsr-ext-train prints one line)',
          'parse_options, when BasicSR\'s own train.py/test.py runs as __main__ and calls it: sys.excepthook '
          'prints an uncaught user error (OptionError, ConfigError, CheckpointError, DatasetError, ImageError, '
          'NonFiniteLossError) as one `error: <Type>: <message>` line (exit status 1); other exceptions keep '
          'their traceback; imported pipelines (a fork calling train_pipeline) are left alone',
          _script_errors),
    Patch('script_pipelines', COMPAT, 'basicsr 1.4.2 train.py/test.py run as scripts',
          'python -m basicsr.train or a clone\'s basicsr/train.py run train.py as __main__, with its own '
          'load_resume_state and names imported before anything of the entries above reached them',
          'parse_options, when a pipeline calls it: that pipeline\'s stock load_resume_state, EnlargedSampler, '
          'build_dataset, parse_options and dict2str become those of basicsr.train',
          _script_pipelines),
)


def apply_all(stage: str = 'all') -> dict[str, str]:
    """Apply every entry in order, each once; returns :func:`status`.

    ``stage='before_basicsr'`` stops before the first entry that imports BasicSR.
    """
    if stage not in ('all', 'before_basicsr'):
        raise ValueError(f"stage must be 'all' or 'before_basicsr', got {stage!r}")
    for patch in PATCHES:
        if stage == 'before_basicsr' and not patch.before_basicsr:
            break
        if patch.name not in _STATE:
            _STATE[patch.name] = patch.apply()
    return status()


def status() -> dict[str, str]:
    """``{name: applied | already applied | not needed | pending}`` in list order."""
    return {p.name: _STATE.get(p.name, PENDING) for p in PATCHES}


def table(markdown: bool = False) -> str:
    states = status()
    if markdown:
        rows = ['| # | patch | kind | targets | why | what it changes |', '|---|---|---|---|---|---|']
        rows += [f'| {i} | `{p.name}` | {p.kind} | {p.targets} | {p.reason} | {p.changes} |'
                 for i, p in enumerate(PATCHES, 1)]
        return '\n'.join(rows)
    out = []
    for i, p in enumerate(PATCHES, 1):
        out.append(f'{i:2d}. {p.name} [{p.kind}] — {states[p.name]}\n    targets: {p.targets}\n    why: {p.reason}\n'
                   f'    changes: {p.changes}\n    test: {p.test}')
    return '\n'.join(out)


def main(argv: list[str] | None = None) -> None:
    import argparse
    parser = argparse.ArgumentParser(prog='python -m basicsr_ext.patches', description=__doc__.splitlines()[0])
    parser.add_argument('--markdown', action='store_true', help='print the README table')
    args = parser.parse_args(argv)
    print(table(markdown=args.markdown))


if __name__ == '__main__':
    from basicsr_ext import patches as _package_copy  # the module the package applied (its state), not this copy

    _package_copy.main()
