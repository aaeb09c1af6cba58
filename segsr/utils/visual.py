"""Pictures for people: palette-coloured label maps and captioned panels / grids."""
import os
import textwrap
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch


def default_palette(num_classes: int) -> np.ndarray:
    """PASCAL VOC-style bit-interleaved palette, ``num_classes x 3`` uint8 RGB (distinct colours)."""
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for i in range(num_classes):
        c, r, g, b = i + 1, 0, 0, 0  # start at 1 so class 0 is not black (black marks ignored pixels)
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def colorize(label: np.ndarray, palette: Optional[Sequence[Sequence[int]]] = None, num_classes: Optional[int] = None,
             ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Colour a class map.

    Args:
        label: ``H x W`` integer class map; values outside the palette (e.g. 255) get ``ignore_color``.
        palette: ``N x 3`` RGB colours; default :func:`default_palette`.
        num_classes: Palette size when ``palette`` is None; default ``label.max() + 1`` of valid labels.
        ignore_color: RGB colour of pixels outside the palette.

    Returns:
        ``H x W x 3`` uint8 RGB image.
    """
    label = np.asarray(label).astype(np.int64)
    if palette is None:
        palette = default_palette(num_classes or int(label[label < 255].max(initial=0)) + 1)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    table = np.concatenate([palette, np.asarray(ignore_color, dtype=np.uint8)[None]], axis=0)
    idx = np.where((label >= 0) & (label < len(palette)), label, len(palette))
    return table[idx]


def tensor_to_rgb(img: torch.Tensor) -> np.ndarray:
    """``[1 x] 3 x H x W`` float RGB tensor in [0, 1] -> ``H x W x 3`` uint8 RGB array."""
    img = img.detach().float().cpu()
    if img.dim() == 4:
        img = img[0]
    return (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


def _caption_lines(text: str, width: int) -> List[str]:
    """``text`` wrapped to lines that fit ``width`` pixels (about 8 px per character), words kept whole where they fit."""
    return textwrap.wrap(text, max(1, width // 8), break_on_hyphens=False) or ['']


def _caption(img: np.ndarray, lines: Sequence[str], rows: int, height: int = 18) -> np.ndarray:
    """``img`` under a white bar of ``rows`` text rows holding ``lines`` (``rows >= len(lines)``)."""
    bar = np.full((height * rows, img.shape[1], 3), 255, dtype=np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(bar, line, (3, height * (i + 1) - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def _fit(img: np.ndarray, height: int, width: int) -> np.ndarray:
    if img.shape[:2] == (height, width):
        return img
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_NEAREST)


def make_panel(images: Sequence[np.ndarray], captions: Optional[Sequence[str]] = None, gap: int = 4) -> np.ndarray:
    """Place RGB images side by side (resized to the first one's size), each with an optional wrapped caption."""
    height, width = images[0].shape[:2]
    wrapped = [_caption_lines(c, width) for c in captions] if captions is not None else None
    rows = max(len(w) for w in wrapped) if wrapped else 0  # one bar height for the panel: the tallest caption's
    tiles = []
    for i, img in enumerate(images):
        tile = _fit(img, height, width)
        if wrapped is not None:
            tile = _caption(tile, wrapped[i], rows)
        tiles.append(tile)
        if i < len(images) - 1:
            tiles.append(np.full((tile.shape[0], gap, 3), 255, dtype=np.uint8))
    return np.concatenate(tiles, axis=1)


def make_grid(rows: List[np.ndarray], gap: int = 6) -> np.ndarray:
    """Stack panels vertically (padding narrower ones with white)."""
    width = max(r.shape[1] for r in rows)
    out = []
    for i, row in enumerate(rows):
        if row.shape[1] < width:
            row = np.concatenate([row, np.full((row.shape[0], width - row.shape[1], 3), 255, np.uint8)], axis=1)
        out.append(row)
        if i < len(rows) - 1:
            out.append(np.full((gap, width, 3), 255, dtype=np.uint8))
    return np.concatenate(out, axis=0)


def save_rgb(path: str, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG, creating folders."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write image {path}')


def overlay(rgb: np.ndarray, label: np.ndarray, palette: Optional[Sequence[Sequence[int]]] = None,
            num_classes: Optional[int] = None, opacity: float = 0.5) -> np.ndarray:
    """Blend the palette colours of a class map over an RGB uint8 image of the same size (``opacity`` of colour)."""
    colours = colorize(label, palette, num_classes).astype(np.float32)
    return (rgb.astype(np.float32) * (1 - opacity) + colours * opacity).round().astype(np.uint8)


def save_palette_png(path: str, label: np.ndarray, palette: Optional[Sequence[Sequence[int]]] = None,
                     num_classes: Optional[int] = None) -> None:
    """Write a class map (values 0..255) as an 8-bit palette PNG (Pillow mode ``P``): pixel values are class ids.

    Args:
        path: Output file (folders are created).
        label: ``H x W`` integer class map.
        palette: ``N x 3`` RGB colours; default :func:`default_palette` of ``num_classes``.
        num_classes: Palette size when ``palette`` is None.
    """
    from PIL import Image

    if palette is None:
        palette = default_palette(num_classes or int(np.max(label, initial=0)) + 1)
    flat = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256].reshape(-1).tolist()
    img = Image.fromarray(np.asarray(label, dtype=np.uint8))
    img.putpalette(flat)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path, format='PNG')
