"""Training precision set-up: bf16 autocast on a CPU without bf16 units is warned about once, when the engine sets up
the run (``setup_engine``); a CPU with bf16 units, or fp32, gets no warning."""
import logging

import pytest
import torch
from basicsr.models import build_model

from basicsr_ext import scripting
from basicsr_ext.utils.options import ConfigError
from basicsr_ext.utils import precision as P


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize('flags, use_amp, expect', [({'avx2', 'fma'}, True, 1), ({'avx512f', 'amx_bf16'}, True, 0),
                                                    ({'avx2', 'fma'}, False, 0)])
def test_bf16_training_on_a_cpu_without_bf16_units_warns_once_at_setup(flags, use_amp, expect, tmp_path, monkeypatch):
    monkeypatch.setattr(P, 'cpu_flags', lambda path='/proc/cpuinfo': frozenset(flags))
    opt = scripting.training_options(scripting.option_file('quickstart', 'tvq_tokenizer.yml'), str(tmp_path))
    opt['train'].update(use_amp=use_amp, amp_dtype='bf16')
    logger = logging.getLogger('basicsr')
    handler, level = _Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        model = build_model(opt)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert model.use_amp is use_amp
    warned = [m for m in handler.messages if 'amx_bf16' in m]
    assert len(warned) == expect
    if expect:
        assert 'avx512_bf16' in warned[0] and 'use_amp: false' in warned[0]


@pytest.mark.parametrize('flags, on', [({'avx512f', 'amx_bf16'}, True), ({'avx512_bf16'}, True),
                                       ({'avx2', 'fma'}, False)])
def test_use_amp_auto_switches_bf16_autocast_on_only_where_the_cpu_has_bf16_units(flags, on, tmp_path, monkeypatch):
    """``train.use_amp: auto``: bf16 autocast on a CPU with amx_bf16 / avx512_bf16, fp32 (and no slow-bf16 warning)
    elsewhere; the resolved choice is logged once."""
    monkeypatch.setattr(P, 'cpu_flags', lambda path='/proc/cpuinfo': frozenset(flags))
    opt = scripting.training_options(scripting.option_file('quickstart', 'tvq_tokenizer.yml'), str(tmp_path))
    opt['train'].update(use_amp='auto', amp_dtype='bf16')
    logger = logging.getLogger('basicsr')
    handler, level = _Collect(), logger.level
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        model = build_model(opt)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert model.use_amp is on
    with model.autocast():
        assert torch.is_autocast_enabled('cpu') is on
    assert [m for m in handler.messages if m.startswith('train.use_amp: auto ->')] == \
        [f'train.use_amp: auto -> {"on" if on else "off"} (bf16 autocast on cpu)']
    assert not [m for m in handler.messages if 'amx_bf16' in m]


@pytest.mark.parametrize('value', ['yes', 'bf16', 2])
def test_use_amp_other_than_true_false_auto_is_refused_naming_the_key(value, tmp_path):
    opt = scripting.training_options(scripting.option_file('quickstart', 'tvq_tokenizer.yml'), str(tmp_path))
    opt['train'].update(use_amp=value)
    with pytest.raises(ConfigError, match=r"train\.use_amp: .* is not one of true, false, auto"):
        build_model(opt)


def test_resolve_training_amp_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: False)
    assert P.resolve_training_amp('auto', 'cuda', torch.float16) is True
    assert P.resolve_training_amp('auto', 'cuda', torch.bfloat16) is False
    assert P.resolve_training_amp('AUTO', 'cpu', torch.bfloat16, flags={'amx_bf16'}) is True
    assert P.resolve_training_amp(None, 'cpu', torch.bfloat16) is False
