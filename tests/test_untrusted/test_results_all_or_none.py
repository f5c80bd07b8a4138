"""Issue 13.8: basicsr_ext/test.py writes all results or none. A test set whose third image is corrupt (valid
header, truncated pixels: it passes the build check and fails when read) ends with one error line, no
results/<name> and no staging folder left, and an earlier results/<name> untouched; a good run puts the folder in
place (moving the earlier one aside, as BasicSR does)."""
import os

import pytest
import torch

from tests import harness
from tests.test_untrusted import stock

pytestmark = pytest.mark.e2e  # starts Python subprocesses (entry points, fresh interpreters)

NAME = 'all_or_none'


@pytest.fixture
def setup(tmp_path):
    from basicsr.archs.rrdbnet_arch import RRDBNet
    data = harness.make_paired_folders(str(tmp_path / 'data'), n=3, size=32)
    torch.save({'params': RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=8).state_dict()}, tmp_path / 'g.pth')
    opt = stock.sr_options(data, NAME)
    val = {'name': 'set', 'type': 'PairedImageDataset', 'dataroot_gt': data['gt'], 'dataroot_lq': data['lq'],
           'io_backend': {'type': 'disk'}}
    opt.update(datasets={'test_1': val}, val={'save_img': True, 'suffix': 'sr'})
    opt['path']['pretrain_network_g'] = str(tmp_path / 'g.pth')
    opt.pop('train')
    path = harness.write_options(str(tmp_path / 'test.yml'), opt)
    earlier = tmp_path / 'results' / NAME
    earlier.mkdir(parents=True)
    (earlier / 'keep.txt').write_text('earlier results')
    return tmp_path, data, path


def _test(path, cwd):
    return stock.run(harness.TEST, ['-opt', path], cwd)


def test_a_failing_test_run_writes_nothing(setup):
    tmp_path, data, path = setup
    lq = os.path.join(data['lq'], '002.png')
    with open(lq, 'rb') as f:
        head = f.read(60)  # signature + IHDR intact: the header check passes, decoding fails
    with open(lq, 'wb') as f:
        f.write(head)
    out = _test(path, tmp_path)
    stock.assert_refused(out, '002.png', 'cannot load sample 2')
    assert sorted(os.listdir(tmp_path / 'results')) == [NAME]  # no new folder, nothing archived
    assert os.listdir(tmp_path / 'results' / NAME) == ['keep.txt']
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.results-staging-')]


def test_a_good_test_run_puts_every_result_in_place(setup):
    tmp_path, _, path = setup
    out = _test(path, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = sorted(os.listdir(tmp_path / 'results'))
    assert len(results) == 2 and results[0] == NAME and results[1].startswith(f'{NAME}_archived_')
    assert (tmp_path / 'results' / results[1] / 'keep.txt').read_text() == 'earlier results'
    images = sorted(os.listdir(tmp_path / 'results' / NAME / 'visualization' / 'set'))
    assert images == ['000_sr.png', '001_sr.png', '002_sr.png']
    assert list((tmp_path / 'results' / NAME).glob('test_*.log'))
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.results-staging-')]
