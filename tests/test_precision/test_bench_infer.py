"""scripts/bench/bench_infer.py on reduced nets: every path runs, the table has its columns, bf16 rows are skipped
with a reason where bf16 is emulated, and the fp32 + channels_last row agrees with the fp32 reference."""
import re

import pytest

from basicsr_ext.utils import precision as P
from tests.harness import load_script


@pytest.fixture(scope='module')
def bench():
    return load_script('bench/bench_infer')


def _rows(out):
    return [ln for ln in out.splitlines() if ln.startswith('| ') and 'latency' not in ln]


def test_table_on_tiny_nets(bench, capsys, monkeypatch):
    monkeypatch.setattr(P, 'cpu_flags', lambda path='/proc/cpuinfo': frozenset({'avx2'}))  # bf16 emulated
    assert bench.main(['--nets', 'tvqrap-tiny', '--sizes', '32', '--reps', '1', '--threads', '1']) == 0
    out = capsys.readouterr().out
    assert 'no bf16 units' in out and 'load average before' in out and 'load average after' in out
    rows = _rows(out)
    names = [r.split('|')[3].strip() for r in rows]
    assert names == ['fp32', 'fp32 + channels_last', 'bf16', 'bf16 + channels_last',
                     'bf16 + channels_last + cast weights (CLI)']
    assert all('skipped: bf16 emulated' in r for r in rows[2:])
    ref, cl = rows[0].split('|'), rows[1].split('|')
    assert ref[5].strip() == '1.00x' and ref[8].strip().startswith('ref / 100.00 %')
    psnr, agree = re.match(r'\s*([0-9.inf]+) / ([0-9.]+) %', cl[8]).groups()
    assert float(psnr) > 60 and float(agree) == 100.0  # same precision, other memory format: same codes
    assert float(ref[6]) > 0  # GMAC/s


def test_bf16_rows_and_the_cli_comparison(bench, capsys):
    assert bench.main(['--nets', 'rrdb-tiny', '--sizes', '32', '--reps', '1', '--threads', '1', '--force-bf16',
                       '--cli']) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    low = [r for r in rows if '| bf16' in r and '(auto)' not in r]  # the CLI row is 'bf16 (auto)' on a bf16 CPU
    assert len(low) == 3 and all(float(r.split('|')[8].split()[0]) >= 45 for r in low)
    cli = [r for r in rows if r.count('|') == 10 and '(auto)' in r]
    assert cli, out  # the CLI (precision auto) was timed against the best path
    assert float(cli[0].split('|')[9].strip().rstrip('x')) > 0 and float(cli[0].split('|')[5].strip().rstrip('x')) > 0
