"""Exact resume on the data side: the Real-ESRGAN pair queue goes through the training state (TVQRAPModel, the
same RealESRGANPairs as AESOPRealESRGANModel), and BasicSR's pipeline hands the resume point of the state it
loads to the train sampler it builds next."""
import copy
import os

import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model

from basicsr_ext.data.realesrgan_degradation import RealESRGANPairs, sample_realesrgan_kernels
from basicsr_ext.utils.checkpoint import atomic_save, load_checkpoint
from basicsr_ext.utils.training_state import set_rng_state
from tests.harness import ROOT, load_options

QUICK = load_options(os.path.join(ROOT, 'options', 'quickstart', 'tvqrap_rap.yml'))
STAGE2 = load_options(os.path.join(ROOT, 'options', 'train_tvqrap_stage2.yml'))


@pytest.fixture
def opt(tmp_path):
    tok = build_network(copy.deepcopy(QUICK['network_tok']))
    atomic_save({'params_ema': tok.state_dict()}, str(tmp_path / 'tok.pth'))
    opt = copy.deepcopy(STAGE2)
    opt.update(name='queue', num_gpu=0, is_train=True, dist=False, rank=0, world_size=1, queue_size=4,
               network_tok=copy.deepcopy(QUICK['network_tok']), network_g=copy.deepcopy(QUICK['network_g']))
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    opt['path'].update(pretrain_network_tok=str(tmp_path / 'tok.pth'), experiments_root=str(tmp_path),
                       models=str(tmp_path / 'models'), training_states=str(tmp_path / 'states'))
    return opt


def gt_only_batches(opt, n: int) -> list[dict]:
    """GT-only batches with Real-ESRGAN kernels (GTOnlyDataset with return_kernels); 8-bit GT."""
    kernel_opt = opt['datasets']['train']
    batches = []
    for i in range(n):
        ks = [sample_realesrgan_kernels(kernel_opt) for _ in range(2)]
        gt = torch.randint(0, 256, (2, 3, 128, 128), generator=torch.Generator().manual_seed(i)).float() / 255
        batches.append({'gt': gt, **{k: torch.stack([x[k] for x in ks]) for k in ks[0]}})
    return batches


def pairs_of(model, batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for b in batches:
        model.feed_data(b)
        out.append((model.lq.clone(), model.gt.clone()))
    return out


def test_pair_queue_state_round_trips_through_the_training_state(opt):
    np.random.seed(0)
    before, after = gt_only_batches(opt, 3), gt_only_batches(opt, 3)
    model = build_model(opt)
    assert isinstance(model.pairs, RealESRGANPairs) and model.pairs.queue.size == 4
    pairs_of(model, before)  # fills the queue (2 batches of 2), then swaps
    model.save_training_state(0, 3)
    state = load_checkpoint(os.path.join(opt['path']['training_states'], '3.state'))  # weights_only
    queue = state['extra']['pair_queue']
    assert queue['ptr'] == 4 and queue['gt'].dtype == torch.uint8  # 8-bit GT kept as 8 bits (4x smaller)
    assert queue['gt'].shape == (4, 3, 128, 128) and queue['lq'].shape == (4, 3, 32, 32)
    expected = pairs_of(model, after)  # the uninterrupted run

    resumed = build_model(opt)
    resumed.resume_training(state)
    set_rng_state(state['rng'][0])  # what the train sampler does before the first resumed batch
    for (lq, gt), (lq_r, gt_r) in zip(expected, pairs_of(resumed, after)):
        assert torch.equal(lq, lq_r) and torch.equal(gt, gt_r)

    fresh = build_model(opt)  # the control: the same RNG states without the queue give other pairs
    fresh.resume_training(dict(state, extra={}))
    set_rng_state(state['rng'][0])
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(expected, pairs_of(fresh, after)))


PIPELINE = '''
def pipeline(opt, data):
    resume_state = load_resume_state(opt)
    return resume_state, EnlargedSampler(data, 1, 0, 1), EnlargedSampler(data, 1, 0, 1)
'''


def test_the_pipeline_hands_the_resume_point_to_its_next_sampler_once(tmp_path):
    import basicsr.train as btrain

    from basicsr_ext.data.sampler import ResumableEnlargedSampler
    rng = [{'torch': torch.get_rng_state()}]
    atomic_save({'epoch': 1, 'iter': 7, 'optimizers': [], 'schedulers': [], 'rng': rng}, str(tmp_path / '7.state'))
    opt = {'name': 'p', 'auto_resume': False, 'rank': 0, 'num_gpu': 0, 'datasets': {'train': {'batch_size_per_gpu': 4}},
           'path': {'resume_state': str(tmp_path / '7.state'), 'models': str(tmp_path)}}
    namespace = {'load_resume_state': btrain.load_resume_state, 'EnlargedSampler': btrain.EnlargedSampler}
    exec(PIPELINE, namespace)  # a pipeline module of its own, as BasicSR's train.py run as a script
    state, first, second = namespace['pipeline'](opt, list(range(10)))
    assert state['iter'] == 7 and isinstance(first, ResumableEnlargedSampler)
    assert first.resume['epoch'] == 1 and first.resume['iter'] == 7 and first.resume['batch_size'] == 4
    assert torch.equal(first.resume['rng']['torch'], rng[0]['torch'])
    assert second.resume is None and namespace['EnlargedSampler'] is ResumableEnlargedSampler  # once
    opt['path']['resume_state'] = None
    assert namespace['pipeline'](opt, list(range(10)))[1].resume is None  # no state: nothing handed
    assert btrain.EnlargedSampler is ResumableEnlargedSampler  # BasicSR's own pipeline module untouched
