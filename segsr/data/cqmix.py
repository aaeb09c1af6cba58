"""Cross-quality patch mix (CQMix) of SR4IR: SR and HR images mixed cell by cell on a random grid.

The task network of SR4IR's phase 2 sees SR images, HR images and CQMix images, so it cannot simply tell the two
qualities apart and must read semantics from both. Labels need no mixing: SR and HR images share them.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

GridSize = Union[int, Sequence[int]]


def grid_shape(grid: GridSize) -> Tuple[int, int]:
    """``(rows, cols)`` from an int (square grid) or a pair; raises ``ValueError`` for non-positive sizes."""
    rows, cols = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if int(rows) < 1 or int(cols) < 1:
        raise ValueError(f'CQMix grid must be positive, got {grid!r}.')
    return int(rows), int(cols)


def cqmix_mask(batch: int, height: int, width: int, grid: GridSize = 8, prob: float = 0.5,
               device: Optional[torch.device] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """Random cell mask ``batch x 1 x height x width``: 1 where the SR image is taken, 0 where the HR image is.

    Each of the ``rows x cols`` grid cells of each image is SR with probability ``prob``. Any image size works:
    pixel ``(i, j)`` belongs to cell ``(i * rows // height, j * cols // width)``, so cells differ by at most one
    pixel in size when the grid does not divide the image.

    Args:
        batch, height, width: Mask size.
        grid: Grid cells per side (int) or ``(rows, cols)``. Default: 8 (the paper's 8 x 8).
        prob: Probability that a cell shows the SR image. Default: 0.5.
        device: Device of the mask.
        generator: Optional random generator (its device must be ``device``'s).
    """
    rows, cols = grid_shape(grid)
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f'CQMix prob must be in [0, 1], got {prob}.')
    if rows > height or cols > width:
        raise ValueError(f'CQMix grid {rows}x{cols} is finer than the image ({height}x{width}).')
    cells = (torch.rand(batch, 1, rows, cols, device=device, generator=generator) < float(prob)).float()
    row_idx = torch.arange(height, device=device) * rows // height
    col_idx = torch.arange(width, device=device) * cols // width
    return cells[:, :, row_idx][:, :, :, col_idx]


def cross_quality_mix(sr: Tensor, hr: Tensor, grid: GridSize = 8, prob: float = 0.5,
                      generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """Mix SR and HR images with one random grid mask per image (the same for all channels).

    Args:
        sr: SR images ``B x C x H x W``.
        hr: HR images of the same shape.
        grid: See :func:`cqmix_mask`.
        prob: Probability that a cell shows the SR image.
        generator: Optional random generator.

    Returns:
        ``(mixed, mask)``: the mixed batch and the ``B x 1 x H x W`` mask (1 = SR).
    """
    if sr.shape != hr.shape:
        raise ValueError(f'CQMix: SR {tuple(sr.shape)} and HR {tuple(hr.shape)} differ in shape.')
    b, _, h, w = sr.shape
    mask = cqmix_mask(b, h, w, grid, prob, device=sr.device, generator=generator).to(sr.dtype)
    return sr * mask + hr * (1 - mask), mask
