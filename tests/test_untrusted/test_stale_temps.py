"""Issue 13.3 follow-up: a SIGKILL during a save leaves the atomic writer's hidden ``.<name>.<random>.tmp`` in
``models/`` or ``training_states/``; the next run in that experiment folder (``--auto_resume`` or not) removes
them once every launch check passed (``basicsr_ext.preflight.remove_stale_temp_files``, called by the patched
``parse_options``), logging one line with the count. Only files named as the writer names them go.
(The kill sweep, ``test_kill_sweep.py``, checks the count after each real kill.)"""
import os
import sys

import pytest

from basicsr_ext.utils.atomic import atomic_write, is_temp_name, remove_stale_temps, write_bytes_atomic
from basicsr_ext.utils.options import OptionError
from tests import harness
from tests.test_untrusted import stock

NAME = 'stale'


def _writer_temp_name(folder, dest):
    """The temporary name atomic_write really uses for ``folder/dest`` (recorded during a write)."""
    seen = []

    def write(tmp):
        seen.append(os.path.basename(tmp))
        open(tmp, 'wb').close()

    atomic_write(os.path.join(folder, dest), write)
    os.remove(os.path.join(folder, dest))
    return seen[0]


def _leave_stale(folder, dest, data=b'half a file'):
    """What a kill between the writer's mkstemp and its rename leaves: a file under the writer's temporary name."""
    name = _writer_temp_name(folder, dest)
    with open(os.path.join(folder, name), 'wb') as f:
        f.write(data)
    return name


KEEP = ['net_g_5.pth', '5.state', '.net_g_5.pth.tmp', 'net_g_5.pth.abcd1234.tmp', '.net_g_5.pth.ABCD1234.tmp',
        '.net_g_5.pth.abcd123.tmp', '.net_g_5.pth.abcd1234.tmp.bak', 'notes.txt']


def test_only_the_writers_temporary_files_are_removed(tmp_path):
    folder = tmp_path / 'models'
    folder.mkdir()
    for name in KEEP:
        (folder / name).write_bytes(b'keep')
    (folder / '.net_g_1.pth.abcd1234.tmp').mkdir()  # a folder named like one
    os.symlink(folder / 'notes.txt', folder / '.net_g_2.pth.abcd1234.tmp')  # a link named like one
    (folder / 'sub').mkdir()
    stale = [_leave_stale(str(folder), 'net_g_6.pth'), _leave_stale(str(folder), '6.state')]
    _leave_stale(str(folder / 'sub'), 'x.pth')  # not recursive
    assert all(is_temp_name(n) for n in stale) and not any(is_temp_name(n) for n in KEEP)
    removed = remove_stale_temps(str(folder))
    assert sorted(os.path.basename(p) for p in removed) == sorted(stale)
    left = sorted(os.listdir(folder))
    assert left == sorted(KEEP + ['.net_g_1.pth.abcd1234.tmp', '.net_g_2.pth.abcd1234.tmp', 'sub'])
    assert (folder / 'notes.txt').read_bytes() == b'keep' and len(os.listdir(folder / 'sub')) == 1
    assert remove_stale_temps(str(folder)) == [] and remove_stale_temps(str(tmp_path / 'nowhere')) == []
    write_bytes_atomic(str(folder / 'net_g_7.pth'), b'complete')  # the writer itself leaves nothing behind
    assert remove_stale_temps(str(folder)) == []


def _experiment(tmp_path):
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=2, size=64)
    exp = tmp_path / 'experiments' / NAME
    for sub in ('models', 'training_states'):
        (exp / sub).mkdir(parents=True)
    (exp / 'models' / 'net_g_2.pth').write_bytes(b'earlier')
    stale = [_leave_stale(str(exp / 'models'), 'net_g_4.pth'), _leave_stale(str(exp / 'models'), 'net_g_3.pth'),
             _leave_stale(str(exp / 'training_states'), '3.state')]
    return data, exp, stale


@pytest.mark.parametrize('auto_resume', [True, False])
def test_a_run_in_the_experiment_folder_removes_them_with_one_line(tmp_path, monkeypatch, capsys, auto_resume):
    import basicsr.train as btrain
    data, exp, stale = _experiment(tmp_path)
    path = harness.write_options(str(tmp_path / 'o.yml'), stock.sr_options(data, NAME))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', path] + (['--auto_resume'] if auto_resume else []))
    btrain.parse_options(str(tmp_path), is_train=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if 'stale' in line]
    assert len(lines) == 1 and lines[0].startswith('Removed 3 stale temporary files of an interrupted save'), lines
    assert str(exp / 'models') in lines[0] and str(exp / 'training_states') in lines[0]
    assert os.listdir(exp / 'models') == ['net_g_2.pth'] and os.listdir(exp / 'training_states') == []
    btrain.parse_options(str(tmp_path), is_train=True)  # nothing left: no line
    assert 'stale' not in capsys.readouterr().out


def test_a_failed_launch_leaves_them(tmp_path, monkeypatch, capsys):
    import basicsr.train as btrain
    data, exp, stale = _experiment(tmp_path)
    opt = stock.sr_options(data, NAME)
    opt['network_g']['num_blocks'] = 2  # a typo: the launch is refused, the disk stays as it was
    path = harness.write_options(str(tmp_path / 'o.yml'), opt)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', path, '--auto_resume'])
    with pytest.raises(OptionError, match='num_blocks'):
        btrain.parse_options(str(tmp_path), is_train=True)
    assert sorted(os.listdir(exp / 'models')) == sorted(['net_g_2.pth', *stale[:2]])
    assert os.listdir(exp / 'training_states') == [stale[2]]
    assert 'stale' not in capsys.readouterr().out
