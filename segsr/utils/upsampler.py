"""Tiled inference whose device memory is bounded by the tile, not the image.

The image stays on the CPU; each padded tile is moved to the device, run, and its output (without the padding) is
copied back into a CPU output tensor. With ``tile_pad`` at least the network's receptive field radius the tiled
output equals the untiled one up to float rounding.

Precision: ``fp16`` / ``bf16`` run a copy of the network in that dtype; every tile's output is checked, and a
non-finite value (float16 overflow gives inf, then NaN) makes the whole image run again in float32, with a warning,
and every later image too.
"""
import dataclasses
from copy import deepcopy
from typing import Callable, Iterator, Optional, Tuple

import cv2
import numpy as np
import torch
from basicsr.utils import get_root_logger
from torch import Tensor
from torch.nn import functional as F

from segsr.utils.image_io import merge_image, split_image
from segsr.utils.model_io import LoadedNetwork

PRECISIONS = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
Box = Tuple[int, int, int, int]  # top, bottom, left, right (exclusive)


class NonFiniteOutput(RuntimeError):
    """A low-precision forward pass produced inf or NaN."""


def tile_boxes(height: int, width: int, tile: int, tile_pad: int) -> Iterator[Tuple[Box, Box]]:
    """Yield ``(inner, padded)`` boxes covering the image in row-major order: ``tile`` squares, edges shorter."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            yield (top, bottom, left, right), (max(top - tile_pad, 0), min(bottom + tile_pad, height),
                                               max(left - tile_pad, 0), min(right + tile_pad, width))


def tile_process(img: Tensor, fn: Callable[[Tensor], Tensor], scale: int, tile: int = 0, tile_pad: int = 10,
                 device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Run ``fn`` over ``img`` tile by tile; only one padded tile is on ``device`` at a time.

    Args:
        img: ``B x C x H x W`` float tensor on the CPU.
        fn: Network call, ``B x C x h x w`` -> ``B x C' x h*scale x w*scale`` on the same device.
        scale: Output size / input size.
        tile: Tile size in input pixels; 0 runs the whole image at once.
        tile_pad: Input pixels of context added on each side of a tile (cropped from its output).
        device: Where ``fn`` runs. Default: the CPU.
        dtype: Dtype of the tiles given to ``fn``.

    Returns:
        ``B x C' x H*scale x W*scale`` float32 tensor on the CPU.
    """
    device = device or torch.device('cpu')
    if tile <= 0:
        return fn(img.to(device=device, dtype=dtype)).float().cpu()
    batch, _, height, width = img.shape
    out = None
    for (top, bottom, left, right), (p_top, p_bottom, p_left, p_right) in tile_boxes(height, width, tile, tile_pad):
        res = fn(img[..., p_top:p_bottom, p_left:p_right].to(device=device, dtype=dtype))
        res = res[..., (top - p_top) * scale:(bottom - p_top) * scale, (left - p_left) * scale:(right - p_left) * scale]
        if out is None:
            out = torch.empty((batch, res.shape[1], height * scale, width * scale), dtype=torch.float32)
        out[..., top * scale:bottom * scale, left * scale:right * scale] = res.float().cpu()
    return out


def check_tiling(tile: int, tile_pad: int, pre_pad: int) -> None:
    """Raise ``ValueError`` naming the options unless ``tile`` is 0 or larger than ``tile_pad`` (all >= 0)."""
    for name, value in (('--tile', tile), ('--tile-pad', tile_pad), ('--pre-pad', pre_pad)):
        if value < 0:
            raise ValueError(f'{name} must be >= 0, got {value}.')
    if 0 < tile <= tile_pad:
        raise ValueError(f'--tile ({tile}) must be larger than --tile-pad ({tile_pad}), or 0 for no tiling: each '
                         'tile is run with tile-pad pixels of context on every side.')


class Upsampler:
    """Upscale images with a loaded generator: tiles, pre-padding, precision fallback, alpha, output scale.

    Args:
        model: The generator (:func:`segsr.utils.model_io.load_generator`).
        tile: Tile size in input pixels (0: whole image). Must be larger than ``tile_pad``.
        tile_pad: Context pixels around each tile. Default: 10.
        pre_pad: Reflect padding added at the bottom and right of the image before the network and cropped after.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        outscale: Final scale; the network output is resized (Lanczos up, area down) when it differs from the
            network's scale. Default: the network's scale.
    """

    def __init__(self, model: LoadedNetwork, tile: int = 0, tile_pad: int = 10, pre_pad: int = 0,
                 precision: str = 'fp32', outscale: Optional[float] = None) -> None:
        check_tiling(tile, tile_pad, pre_pad)
        if precision not in PRECISIONS:
            raise ValueError(f'--precision must be one of {list(PRECISIONS)}, got {precision!r}.')
        self.model, self.tile, self.tile_pad, self.pre_pad = model, tile, tile_pad, pre_pad
        self.outscale = float(outscale) if outscale else float(model.scale)
        if self.outscale <= 0:
            raise ValueError(f'--outscale must be > 0, got {outscale}.')
        self.dtype = PRECISIONS[precision]
        self.fallbacks = 0
        self._low = self._low_precision_copy(precision)

    def _low_precision_copy(self, precision: str) -> Optional[LoadedNetwork]:
        if self.dtype == torch.float32:
            return None
        supported = self.model.supports_half if precision == 'fp16' else self.model.supports_bfloat16
        if not supported:
            get_root_logger().warning(f'{self.model.arch} does not support {precision} (spandrel); using fp32.')
            self.dtype = torch.float32
            return None
        return dataclasses.replace(self.model, net=deepcopy(self.model.net).to(self.dtype))

    def _run(self, x: Tensor) -> Tensor:
        if self._low is None:
            return self.model(x)
        out = self._low(x)
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteOutput(f'non-finite output in {self.dtype}')
        return out

    @torch.no_grad()
    def upscale_tensor(self, img: Tensor) -> Tensor:
        """``B x 3 x H x W`` float CPU tensor in [0, 1] -> the network's ``B x 3 x sH x sW`` float32 CPU output."""
        height, width = img.shape[-2:]
        if self.pre_pad:
            mode = 'reflect' if self.pre_pad < min(height, width) else 'replicate'
            img = F.pad(img, (0, self.pre_pad, 0, self.pre_pad), mode=mode)
        try:
            out = tile_process(img, self._run, self.model.scale, self.tile, self.tile_pad, self.model.device,
                               self.dtype)
        except NonFiniteOutput:
            get_root_logger().warning(f'{self.dtype} produced non-finite values (overflow); this image is redone in '
                                      'fp32 and every later image runs in fp32.')
            self.fallbacks += 1
            self.dtype, self._low = torch.float32, None
            out = tile_process(img, self._run, self.model.scale, self.tile, self.tile_pad, self.model.device)
        return out[..., :height * self.model.scale, :width * self.model.scale]

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """Output ``(height, width)`` for an input of that size."""
        return int(round(height * self.outscale)), int(round(width * self.outscale))

    def enhance(self, img: np.ndarray) -> np.ndarray:
        """Upscale an OpenCV image array (see :mod:`segsr.utils.image_io`); same layout and bit depth out.

        Grayscale runs as 3 equal channels and is written back as one. A non-constant alpha channel is upscaled
        by the network (as a gray image), a constant one by linear resizing.
        """
        rgb, alpha = split_image(img)
        out_rgb = self._upscale_array(rgb)
        out_alpha = None
        if alpha is not None:
            if float(alpha.max() - alpha.min()) > 0:
                out_alpha = self._upscale_array(np.repeat(alpha[:, :, None], 3, axis=2))[:, :, 0]
            else:
                out_alpha = cv2.resize(alpha, out_rgb.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        return merge_image(out_rgb, out_alpha, img)

    def _upscale_array(self, rgb: np.ndarray) -> np.ndarray:
        """``H x W x 3`` float RGB -> ``H' x W' x 3`` at the output scale (network, then resize if needed)."""
        tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
        out = self.upscale_tensor(tensor)[0].permute(1, 2, 0).numpy()
        size = self.output_size(*rgb.shape[:2])
        if out.shape[:2] == size:
            return out
        shrink = size[0] < out.shape[0]
        return cv2.resize(out, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
