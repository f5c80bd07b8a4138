"""scripts/paper/aesop_demo.py and scripts/bench/bench_aesop.py run end to end (tiny settings) and print their tables."""
import pytest
import torch

from tests.harness import load_script


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()  # the scripts set --threads
    yield
    torch.set_num_threads(n)


def load(name):
    return load_script({'aesop_demo': 'paper/aesop_demo', 'bench_aesop': 'bench/bench_aesop'}[name])


def test_null_space_texture_leaves_the_bicubic_lr_unchanged():
    demo = load('aesop_demo')
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    texture = demo.null_space_projection(noise)
    assert demo.bicubic_down(texture).abs().max() < 1e-4 * noise.abs().max()
    assert texture.abs().mean() > 0.5 * noise.abs().mean()  # most of the noise is texture


def test_demo_prints_the_table(capsys):
    load('aesop_demo').main(['--steps', '2', '--batch', '2', '--test-size', '32', '--threads', '1'])
    out = capsys.readouterr().out
    assert '| texture in the null space of bicubic x4 | 0.0300 | 0.0000' in out and 'L_AESOP / L1' in out


def test_bench_prints_both_models_and_the_ratio(capsys):
    load('bench_aesop').main(['--iters', '1', '--warmup', '0', '--batch', '1', '--threads', '1'])
    out = capsys.readouterr().out
    assert '| ldl |' in out and '| aesop |' in out and 'step-time ratio' in out
