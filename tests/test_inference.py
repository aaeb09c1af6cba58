"""``segsr-infer``: tiling, image formats, output names and skipping, precision fallback, segmentation outputs, and
the errors for bad input. Tiny random networks and images of at most 64 x 64; the CLI runs in-process except once."""
import logging
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from PIL import Image

from conftest import REPO
from helpers.options import TINY_COMPACT
from helpers.models import training_checkpoint
from helpers.options import TINY_RRDB, TINY_UNET
from segsr.inference import main, output_path
from segsr.utils.checkpoint import save_network
from segsr.utils.model_io import LoadedNetwork, load_generator
from segsr.utils.upsampler import Upsampler, tile_process


def nearest_checkpoint(path) -> str:
    """A Compact x4 whose last conv is zero: its output is exactly the nearest-neighbour upscale of its input."""
    torch.manual_seed(0)
    net = build_network(dict(TINY_COMPACT))
    last = net.body[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    torch.save({'params_ema': net.state_dict()}, str(path))
    return str(path)


def nearest4(img: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(img, 4, axis=0), 4, axis=1)


@pytest.fixture
def nearest_model(tmp_path):
    return nearest_checkpoint(tmp_path / 'nearest.pth')


@pytest.mark.parametrize('block, tile, tile_pad', [(TINY_COMPACT, 16, 8), (dict(TINY_RRDB, scale=4), 25, 24)],
                         ids=['compact', 'rrdb'])
def test_tiled_output_equals_untiled_and_only_tiles_reach_the_network(block, tile, tile_pad, tmp_path):
    training_checkpoint(block, tmp_path / 'g.pth')
    model = load_generator(str(tmp_path / 'g.pth'), network=block)
    img = torch.rand(1, 3, 45, 58)
    whole = Upsampler(model).upscale_tensor(img)
    seen = []

    def recording(x):
        seen.append(tuple(x.shape[-2:]))
        return model(x)

    with torch.no_grad():
        tiled = tile_process(img, recording, model.scale, tile, tile_pad)
    assert tiled.shape == whole.shape == (1, 3, 180, 232)
    assert (tiled - whole).abs().max().item() < 1 / 255
    assert len(seen) == math.ceil(45 / tile) * math.ceil(58 / tile) and max(max(s) for s in seen) <= tile + 2 * tile_pad
    assert torch.equal(Upsampler(model, tile=tile, tile_pad=tile_pad).upscale_tensor(img), tiled)


def write(path, img) -> str:
    assert cv2.imwrite(str(path), img)
    return str(path)


def test_16bit_rgba_and_grayscale_round_trips(nearest_model, tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / 'in'
    src.mkdir()
    deep = rng.integers(0, 65536, (12, 10, 3), dtype=np.uint16)
    rgba = np.concatenate([rng.integers(0, 256, (9, 11, 3)), np.tile(np.arange(11) * 20, (9, 1))[:, :, None]],
                          axis=2).astype(np.uint8)
    flat_alpha = rgba.copy()
    flat_alpha[:, :, 3] = 200
    gray = rng.integers(0, 256, (8, 13), dtype=np.uint8)
    for name, img in (('deep.png', deep), ('rgba.png', rgba), ('flat.png', flat_alpha), ('gray.png', gray)):
        write(src / name, img)
    assert main(['-i', str(src), '-o', str(tmp_path / 'out'), '-m', nearest_model, '--tile', '6', '--tile-pad',
                 '2']) == 0
    out = {n: cv2.imread(str(tmp_path / 'out' / f'{n}_out.png'), cv2.IMREAD_UNCHANGED)
           for n in ('deep', 'rgba', 'flat', 'gray')}
    assert out['deep'].dtype == np.uint16 and np.array_equal(out['deep'], nearest4(deep))  # all 16 bits kept
    assert np.any(out['deep'] % 257)  # not an 8-bit image scaled up
    assert out['rgba'].shape == (36, 44, 4) and np.array_equal(out['rgba'], nearest4(rgba))  # alpha by the network
    assert out['flat'].shape == (36, 44, 4) and np.all(out['flat'][:, :, 3] == 200)  # constant alpha resized
    assert out['gray'].shape == (32, 52) and np.abs(out['gray'].astype(int) - nearest4(gray)).max() <= 1


def test_output_names_suffix_ext_outscale_skipping_and_overwrite(nearest_model, tmp_path, caplog):
    src = tmp_path / 'in'
    src.mkdir()
    for name in ('b.png', 'a.jpg'):
        write(src / name, np.full((8, 8, 3), 100, np.uint8))
    (src / 'notes.txt').write_text('not an image')
    out = tmp_path / 'out'
    assert main(['-i', str(src), '-o', str(out), '-m', nearest_model]) == 0
    assert sorted(os.listdir(out)) == ['a_out.jpg', 'b_out.png']
    assert main(['-i', str(src / '*.png'), '-o', str(out), '-m', nearest_model, '--suffix', '', '--ext', 'webp',
                 '--outscale', '2.5']) == 0
    assert cv2.imread(str(out / 'b.webp')).shape == (20, 20, 3)
    (out / 'b_out.png').write_bytes(b'placeholder')
    with caplog.at_level(logging.INFO, logger='basicsr'):
        assert main(['-i', str(src), '-o', str(out), '-m', nearest_model]) == 0
    assert (out / 'b_out.png').read_bytes() == b'placeholder' and '0 written, 2 skipped' in caplog.text
    assert main(['-i', str(src), '-o', str(out), '-m', nearest_model, '--overwrite']) == 0
    assert cv2.imread(str(out / 'b_out.png')).shape == (32, 32, 3)
    assert output_path('x/photo.jpg', 'o', 'out', 'auto', alpha=True) == os.path.join('o', 'photo_out.png')


def test_bad_inputs_name_the_file_or_option(nearest_model, tmp_path, caplog):
    src = tmp_path / 'in'
    src.mkdir()
    (src / 'broken.png').write_bytes(b'\x89PNG but not really')
    write(src / 'good.png', np.zeros((8, 8, 3), np.uint8))
    out = str(tmp_path / 'out')
    with pytest.raises(ValueError, match=r"Cannot read image '.*broken\.png'"):
        main(['-i', str(src / 'broken.png'), '-o', out, '-m', nearest_model])
    with caplog.at_level(logging.ERROR, logger='basicsr'):
        assert main(['-i', str(src), '-o', out, '-m', nearest_model]) == 1  # the folder run goes on, then fails
    assert 'broken.png' in caplog.text and os.path.isfile(os.path.join(out, 'good_out.png'))
    torch.save({'params': {'mystery.weight': torch.randn(3, 3)}}, tmp_path / 'mystery.pth')
    with pytest.raises(ValueError, match=r"'--model'.*mystery\.pth"):
        main(['-i', str(src / 'good.png'), '-o', out, '-m', str(tmp_path / 'mystery.pth')])
    with pytest.raises(ValueError, match=r'--tile \(10\) must be larger than --tile-pad \(10\)'):
        main(['-i', str(src / 'good.png'), '-o', out, '-m', nearest_model, '--tile', '10'])
    with pytest.raises(FileNotFoundError, match='nothing-here'):
        main(['-i', str(tmp_path / 'nothing-here*.png'), '-o', out, '-m', nearest_model])


def test_segmentation_outputs(nearest_model, tmp_path):
    torch.manual_seed(0)
    seg_net = build_network(dict(TINY_UNET)).eval()
    holder = type('Holder', (), {'opt': {'path': {'models': str(tmp_path)}}})()
    save_network(holder, seg_net, 'net_task', -1, network=TINY_UNET)  # as segsr's training saves it
    img = np.random.default_rng(1).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    src = write(tmp_path / 'scene.png', img)
    out = tmp_path / 'out'
    assert main(['-i', src, '-o', str(out), '-m', nearest_model, '--seg', str(tmp_path / 'net_task_latest.pth'),
                 '--seg-compare', '--tile', '8', '--tile-pad', '4']) == 0
    palette = Image.open(out / 'scene_seg.png')
    index = cv2.imread(str(out / 'scene_seg_index.png'), cv2.IMREAD_UNCHANGED)
    assert palette.mode == 'P' and palette.size == (48, 64) and np.array_equal(np.array(palette), index)
    assert index.shape == (64, 48) and index.dtype == np.uint8 and index.max() < TINY_UNET['num_classes']
    assert cv2.imread(str(out / 'scene_overlay.png')).shape == (64, 48, 3)
    compare = cv2.imread(str(out / 'scene_seg_compare.png'))
    assert compare.shape[1] > 2 * 48 and compare.shape[0] > 64  # two captioned panels side by side
    with torch.no_grad():  # tiled segmentation (tile 32, pad 16 output pixels) = whole-image segmentation here
        sr = torch.from_numpy(cv2.imread(str(out / 'scene_out.png'))[:, :, ::-1].astype(np.float32) / 255)
        whole = seg_net(sr.permute(2, 0, 1)[None].contiguous())['out'].argmax(1)[0].numpy()
    assert (whole == index).mean() > 0.99


def _overflow_model() -> LoadedNetwork:
    class Overflow(torch.nn.Module):
        """x2 nearest upscale that overflows float16 on the way (x 1e6), fine in float32."""

        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return torch.nn.functional.interpolate(x * self.gain * 1e6, scale_factor=2, mode='nearest') / 1e6

    return LoadedNetwork(net=Overflow().eval(), scale=2, arch='Overflow', source='test')


def test_fp16_overflow_falls_back_to_fp32_and_bf16_runs(caplog, nearest_model):
    img = np.random.default_rng(2).integers(1, 256, (10, 14, 3), dtype=np.uint8)
    upsampler = Upsampler(_overflow_model(), tile=8, tile_pad=2, precision='fp16')
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        out = upsampler.enhance(img)
    assert 'non-finite' in caplog.text and upsampler.fallbacks == 1 and upsampler.dtype == torch.float32
    expected = Upsampler(_overflow_model()).enhance(img)
    assert np.array_equal(out, expected) and np.array_equal(out, np.repeat(np.repeat(img, 2, 0), 2, 1))
    model = load_generator(nearest_model)
    bf16 = Upsampler(model, precision='bf16').enhance(img)
    assert bf16.shape == (40, 56, 3) and np.abs(bf16.astype(int) - nearest4(img)).max() <= 2


def test_module_entry_point_in_a_subprocess(nearest_model, tmp_path):
    src = write(tmp_path / 'one.png', np.full((6, 6, 3), 50, np.uint8))
    proc = subprocess.run([sys.executable, '-m', 'segsr.inference', '-i', src, '-o', str(tmp_path / 'o'), '-m',
                           nearest_model], cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cv2.imread(str(tmp_path / 'o' / 'one_out.png')).shape == (24, 24, 3)
