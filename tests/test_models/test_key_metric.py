"""val.key_metric: net_g_best.pth follows the best value in the metric's direction; LR reaches LR-PSNR."""
import numpy as np
import pytest
import torch
from basicsr.models.sr_model import SRModel

from basicsr_ext.metrics.fidelity_metric import bicubic_downscale_uint8
from basicsr_ext.models.engine import ConfigError, EngineMixin
from basicsr_ext.utils.checkpoint import load_checkpoint


class _KeyMetricModel(EngineMixin, SRModel):
    """SRModel whose 'prediction' is GT + noise of a chosen level (so the metric is controlled)."""

    noise = 0.0

    def test(self):
        g = torch.Generator().manual_seed(0)
        self.output = (self.gt + self.noise * torch.randn(self.gt.shape, generator=g)).clamp(0, 1)


class _Loader(list):
    def __init__(self, items, name):
        super().__init__(items)
        self.dataset = type('D', (), {'opt': {'name': name}})()


def _opt(tmp_path, metrics, key):
    return {'name': 'km', 'model_type': 'x', 'num_gpu': 0, 'is_train': True, 'dist': False, 'rank': 0,
            'world_size': 1, 'scale': 2,
            'network_g': {'type': 'SRVGGNetCompact', 'num_feat': 4, 'num_conv': 1, 'upscale': 2},
            'path': {'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'states'),
                     'visualization': str(tmp_path / 'vis')},
            'train': {'ema_decay': 0, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                      'optim_g': {'type': 'Adam', 'lr': 1e-4},
                      'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5}},
            'val': {'metrics': metrics, 'key_metric': key}}


def _data():
    rng = np.random.default_rng(0)
    gt = torch.from_numpy(rng.random((1, 3, 32, 32), dtype=np.float32))
    return [{'lq': torch.zeros(1, 3, 16, 16), 'gt': gt, 'lq_path': ['a.png']}]


def _marker(model, value):
    with torch.no_grad():
        model.net_g.body[0].bias.fill_(value)


def _best_marker(tmp_path):
    return float(load_checkpoint(str(tmp_path / 'models' / 'net_g_best.pth'))['params']['body.0.bias'][0])


@pytest.mark.parametrize('better', ['higher', 'lower'])
def test_best_checkpoint_follows_key_metric(tmp_path, better):
    metrics = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'better': better}}
    model = _KeyMetricModel(_opt(tmp_path, metrics, 'psnr'))
    loader = _Loader(_data(), 'val')
    # noise levels per validation, the PSNR falls as the noise rises
    for it, noise in enumerate([0.10, 0.20, 0.05, 0.30], start=1):
        model.noise = noise
        _marker(model, it)
        model.validation(loader, it, None, save_img=False)
    expected = 3 if better == 'higher' else 4  # best = least noise for higher, most noise for lower
    assert _best_marker(tmp_path) == expected
    assert model.best_metric_results['val']['psnr']['iter'] == expected


def test_unknown_key_metric_is_a_config_error(tmp_path):
    model = _KeyMetricModel(_opt(tmp_path, {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}, 'lpips'))
    with pytest.raises(ConfigError, match='key_metric'):
        model.validation(_Loader(_data(), 'val'), 1, None, save_img=False)


def test_validation_passes_the_lr_to_lr_psnr(tmp_path):
    """LR-PSNR gets the batch's LR (img_lq) from the engine: a wrong LR gives a low value, the right one inf."""
    metrics = {'lr_psnr': {'type': 'calculate_lr_psnr'}, 'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}
    model = _KeyMetricModel(_opt(tmp_path, metrics, 'lr_psnr'))
    batch = _data()[0]
    from basicsr.utils import tensor2img
    gt_u8 = tensor2img([batch['gt']])
    lq_u8 = bicubic_downscale_uint8(gt_u8, 2)
    good_lq = torch.from_numpy(lq_u8[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
    model.noise = 0.0
    model.validation(_Loader([dict(batch, lq=good_lq)], 'a'), 1, None, save_img=False)
    assert model.metric_results['lr_psnr'] > 45  # output == GT, its bicubic downscale == the LR
    model.validation(_Loader([batch], 'b'), 1, None, save_img=False)  # LR of zeros
    assert model.metric_results['lr_psnr'] < 15
