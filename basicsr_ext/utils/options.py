"""Option files are data: a safe YAML loader with BasicSR's semantics, and BasicSR's ``parse_options`` on it.

PyPI basicsr 1.4.2 parses option files with PyYAML's full (C)Loader, so a ``!!python/object/apply`` tag in
a downloaded ``.yml`` runs code, and ``--force_yml`` goes through ``exec``. Here the same options are parsed
with a SafeLoader that keeps ordered mappings, ``~``, ``!!float 2e-4`` and anchors; any other tag stops
with the file, line and tag named, before anything is constructed. ``basicsr_ext.patches`` (entry
``safe_options``) puts :func:`parse_options`, :func:`ordered_yaml` and :func:`yaml_load` in place of BasicSR's.
"""
from __future__ import annotations

import argparse
import logging
import os
import os.path as osp
import random
import re
from collections import OrderedDict
from typing import Any, Callable

import yaml


class OptionError(ValueError):
    """An option file or option value that cannot be accepted."""


class ConfigError(ValueError):
    """Options that cannot work together (a model's checks), found before the first iteration."""


class SafeOrderedLoader(yaml.SafeLoader):
    """yaml.SafeLoader whose mappings are OrderedDicts (BasicSR's `ordered_yaml` semantics, minus code)."""


def _construct_mapping(loader: SafeOrderedLoader, node: yaml.MappingNode) -> OrderedDict:
    loader.flatten_mapping(node)
    return OrderedDict(loader.construct_pairs(node))


def _refuse_tag(loader: SafeOrderedLoader, tag_suffix: str, node: yaml.Node) -> Any:
    mark = node.start_mark
    raise OptionError(f'{mark.name}, line {mark.line + 1}: tag {node.tag!r} is not allowed in option files '
                      '(they are data: only plain YAML values, ~ and !!float are accepted); nothing was executed')


SafeOrderedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
SafeOrderedLoader.add_multi_constructor('', _refuse_tag)  # every tag SafeLoader does not know
SafeOrderedLoader.add_multi_constructor('tag:yaml.org,2002:python/', _refuse_tag)


MAX_OPTION_NODES = 1_000_000  # containers + scalars after alias expansion; real option files have a few hundred


def _check_expanded_size(data: Any, name: str) -> None:
    """Refuse alias bombs ("billion laughs") and self-referencing aliases before BasicSR walks the options.

    PyYAML shares aliased objects, so loading is cheap, but BasicSR's ``dict2str``/``deepcopy``/logging would
    expand them. Counted without recursion, each shared object once (memoised by id).
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        obj, done = stack.pop()
        if not isinstance(obj, (dict, list)):
            continue
        oid = id(obj)
        children = list(obj.values()) if isinstance(obj, dict) else obj
        if done:
            on_path.discard(oid)
            total = 1 + sum(sizes.get(id(c), 1) for c in children)
            if total > MAX_OPTION_NODES:
                raise OptionError(f'{name}: the options expand to more than {MAX_OPTION_NODES} values through '
                                  'YAML aliases (an alias bomb?); refused')
            sizes[oid] = total
            continue
        if oid in sizes:
            continue
        if oid in on_path:
            raise OptionError(f'{name}: a YAML alias refers to itself (recursive structure); refused')
        on_path.add(oid)
        stack.append((obj, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list)) and id(c) not in sizes)


def yaml_load_safe(stream: Any, name: str = '<string>') -> Any:
    """Parse YAML text or an open file with SafeOrderedLoader; errors name the file and line.

    Every failure is an OptionError: syntax, refused tags, bad ``!!float``/``!!int`` values, unhashable keys,
    nesting too deep for the parser, alias bombs and recursive aliases.
    """
    loader = None
    try:
        loader = SafeOrderedLoader(stream)
        if name != '<string>':
            loader.name = name
        data = loader.get_single_data()
    except (OptionError, UnicodeDecodeError):
        raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f'{name}, line {mark.line + 1}' if mark is not None else name
        raise OptionError(f'{where}: invalid YAML: {e.problem or e}') from None
    except yaml.YAMLError as e:
        raise OptionError(f'{name}: invalid YAML: {str(e)[:300]}') from None
    except RecursionError:
        raise OptionError(f'{name}: invalid YAML: nested too deeply') from None
    except (ValueError, TypeError, AttributeError, OverflowError, IndexError, KeyError) as e:
        raise OptionError(f'{name}: invalid YAML value ({type(e).__name__}: {str(e)[:200]})') from None
    finally:
        if loader is not None:
            loader.dispose()
    _check_expanded_size(data, name)
    return data


MAX_OPTION_FILE_BYTES = 1_000_000  # 1 MB: the largest real option files are a few kB


def did_you_mean(key: Any, allowed) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``allowed`` to ``key``, or ''. The one suggestion helper of every
    unknown-key message (train keys, dataset/degradation blocks, network and loss kwargs, registry names)."""
    import difflib
    close = difflib.get_close_matches(str(key), sorted(allowed), 1)
    return f' (did you mean {close[0]!r}?)' if close else ''


def load_option_file(path: str) -> OrderedDict:
    """Read an option file safely; a missing file, a file over :data:`MAX_OPTION_FILE_BYTES`, invalid YAML or a
    non-mapping top level is an OptionError."""
    if not osp.isfile(path):
        raise OptionError(f'option file not found: {path}')
    size = osp.getsize(path)
    if size > MAX_OPTION_FILE_BYTES:
        raise OptionError(f'{path}: {size} bytes, over the {MAX_OPTION_FILE_BYTES}-byte (1 MB) limit for option '
                          'files (real ones are a few kB): not an option file?')
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml_load_safe(f, name=path)
    except UnicodeDecodeError as e:
        raise OptionError(f'{path}: not a UTF-8 text file ({e.reason})') from None
    if not isinstance(opt, dict):
        raise OptionError(f'{path}: the top level must be a mapping of options, got {type(opt).__name__}')
    return opt


def _set_by_path(opt: dict, entry: str) -> None:
    """Apply one ``--force_yml a:b=value`` (value parsed as a safe YAML scalar; no exec)."""
    if '=' not in entry:
        raise OptionError(f'--force_yml {entry!r}: expected key:subkey=value')
    keys, value = entry.split('=', 1)
    parts = [k.strip() for k in keys.strip().split(':')]
    value = yaml_load_safe(value.strip(), name=f'--force_yml {entry}')
    node = opt
    for k in parts[:-1]:
        if not isinstance(node, dict) or k not in node:
            raise OptionError(f'--force_yml {entry!r}: option {":".join(parts)} has no parent key {k!r}')
        node = node[k]
    node[parts[-1]] = value


def _dict_check(opt: dict, path: str) -> None:
    for key in ('name', 'datasets'):
        if key not in opt:
            raise OptionError(f'{path}: missing top-level key {key!r}')
    opt.setdefault('path', OrderedDict())
    opt.setdefault('num_gpu', 0)
    if opt['path'] is None:
        opt['path'] = OrderedDict()
    _type_check(opt, path)


def _type_check(opt: dict, path: str) -> None:
    """The types parse_options itself relies on (a wrong one would be a TypeError/AttributeError there)."""
    def bad(key: str, want: str, value: Any) -> OptionError:
        return OptionError(f'{path}: option {key} must be {want}, got {type(value).__name__} {str(value)[:60]!r}')

    if not isinstance(opt['name'], str) or not opt['name']:
        raise bad('name', 'a non-empty string', opt['name'])
    if not isinstance(opt['datasets'], dict):
        raise bad('datasets', 'a mapping of dataset blocks', opt['datasets'])
    for phase, ds in opt['datasets'].items():
        if not isinstance(phase, str) or not isinstance(ds, dict):
            raise bad(f'datasets:{phase}', 'a mapping under a string key', ds)
        for key in ('dataroot_gt', 'dataroot_lq'):
            if ds.get(key) is not None and not isinstance(ds[key], str):
                raise bad(f'datasets:{phase}:{key}', 'a path', ds[key])
    if not isinstance(opt['path'], dict):
        raise bad('path', 'a mapping', opt['path'])
    for key, val in opt['path'].items():
        if not isinstance(key, str):
            raise bad(f'path:{key}', 'under a string key', val)
        if ('resume_state' in key or 'pretrain_network' in key) and val is not None and not isinstance(val, str):
            raise bad(f'path:{key}', 'a path or ~', val)
    seed = opt.get('manual_seed')
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32 - 64):
        raise bad('manual_seed', 'an integer in [0, 2**32)', seed)
    if opt['num_gpu'] != 'auto' and (not isinstance(opt['num_gpu'], int) or isinstance(opt['num_gpu'], bool)):
        raise bad('num_gpu', "an integer or 'auto'", opt['num_gpu'])
    for key in ('val', 'logger', 'train'):
        if opt.get(key) is not None and not isinstance(opt[key], dict):
            raise bad(key, 'a mapping', opt[key])
    metrics = (opt.get('val') or {}).get('metrics')
    if metrics is not None:
        if not isinstance(metrics, dict):
            raise bad('val:metrics', 'a mapping', metrics)
        for name, m in metrics.items():
            if not isinstance(m, dict):
                raise bad(f'val:metrics:{name}', 'a mapping', m)


# ----------------------------------------------------------------------------------------------------------
# numbers: YAML 1.1 strings that are numbers, and values BasicSR would crash on (or silently misuse) later
# ----------------------------------------------------------------------------------------------------------
#: keys whose values are floats (or lists of floats) wherever they appear: optimizers, schedulers, losses, EMA
FLOAT_KEYS = {'lr', 'weight_decay', 'eps', 'gamma', 'eta_min', 'ema_decay', 'loss_weight', 'betas', 'momentum',
              'restart_weights', 'real_label_val', 'fake_label_val', 'grad_clip', 'perceptual_weight',
              'style_weight', 'lr_mult'}
#: keys whose values are integers (or lists of integers)
INT_KEYS = {'total_iter', 'warmup_iter', 'milestones', 'periods', 'batch_size_per_gpu', 'num_worker_per_gpu',
            'dataset_enlarge_ratio', 'gt_size', 'scale', 'print_freq', 'save_checkpoint_freq', 'val_freq',
            'net_d_iters', 'net_d_init_iters'}
#: a number PyYAML (YAML 1.1) leaves as a string: ``1e-3``, ``2E5``, ``+1e4`` (no dot before the exponent)
_NUMBER_STRING = re.compile(r'^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$')


def _is_float_key(key: str) -> bool:
    return key in FLOAT_KEYS or key.endswith(('_weight', '_prob', '_lr')) or key.startswith('lr_')


def _as_number(value: Any, want_int: bool, where: str) -> Any:
    """``value`` as the float/int the key needs when it is a number written as a string (``'1e-3'``) or, for an
    integer key, an integral float (``4e5`` → 400000); anything else is returned unchanged for the checks."""
    if isinstance(value, str) and _NUMBER_STRING.match(value.strip()):
        value = float(value)
    if want_int and isinstance(value, float):
        if not value.is_integer():
            raise OptionError(f'{where} must be an integer, got {value!r} (write e.g. {int(value)})')
        return int(value)
    return value


def coerce_numbers(node: Any, where: str) -> None:
    """In place, through the whole option tree: numbers written as strings under :data:`FLOAT_KEYS` /
    :data:`INT_KEYS` (and ``*_weight``, ``*_prob``, ``lr_*``) become numbers (``lr: 1e-3`` is a string in YAML
    1.1, which PyYAML follows: BasicSR would hand the optimizer a string), integral floats under integer keys
    become ints; a fractional value under an integer key is refused naming the key path."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f'{where}:{key}' if where else str(key)
            if isinstance(key, str) and (key in INT_KEYS or _is_float_key(key)):
                want_int = key in INT_KEYS
                if isinstance(value, list):
                    node[key] = [_as_number(v, want_int, f'{path}[{i}]') for i, v in enumerate(value)]
                elif not isinstance(value, (dict, bool)):
                    node[key] = _as_number(value, want_int, path)
            coerce_numbers(node[key], path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            coerce_numbers(value, f'{where}[{i}]')


def check_numbers(opt: dict, path: str, is_train: bool) -> None:
    """Values BasicSR accepts at parse and fails on (or misuses) later, refused naming the key path: ``scale``,
    ``train:total_iter``, the dataset sizes and counts, the logger/validation frequencies (0 is a
    ZeroDivisionError at the first iteration)."""
    def need(key_path: str, value: Any, least: int, what: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f'{path}: option {key_path} must be {what}, got {type(value).__name__} {value!r}')
        if value < least:
            raise OptionError(f'{path}: option {key_path} must be {what}, got {value}')

    if 'scale' in opt:
        need('scale', opt['scale'], 1, 'an integer upscaling factor >= 1')
    if 'gt_size' in opt and opt['gt_size'] is not None:
        need('gt_size', opt['gt_size'], 1, 'a positive crop size in pixels')
    for phase, ds in (opt.get('datasets') or {}).items():
        for key, least, what in (('batch_size_per_gpu', 1, 'a positive batch size'),
                                 ('num_worker_per_gpu', 0, 'a number of workers >= 0'),
                                 ('dataset_enlarge_ratio', 1, 'an integer ratio >= 1'),
                                 ('gt_size', 1, 'a positive crop size in pixels')):
            if isinstance(ds, dict) and ds.get(key) is not None:
                need(f'datasets:{phase}:{key}', ds[key], least, what)
    train = opt.get('train')
    if is_train and isinstance(train, dict):
        if 'total_iter' not in train:
            raise OptionError(f'{path}: option train:total_iter is missing (the number of iterations)')
        need('train:total_iter', train['total_iter'], 1, 'a positive number of iterations')
    for block, key in (('logger', 'print_freq'), ('logger', 'save_checkpoint_freq'), ('val', 'val_freq')):
        value = (opt.get(block) or {}).get(key) if isinstance(opt.get(block), dict) else None
        if value is not None:
            need(f'{block}:{key}', value, 1, 'a positive number of iterations')


#: functions that complete a parsed option dict in place, registered by the package that knows the keys (utils
#: imports nothing above it): :func:`register_option_resolver`
OPTION_RESOLVERS: list[Callable[[dict], Any]] = []


def register_option_resolver(resolve: Callable[[dict], Any]) -> Callable[[dict], Any]:
    """Run ``resolve(opt)`` at the end of every :func:`parse_options` (once per function)."""
    if resolve not in OPTION_RESOLVERS:
        OPTION_RESOLVERS.append(resolve)
    return resolve


def parse_options(root_path: str, is_train: bool = True):
    """BasicSR 1.4.2's ``parse_options`` with the same flags and folders, on the safe loader."""
    import torch
    from basicsr.utils import set_random_seed
    from basicsr.utils.dist_util import get_dist_info

    parser = argparse.ArgumentParser()
    parser.add_argument('-opt', type=str, required=True, help='Path to option YAML file.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true')
    parser.add_argument('--debug', action='store_true')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--force_yml', nargs='+', default=None,
                        help='Force to update yml options. Example: train:ema_decay=0.999')
    args = parser.parse_args()

    opt = load_option_file(args.opt)
    _dict_check(opt, args.opt)
    if args.launcher == 'none':
        opt['dist'] = False
        print('Disable distributed.', flush=True)
    else:
        opt['dist'] = True
        import basicsr.utils.options as bopt  # its init_dist works on CPU (basicsr_ext.patches: dist_cpu)
        if args.launcher == 'slurm' and 'dist_params' in opt:
            bopt.init_dist(args.launcher, **opt['dist_params'])
        else:
            bopt.init_dist(args.launcher)
    opt['rank'], opt['world_size'] = get_dist_info()

    # --force_yml before seeding (BasicSR 1.4.2 seeds first, so `--force_yml manual_seed=N` changed nothing)
    for entry in args.force_yml or []:
        _set_by_path(opt, entry)
    try:
        coerce_numbers(opt, '')
    except OptionError as e:
        raise OptionError(f'{args.opt}: option {e}') from None
    check_numbers(opt, args.opt, is_train)

    seed = opt.get('manual_seed')
    if seed is None:
        seed = random.randint(1, 10000)
        opt['manual_seed'] = seed
    set_random_seed(seed + opt['rank'])

    opt['auto_resume'] = args.auto_resume
    opt['is_train'] = is_train
    if args.debug and not opt['name'].startswith('debug'):
        opt['name'] = 'debug_' + opt['name']
    if opt['num_gpu'] == 'auto':
        opt['num_gpu'] = torch.cuda.device_count()

    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq'):
            if dataset.get(key) is not None:
                dataset[key] = osp.expanduser(dataset[key])

    for key, val in opt['path'].items():
        if val is not None and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = osp.expanduser(val)

    if is_train:
        experiments_root = osp.join(root_path, 'experiments', opt['name'])
        opt['path']['experiments_root'] = experiments_root
        opt['path']['models'] = osp.join(experiments_root, 'models')
        opt['path']['training_states'] = osp.join(experiments_root, 'training_states')
        opt['path']['log'] = experiments_root
        opt['path']['visualization'] = osp.join(experiments_root, 'visualization')
        if 'debug' in opt['name']:
            if 'val' in opt:
                opt['val']['val_freq'] = 8
            opt['logger']['print_freq'] = 1
            opt['logger']['save_checkpoint_freq'] = 8
    else:
        results_root = osp.join(root_path, 'results', opt['name'])
        opt['path']['results_root'] = results_root
        opt['path']['log'] = results_root
        opt['path']['visualization'] = osp.join(results_root, 'visualization')
    opt['opt_path'] = osp.abspath(args.opt)
    for resolve in OPTION_RESOLVERS:  # e.g. val.metrics.<name>.better of pyiqa entries (metrics.pyiqa_metric)
        resolve(opt)
    return opt, args


class OptionDump(str):
    """The text of BasicSR's ``dict2str(opt)`` (the option dump logged at start): marked so that the console
    handlers of BasicSR's logger leave it to the log file (entry ``quiet_option_dump`` of ``basicsr_ext.patches``)."""


class _OptionDumpToFileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not isinstance(record.msg, OptionDump)


def make_dict2str(stock: Any) -> Any:
    """BasicSR's ``dict2str`` whose result is an :class:`OptionDump`; when BasicSR's logger writes a log file,
    its console handlers are given a filter that drops the dump (the log file keeps it): the console shows the
    run, and an error stays the last thing printed instead of following 200 lines of options."""
    def dict2str(opt, indent_level=1):
        text = stock(opt, indent_level)
        for name in ('basicsr', ):
            handlers = logging.getLogger(name).handlers
            if not any(isinstance(h, logging.FileHandler) for h in handlers):
                continue
            for h in handlers:
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) and \
                        not any(isinstance(f, _OptionDumpToFileOnly) for f in h.filters):
                    h.addFilter(_OptionDumpToFileOnly())
        return OptionDump(text)

    dict2str.__doc__ = stock.__doc__
    dict2str._basicsr_ext = True
    return dict2str


def ordered_yaml():
    """BasicSR's ``ordered_yaml()`` on the safe loader: (:class:`SafeOrderedLoader`, a Dumper that writes
    OrderedDicts as plain mappings, as BasicSR's does)."""
    try:
        from yaml import CDumper as Dumper
    except ImportError:
        from yaml import Dumper

    def dict_representer(dumper, data):
        return dumper.represent_dict(data.items())

    Dumper.add_representer(OrderedDict, dict_representer)
    return SafeOrderedLoader, Dumper


def yaml_load(f: Any) -> Any:
    """BasicSR's ``yaml_load(f)`` (later BasicSR versions): a path is read (and closed), anything else is parsed
    as YAML text or stream; on the safe loader."""
    if isinstance(f, (str, os.PathLike)) and osp.isfile(f):
        with open(f, encoding='utf-8') as fh:
            return yaml_load_safe(fh, name=str(f))
    return yaml_load_safe(f)
