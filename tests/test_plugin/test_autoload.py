"""The autoload hook: installing basicsr_ext makes the first `import basicsr` of any process import it too.

Every test here starts a fresh interpreter of this environment (where `python -m basicsr_ext.autoload install`
ran: see conftest.py), from a folder outside the repository and without PYTHONPATH, so only the installed hook
can bring basicsr_ext in.
"""
import json
import os

import pytest

from basicsr_ext import autoload
from tests.test_plugin.children import ROOT, run_python


@pytest.mark.e2e
def test_startup_imports_neither_torch_nor_basicsr_ext(tmp_path):
    code = ('import json, sys; print(json.dumps({"heavy": sorted(m for m in ("torch", "basicsr", "basicsr_ext", '
            '"torchvision", "numpy") if m in sys.modules), "hooked": any(getattr(f, "basicsr_ext_autoload", False) '
            'for f in sys.meta_path)}))')
    out = run_python(['-c', code], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {'heavy': [], 'hooked': True}
    out = run_python(['-c', code], tmp_path, BASICSR_EXT_AUTOLOAD='0')
    assert json.loads(out.stdout) == {'heavy': [], 'hooked': False}


@pytest.mark.e2e
def test_first_import_of_a_basicsr_submodule_brings_everything(tmp_path):
    """`import basicsr.train` as the very first import: basicsr is imported once, with our patches and components,
    and the basicsr module is the ordinary one (its own spec and loader)."""
    code = '''
import json, sys
import basicsr.train
import basicsr
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY
import basicsr_ext.patches as patches
print(json.dumps({
    'ours': ['TVQRAPModel' in MODEL_REGISTRY, 'AESOPESRGANModel' in MODEL_REGISTRY, 'TVQRAPNet' in ARCH_REGISTRY,
             'AESOPLoss' in LOSS_REGISTRY],
    'patches': sorted(set(patches.status().values())),
    'loader': type(basicsr.__spec__.loader).__name__,
    'same': sys.modules['basicsr'] is basicsr and basicsr.train is sys.modules['basicsr.train'],
    'hook_left': any(getattr(f, 'basicsr_ext_autoload', False) for f in sys.meta_path),
    'parse_options': basicsr.train.parse_options.__module__,
}))
'''
    out = run_python(['-c', code], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got['ours'] == [True] * 4
    assert set(got['patches']) <= {'applied', 'not needed'} and 'applied' in got['patches']
    assert got['loader'] == 'SourceFileLoader' and got['same'] and not got['hook_left']
    assert got['parse_options'].startswith('basicsr_ext.')


@pytest.mark.e2e
def test_opt_out_leaves_stock_basicsr(tmp_path):
    """BASICSR_EXT_AUTOLOAD=0: no hook, `import basicsr` is stock BasicSR. (On a stack where stock basicsr cannot
    import torchvision, the two torchvision entries of patches.py, loaded on their own, make it importable.)"""
    code = f'''
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location('_patches_alone', {os.path.join(ROOT, 'basicsr_ext', 'patches.py')!r})
patches = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(patches)
patches.apply_all(stage='before_basicsr')
import basicsr, basicsr.train, basicsr.utils.options
from basicsr.utils.registry import MODEL_REGISTRY
print(json.dumps({{'ours_loaded': 'basicsr_ext' in sys.modules, 'registered': 'TVQRAPModel' in MODEL_REGISTRY,
                  'parse_options': basicsr.utils.options.parse_options.__module__,
                  'load_resume_state': basicsr.train.load_resume_state.__module__}}))
'''
    out = run_python(['-c', code], tmp_path, BASICSR_EXT_AUTOLOAD='0')
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        'ours_loaded': False, 'registered': False, 'parse_options': 'basicsr.utils.options',
        'load_resume_state': 'basicsr.train'}


@pytest.mark.e2e
@pytest.mark.parametrize('entry', ['basicsr.train', 'basicsr.test'])
def test_hostile_yaml_refused_by_stock_entry_points(tmp_path, entry):
    sentinel = tmp_path / 'pwned'
    bad = tmp_path / 'bad.yml'
    bad.write_text(f'name: demo\nmodel_type: SRModel\nnum_gpu: 0\ndatasets: {{}}\n'
                   f'x: !!python/object/apply:os.system ["touch {sentinel}"]\n')
    out = run_python(['-m', entry, '-opt', str(bad)], tmp_path)
    assert out.returncode != 0
    assert 'OptionError' in out.stderr and 'line 5' in out.stderr and 'python/object/apply' in out.stderr
    assert not sentinel.exists()


def test_pth_install_is_idempotent_and_uninstall_removes(tmp_path):
    path, changed = autoload.install(str(tmp_path))
    assert changed and os.path.basename(path) == 'basicsr_ext_autoload.pth'
    text = open(path).read()
    assert text.count('\n') == 1 and text.startswith('import ')  # one line, executed by site at startup
    assert autoload.install(str(tmp_path)) == (path, False) and open(path).read() == text
    assert autoload.is_installed(str(tmp_path))
    assert autoload.uninstall(str(tmp_path)) == (path, True) and not os.path.exists(path)
    assert autoload.uninstall(str(tmp_path)) == (path, False)
    assert os.listdir(tmp_path) == []


@pytest.mark.e2e
def test_stale_hook_steps_aside(tmp_path):
    """The .pth left behind after basicsr_ext was uninstalled: `import basicsr` is stock, no error of ours."""
    import sysconfig
    purelib = sysconfig.get_paths()['purelib']
    code = f'''
import sys
sys.path.append({purelib!r})  # basicsr findable, but no .pth processed: no editable finder, basicsr_ext missing
exec(compile({autoload.pth_line()!r}, 'pth', 'exec'))
assert any(getattr(f, 'basicsr_ext_autoload', False) for f in sys.meta_path)
try:
    import basicsr
except Exception as e:  # stock basicsr may not import on this stack (torchvision): that is stock behaviour
    print('stock import failed:', type(e).__name__, e)
print('ours:', 'basicsr_ext' in sys.modules)
'''
    out = run_python(['-S', '-c', code], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'ours: False' in out.stdout and 'basicsr_ext' not in out.stdout.replace('ours:', '')
