"""Fuzz the checkpoint loader: truncated / bit-flipped / re-pickled torch files and code-carrying pickles.

Every case ends in a CheckpointError or a correct result (a dict of tensors); nothing is executed (a sentinel
file that every payload would create never appears), nothing hangs. Seeded, a few hundred cases, < 20 s.
"""
import io
import os
import pickle
import random
import time
import zipfile

import pytest
import torch

from basicsr_ext.utils.checkpoint import CheckpointError, extract_state_dict, load_checkpoint

N_CASES = 400


class _Payload:
    """Unpickling this runs ``os.system('touch <sentinel>')`` (in an unsafe loader)."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f'touch {self.sentinel}', )


class _EvalPayload:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return eval, (f"open({self.sentinel!r}, 'w').close()", )


def _state():
    g = torch.Generator().manual_seed(0)
    net = {'conv.weight': torch.randn(4, 3, 3, 3, generator=g), 'conv.bias': torch.randn(4, generator=g)}
    return {'params': net, 'params_ema': {k: v.clone() for k, v in net.items()}}


def _saved(obj, **kw) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def _check(path, sentinel, deadline=2.0):
    """Load one file: CheckpointError or a dict whose weights extract to tensors; never anything else."""
    t = time.time()
    try:
        ckpt = load_checkpoint(str(path))
    except CheckpointError:
        outcome = 'refused'
    else:
        try:
            sd = extract_state_dict(ckpt, 'params_ema', str(path))
            assert all(isinstance(v, torch.Tensor) for v in sd.values())
            outcome = 'loaded'
        except CheckpointError:
            outcome = 'refused-extract'
    assert not os.path.exists(sentinel), f'{path}: the payload ran'
    assert time.time() - t < deadline, f'{path}: took {time.time() - t:.1f} s'
    return outcome


def _rezip(data: bytes, mutate) -> bytes:
    """Rewrite the zip with a mutated data.pkl (valid CRCs, so the unpickler itself sees the mutation)."""
    zf = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as z:
        for name in zf.namelist():
            blob = zf.read(name)
            z.writestr(name, mutate(blob) if name.endswith('data.pkl') else blob)
    return out.getvalue()


def _mutate_bytes(rng, b: bytearray) -> bytearray:
    for _ in range(rng.randint(1, 6)):
        kind = rng.choice(['flip', 'byte', 'dup', 'del', 'trunc'])
        p = rng.randrange(len(b))
        if kind == 'flip':
            b[p] ^= 1 << rng.randrange(8)
        elif kind == 'byte':
            b[p] = rng.randrange(256)
        elif kind == 'dup':
            b[p:p] = b[p:p + rng.randint(1, 16)]
        elif kind == 'del':
            del b[p:p + rng.randint(1, 16)]
        elif len(b) > 1:
            del b[rng.randrange(1, len(b)):]
    return b


@pytest.mark.parametrize('seed', [0])
def test_fuzz_checkpoint_loader(tmp_path, seed):
    sentinel = str(tmp_path / 'SENTINEL')
    rng = random.Random(seed)
    good, legacy = _saved(_state()), _saved(_state(), _use_new_zipfile_serialization=False)
    assert _check(_write(tmp_path, 'good.pth', good), sentinel) == 'loaded'
    assert _check(_write(tmp_path, 'legacy.pth', legacy), sentinel) == 'loaded'

    outcomes = {}
    t0 = time.time()
    for i in range(N_CASES):
        kind = i % 4
        if kind == 0:  # raw damage to a zip checkpoint
            data = bytes(_mutate_bytes(rng, bytearray(good)))
        elif kind == 1:  # raw damage to a legacy (non-zip) checkpoint
            data = bytes(_mutate_bytes(rng, bytearray(legacy)))
        elif kind == 2:  # damage inside data.pkl with valid zip CRCs
            data = _rezip(good, lambda blob: bytes(_mutate_bytes(rng, bytearray(blob))))
        else:  # truncation anywhere
            data = good[:rng.randrange(0, len(good))]
        out = _check(_write(tmp_path, f'c{i}.pth', data), sentinel)
        outcomes[out] = outcomes.get(out, 0) + 1
    assert time.time() - t0 < 20
    assert outcomes.get('refused', 0) > N_CASES // 4  # the fuzzer does reach the error paths


@pytest.mark.e2e
def test_code_carrying_pickles_never_run(tmp_path):
    sentinel = str(tmp_path / 'SENTINEL')
    payloads = {
        'torch_save_reduce': _saved({'params': {'w': torch.zeros(1)}, 'x': _Payload(sentinel)}),
        'torch_save_eval': _saved(_EvalPayload(sentinel)),
        'legacy_reduce': _saved(_Payload(sentinel), _use_new_zipfile_serialization=False),
        'raw_pickle_p0': pickle.dumps(_Payload(sentinel), protocol=0),
        'raw_pickle_p4': pickle.dumps({'params': _Payload(sentinel)}, protocol=4),
        # hand-written protocol-0 pickle: GLOBAL os.system + REDUCE
        'handmade_global': f"cos\nsystem\n(S'touch {sentinel}'\ntR.".encode(),
        'handmade_builtins_exec': f"c__builtin__\nexec\n(S'open({sentinel!r},\"w\")'\ntR.".encode(),
        # a valid torch zip whose data.pkl is swapped for a payload
        'zip_swapped_pkl': _rezip(_saved(_state()), lambda blob: pickle.dumps(_Payload(sentinel), protocol=2)),
    }
    for name, data in payloads.items():
        assert _check(_write(tmp_path, f'{name}.pth', data), sentinel) == 'refused', name
    # sanity: the payload is real (an unsafe load would create the sentinel)
    pickle.loads(pickle.dumps(_Payload(sentinel)))
    assert os.path.exists(sentinel)


def test_not_a_checkpoint(tmp_path):
    sentinel = str(tmp_path / 'SENTINEL')
    cases = {'empty': b'', 'text': b'name: x\n', 'zip_empty': _empty_zip(), 'png': b'\x89PNG\r\n\x1a\n'}
    for name, data in cases.items():
        assert _check(_write(tmp_path, f'{name}.pth', data), sentinel) == 'refused', name
    with pytest.raises(CheckpointError, match='not found'):
        load_checkpoint(str(tmp_path / 'missing.pth'))
    with pytest.raises(CheckpointError, match='not a tensor'):
        extract_state_dict({'params': {'w': 'text'}}, 'params')


def _empty_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w'):
        pass
    return out.getvalue()


def _write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)
