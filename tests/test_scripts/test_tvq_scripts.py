"""TVQ&RAP demonstration scripts run end to end at toy sizes (Fig. 1c, RAP ablation, cost benchmark)."""
import pytest

from tests.harness import load_script


def _script(name: str):
    group = 'bench' if name.startswith('bench') else 'paper'
    return load_script(f'{group}/{name}')


@pytest.mark.e2e
def test_fig1c_prints_a_row_per_size_and_method_and_writes_the_plot(tmp_path, capsys):
    plot = tmp_path / 'fig1c.png'
    assert _script('fig1c_tvq_vs_vq').main(['--iters', '1', '--sizes', '8', '16', '--batch', '1', '--threads', '1',
                                            '--out', str(plot)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(('| 8 ', '| 16 '))]
    assert len(rows) == 4 and {'TVQ', 'VQ'} == {r.split('|')[2].strip() for r in rows}
    assert plot.stat().st_size > 1000


@pytest.mark.e2e
def test_rap_ablation_compares_both_branches(capsys):
    assert _script('rap_ablation').main(['--tok-iters', '1', '--stage2-iters', '1', '--iters', '1', '--batch', '1',
                                         '--threads', '1']) == 0
    out = capsys.readouterr().out
    assert '| (a) code-level only | 1 |' in out and '| (b) RAP | 1 |' in out and '%' in out
    assert '| bicubic (reference) | - | - |' in out and '| sharpness |' in out


def test_paper_scripts_refuse_cuda_without_a_gpu_in_one_line(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for name in ('fig1c_tvq_vs_vq', 'rap_ablation'):
        with pytest.raises(SystemExit, match='no CUDA GPU'):
            _script(name).main(['--device', 'cuda', '--iters', '1', '--threads', '1'])


def test_on_device_sets_the_gpu_count_and_bf16_autocast():
    from basicsr_ext import scripting
    opt = scripting.on_device({'num_gpu': 1, 'train': {}}, 'cpu', bf16=True)
    assert opt['num_gpu'] == 0 and opt['train'] == {'use_amp': True, 'amp_dtype': 'bf16'}
    # without --bf16 the demos run fp32, also from an option file that says use_amp: auto (the quickstart tokenizer)
    opt = scripting.on_device(scripting.quickstart_options('tvq_tokenizer.yml', '.'), 'cpu')
    assert opt['train']['use_amp'] is False


def test_bench_reports_both_networks_and_ratios(capsys, monkeypatch):
    bench = _script('bench_tvqrap_cost')
    import torch
    from basicsr.archs.rrdbnet_arch import RRDBNet

    from basicsr_ext.archs.tvqrap_arch import TVQRAPNet
    from tests.test_archs.tvq_tiny import TINY_SR
    monkeypatch.setattr(bench, 'networks', lambda: {'TVQ&RAP': TVQRAPNet(**TINY_SR),
                                                    'RRDBNet (ESRGAN)': RRDBNet(3, 3, 8, 1, 4)})
    assert bench.main(['--sizes', '32', '--repeats', '1', '--warmup', '0', '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    assert '| TVQ&RAP | 32x32 |' in out and '| RRDBNet (ESRGAN) | 32x32 |' in out
    ratio = [line for line in out.splitlines() if line.startswith('| 32x32 | fp32 |')]
    assert len(ratio) == 1 and float(ratio[0].split('|')[3]) > 0
    with pytest.raises(SystemExit):
        bench.main(['--sizes', '30'])
    assert torch.get_num_threads() >= 1
