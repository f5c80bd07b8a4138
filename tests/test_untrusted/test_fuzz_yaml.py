"""Fuzz the option loader: mutated option files, hostile tags, alias bombs, deep nesting, wrong types.

Every case ends in an OptionError or a result (then BasicSR's ``parse_options`` on it ends in an OptionError or
a parsed option dict); nothing is executed (a sentinel file never appears), nothing hangs or explodes in
memory. Seeded, a few hundred cases, < 20 s.
"""
import copy
import os
import random
import sys
import time

import pytest

from basicsr_ext.utils.options import OptionError, load_option_file, parse_options, yaml_load_safe

N_CASES = 300

BASE = """\
name: fuzz_case
model_type: SRModel
scale: 4
num_gpu: 0
manual_seed: 0
datasets:
  train:
    name: t
    type: PairedImageDataset
    dataroot_gt: datasets/train_HR.lmdb
    dataroot_lq: datasets/train_LRx4.lmdb
    io_backend:
      type: lmdb
    gt_size: 64
    use_hflip: true
  val:
    name: v
    type: PairedImageDataset
    dataroot_gt: datasets/val/HR
    dataroot_lq: datasets/val/LRx4
    io_backend: {type: disk}
network_g: &net
  type: RRDBNet
  num_feat: 16
  num_block: 2
network_ema: *net
path:
  pretrain_network_g: ~
  resume_state: ~
train:
  optim_g: {type: Adam, lr: !!float 1e-3, betas: [0.9, 0.99]}
  total_iter: 400
  pixel_opt:
    <<: {type: L1Loss}
    loss_weight: 1.0
val:
  val_freq: 200
logger:
  print_freq: 50
"""

TOKENS = [
    '&a ', '*a', '*net', '<<: *net', '!!float ', '!!int ', '!!str ', '!!binary ', '!!set ', '!!omap ', '!!timestamp ',
    '!!python/object/apply:os.system ["touch {s}"]', '!!python/object/new:os.system ["touch {s}"]',
    '!!python/name:os.system', '!!python/module:os', '!!python/tuple [1]', '!custom ', '!<tag:yaml.org,2002:python/'
    'object/apply:os.system> ["touch {s}"]', '{', '}', '[', ']', ': ', '- ', '? ', '|', '>', '---', '...', '%YAML 1.1',
    '%TAG !p! tag:yaml.org,2002:python/', '!p!object/apply:os.system ["touch {s}"]', '\t', '\x00', '\ufeff', '\x85',
    '"', "'", '\\', '#', '@', '`', '~', 'null', 'true', '1e99999', '-1', '0x', '9' * 50, ',', '\n  ', '\n', '  ',
]


def _mutate(rng: random.Random, text: str, sentinel: str) -> str:
    for _ in range(rng.randint(1, 5)):
        kind = rng.randrange(7)
        p = rng.randrange(len(text) + 1)
        if kind in (0, 1, 2):  # insert a YAML-significant token
            text = text[:p] + rng.choice(TOKENS).replace("{s}", sentinel) + text[p:]
        elif kind == 3:  # delete a span
            text = text[:p] + text[p + rng.randint(1, 20):]
        elif kind == 4:  # duplicate a span
            text = text[:p] + text[p:p + rng.randint(1, 40)] + text[p:]
        elif kind == 5:  # swap two lines
            lines = text.split('\n')
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            text = '\n'.join(lines)
        elif text:  # flip a character
            text = text[:p] + chr(rng.randrange(1, 0x250)) + text[p + 1:]
    return text


def _parse(path: str, root: str, monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', path])
    return parse_options(root, is_train=True)


def _case(tmp_path, monkeypatch, name: str, text: str, sentinel: str, deadline: float = 2.0) -> str:
    path = tmp_path / f'{name}.yml'
    path.write_text(text, encoding='utf-8', errors='surrogatepass') if isinstance(text, str) else path.write_bytes(text)
    t = time.process_time()  # CPU time (<= wall time): a loaded machine does not fail the bound
    try:
        opt = load_option_file(str(path))
    except OptionError:
        outcome = 'refused'
    else:
        str(opt)  # what logging does; bounded because the loader bounds alias expansion
        copy.deepcopy(opt)
        try:
            parsed, _ = _parse(str(path), str(tmp_path), monkeypatch)
            assert parsed['name'] == opt['name'] and parsed['is_train'] is True
            outcome = 'parsed'
        except OptionError:
            outcome = 'loaded-refused-by-parse'
    assert not os.path.exists(sentinel), f'{name}: the payload ran'
    assert time.process_time() - t < deadline, f'{name}: took {time.process_time() - t:.1f} CPU s'
    return outcome


def test_base_option_parses(tmp_path, monkeypatch):
    assert _case(tmp_path, monkeypatch, 'base', BASE, str(tmp_path / 'S')) == 'parsed'


@pytest.mark.parametrize('seed', [0])
def test_fuzz_mutated_option_files(tmp_path, monkeypatch, capsys, seed):
    sentinel = str(tmp_path / 'SENTINEL')
    rng = random.Random(seed)
    counts = {}
    t0 = time.process_time()
    for i in range(N_CASES):
        out = _case(tmp_path, monkeypatch, f'c{i}', _mutate(rng, BASE, sentinel), sentinel)
        counts[out] = counts.get(out, 0) + 1
    capsys.readouterr()
    assert time.process_time() - t0 < 20
    assert counts.get('refused', 0) > N_CASES // 5 and counts.get('parsed', 0) > N_CASES // 20, counts


@pytest.mark.e2e
def test_hostile_tags_never_run(tmp_path, monkeypatch):
    sentinel = str(tmp_path / 'SENTINEL')
    payloads = [
        f'x: !!python/object/apply:os.system ["touch {sentinel}"]',
        f'x: !!python/object/new:subprocess.Popen [["touch", "{sentinel}"]]',
        'x: !!python/name:os.system', 'x: !!python/module:os',
        f'x: !<tag:yaml.org,2002:python/object/apply:os.system> ["touch {sentinel}"]',
        f'%TAG !p! tag:yaml.org,2002:python/\n---\nx: !p!object/apply:os.system ["touch {sentinel}"]',
        f'x: !!python/object/apply:builtins.exec ["open({sentinel!r}, \'w\')"]',
        'x: !!python/object:collections.OrderedDict {a: 1}',
    ]
    for i, p in enumerate(payloads):
        assert _case(tmp_path, monkeypatch, f'tag{i}', 'name: a\ndatasets: {}\n' + p + '\n', sentinel) == 'refused'


#: CPU seconds a bounded load may take: generous (a loaded machine), yet far below an exponential expansion
CPU_BOUND_S = 20


def test_alias_bomb_and_deep_nesting_are_bounded(tmp_path, monkeypatch):
    sentinel = str(tmp_path / 'SENTINEL')
    lol = 'name: a\ndatasets: {}\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n'
    for i in range(1, 10):
        lol += f'l{i}: &l{i} [' + ', '.join([f'*l{i - 1}'] * 10) + ']\n'
    # CPU time of this process, not wall time (a loaded machine stretches the wall clock): the bounded loads take
    # well under a second; an unbounded expansion (10^10 leaves here) would take minutes and gigabytes
    t = time.process_time()
    with pytest.raises(OptionError, match='alias bomb'):
        yaml_load_safe(lol)
    assert time.process_time() - t < CPU_BOUND_S
    assert _case(tmp_path, monkeypatch, 'lol', lol, sentinel, deadline=CPU_BOUND_S) == 'refused'
    with pytest.raises(OptionError, match='refers to itself'):
        yaml_load_safe('a: &x [1, *x]')
    for depth in (200, 5000):
        for text in ('a: ' + '[' * depth + ']' * depth, 'a: ' + '{b: ' * depth + '1' + '}' * depth):
            t = time.process_time()
            try:
                yaml_load_safe(text)
            except OptionError as e:
                assert 'nested too deeply' in str(e)
            assert time.process_time() - t < CPU_BOUND_S
    # a small legitimate anchor/alias/merge use still loads
    assert yaml_load_safe('a: &x {k: 1}\nb: {<<: *x, j: 2}')['b'] == {'k': 1, 'j': 2}


@pytest.mark.parametrize('text', [
    '[1, 2]', '42', '~', '', 'name: 5\ndatasets: {}', 'name: a\ndatasets: [1]', 'name: a\ndatasets: {train: 3}',
    'name: a\ndatasets: {1: {}}', 'name: a\ndatasets: {train: {dataroot_gt: [1]}}', 'name: a\ndatasets: {}\npath: 3',
    'name: a\ndatasets: {}\npath: {pretrain_network_g: 5}', 'name: a\ndatasets: {}\npath: {1: x}',
    'name: a\ndatasets: {}\nmanual_seed: x', 'name: a\ndatasets: {}\nmanual_seed: -1',
    'name: a\ndatasets: {}\nmanual_seed: 99999999999999', 'name: a\ndatasets: {}\nnum_gpu: [1]',
    'a: !!float abc', 'a: !!int abc', 'a: !!timestamp 2020-99-99', '? [1, 2]\n: 3', 'a: ' + '9' * 5000,
    'a: \x00', b'\xff\xfe\x00bad', 'name: a',
])
def test_wrong_types_end_in_option_error(tmp_path, monkeypatch, text):
    outcome = _case(tmp_path, monkeypatch, 'wrong', text, str(tmp_path / 'S'))
    assert outcome in ('refused', 'loaded-refused-by-parse')
