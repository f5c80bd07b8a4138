"""Checkpoints are data: safe loading (``weights_only=True``), state-dict extraction and atomic saving."""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from typing import Any, Callable, Mapping

import torch

from basicsr_ext.utils.atomic import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the network."""


def load_checkpoint(path: str, map_location: Any = 'cpu') -> Any:
    """``torch.load`` with ``weights_only=True``: nothing in the file can run code.

    Raises CheckpointError naming the file when it is missing, truncated, or needs arbitrary unpickling.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f'expected a checkpoint file path, got {type(path).__name__} {path!r}')
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint file not found: {path}')
    if os.path.getsize(path) == 0:
        raise CheckpointError(f'checkpoint file is empty (0 bytes): {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f'refused to load {path}: it needs arbitrary unpickling, which could run code '
            f'(only tensors, numbers, strings and containers are accepted). Detail: {first}') from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError, AttributeError,
            MemoryError, OverflowError, UnicodeDecodeError, AssertionError, ImportError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f'cannot read checkpoint {path} (truncated or corrupt?): {msg[:300]}') from None
    except Exception as e:  # noqa: BLE001 - any other failure of the unpickler is still a bad file
        raise CheckpointError(f'cannot read checkpoint {path}: {type(e).__name__}: {str(e)[:300]}') from None


def pick_state_dict(ckpt: Any, param_key: str | None = 'params_ema',
                    path: str = '<checkpoint>') -> 'tuple[str | None, OrderedDict[str, torch.Tensor]]':
    """(the key the weights were taken from, or None for the top level; the weights): see
    :func:`extract_state_dict`."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f'{path}: expected a dict of tensors, got {type(ckpt).__name__}')
    sd, used = None, None
    for key in [param_key, 'params_ema', 'params', 'state_dict']:
        if key is not None and key in ckpt and isinstance(ckpt[key], Mapping):
            sd, used = ckpt[key], key
            break
    if sd is None:
        sd = ckpt
    out = OrderedDict()
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f'{path}: entry {k!r} is not a tensor; keys found: {list(ckpt)[:8]}')
        out[k[7:] if k.startswith('module.') else k] = v
    return used, out


def extract_state_dict(ckpt: Any, param_key: str | None = 'params_ema', path: str = '<checkpoint>') -> 'OrderedDict[str, torch.Tensor]':
    """Pick the weights out of a loaded checkpoint: ``param_key`` → ``params_ema`` → ``params`` → the raw dict.

    A leading ``module.`` (DDP) is stripped from every key.
    """
    return pick_state_dict(ckpt, param_key, path)[1]


def check_finite(state_dict: Mapping[str, Any], path: str = '<checkpoint>') -> None:
    """Refuse weights holding NaN or inf (they give black or NaN images): CheckpointError naming the file and the
    first bad tensor (floating-point and complex tensors are checked; integer ones cannot be non-finite)."""
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor) or not (v.is_floating_point() or v.is_complex()) or v.numel() == 0:
            continue
        finite = torch.isfinite(v)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(v).sum())
            raise CheckpointError(
                f'{path}: tensor {k!r} {tuple(v.shape)} holds non-finite values ({n_nan} NaN, '
                f'{int((~finite).sum()) - n_nan} inf of {v.numel()}); refused (a diverged or corrupted checkpoint)')


def check_finite_nested(obj: Any, path: str = '<checkpoint>', depth: int = 2) -> None:
    """:func:`check_finite` on the tensors of a loaded checkpoint of unknown layout: a dict of tensors, or dicts
    of them (``{'params': {...}}``) down to ``depth`` levels; anything else is left alone."""
    if not isinstance(obj, Mapping) or depth < 0:
        return
    check_finite({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, path)
    for v in obj.values():
        check_finite_nested(v, path, depth - 1)


def weights_only_load(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
    """A ``torch.load`` for code that calls ``torch.load(path, map_location=...)`` on a weights file (BasicSR's
    archs: ``basicsr_ext.patches``, entry ``safe_basicsr_loads``): always weights-only (a ``weights_only`` or
    ``pickle_module`` argument, and ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``, cannot turn it off), the CPU unless a
    ``map_location`` is given, non-finite weights refused, every refusal a one-line CheckpointError naming the file
    (:func:`load_checkpoint`). A file object is read weights-only too (named by its ``name``)."""
    del args, kwargs  # pickle_module, weights_only, mmap, ...: only ``map_location`` is honoured
    location = 'cpu' if map_location is None else map_location
    if isinstance(f, (str, os.PathLike)):
        obj = load_checkpoint(f, map_location=location)
        name = os.fspath(f)
    else:
        name = str(getattr(f, 'name', '<file object>'))
        try:
            obj = torch.load(f, map_location=location, weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(f'refused to load {name}: it needs arbitrary unpickling, which could run code '
                                  f'({str(e).strip().splitlines()[0][:200] if str(e).strip() else ""})') from None
        except Exception as e:  # noqa: BLE001 - any failure of the reader is a bad file
            raise CheckpointError(f'cannot read checkpoint {name}: {type(e).__name__}: {str(e)[:300]}') from None
    check_finite_nested(obj, name)
    return obj


def hub_folder() -> str:
    """torch hub's weight cache (``$TORCH_HOME/hub/checkpoints``): where torchvision and BasicSR look for and
    download released weights."""
    return os.path.join(torch.hub.get_dir(), 'checkpoints')


def fetch_hub_file(url: str, model_dir: str | None = None, file_name: str | None = None, check_hash: bool = False,
                   progress: bool = True, also: str = '') -> str:
    """The path of ``url``'s file in ``model_dir`` (default :func:`hub_folder`), downloaded when it is missing.

    The download goes to a hidden temporary name in that folder (:func:`basicsr_ext.utils.atomic.atomic_write`)
    and is renamed only when complete (``check_hash``: and the hash prefix in its name verified), so an
    interrupted or failed download never leaves a file under the final name. When the file is missing and cannot
    be downloaded (offline) the CheckpointError names the file, the URL and the folder to put it in (``also``:
    another accepted place). The file is not read here."""
    folder = model_dir or hub_folder()
    name = file_name or os.path.basename(url.split('?', 1)[0])
    cached = os.path.join(folder, name)
    if os.path.isfile(cached):
        return cached
    try:
        hash_prefix = None
        if check_hash:
            match = torch.hub.HASH_REGEX.search(name)
            hash_prefix = match.group(1) if match else None
        atomic_write(cached, lambda tmp: torch.hub.download_url_to_file(url, tmp, hash_prefix, progress=progress))
    except Exception as e:  # noqa: BLE001 - offline, HTTP error, wrong hash, read-only folder: one message
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ''
        raise CheckpointError(
            f'weights file {name} is not on disk and could not be downloaded from {url} '
            f'({type(e).__name__}{": " + reason if reason else ""}): put {name} in {folder} '
            f'(TORCH_HOME={os.environ.get("TORCH_HOME", "<unset>")}){" or " + also if also else ""}') from None
    return cached


def load_hub_weights(url: str, model_dir: str | None = None, map_location: Any = None, progress: bool = True,
                     check_hash: bool = False, file_name: str | None = None, weights_only: Any = True,
                     also: str = '') -> Any:
    """``torch.hub.load_state_dict_from_url``, weights-only whatever ``weights_only`` says: the cached file
    (``model_dir``, default :func:`hub_folder`) is read with :func:`weights_only_load`; a missing one is downloaded
    atomically by :func:`fetch_hub_file` (``check_hash``: the hash prefix in its name is verified), whose
    CheckpointError names the file, the URL and the folder to put it in when that fails (offline)."""
    return weights_only_load(fetch_hub_file(url, model_dir, file_name, check_hash, progress, also), map_location)


def atomic_save(obj: Any, path: str, save_fn: Callable[[Any, str], None] | None = None) -> None:
    """``torch.save`` (or ``save_fn(obj, tmp)``) through :func:`basicsr_ext.utils.atomic.atomic_write` (temporary
    file in the same folder, fsync, rename): a kill leaves the old file or none."""
    save = save_fn or torch.save
    atomic_write(path, lambda tmp: save(obj, tmp))


def save_checkpoint(obj: Any, path: str) -> None:
    """:func:`atomic_save` of a checkpoint or training state; a failed write (disk full, no permission) is one
    CheckpointError naming the file (BasicSR logs a warning and trains on without its checkpoint)."""
    try:
        atomic_save(obj, path)
    except OSError as e:
        raise CheckpointError(f'cannot write {path}: {e.strerror or e}') from None


def save_network(self: Any, net: Any, net_label: str, current_iter: Any, param_key: Any = 'params') -> None:
    """``BaseModel.save_network`` (a method: ``self`` is the model): BasicSR's layout
    (``{param_key: state_dict}``, ``module.`` stripped, ``<label>_<iter|latest>.pth``), written atomically by rank 0.
    ``basicsr_ext.patches`` (entry ``atomic_exact_resume``) puts it in place of BasicSR's; ``EngineMixin`` uses it."""
    if self.opt.get('rank', 0) != 0:
        return
    if current_iter == -1:
        current_iter = 'latest'
    save_path = os.path.join(self.opt['path']['models'], f'{net_label}_{current_iter}.pth')
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(keys):
        raise ValueError('The lengths of net and param_key should be the same.')
    save_dict = {}
    for net_, key in zip(nets, keys):
        sd = self.get_bare_model(net_).state_dict()
        save_dict[key] = OrderedDict((k[7:] if k.startswith('module.') else k, v.detach().cpu().clone())
                                     for k, v in sd.items())
    save_checkpoint(save_dict, save_path)


def describe_key_mismatch(missing: list[str], unexpected: list[str], path: str, limit: int = 8) -> str:
    """One message that lists the first missing/unexpected keys and names the file."""
    parts = [f'checkpoint {path} does not fit the network:']
    if missing:
        parts.append(f'{len(missing)} missing keys (first: {", ".join(missing[:limit])})')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected keys (first: {", ".join(unexpected[:limit])})')
    return ' '.join(parts)


def load_weights_into(net: torch.nn.Module, path: str, param_key: str | None = 'params_ema', strict: bool = True,
                      logger: Any = None) -> torch.nn.Module:
    """Load a checkpoint file into ``net`` (the one place for it: models, inference, metrics).

    Weights-only; ``param_key`` → ``params_ema`` → ``params`` → raw dict; ``module.`` stripped; if ``net`` has
    ``convert_official_state_dict(sd) -> (sd, layout | None)`` it translates a released layout first (one log
    line). Non-finite weights are a CheckpointError naming the tensor (:func:`check_finite`); the file and the key
    the weights came from are logged through ``logger`` once loaded. ``strict``: any missing/unexpected/wrong-shape key is a CheckpointError listing them; otherwise
    mismatches are skipped with a warning through ``logger`` (a ``logging.Logger``; default silent).
    """
    info = logger.info if logger is not None else (lambda msg: None)
    warn = logger.warning if logger is not None else (lambda msg: None)
    used, state_dict = pick_state_dict(load_checkpoint(path), param_key, path)
    check_finite(state_dict, path)
    converter = getattr(net, 'convert_official_state_dict', None)
    if converter is not None:
        state_dict, layout = converter(state_dict)
        if layout:
            info(f'{path}: recognised the {layout} layout and translated it.')
    own = net.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [k for k in state_dict if k in own and state_dict[k].shape != own[k].shape]
    if strict and (missing or unexpected or wrong_shape):
        msg = describe_key_mismatch(missing, unexpected, path)
        if wrong_shape:
            k = wrong_shape[0]
            msg += (f' {len(wrong_shape)} tensors of the wrong shape (first: {k} '
                    f'{tuple(state_dict[k].shape)} vs {tuple(own[k].shape)})')
        raise CheckpointError(msg)
    if not strict:
        state_dict = OrderedDict(state_dict)
        for k in wrong_shape:
            warn(f'{path}: skip {k}: shape {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}')
            state_dict.pop(k)
        if missing or unexpected:
            warn(describe_key_mismatch(missing, unexpected, path))
    net.load_state_dict(state_dict, strict=strict)
    info(f'Loaded {len(state_dict)} tensors into {type(net).__name__} from {path} '
         f'[{"key " + repr(used) if used else "top level"}].')
    return net


def load_network(self: Any, net: torch.nn.Module, load_path: str, strict: bool = True,
                 param_key: str | None = 'params') -> None:
    """``BaseModel.load_network`` (a method: ``self`` is the model) on :func:`load_weights_into`.

    Same signature and layout as BasicSR 1.4.2's: ``param_key`` (BasicSR falls back to ``params``; here
    ``param_key`` → ``params_ema`` → ``params`` → the raw dict), ``module.`` stripped, ``strict``. Unlike
    BasicSR's: weights-only whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says, weights checked finite,
    and a missing file or key mismatch is one CheckpointError naming the file. ``basicsr_ext.patches``
    (entry ``safe_load_network``) puts it in place of BasicSR's; ``EngineMixin`` uses it too.
    """
    from basicsr.utils import get_root_logger  # lazy: this module imports only torch at its top
    logger = get_root_logger()
    net = self.get_bare_model(net)
    logger.info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
    load_weights_into(net, load_path, param_key, strict, logger)
