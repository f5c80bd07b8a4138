"""Issue 13.11: every quickstart method with a table row ships its test option file in options/quickstart/
(``test_<option>``), in step with its training option, and shipping it changes nothing the quickstart evaluates:
the file is what ``generic_test_option`` generates (the training file's model, networks and train block), and the
weights key stays ``choose_param_key``'s for the run's length (a shortened run gets ``--force_yml
path:param_key_g=...``, as its generated file would have said)."""
import os.path as osp

import pytest
import yaml

from tests.harness import ROOT, load_script

OPTIONS = osp.join(ROOT, 'options', 'quickstart')


def _qs():
    return load_script('quickstart')


def _labelled_steps():
    return [step for stage in _qs().STAGES for step in stage.steps if step.label]


def _expected(qs, step):
    from basicsr_ext.utils.options import load_option_file
    train = qs.apply_force(load_option_file(osp.join(OPTIONS, step.option)), step.force)
    test = qs.generic_test_option(train, qs.choose_param_key(train, int(train['train']['total_iter'])))
    return train, test


def test_every_method_with_a_row_ships_its_test_option():
    steps = _labelled_steps()
    assert len(steps) >= 5
    for step in steps:
        name = step.test_option or f'test_{step.option}'
        assert osp.isfile(osp.join(OPTIONS, name)), f'options/quickstart/{name} is not shipped'


@pytest.mark.parametrize('option', [s.option for s in _labelled_steps()])
def test_shipped_test_option_is_in_step_with_its_training_option(option):
    from basicsr_ext.utils.options import load_option_file
    qs = _qs()
    step = next(s for s in _labelled_steps() if s.option == option)
    train, expected = _expected(qs, step)
    shipped = qs.plain_data(load_option_file(osp.join(OPTIONS, step.test_option or f'test_{step.option}')))
    expected = qs.plain_data(expected)
    fix = (f'options/quickstart/test_{option} is out of step with {option}; what scripts/quickstart.py would '
           f'generate:\n{yaml.safe_dump(expected, sort_keys=False)}')
    # what every shipped file must share with the generated one: what runs, on which data, which weights file
    for key in ('name', 'model_type', 'scale', 'datasets', 'val'):
        assert shipped.get(key) == expected.get(key), (key, fix)
    for key in [k for k in expected if k.startswith('network_')]:
        assert shipped.get(key) == expected[key], (key, fix)
    assert shipped['path']['pretrain_network_g'] == expected['path']['pretrain_network_g'], fix
    if step.test_option is None:  # found by the test_<option> convention: exactly the generated file
        assert shipped == expected, fix


def test_shipping_keeps_the_evaluated_weights_key(tmp_path, monkeypatch):
    """run_quickstart with the run's steps stubbed: a shortened TVQ&RAP stage II (2 iterations of an EMA at 0.9:
    81 % random init left) is judged on ``params`` as its generated file would be; the full one on the shipped
    file's ``params_ema`` with no override."""
    qs = _qs()
    commands = []
    monkeypatch.setattr(qs, 'build_data', lambda *a, **k: {})
    monkeypatch.setattr(qs, 'bicubic_row', lambda out: {'method': 'Bicubic'})
    monkeypatch.setattr(qs, 'plan_stages', lambda names, out, log: [s for s in qs.STAGES if s.name == 'tvqrap'])
    monkeypatch.setattr(qs, 'run_logged', lambda cmd, *a, **k: (commands.append(cmd), (0, 0.0))[1])
    monkeypatch.setattr(qs, 'evaluate_folder', lambda *a, **k: {})
    monkeypatch.setattr(qs, 'write_sheet', lambda *a, **k: None)
    monkeypatch.setattr(qs, '_weights_used', lambda test_opt, out: test_opt['path']['param_key_g'])

    def tests_run(scale):
        commands.clear()
        rows = qs.run_quickstart(str(tmp_path / f'out{scale}'), ['tvqrap'], iters_scale=scale, log=lambda m: None)
        runs = {osp.basename(c[c.index('-opt') + 1]): c for c in commands if c[1] == qs.TEST_SCRIPT}
        return runs, {r['method']: r['weights'] for r in rows[1:]}

    runs, weights = tests_run(0.01)
    stage2 = runs['test_tvqrap_stage2.yml']
    assert stage2[stage2.index('-opt') + 1] == osp.join(qs.OPTIONS_DIR, 'test_tvqrap_stage2.yml')  # the shipped file
    assert stage2[-2:] == ['--force_yml', 'path:param_key_g=params']
    assert weights['TVQ&RAP stage II (code prediction)'] == 'params'
    rap = runs['test_tvqrap_rap.yml']  # fine-tuned from stage II: its EMA starts from trained weights
    assert '--force_yml' not in rap and weights['TVQ&RAP stage III (RAP)'] == 'params_ema'
    runs, weights = tests_run(1.0)
    assert all('--force_yml' not in c for c in runs.values()) and set(weights.values()) == {'params_ema'}
    assert not (tmp_path / 'out1.0' / 'options').exists()  # nothing generated: every file is shipped


@pytest.mark.parametrize('option', [s.option for s in _labelled_steps()])
def test_shipped_test_option_builds_its_dataset_on_the_quickstart_folders(option, tmp_path, monkeypatch):
    """The data block opens the quickstart's val folders as its model needs them: LR/HR pairs at the model's scale
    for SR, the HR photo alone (whole, no crop) for the scale-1 tokenizer. A paired block for the tokenizer failed
    here with 'GT is 256x256 but LQ is 64x64; expected GT = LQ x 1'."""
    import cv2
    import numpy as np
    from basicsr.data import build_dataset

    from basicsr_ext.utils.options import load_option_file
    step = next(s for s in _labelled_steps() if s.option == option)
    shipped = load_option_file(osp.join(OPTIONS, step.test_option or f'test_{step.option}'))
    scale = int(shipped['scale'])
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    for folder, img in (('datasets/val/HR', hr), ('datasets/val/LRx4', hr[::4, ::4])):
        (tmp_path / folder).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / folder / 'photo.png'), img)
    monkeypatch.chdir(tmp_path)   # the shipped files name the folders relative to quickstart_out/
    block = dict(shipped['datasets']['test_1'], phase='test', scale=scale)
    sample = build_dataset(block)[0]
    assert tuple(sample['gt'].shape) == (3, 96, 80)
    if scale == 1:
        assert 'lq' not in sample or tuple(sample['lq'].shape) == (3, 96, 80)
    else:
        assert tuple(sample['lq'].shape) == (3, 96 // scale, 80 // scale)
