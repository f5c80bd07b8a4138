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
