"""Golden rule v1: deterministic synthetic weights for an official checkpoint layout.

Rebuilds, from a manifest's key -> shape list, the exact weights with which the official code produced the
golden outputs in ``tests/data/golden`` (each value depends only on its key and shape). Checked against the
``weights_checksum`` that each golden file records (tests/test_archs/test_golden_rule.py).
"""
from __future__ import annotations

import json
import math
import os
import zlib

import torch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


def manifest_path(name: str) -> str:
    return os.path.join(DATA, 'manifests', name if name.endswith('.json') else name + '.json')


def load_golden(name: str) -> dict:
    return torch.load(os.path.join(DATA, 'golden', name if name.endswith('.pt') else name + '.pt'),
                      weights_only=True)


def _uniform(key: str, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    return torch.rand(tuple(shape), generator=g, dtype=torch.float64) * 2 - 1


def _relative_position_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[:, :, 0] * (2 * ws - 1) + rel[:, :, 1]


def _shifted_window_mask(side: int, ws: int, shift: int) -> torch.Tensor:
    img = torch.zeros(side, side)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for n, (h, w) in enumerate((h, w) for h in cuts for w in cuts):
        img[h, w] = n
    win = img.view(side // ws, ws, side // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


def _value(key: str, shape) -> torch.Tensor:
    shape = list(shape)
    if key.endswith('num_batches_tracked'):
        return torch.tensor(0, dtype=torch.int64)
    if key.endswith('relative_position_index'):
        return _relative_position_index(math.isqrt(shape[0]))
    if key.endswith('attn_mask'):
        ws = math.isqrt(shape[1])
        return _shifted_window_mask(math.isqrt(shape[0]) * ws, ws, ws // 2)
    u = _uniform(key, shape)
    if key.endswith('running_mean'):
        v = 0.1 * u
    elif key.endswith('running_var'):
        v = 1 + 0.25 * (u + 1)
    elif key.endswith('relative_position_bias_table'):
        v = 0.02 * u
    elif len(shape) >= 2:
        v = u / math.sqrt(math.prod(shape[1:]))
    elif len(shape) == 1 and key.endswith('weight'):
        v = 1 + 0.1 * u
    else:
        v = 0.1 * u
    return v.float()


def fill(manifest) -> dict:
    """State dict in the official key names for a manifest (dict, path, or file name in tests/data/manifests)."""
    if not isinstance(manifest, dict):
        path = manifest if os.path.isfile(str(manifest)) else manifest_path(str(manifest))
        with open(path) as f:
            manifest = json.load(f)
    alias = manifest.get('aliased_keys') or {}
    sd = {}
    for k, s in manifest['tensors'].items():
        sd[k] = sd[alias[k]] if k in alias else _value(k, s)
    return sd


def checksum(state_dict: dict) -> float:
    return float(sum(v.double().sum() for v in state_dict.values() if v.is_floating_point()))
