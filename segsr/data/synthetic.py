"""Deterministic synthetic street scenes with label maps, for tests, demos and pipeline checks.

Each scene is painted in layers: sky (gradient), buildings (facades with a fine window grid), road (asphalt
grain with lane stripes), vegetation (leafy speckle blobs), poles (thin striped verticals), cars (finely hatched
bodies with dark wheels and windows) and one small clutter patch labelled ``ignore_index``. The classes share
colour ranges (grey facades, grey asphalt, grey cars, grey poles), so what tells them apart is texture and shape
at a scale of 1-4 pixels: a x4 bicubic downsampling wipes most of it out, and segmenting the LR image is
harder than segmenting the HR image. Poles are 1-3 pixels wide and vanish at x4.

Everything is drawn with numpy and OpenCV from one ``numpy.random.Generator``: the same seed gives the same
arrays and the same PNG bytes.

Command line: ``segsr-make-synthetic``, ``python -m segsr.data.synthetic`` or ``python scripts/make_synthetic_data.py``::

    segsr-make-synthetic --out datasets/synthetic --num-train 64 --num-val 16 --lmdb
"""
import argparse
import os
import shutil
import sys
from os import path as osp
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from segsr.data.data_util import load_dataset_info, write_dataset_info

SYNTHETIC_CLASSES = ('sky', 'building', 'road', 'vegetation', 'car', 'pole')
SYNTHETIC_PALETTE = ((70, 130, 180), (70, 70, 70), (128, 64, 128), (107, 142, 35), (0, 0, 142), (153, 153, 153))
SKY, BUILDING, ROAD, VEGETATION, CAR, POLE = range(6)


class _Canvas:
    """Float RGB image, label map and the scene's random generator."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, num_classes: int,
                 ignore_index: int) -> None:
        self.rng = rng
        self.h, self.w = height, width
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.label = np.zeros((height, width), np.uint8)
        self.horizon = int(height * rng.uniform(0.45, 0.6))
        self.yy, self.xx = np.mgrid[0:height, 0:width]

    def paint(self, mask: np.ndarray, texture: np.ndarray, label: int) -> None:
        """Copy ``texture`` (H x W x 3) where ``mask`` is set and give those pixels ``label``."""
        mask = mask.astype(bool)
        self.rgb[mask] = texture[mask]
        self.label[mask] = label

    def grain(self, std: float, sigma: float = 0.0) -> np.ndarray:
        """Zero-mean luminance noise of the given std, optionally blurred (H x W x 1)."""
        noise = self.rng.normal(0, 1, (self.h, self.w)).astype(np.float32)
        if sigma > 0:
            noise = cv2.GaussianBlur(noise, (0, 0), sigma)
            noise /= max(float(noise.std()), 1e-6)
        return (noise * std)[..., None]

    def grey(self, low: float = 60, high: float = 170) -> np.ndarray:
        """A slightly tinted grey shared by buildings, road, cars and poles."""
        return self.rng.uniform(low, high) + self.rng.uniform(-12, 12, 3)


def _paint_sky(c: _Canvas) -> None:
    overcast = c.rng.random() < 0.3
    top = c.rng.uniform([170, 170, 175], [215, 215, 225]) if overcast else c.rng.uniform([40, 90, 170],
                                                                                        [110, 150, 235])
    bottom = np.clip(top + c.rng.uniform(35, 75), 0, 255)
    t = (c.yy / max(c.horizon, 1)).clip(0, 1)[..., None].astype(np.float32)
    texture = top * (1 - t) + bottom * t + c.grain(2.0)
    c.paint(np.ones((c.h, c.w), bool), texture, SKY)


def _facade_texture(c: _Canvas, x0: int, y0: int) -> np.ndarray:
    """Facade with a window grid of period 4-7 px whose origin is the building's corner."""
    base = c.grey(70, 190) + np.array([c.rng.uniform(0, 25), c.rng.uniform(-5, 10), 0])
    py, px = c.rng.integers(4, 8, size=2)
    wh, ww = c.rng.integers(2, py - 1 + 1), c.rng.integers(2, px - 1 + 1)
    gy, gx = (c.yy - y0) // py, (c.xx - x0) // px
    windows = ((c.yy - y0) % py < wh) & ((c.xx - x0) % px < ww)
    lit = c.rng.random((c.h // 4 + 2, c.w // 4 + 2)) < 0.3
    lit_px = lit[gy.clip(0, lit.shape[0] - 1), gx.clip(0, lit.shape[1] - 1)]
    dark, bright = c.rng.uniform(15, 60), c.rng.uniform(190, 240)
    texture = np.broadcast_to(base, (c.h, c.w, 3)) + c.grain(6.0)
    window_value = np.where(lit_px, bright, dark)[..., None] + c.rng.uniform(-8, 8, 3)
    return np.where(windows[..., None], window_value, texture).astype(np.float32)


def _paint_buildings(c: _Canvas) -> None:
    x = int(c.rng.integers(-c.w // 10, c.w // 10))
    while x < c.w:
        bw = int(c.rng.integers(max(c.w // 8, 8), max(c.w // 3, 9)))
        if c.rng.random() < 0.85:
            top = int(c.rng.uniform(0.02, 0.7) * c.horizon)
            mask = np.zeros((c.h, c.w), np.uint8)
            cv2.rectangle(mask, (max(x, 0), top), (min(x + bw, c.w) - 1, c.horizon + 2), 1, -1)
            c.paint(mask, _facade_texture(c, max(x, 0), top), BUILDING)
        x += bw + int(c.rng.integers(0, max(c.w // 20, 2)))


def _paint_ground(c: _Canvas) -> None:
    mask = c.yy >= c.horizon
    if c.num_classes <= ROAD:  # two-class scenes: a paved plaza of facade texture
        c.paint(mask, _facade_texture(c, 0, c.horizon), BUILDING)
        return
    texture = np.broadcast_to(c.grey(55, 150), (c.h, c.w, 3)) + c.grain(18.0) + c.grain(8.0, sigma=0.6)
    texture = np.ascontiguousarray(texture, dtype=np.float32)
    stripes = np.zeros((c.h, c.w), np.uint8)
    vanish = (int(c.w * c.rng.uniform(0.35, 0.65)), c.horizon)
    for bottom_x in np.linspace(-0.3 * c.w, 1.3 * c.w, int(c.rng.integers(3, 6))):
        cv2.line(stripes, vanish, (int(bottom_x), c.h - 1), 1, int(c.rng.integers(1, 4)))
    dashes = ((c.yy // int(c.rng.integers(4, 9))) % 2 == 0) | (c.rng.random() < 0.4)
    paint_color = np.array([235, 235, 225]) if c.rng.random() < 0.7 else np.array([230, 200, 60])
    texture[(stripes > 0) & dashes & mask] = paint_color
    c.paint(mask, texture, ROAD)


def _paint_vegetation(c: _Canvas) -> None:
    mask = np.zeros((c.h, c.w), np.uint8)
    for _ in range(int(c.rng.integers(1, 4))):
        cx = int(c.rng.integers(0, c.w))
        cy = int(c.horizon + c.rng.uniform(-0.35, 0.05) * c.h)
        radius = max(int(c.rng.uniform(0.05, 0.14) * min(c.h, c.w)), 3)
        for _ in range(int(c.rng.integers(4, 9))):
            ox, oy = c.rng.normal(0, radius * 0.6, 2)
            cv2.circle(mask, (int(cx + ox), int(cy + oy)), int(radius * c.rng.uniform(0.5, 1.0)), 1, -1)
    ragged = c.grain(1.0, sigma=1.0)[..., 0] > -0.8  # frayed outline
    base = c.rng.uniform([35, 80, 20], [110, 150, 70])
    leaves = 1 + 0.45 * c.grain(1.0, sigma=0.7) + 0.15 * c.grain(1.0, sigma=2.0)
    c.paint((mask > 0) & ragged, np.clip(base * leaves, 0, 255).astype(np.float32), VEGETATION)


def _paint_poles(c: _Canvas) -> None:
    for _ in range(int(c.rng.integers(1, 4))):
        x, width = int(c.rng.integers(2, c.w - 3)), int(c.rng.integers(1, 4))
        top = int(c.rng.uniform(0.05, 0.7) * c.horizon)
        bottom = int(c.rng.uniform(c.horizon + 2, c.h))
        mask = np.zeros((c.h, c.w), np.uint8)
        mask[top:bottom, x:x + width] = 1
        if c.rng.random() < 0.5:  # a cross-arm
            arm = int(c.rng.integers(4, max(c.w // 12, 6)))
            mask[top:top + 2, max(x - arm, 0):x + width + arm] = 1
        bands = np.where((c.yy // 2) % 2 == 0, 28.0, -28.0)[..., None]
        texture = np.broadcast_to(c.grey(70, 170), (c.h, c.w, 3)) + bands + c.grain(4.0)
        c.paint(mask, texture.astype(np.float32), POLE)


def _paint_car(c: _Canvas, bottom: int) -> None:
    depth = (bottom - c.horizon) / max(c.h - c.horizon, 1)
    length = max(int(c.w * (0.08 + 0.22 * depth) * c.rng.uniform(0.8, 1.2)), 6)
    height = max(int(length * c.rng.uniform(0.35, 0.5)), 3)
    x0 = int(c.rng.integers(-length // 3, c.w - 2 * length // 3))
    body = np.zeros((c.h, c.w), np.uint8)
    cv2.rectangle(body, (x0, bottom - height // 2), (x0 + length, bottom - height // 6), 1, -1)
    cv2.ellipse(body, (x0 + length // 2, bottom - height // 2), (max(length // 3, 2), max(height // 2, 1)), 0, 180,
                360, 1, -1)
    colour = c.grey(40, 200) if c.rng.random() < 0.4 else c.rng.uniform(20, 230, 3)
    hatch = np.where(((c.xx + c.yy) % 3) == 0, 30.0, -10.0)[..., None]
    texture = np.clip(np.broadcast_to(colour, (c.h, c.w, 3)) + hatch + c.grain(3.0), 0, 255)
    cabin = np.zeros((c.h, c.w), np.uint8)
    cv2.ellipse(cabin, (x0 + length // 2, bottom - height // 2), (max(length // 4, 1), max(height // 3, 1)), 0, 180,
                360, 1, -1)
    texture[cabin > 0] = np.array([40, 55, 70]) + ((c.xx[cabin > 0] % 2) * 25.0)[:, None]
    wheels = np.zeros((c.h, c.w), np.uint8)
    for wx in (x0 + length // 5, x0 + 4 * length // 5):
        cv2.circle(wheels, (wx, bottom - height // 6), max(height // 4, 1), 1, -1)
    texture[wheels > 0] = 25.0
    c.paint((body > 0) | (wheels > 0), texture.astype(np.float32), CAR)


def _paint_cars(c: _Canvas) -> None:
    bottoms = sorted(int(c.rng.uniform(c.horizon + 0.15 * (c.h - c.horizon), c.h)) for _ in range(c.rng.integers(1, 4)))
    for bottom in bottoms:  # far cars first, near cars in front
        _paint_car(c, bottom)


def _paint_clutter(c: _Canvas) -> None:
    """A small patch of random colours labelled ``ignore_index`` (unlabelled stuff, as in real datasets)."""
    size = max(int(min(c.h, c.w) * c.rng.uniform(0.04, 0.1)), 2)
    cx, cy = int(c.rng.integers(0, c.w)), int(c.rng.integers(c.horizon // 2, c.h))
    angles = np.sort(c.rng.uniform(0, 2 * np.pi, 7))
    radii = size * c.rng.uniform(0.5, 1.0, 7)
    points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).astype(np.int32)
    mask = np.zeros((c.h, c.w), np.uint8)
    cv2.fillPoly(mask, [points], 1)
    c.paint(mask, c.rng.uniform(0, 255, (c.h, c.w, 3)).astype(np.float32), c.ignore_index)


_LAYERS: List[Tuple[int, Callable[[_Canvas], None]]] = [
    (SKY, _paint_sky), (BUILDING, _paint_buildings), (BUILDING, _paint_ground), (VEGETATION, _paint_vegetation),
    (POLE, _paint_poles), (CAR, _paint_cars)]


def make_scene(seed: int,
               height: int = 256,
               width: int = 256,
               num_classes: int = 6,
               ignore_index: int = 255,
               with_ignore: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Paint one synthetic street scene and its label map.

    Args:
        seed: Seed of the scene's random generator; the same seed gives identical arrays.
        height: Image height in pixels (>= 16). Default: 256.
        width: Image width in pixels (>= 16). Default: 256.
        num_classes: 2..6; the first ``num_classes`` of ``SYNTHETIC_CLASSES`` (sky, building, road, vegetation,
            car, pole) are drawn. Default: 6.
        ignore_index: Label of the clutter patch. Default: 255.
        with_ignore: Draw the clutter patch. Default: True.

    Returns:
        ``(rgb, label)``: uint8 ``(height, width, 3)`` RGB image and uint8 ``(height, width)`` label map.
    """
    if not 2 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f'num_classes must be in 2..{len(SYNTHETIC_CLASSES)}, got {num_classes}.')
    if height < 16 or width < 16:
        raise ValueError(f'Scenes must be at least 16x16, got {height}x{width}.')
    if not 0 <= ignore_index <= 255 or ignore_index < num_classes:
        raise ValueError(f'ignore_index must be in {num_classes}..255 (uint8 label maps), got {ignore_index}.')
    canvas = _Canvas(np.random.default_rng(seed), height, width, num_classes, ignore_index)
    for cls, paint in _LAYERS:
        if cls < num_classes:
            paint(canvas)
    if with_ignore:
        _paint_clutter(canvas)
    return np.clip(np.rint(canvas.rgb), 0, 255).astype(np.uint8), canvas.label


def _scene_seed(seed: int, split: str, index: int) -> int:
    split_id = sum(ord(ch) * 31**i for i, ch in enumerate(split))
    return int(np.random.SeedSequence([seed, split_id, index]).generate_state(1)[0])


def write_synthetic_dataset(root: str,
                            num_train: int = 32,
                            num_val: int = 8,
                            height: int = 256,
                            width: int = 256,
                            seed: int = 0,
                            num_classes: int = 6,
                            ignore_index: int = 255) -> Dict[str, object]:
    """Write synthetic scenes in our layout: ``<root>/{train,val}/{hr,seg}/<split>_<index>.png`` and
    ``<root>/dataset_info.yml``.

    Args:
        root: Output folder (created; existing files of the same names are replaced).
        num_train: Number of training scenes. Default: 32.
        num_val: Number of validation scenes. Default: 8.
        height: Scene height. Default: 256.
        width: Scene width. Default: 256.
        seed: Base seed; scene ``i`` of a split has its own seed derived from ``(seed, split, i)``. Default: 0.
        num_classes: 2..6 classes. Default: 6.
        ignore_index: Label of unlabelled pixels. Default: 255.

    Returns:
        The dataset info written to ``dataset_info.yml``.
    """
    for split, count in (('train', num_train), ('val', num_val)):
        hr_dir, seg_dir = osp.join(root, split, 'hr'), osp.join(root, split, 'seg')
        os.makedirs(hr_dir, exist_ok=True)
        os.makedirs(seg_dir, exist_ok=True)
        for i in range(count):
            rgb, label = make_scene(_scene_seed(seed, split, i), height, width, num_classes, ignore_index)
            name = f'{split}_{i:04d}.png'
            _imwrite(osp.join(hr_dir, name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            _imwrite(osp.join(seg_dir, name), label)
    write_dataset_info(
        osp.join(root, 'dataset_info.yml'),
        SYNTHETIC_CLASSES[:num_classes],
        SYNTHETIC_PALETTE[:num_classes],
        ignore_index=ignore_index,
        name='synthetic',
        extra=dict(seed=seed, height=height, width=width, num_train=num_train, num_val=num_val))
    return load_dataset_info(root)


def _imwrite(path: str, img: np.ndarray, compress_level: int = 3) -> None:
    if not cv2.imwrite(path, img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level]):
        raise OSError(f"Cannot write '{path}'.")


def make_synthetic_dataset(out: str, num_train: int = 64, num_val: int = 16, height: int = 256, width: int = 256,
                           seed: int = 0, num_classes: int = 6, lmdb: bool = False,
                           overwrite: bool = False) -> Dict[str, object]:
    """:func:`write_synthetic_dataset` into a new folder ``out``, optionally with LMDBs (``<out>/lmdb/``).

    Args:
        out: Output root; must not exist unless ``overwrite``.
        num_train, num_val, height, width, seed, num_classes: As in :func:`write_synthetic_dataset`.
        lmdb: Also write ``<out>/lmdb/{train,val}_{hr,seg}.lmdb``. Default: False.
        overwrite: Delete an existing ``out`` first. Default: False.

    Returns:
        The dataset info.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    from segsr.data.lmdb_util import make_layout_lmdbs

    if osp.exists(out):
        if not overwrite:
            raise FileExistsError(f"'{out}' exists; pass --overwrite to replace it.")
        shutil.rmtree(out)
    info = write_synthetic_dataset(out, num_train, num_val, height, width, seed, num_classes)
    if lmdb:
        make_layout_lmdbs(out)
    return info


def main(argv: Optional[List[str]] = None) -> None:
    """``segsr-make-synthetic``: the command line of :func:`make_synthetic_dataset`."""
    parser = argparse.ArgumentParser(description='Write a synthetic labelled street-scene dataset in segsr\'s layout '
                                     '(optionally with LMDBs).')
    parser.add_argument('--out', default='datasets/synthetic', help='Output root (default datasets/synthetic).')
    parser.add_argument('--num-train', type=int, default=64)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--height', type=int, default=256)
    parser.add_argument('--width', type=int, default=256)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-classes', type=int, default=6, help='2..6 (default 6).')
    parser.add_argument('--lmdb', action='store_true', help='Also write <out>/lmdb/{train,val}_{hr,seg}.lmdb.')
    parser.add_argument('--overwrite', action='store_true', help='Delete an existing output folder first.')
    args = parser.parse_args(argv)
    try:
        info = make_synthetic_dataset(args.out, args.num_train, args.num_val, args.height, args.width, args.seed,
                                      args.num_classes, lmdb=args.lmdb, overwrite=args.overwrite)
    except FileExistsError as err:
        sys.exit(f'make_synthetic_data: {err}')
    sys.stdout.write(f"Wrote {args.num_train} train and {args.num_val} val scenes ({info['num_classes']} classes: "
                     f"{', '.join(info['class_names'])}) to {args.out}" + (' with LMDBs' if args.lmdb else '') + '\n')


if __name__ == '__main__':
    main()
