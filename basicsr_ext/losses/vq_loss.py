"""Losses of the VQ stages of TVQ&RAP (paper notes §2 and §4): LPIPS-VGG as a training loss and the VQGAN
adaptive GAN weight (one place, used by stage I at the decoder's last conv and by stage III at the predictor's
final Linear).

The codebook loss and the alignment loss are computed by the tokenizer arch itself (they need its internals);
the hinge GAN terms are BasicSR's ``GANLoss(gan_type='hinge')`` (D: ``relu(1 - real)``/``relu(1 + fake)``,
G: ``-mean(fake)``), so nothing of that is repeated here.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Mapping

import torch
from torch import nn
from basicsr.utils.registry import LOSS_REGISTRY

from basicsr_ext.utils.checkpoint import (CheckpointError, check_finite, extract_state_dict, fetch_hub_file,
                                         load_checkpoint)

VGG16_FILE = 'vgg16-397923af.pth'
LPIPS_VGG_FILE = 'LPIPS_v0.1_vgg-a78928a0.pth'
VGG16_URL = 'https://download.pytorch.org/models/' + VGG16_FILE
LPIPS_VGG_URL = 'https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/' + LPIPS_VGG_FILE

# the torchvision ``vgg16().features`` indices that end each LPIPS slice (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
_VGG_SLICE_ENDS = (4, 9, 16, 23, 30)
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class LPIPSWeightsMissing(CheckpointError):
    """The pretrained VGG16 or LPIPS linear-head weights are not on disk (and downloading is off)."""


def weight_folders() -> list[str]:
    """Where the LPIPS loss looks for its two weight files: torch hub's ``checkpoints`` (torchvision's cache,
    ``$TORCH_HOME/hub/checkpoints``) and pyiqa's cache (``$TORCH_HOME/hub/pyiqa``)."""
    hub = torch.hub.get_dir()
    return [os.path.join(hub, 'checkpoints'), os.path.join(hub, 'pyiqa')]


def _find(file_name: str, explicit: str | None) -> str | None:
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    for folder in weight_folders():
        path = os.path.join(folder, file_name)
        if os.path.isfile(path):
            return path
    return None


def weight_files(vgg_weight_path: str | None = None, lpips_weight_path: str | None = None,
                 download: bool = False) -> tuple[str, str]:
    """The two files ``LPIPSLoss(pretrained=True)`` loads (VGG16, LPIPS heads): the explicit paths, else found in
    :func:`weight_folders`. With ``download``, a missing one is fetched into ``$TORCH_HOME/hub/checkpoints``
    (``utils.checkpoint.fetch_hub_file``: a temporary name renamed when complete); a file still missing is one
    LPIPSWeightsMissing naming the files, their URLs and the folders. Nothing is read here."""
    vgg = _find(VGG16_FILE, vgg_weight_path)
    lpips = _find(LPIPS_VGG_FILE, lpips_weight_path)
    if download and (vgg is None or lpips is None):
        folders = weight_folders()
        for name, url, found in ((VGG16_FILE, VGG16_URL, vgg), (LPIPS_VGG_FILE, LPIPS_VGG_URL, lpips)):
            if found is None:
                try:
                    fetch_hub_file(url, folders[0], name, check_hash=name == VGG16_FILE, also=folders[1])
                except CheckpointError as e:
                    raise LPIPSWeightsMissing(f'LPIPSLoss: {e}') from None
        vgg, lpips = _find(VGG16_FILE, vgg_weight_path), _find(LPIPS_VGG_FILE, lpips_weight_path)
    if vgg is None or lpips is None:
        missing = [f'{n} ({u})' for n, u, f in ((VGG16_FILE, VGG16_URL, vgg), (LPIPS_VGG_FILE, LPIPS_VGG_URL, lpips))
                   if f is None]
        where = ' or '.join(weight_folders())
        explicit = [p for p in (vgg_weight_path, lpips_weight_path) if p and not os.path.isfile(p)]
        raise LPIPSWeightsMissing(
            f'LPIPSLoss(pretrained=True) needs weight files that are not on disk: {"; ".join(missing)}. '
            f'Put them in {where} (TORCH_HOME={os.environ.get("TORCH_HOME", "<unset>")}), or set '
            'vgg_weight_path / lpips_weight_path, or download: true, or pretrained: false (random '
            'weights: tests only)' + (f'; not found: {", ".join(explicit)}' if explicit else ''))
    return vgg, lpips


def _vgg16_features() -> nn.Sequential:
    """VGG16's convolutional trunk up to relu5_3, indexed as torchvision's ``vgg16().features`` (so its
    ``features.*`` weights load directly); built here because torchvision's constructor also allocates the
    120M-parameter classifier."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512):
        if v == 'M':
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU(inplace=True)]
            in_ch = v
    assert len(layers) == _VGG_SLICE_ENDS[-1]
    return nn.Sequential(*layers)


class LPIPSVGG(nn.Module):
    """LPIPS v0.1 with a VGG16 trunk (Zhang et al. 2018): unit-normalised features of 5 VGG stages, squared
    differences weighted by 1x1 linear heads, spatially averaged, summed. Frozen, always fp32.

    ``forward(x, y)`` takes the trunk's input already normalised (see :class:`LPIPSLoss`), returns (B,) scores.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _LPIPS_CHANNELS)
        with torch.no_grad():  # trained LPIPS heads are non-negative: keep random heads a distance too
            for lin in self.lins:
                lin.weight.abs_()
        self.register_buffer('shift', torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('scale', torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPSVGG:  # always frozen, eval mode
        return super().train(False)

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, start = [], 0
        for end in _VGG_SLICE_ENDS:
            for layer in self.features[start:end]:
                x = layer(x)
            outs.append(x)
            start = end
        return outs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self._stages((x - self.shift) / self.scale), self._stages((y - self.shift) / self.scale)
        total = 0
        for lin, a, b in zip(self.lins, fx, fy):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b) ** 2).mean(dim=(2, 3))
        return total.flatten()

    @staticmethod
    def pretrained_state(vgg_path: str, lpips_path: str) -> 'tuple[OrderedDict[str, torch.Tensor], OrderedDict[str, torch.Tensor]]':
        """(trunk, heads): the weights of ``features`` and ``lins`` read from torchvision's ``vgg16-397923af.pth``
        and the LPIPS v0.1 VGG heads (original or pyiqa layout), weights-only, checked finite."""
        vgg = extract_state_dict(load_checkpoint(vgg_path), None, vgg_path)
        heads = extract_state_dict(load_checkpoint(lpips_path), None, lpips_path)
        check_finite(vgg, vgg_path)
        check_finite(heads, lpips_path)
        trunk = OrderedDict()
        for k, v in vgg.items():
            if k.startswith('features.') and int(k.split('.')[1]) < _VGG_SLICE_ENDS[-1]:
                trunk[k[len('features.'):]] = v
        lins = OrderedDict()
        for i in range(len(_LPIPS_CHANNELS)):
            for cand in (f'lin{i}.model.1.weight', f'lin{i}.model.0.weight', f'lins.{i}.model.1.weight',
                         f'lins.{i}.model.0.weight', f'lins.{i}.weight'):
                if cand in heads:
                    lins[f'{i}.weight'] = heads[cand]
                    break
            else:
                raise CheckpointError(f'{lpips_path}: no LPIPS head for stage {i} (expected key lin{i}.model.1.weight); '
                                      f'keys found: {list(heads)[:8]}')
        return trunk, lins

    def load_pretrained(self, vgg_path: str, lpips_path: str) -> None:
        """torchvision's ``vgg16-397923af.pth`` and the LPIPS v0.1 VGG heads (:meth:`pretrained_state`)."""
        trunk, lins = self.pretrained_state(vgg_path, lpips_path)
        self.features.load_state_dict(trunk, strict=True)
        self.lins.load_state_dict(lins, strict=True)


@LOSS_REGISTRY.register()
class LPIPSLoss(nn.Module):
    """LPIPS-VGG (v0.1) as a training loss on [0, 1] RGB images, computed in fp32 (paper notes §2/§4).

    Args:
        loss_weight: multiplier of the mean LPIPS distance.
        pretrained: load torchvision's VGG16 (``vgg16-397923af.pth``) and the LPIPS heads
            (``LPIPS_v0.1_vgg-a78928a0.pth``) from ``vgg_weight_path`` / ``lpips_weight_path`` or from
            ``$TORCH_HOME/hub/checkpoints`` or ``$TORCH_HOME/hub/pyiqa`` (the folders torchvision and pyiqa
            use, so one copy serves both). ``false`` = random weights (tests, smoke runs; no file needed).
        official_normalization: the released TVQ&RAP (CodeFormer lineage) feeds LPIPS with images mapped to
            [0, 1] *and then* ImageNet mean/std-normalised, although LPIPS expects [-1, 1] and applies its own
            scaling layer: a double normalisation. ``true`` replicates that (what the released weights were
            trained with; the paper option files set it), ``false`` (default) is standard LPIPS (x·2−1), i.e.
            the same function as the LPIPS metric.
        download: when a file is missing, fetch it into ``$TORCH_HOME/hub/checkpoints`` (off by default: a
            missing file is one error that names the files and folders).
        reduction: ``mean`` (default) or ``sum`` over the batch.
    """

    def __init__(self, loss_weight: float = 1.0, pretrained: bool = True, official_normalization: bool = False,
                 vgg_weight_path: str | None = None, lpips_weight_path: str | None = None, download: bool = False,
                 reduction: str = 'mean') -> None:
        super().__init__()
        if reduction not in ('mean', 'sum'):
            raise ValueError(f'LPIPSLoss: reduction must be mean or sum, got {reduction!r}')
        self.loss_weight = float(loss_weight)
        self.official_normalization = bool(official_normalization)
        self.reduction = reduction
        self.net = LPIPSVGG()
        self.register_buffer('mean', torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            self.net.load_pretrained(*weight_files(vgg_weight_path, lpips_weight_path, download))

    @classmethod
    def check_pretrained(cls, block: Mapping[str, Any]) -> None:
        """What the constructor of ``block`` (a ``train:`` option block) needs on disk, checked before the model is
        built (``basicsr_ext.preflight``): with ``pretrained`` (default true) both weight files exist (fetched
        first with ``download: true``), read weights-only, finite, and fit the network (names and shapes, checked
        against a network on the meta device: nothing is allocated)."""
        if not block.get('pretrained', True):
            return
        vgg, lpips = weight_files(block.get('vgg_weight_path'), block.get('lpips_weight_path'),
                                  bool(block.get('download', False)))
        trunk, lins = LPIPSVGG.pretrained_state(vgg, lpips)
        with torch.device('meta'):
            ref = LPIPSVGG()
        for path, got, want in ((vgg, trunk, ref.features.state_dict()), (lpips, lins, ref.lins.state_dict())):
            missing = [k for k in want if k not in got]
            wrong = [k for k in want if k in got and tuple(got[k].shape) != tuple(want[k].shape)]
            if missing or wrong:
                k = (missing or wrong)[0]
                raise CheckpointError(f'{path} does not fit LPIPS-VGG: ' + (
                    f'{len(missing)} missing keys (first: {k})' if missing else
                    f'{len(wrong)} tensors of the wrong shape (first: {k} {tuple(got[k].shape)} vs '
                    f'{tuple(want[k].shape)})'))

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        if self.official_normalization:
            return (x01 - self.mean) / self.std
        return x01 * 2 - 1

    def distance(self, pred01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distance (B,), fp32 even inside autocast."""
        device_type = pred01.device.type
        with torch.autocast(device_type if device_type in ('cuda', 'cpu') else 'cpu', enabled=False):
            return self.net(self.normalize(pred01.float()), self.normalize(target01.float()))

    def forward(self, pred01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
        d = self.distance(pred01, target01)
        return self.loss_weight * (d.mean() if self.reduction == 'mean' else d.sum())


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float = 1e4, eps: float = 1e-4, scale: float = 0.75) -> torch.Tensor:
    """VQGAN's adaptive weight of the generator's GAN term (Esser et al. 2021, eq. 7; TVQ&RAP notes §2, §4):

        d = ||∇_w L_rec|| / (||∇_w L_gan|| + eps),  clamped to [0, max_weight], detached, times ``scale``

    where ``w`` is ``last_layer`` (stage I: the decoder's last conv weight; stage III: the predictor's final
    Linear weight, because the decoder is frozen). Gradients are taken with ``retain_graph=True`` and do not
    touch ``.grad``; norms are computed in fp32. A GAN term that does not reach ``last_layer`` gives weight 0.
    """
    if not last_layer.requires_grad:
        raise ValueError('adaptive_gan_weight: last_layer does not require grad (is it frozen?)')
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True, allow_unused=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True, allow_unused=True)[0]
    if rec_grad is None or gan_grad is None:
        return torch.zeros((), device=last_layer.device)
    weight = rec_grad.float().norm() / (gan_grad.float().norm() + eps)
    return weight.clamp(0.0, max_weight).detach() * scale

