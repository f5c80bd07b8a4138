"""Issue 13.9 (GPU): on a CUDA device, inference estimates an image's memory from its header against the GPU's free
memory too (``torch.cuda.mem_get_info``) and skips one that cannot fit with the figures and ``--tile`` as the
advice, before anything is decoded or moved to the device. No GPU here: the device and the driver's figure are
monkeypatched (the check reads only them)."""
import pytest
import torch

from basicsr_ext import infer
from basicsr_ext.utils.image_io import ImageError
from tests.test_untrusted.test_infer_nothing_lost import _png_header

GIB = 1024 ** 3


def _upscaler(tile=0, free=2 * GIB, monkeypatch=None, precision='fp32'):
    up = infer.Upscaler(torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.Conv2d(64, 12, 1),
                                            torch.nn.PixelShuffle(2)), scale=2, tile=tile, device='cpu')
    up.device = torch.device('cuda', 0)  # as if built on a GPU: only the memory check reads it here
    if precision != 'fp32':
        up.amp_dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}[precision]
    calls = []

    def mem_get_info(device=None):
        calls.append(device)
        return free, 80 * GIB

    monkeypatch.setattr(torch.cuda, 'mem_get_info', mem_get_info)
    return up, calls


def test_too_large_for_the_gpu_is_refused_with_tile_advice(tmp_path, monkeypatch):
    up, calls = _upscaler(monkeypatch=monkeypatch)
    src = tmp_path / 'big.png'
    src.write_bytes(_png_header(4000, 3000))  # x2: 8000 x 6000, 64-channel maps: about 23 GiB in fp32
    with pytest.raises(ImageError) as e:
        infer.check_memory(up, str(src), available=512 * GIB)  # plenty of RAM: the GPU is what does not fit
    msg = str(e.value)
    assert 'big.png' in msg and 'GiB of GPU memory on cuda:0, 2.0 GiB free' in msg and 'feature maps' in msg, msg
    assert 'use --tile 256' in msg and '--precision fp16/bf16' in msg and '\n' not in msg, msg
    assert calls == [torch.device('cuda', 0)]


def up32_maps(w, h):
    up = infer.Upscaler(torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.Conv2d(64, 12, 1),
                                            torch.nn.PixelShuffle(2)), scale=2, device='cpu')
    up.device = torch.device('cuda', 0)
    return up.gpu_memory_needed(w, h)[1]


def test_it_fits_with_tiles_and_small_images_pass(tmp_path, monkeypatch):
    src = tmp_path / 'big.png'
    src.write_bytes(_png_header(4000, 3000))
    up, _ = _upscaler(tile=256, free=4 * GIB, monkeypatch=monkeypatch)
    infer.check_memory(up, str(src), available=512 * GIB)  # tiled: feature maps of one tile
    buffers, maps = up.gpu_memory_needed(4000, 3000)
    assert buffers < 4 * GIB and maps < 300 * 1024 ** 2 < 20 * GIB < up32_maps(4000, 3000)
    small = tmp_path / 'small.png'
    small.write_bytes(_png_header(640, 480))
    up, _ = _upscaler(monkeypatch=monkeypatch)
    infer.check_memory(up, str(small), available=512 * GIB)


def test_half_precision_halves_the_feature_maps_and_buffers_alone_say_so(tmp_path, monkeypatch):
    up32, _ = _upscaler(monkeypatch=monkeypatch)
    up16, _ = _upscaler(monkeypatch=monkeypatch, precision='fp16')
    assert up16.gpu_memory_needed(1000, 1000)[1] * 2 == up32.gpu_memory_needed(1000, 1000)[1]
    src = tmp_path / 'huge.png'
    src.write_bytes(_png_header(12000, 12000))  # even the tiled output buffers exceed 2 GiB: tiles cannot help
    up, _ = _upscaler(tile=256, monkeypatch=monkeypatch)
    with pytest.raises(ImageError, match='for the image buffers alone: split or downscale the image'):
        infer.check_memory(up, str(src), available=512 * GIB)
    src.write_bytes(_png_header(3000, 3000))  # buffers fit, the feature maps of 512-pixel tiles do not
    up, _ = _upscaler(tile=512, free=int(1.6 * GIB), monkeypatch=monkeypatch)
    with pytest.raises(ImageError, match='use a smaller --tile or --precision fp16/bf16'):
        infer.check_memory(up, str(src), available=512 * GIB)


def test_cpu_runs_never_ask_the_gpu(tmp_path, monkeypatch):
    up, calls = _upscaler(monkeypatch=monkeypatch)
    up.device = torch.device('cpu')
    src = tmp_path / 'small.png'
    src.write_bytes(_png_header(64, 64))
    infer.check_memory(up, str(src), available=512 * GIB)
    assert calls == []
