"""Checkpoints are data: safe loading (``weights_only=True``), state-dict extraction and atomic saving."""
from __future__ import annotations

import os
import pickle
import tempfile
from collections import OrderedDict
from typing import Any, Callable, Mapping

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the network."""


def load_checkpoint(path: str, map_location: Any = 'cpu') -> Any:
    """``torch.load`` with ``weights_only=True``: nothing in the file can run code.

    Raises CheckpointError naming the file when it is missing, truncated, or needs arbitrary unpickling.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f'checkpoint path must be a string, got {type(path).__name__}')
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


def extract_state_dict(ckpt: Any, param_key: str | None = 'params_ema', path: str = '<checkpoint>') -> 'OrderedDict[str, torch.Tensor]':
    """Pick the weights out of a loaded checkpoint: ``param_key`` → ``params_ema`` → ``params`` → the raw dict.

    A leading ``module.`` (DDP) is stripped from every key.
    """
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f'{path}: expected a dict of tensors, got {type(ckpt).__name__}')
    sd = None
    for key in [param_key, 'params_ema', 'params', 'state_dict']:
        if key is not None and key in ckpt and isinstance(ckpt[key], Mapping):
            sd = ckpt[key]
            break
    if sd is None:
        sd = ckpt
    out = OrderedDict()
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f'{path}: entry {k!r} is not a tensor; keys found: {list(ckpt)[:8]}')
        out[k[7:] if k.startswith('module.') else k] = v
    return out


def atomic_save(obj: Any, path: str, save_fn: Callable[[Any, str], None] | None = None) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a kill leaves the old file or none."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        if save_fn is None:
            torch.save(obj, tmp)
        else:
            save_fn(obj, tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
    line). ``strict``: any missing/unexpected/wrong-shape key is a CheckpointError listing them; otherwise
    mismatches are skipped with a warning through ``logger`` (a ``logging.Logger``; default silent).
    """
    info = logger.info if logger is not None else (lambda msg: None)
    warn = logger.warning if logger is not None else (lambda msg: None)
    state_dict = extract_state_dict(load_checkpoint(path), param_key, path)
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
    return net
