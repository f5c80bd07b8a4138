"""basicsr_ext.utils.precision: the auto rule, refusals, autocast contexts and the memory-format helpers."""
import pytest
import torch

from basicsr_ext.utils import precision as P

AMX = {'avx512f', 'amx_bf16', 'amx_tile', 'avx512_bf16'}
AVX512_BF16 = {'avx512f', 'avx512_bf16'}
ZEN3 = {'avx2', 'fma', 'f16c'}


@pytest.mark.parametrize('flags, expected', [(AMX, 'bf16'), (AVX512_BF16, 'bf16'), (ZEN3, 'fp32'), (set(), 'fp32')])
def test_auto_on_cpu_follows_the_bf16_flags(flags, expected):
    assert P.resolve_precision('auto', 'cpu', flags=flags) == expected


def test_auto_on_cuda_is_fp16_and_elsewhere_fp32():
    assert P.resolve_precision('auto', 'cuda', flags=ZEN3) == 'fp16'
    assert P.resolve_precision('auto', 'meta', flags=AMX) == 'fp32'


@pytest.mark.parametrize('name, expected', [('FP32', 'fp32'), ('bfloat16', 'bf16'), ('half', 'fp16'),
                                            (None, 'fp32'), (' bf16 ', 'bf16')])
def test_aliases(name, expected):
    assert P.resolve_precision(name, 'cuda') == expected


def test_fp16_on_cpu_is_refused_in_one_line():
    with pytest.raises(P.PrecisionError) as e:
        P.resolve_precision('fp16', 'cpu')
    msg = str(e.value)
    assert '\n' not in msg and 'fp16' in msg and 'bf16' in msg


def test_unknown_name_lists_the_choices():
    with pytest.raises(P.PrecisionError, match='auto, fp32, bf16, fp16'):
        P.resolve_precision('int8', 'cpu')


def test_cpu_flags_reads_a_cpuinfo_file(tmp_path):
    f = tmp_path / 'cpuinfo'
    f.write_text('processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\nprocessor\t: 1\n'
                 'flags\t\t: fpu\n')
    assert P.cpu_flags(str(f)) == frozenset({'fpu', 'avx2', 'amx_bf16', 'amx_tile'})
    assert P.cpu_has_bf16(P.cpu_flags(str(f)))
    assert P.cpu_flags(str(tmp_path / 'missing')) == frozenset()
    assert 'no bf16 units' in P.cpu_description(ZEN3)
    assert 'amx_bf16' in P.cpu_description(AMX)


def test_inference_autocast_changes_the_matmul_dtype_only_for_low_precision():
    a = torch.randn(4, 4)
    with P.inference_autocast('cpu', 'fp32'):
        assert (a @ a).dtype == torch.float32
    with P.inference_autocast('cpu', 'bf16'):
        assert (a @ a).dtype == torch.bfloat16
        with P.fp32_region():
            assert (a @ a).dtype == torch.float32
        assert (a @ a).dtype == torch.bfloat16
    with pytest.raises(P.PrecisionError):
        P.inference_autocast('cpu', 'auto')


def test_channels_last_helpers_and_policy():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GroupNorm(2, 4))
    P.to_channels_last(net)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = P.channels_last_input(torch.rand(1, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    y = net(x)
    assert torch.allclose(y, net(torch.rand(1, 3, 8, 8).copy_(x)), atol=1e-6)
    assert P.channels_last_input(torch.rand(3, 8)).dim() == 2
    assert P.prefers_channels_last('cpu', 'bf16') and P.prefers_channels_last('cpu', 'fp32')
    assert P.prefers_channels_last('cuda', 'fp16') and not P.prefers_channels_last('mps', 'fp32')


def test_warm_up_runs_the_function_under_no_grad():
    calls = []

    def fn(x):
        calls.append(torch.is_grad_enabled())
        return x * 2

    P.warm_up(fn, torch.zeros(1, 3, 4, 4), passes=2)
    assert calls == [False, False]


@pytest.mark.parametrize('device, use_amp, dtype, flags, warns', [
    ('cpu', True, torch.bfloat16, ZEN3, True), ('cpu', True, 'bf16', ZEN3, True),
    ('cpu', True, torch.bfloat16, AMX, False), ('cpu', True, torch.bfloat16, AVX512_BF16, False),
    ('cpu', False, torch.bfloat16, ZEN3, False), ('cpu', True, torch.float16, ZEN3, False),
    ('cuda', True, torch.bfloat16, ZEN3, False), ('cpu', True, torch.bfloat16, set(), False)])
def test_slow_training_precision_warning_only_for_bf16_on_a_cpu_without_bf16_units(device, use_amp, dtype, flags,
                                                                                   warns):
    msg = P.slow_training_precision_warning(device, use_amp, dtype, flags=flags)
    assert (msg is not None) == warns
    if warns:  # one line naming the flags, the cost and the way out
        assert '\n' not in msg and 'amx_bf16' in msg and 'avx512_bf16' in msg
        assert 'reference convolution' in msg and '100x' in msg and 'use_amp: false' in msg
