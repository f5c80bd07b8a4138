"""`import basicsr_ext` registers every component of ours into BasicSR's registries, and no BasicSR name again."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e  # starts Python subprocesses (entry points, fresh interpreters)

EXPECTED = {
    'arch': {'AESOPAutoEncoder', 'TVQTokenizer', 'TVQRAPNet', 'TVQPatchGANDiscriminator'},
    'model': {'AESOPAutoEncoderModel', 'AESOPESRGANModel', 'AESOPRealESRGANModel', 'TVQTokenizerModel', 'TVQRAPModel'},
    'loss': {'AESOPLoss', 'LPIPSLoss'},
    'dataset': {'GTOnlyDataset'},
    'metric': {'pyiqa', 'calculate_ae_psnr', 'calculate_lr_psnr'},
}

PROBE = r'''
import importlib.util, json, os, sys
# stock BasicSR first (BASICSR_EXT_AUTOLOAD=0): load patches.py alone (importing basicsr_ext.patches would run the
# package __init__ and register everything) and apply only the torchvision entries that `import basicsr` needs
spec = importlib.util.spec_from_file_location('_patches_alone', os.path.join(sys.argv[1], 'basicsr_ext', 'patches.py'))
patches = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(patches)
patches.apply_all(stage='before_basicsr')

from basicsr.utils import registry as r
regs = {'arch': r.ARCH_REGISTRY, 'model': r.MODEL_REGISTRY, 'loss': r.LOSS_REGISTRY, 'dataset': r.DATASET_REGISTRY,
        'metric': r.METRIC_REGISTRY}
before = {k: set(v._obj_map) for k, v in regs.items()}
import basicsr_ext
import importlib
importlib.import_module('basicsr_ext')  # importing twice is harmless
after = {k: set(v._obj_map) for k, v in regs.items()}
print(json.dumps({k: sorted(after[k] - before[k]) for k in regs}))
'''


def test_import_registers_ours_and_nothing_of_basicsr():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, BASICSR_EXT_AUTOLOAD='0')  # else `import basicsr` would already import basicsr_ext
    out = subprocess.run([sys.executable, '-c', PROBE, root], capture_output=True, text=True, timeout=120, cwd=root,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    import json
    added = json.loads(out.stdout.strip().splitlines()[-1])
    for kind, names in EXPECTED.items():
        assert names <= set(added[kind]), (kind, names - set(added[kind]))
    # BasicSR raises on a second registration of a name, so a clean import proves no clash; also check the
    # names we add do not shadow BasicSR's suffixed fallbacks (e.g. UNetDiscriminatorSN_basicsr)
    for kind, names in added.items():
        for name in names:
            assert not name.endswith('_basicsr')
