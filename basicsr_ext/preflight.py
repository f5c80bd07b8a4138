"""Everything that can be checked from the options runs before BasicSR creates or renames a folder.

BasicSR's ``train_pipeline`` / ``test_pipeline`` parse the options, then ``make_exp_dirs`` moves an existing
``experiments/<name>`` (``results/<name>``) aside to ``<name>_archived_<time>`` and creates a new one, and only
then builds the datasets and the model, where a mistyped key, a missing folder or a missing checkpoint surfaces.
A failed launch thus moves the good experiment aside. :func:`check_before_folders` runs, right after
``parse_options`` (``basicsr_ext.patches``, entry ``preflight``), every check the options allow:

- ``model_type`` registered (did-you-mean);
- every ``network_*`` block and every loss block of ``train:`` (``*_opt`` with a ``type`` of BasicSR's loss
  registry): the type registered, the keys accepted by the constructor (did-you-mean against its signature),
  none of its required arguments missing;
- training (``is_train``): our models' own option checks (``check_options``, unknown ``train:`` keys);
- every dataset block: the build-time dataset checks (``basicsr_ext.data.checks``; marked as done, so the
  build does not repeat them);
- ``path.pretrain_network_*`` (unless a resume will replace it): the file exists, is not empty, reads
  weights-only (a truncated, random or pickle-payload file is refused here, not after the experiment folder was
  archived) and its weights (``param_key_*``, as the model picks them) are finite;
- training: the weights every loss block of ``train:`` loads when it is built. BasicSR's ``PerceptualLoss``
  (``VGGFeatureExtractor``): ``vgg_type`` and the ``layer_weights`` names exist, and the file it will load is
  there, reads weights-only, is finite and fits torchvision's ``vgg_type`` (names and shapes, against a network on
  the meta device): ``VGG_PRETRAIN_PATH`` when it exists (as BasicSR decides), else torchvision's released file in
  torch hub's cache, downloaded there when missing (a temporary name renamed when complete); offline, one
  CheckpointError names the file, its URL and the folders to put it in. Our losses say what they need through a
  ``check_pretrained(block)`` classmethod (``LPIPSLoss``: VGG16 and the LPIPS heads, fetched only with
  ``download: true``; ``AESOPLoss``: the auto-encoder checkpoint of ``autoencoder_load``).

Once every check passed, a training run's ``models/`` and ``training_states/`` lose the temporary files a
process killed while saving left there (:func:`remove_stale_temp_files`).

Errors name the option file and the block: OptionError, ConfigError, DatasetError or CheckpointError, which our
entry points print as one line.
"""
from __future__ import annotations

import inspect
import os
import sys
from typing import Any, Callable, Mapping

from basicsr_ext.utils.options import OptionError, did_you_mean


def registered(registry: Any, name: Any, what: str, where: str) -> Any:
    """The class registered as ``name`` (BasicSR's ``name_basicsr`` fallback too), or an OptionError with a
    did-you-mean over the registry."""
    if not isinstance(name, str) or not name:
        raise OptionError(f'{where}: type must be a registered {what} name, got {name!r}')
    obj_map = getattr(registry, '_obj_map', {})
    for candidate in (name, f'{name}_basicsr'):
        if candidate in obj_map:
            return obj_map[candidate]
    raise OptionError(f'{where}: unknown {what} type {name!r}{did_you_mean(name, sorted(obj_map))}')


def check_constructor_keys(cls: Any, block: Mapping[str, Any], where: str) -> None:
    """The keys of an option block (``type`` aside) against ``cls``'s constructor: unknown keys (did-you-mean),
    missing required arguments. A constructor taking ``**kwargs`` accepts any key."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    given = [k for k in block if k != 'type']
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in given if k not in named]
        if unknown:
            hints = ', '.join(f'{k!r}{did_you_mean(k, named)}' for k in unknown)
            raise OptionError(f'{where}: unknown key(s) {hints}; {cls.__name__} takes: {", ".join(named)}')
    missing = [n for n in named if params[n].default is inspect.Parameter.empty and n not in block]
    if missing:
        raise OptionError(f'{where}: {cls.__name__} needs {", ".join(repr(m) for m in missing)}, which the block '
                          'does not give')


def check_networks_and_losses(opt: Mapping[str, Any], source: str) -> None:
    """``network_*`` blocks and the loss blocks of ``train:`` (see the module docstring)."""
    from basicsr.utils.registry import ARCH_REGISTRY
    for key, block in opt.items():
        if isinstance(key, str) and key.startswith('network_') and isinstance(block, Mapping) and 'type' in block:
            where = f'{source}, {key} ({block.get("type")})'
            check_constructor_keys(registered(ARCH_REGISTRY, block['type'], 'arch', where), block, where)
    for key, block, loss_type, cls in registered_loss_blocks(opt):
        check_constructor_keys(cls, block, f'{source}, train:{key} ({loss_type})')


def registered_loss_blocks(opt: Mapping[str, Any]):
    """Training only: ``(key, block, type, class)`` of every ``train:<key>_opt`` block whose ``type`` is a registered
    loss (other ``*_opt`` blocks are read by a model its own way)."""
    from basicsr.utils.registry import LOSS_REGISTRY
    train = opt.get('train') if opt.get('is_train') else None
    for key, block in (train or {}).items():
        if not (isinstance(key, str) and key.endswith('_opt') and isinstance(block, Mapping)):
            continue
        loss_type = block.get('type')
        if isinstance(loss_type, str) and loss_type in getattr(LOSS_REGISTRY, '_obj_map', {}):
            yield key, block, loss_type, LOSS_REGISTRY.get(loss_type)


def check_model(opt: Mapping[str, Any], source: str) -> None:
    """``model_type`` registered; for training, the model's own ``check_options`` / ``check_train_keys_of``."""
    from basicsr.utils.registry import MODEL_REGISTRY
    if 'model_type' not in opt:
        return
    cls = registered(MODEL_REGISTRY, opt['model_type'], 'model', f'{source}, model_type')
    if opt.get('is_train'):
        for name in ('check_train_keys_of', 'check_options'):
            check = getattr(cls, name, None)
            if callable(check):
                check(opt)


def _resume_replaces(opt: Mapping[str, Any], network: str) -> bool:
    """Whether BasicSR's resume (``check_resume``) will replace ``path.pretrain_<network>``."""
    path = opt.get('path') or {}
    if network in (path.get('ignore_resume_networks') or ()):
        return False
    if path.get('resume_state'):
        return True
    states = path.get('training_states')
    return bool(opt.get('auto_resume') and states and os.path.isdir(states)
                and any(f.endswith('.state') for f in os.listdir(states)))


def check_pretrain_paths(opt: Mapping[str, Any], source: str) -> None:
    """``path.pretrain_network_*``: an existing, non-empty file that reads weights-only, whose weights are finite.

    The file is read once more when the model loads it (key names and shapes are checked there, against the
    built network): a checkpoint of ordinary size costs a fraction of a second here, and a corrupt one no longer
    costs the experiment folder.
    """
    from basicsr_ext.utils.checkpoint import CheckpointError, check_finite, load_checkpoint, pick_state_dict
    path_opt = opt.get('path') or {}
    for key, value in path_opt.items():
        if not (isinstance(key, str) and key.startswith('pretrain_network_')) or value is None:
            continue
        if _resume_replaces(opt, key[len('pretrain_'):]):
            continue
        where = f'{source}, path:{key}'
        try:  # a path, an existing non-empty file, weights-only (load_checkpoint names what is wrong)
            ckpt = load_checkpoint(value)
        except CheckpointError as e:
            raise CheckpointError(f'{where}: {e}') from None
        param_key = path_opt.get(f'param_key_{key[len("pretrain_network_"):]}', 'params')
        try:
            _, state_dict = pick_state_dict(ckpt, param_key, value)
        except CheckpointError:
            continue  # a layout the model's own loader may know: it decides when it loads the file
        try:
            check_finite(state_dict, value)
        except CheckpointError as e:
            raise CheckpointError(f'{where}: {e}') from None


def released_vgg(name: str) -> tuple[str, str]:
    """(the URL of torchvision's released ImageNet weights of ``name``, e.g. ``vgg19``; the other place BasicSR
    accepts the file, for the missing-file message: ``VGG_PRETRAIN_PATH`` when it is that file, else '')."""
    import torchvision.models
    url = torchvision.models.get_model_weights(name).IMAGENET1K_V1.url
    local = getattr(sys.modules.get('basicsr.archs.vgg_arch'), 'VGG_PRETRAIN_PATH', None)
    also = (f'at {os.path.abspath(local)} (BasicSR\'s VGG_PRETRAIN_PATH, under the working directory)'
            if local and os.path.basename(local) == os.path.basename(url) else '')
    return url, also


def _fits(state: Any, reference: Mapping[str, Any], path: str, what: str) -> None:
    """``state`` (a loaded weights file) holds exactly ``reference``'s names, with its shapes."""
    from basicsr_ext.utils.checkpoint import CheckpointError, describe_key_mismatch
    if not isinstance(state, Mapping):
        raise CheckpointError(f'{path}: expected a dict of tensors ({what}), got {type(state).__name__}')
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    if missing or unexpected:
        raise CheckpointError(f'{describe_key_mismatch(missing, unexpected, path)} ({what})')
    for k, v in reference.items():
        shape = tuple(getattr(state[k], 'shape', ()))
        if shape != tuple(v.shape):
            raise CheckpointError(f'checkpoint {path} does not fit {what}: {k} {shape} vs {tuple(v.shape)}')


def check_basicsr_vgg(block: Mapping[str, Any]) -> None:
    """BasicSR's ``PerceptualLoss`` block: what its ``VGGFeatureExtractor`` reads when it is built (see the module
    docstring)."""
    import basicsr.archs.vgg_arch as vgg_arch
    import torch
    import torchvision.models

    from basicsr_ext.utils.checkpoint import hub_folder, load_hub_weights, weights_only_load
    vgg_type = block.get('vgg_type', 'vgg19')
    kinds = sorted([*vgg_arch.NAMES, *(f'{k}_bn' for k in vgg_arch.NAMES)])
    if vgg_type not in kinds:
        raise OptionError(f'vgg_type {vgg_type!r} is not a VGG BasicSR knows{did_you_mean(str(vgg_type), kinds)}; '
                          f'one of: {", ".join(kinds)}')
    names = vgg_arch.NAMES[vgg_type.replace('_bn', '')]
    names = vgg_arch.insert_bn(names) if 'bn' in vgg_type else names
    layers = block.get('layer_weights')
    unknown = [k for k in layers if k not in names] if isinstance(layers, Mapping) else []
    if unknown:
        hints = ', '.join(f'{k!r}{did_you_mean(str(k), names)}' for k in unknown)
        raise OptionError(f'layer_weights: unknown {vgg_type} layer(s) {hints}')
    local = vgg_arch.VGG_PRETRAIN_PATH
    if os.path.exists(local):  # what VGGFeatureExtractor loads whatever vgg_type is
        path, state = local, weights_only_load(local)
    else:
        url, also = released_vgg(vgg_type)
        state = load_hub_weights(url, check_hash=True, progress=True, also=also)
        path = os.path.join(hub_folder(), os.path.basename(url))
    with torch.device('meta'):  # names and shapes only: nothing is allocated
        reference = getattr(torchvision.models, vgg_type)(weights=None).state_dict()
    _fits(state, reference, path, f"torchvision's {vgg_type}, which VGGFeatureExtractor loads it into")


def check_loss_weights(opt: Mapping[str, Any], source: str) -> None:
    """Training: the weights every loss block of ``train:`` loads when it is built (see the module docstring)."""
    from basicsr.losses.basic_loss import PerceptualLoss

    from basicsr_ext.utils.checkpoint import CheckpointError
    for key, block, loss_type, cls in registered_loss_blocks(opt):
        check = getattr(cls, 'check_pretrained', None)
        if check is None and isinstance(cls, type) and issubclass(cls, PerceptualLoss):
            check = check_basicsr_vgg
        if check is None:
            continue
        try:
            check(block)
        except (CheckpointError, OptionError) as e:
            raise type(e)(f'{source}, train:{key} ({loss_type}): {e}') from None


def check_before_folders(opt: Mapping[str, Any], source: str | None = None) -> None:
    """Every check of the module docstring, in order; raises the first problem."""
    from basicsr_ext.data.checks import check_dataset_options, mark_prechecked
    source = source or opt.get('opt_path') or 'option file'
    check_model(opt, source)
    check_networks_and_losses(opt, source)
    for phase, block in (opt.get('datasets') or {}).items():
        if isinstance(block, Mapping):
            check_dataset_options(block)
            mark_prechecked(block)
    check_pretrain_paths(opt, source)
    check_loss_weights(opt, source)


def remove_stale_temp_files(opt: Mapping[str, Any]) -> list[str]:
    """Training, rank 0: the temporary files our atomic writer left in the run's ``models/`` and
    ``training_states/`` when a process was killed while saving (``.<name>.<random>.tmp``, nothing else:
    ``utils.atomic.remove_stale_temps``) are removed, with one line giving their count; returns their paths. Run
    once every check passed, before the run writes (a resume, or BasicSR archiving the folder)."""
    from basicsr_ext.utils.atomic import remove_stale_temps
    if not opt.get('is_train') or opt.get('rank', 0) != 0:
        return []
    path = opt.get('path') or {}
    folders = [path[k] for k in ('models', 'training_states') if isinstance(path.get(k), (str, os.PathLike))]
    removed = [p for folder in folders for p in remove_stale_temps(folder)]
    if removed:
        n = len(removed)
        print(f'Removed {n} stale temporary file{"" if n == 1 else "s"} of an interrupted save '
              f'({", ".join(os.path.basename(p) for p in removed[:3])}{", ..." if n > 3 else ""}) from '
              f'{" and ".join(str(f) for f in folders)}', flush=True)
    return removed


def checked_parse_options(parse: Callable) -> Callable:
    """``parse_options`` followed by :func:`check_before_folders`, then :func:`remove_stale_temp_files` (what
    ``basicsr_ext.patches`` installs)."""
    def parse_options(root_path, is_train=True):
        opt, args = parse(root_path, is_train=is_train)
        check_before_folders(opt, getattr(args, 'opt', None) or opt.get('opt_path'))
        remove_stale_temp_files(opt)
        return opt, args

    parse_options.__doc__ = parse.__doc__
    return parse_options
