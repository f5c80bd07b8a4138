"""Option files are data: BasicSR semantics kept, code-carrying tags refused with file and line."""
import os
import subprocess
import sys
from collections import OrderedDict

import pytest

from basicsr_ext.utils.options import OptionError, load_option_file, yaml_load_safe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_basicsr_semantics_kept():
    text = """
name: x
base: &b {lr: !!float 2e-4, betas: [0.9, 0.99]}
train:
  optim_g: *b
  plain: 1e-4
  nothing: ~
"""
    opt = yaml_load_safe(text)
    assert isinstance(opt, OrderedDict) and list(opt) == ['name', 'base', 'train']
    assert opt['train']['optim_g']['lr'] == pytest.approx(2e-4)
    assert opt['train']['plain'] == '1e-4'  # PyYAML (YAML 1.1) semantics, as BasicSR
    assert opt['train']['nothing'] is None


@pytest.mark.parametrize('payload', [
    "!!python/object/apply:os.system ['touch {s}']",
    "!!python/object/new:os.system ['touch {s}']",
    "!!python/name:os.system",
    "!custom_tag 3",
])
def test_hostile_tags_refused_with_line(tmp_path, payload):
    sentinel = tmp_path / 'pwned'
    path = tmp_path / 'bad.yml'
    path.write_text('name: demo\nmodel_type: SRModel\nevil: ' + payload.format(s=sentinel) + '\n')
    with pytest.raises(OptionError) as e:
        load_option_file(str(path))
    assert 'line 3' in str(e.value) and str(path) in str(e.value)
    assert not sentinel.exists()


@pytest.mark.e2e
@pytest.mark.parametrize('entry', ['train.py', 'test.py'])
def test_entry_points_refuse_payload_without_running_it(tmp_path, entry):
    sentinel = tmp_path / 'pwned'
    path = tmp_path / 'bad.yml'
    path.write_text(f'name: demo\nmodel_type: SRModel\nnum_gpu: 0\ndatasets: {{}}\n'
                    f'x: !!python/object/apply:os.system ["touch {sentinel}"]\n')
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'basicsr_ext', entry), '-opt', str(path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode != 0
    assert 'line 5' in out.stderr and 'python/object/apply' in out.stderr
    assert not sentinel.exists()


def test_force_yml_is_parsed_as_data(tmp_path, monkeypatch):
    from basicsr_ext.utils.options import _set_by_path
    opt = OrderedDict(train=OrderedDict(ema_decay=0.999))
    _set_by_path(opt, 'train:ema_decay=!!float 5e-1')
    assert opt['train']['ema_decay'] == 0.5
    with pytest.raises(OptionError):
        _set_by_path(opt, 'train:x=!!python/object/apply:os.system ["echo"]')
    with pytest.raises(OptionError):
        _set_by_path(opt, 'nope:child=1')


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = tmp_path / 'broken.yml'
    path.write_text('name: a\n  bad: [\n')
    with pytest.raises(OptionError) as e:
        load_option_file(str(path))
    assert str(path) in str(e.value) and 'line' in str(e.value)
