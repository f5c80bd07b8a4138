"""bf16 autocast + channels_last training steps run on CPU through the benchmark's code path, and the loss
networks stay fp32."""
import os

import pytest
import torch

from tests.harness import ROOT, load_script

bench_engine = load_script('bench/bench_engine')


@pytest.mark.parametrize('option', ['aesop_autoencoder.yml', 'tvqrap_stage2.yml'])
def test_bf16_channels_last_steps_on_cpu(option, monkeypatch, tmp_path):
    path = os.path.join(ROOT, 'options', 'quickstart', option)
    if option.startswith('tvqrap'):  # needs a tokenizer checkpoint: a random one of the same options
        from basicsr.archs import build_network

        from basicsr_ext.utils.options import load_option_file
        opt = load_option_file(path)
        tok = build_network(dict(opt['network_tok']))
        torch.save({'params_ema': tok.state_dict()}, tmp_path / 'tok.pth')
        opt['path']['pretrain_network_tok'] = str(tmp_path / 'tok.pth')
        opt['path']['pretrain_network_g'] = None
        from tests import harness
        path = harness.write_options(str(tmp_path / 'o.yml'), opt)
    seen = []
    real_autocast = torch.autocast

    def spy_autocast(*args, **kwargs):  # record that mixed precision was really requested
        seen.append((kwargs.get('dtype'), kwargs.get('enabled', True)))
        return real_autocast(*args, **kwargs)
    monkeypatch.setattr(torch, 'autocast', spy_autocast)
    t = bench_engine.time_model_steps(path, {'use_amp': True, 'amp_dtype': 'bf16', 'channels_last': True}, steps=1,
                                      warmup=0, batch=2)
    assert t > 0
    assert (torch.bfloat16, True) in seen


def test_channel_affine_benchmark_restores_the_tiled_path_and_reports_four_variants():
    """bench_channel_affine's step table switches ChannelAffine's row tiling off for the broadcast baseline while it
    times it; afterwards the class is as shipped again, and the table has one row per variant."""
    from basicsr_ext.archs.tvq_blocks import ChannelAffine
    bench = load_script('bench/bench_channel_affine')
    forward, threshold = ChannelAffine.forward, ChannelAffine.TILE_BELOW_CHANNELS
    table = bench.tokenizer_step_table(steps=1, rounds=1)
    assert ChannelAffine.forward is forward and ChannelAffine.TILE_BELOW_CHANNELS == threshold
    rows = [line for line in table.splitlines()[2:] if line.startswith('|')]
    assert len(rows) == 4 and {r.split('|')[1].strip() for r in rows} == {'broadcast', 'row-tiled'}
