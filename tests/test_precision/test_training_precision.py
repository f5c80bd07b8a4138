"""Training precision set-up: bf16 autocast on a CPU without bf16 units is warned about once, when the engine sets up
the run (``setup_engine``); a CPU with bf16 units, or fp32, gets no warning."""
import logging

import pytest
from basicsr.models import build_model

from basicsr_ext import scripting
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
