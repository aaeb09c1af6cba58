"""Tiny synthetic detection (Pascal VOC layout) and classification (ImageFolder) sets: the smoke benchmarks' and the
tests' data. Deterministic for a seed; nothing in them means anything beyond exercising the code."""
import os
from os import path as osp
from typing import Sequence, Tuple

import cv2
import numpy as np

DET_CLASSES = ('square', 'bar')
CLS_CLASSES = ('dots', 'plain', 'stripes')
DET_COLOURS_BGR = {'square': (230, 230, 40), 'bar': (20, 20, 120)}
_VOC_OBJECT = ('<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>'
               '<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>')


def voc_xml(filename: str, width: int, height: int, objects: Sequence[Tuple[str, Tuple[int, int, int, int]]]) -> str:
    """A Pascal VOC annotation of pixel-edge boxes ``(x1, y1, x2, y2)`` (written 1-based inclusive, as VOC does)."""
    body = ''.join(_VOC_OBJECT.format(name=name, x1=x1 + 1, y1=y1 + 1, x2=x2, y2=y2) for name, (x1, y1, x2, y2) in objects)
    return (f'<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height>'
            f'<depth>3</depth></size>{body}</annotation>')


def _det_image(rng: np.random.Generator, height: int, width: int):
    img = (rng.random((height, width, 3)) * 60 + 80).astype(np.uint8)
    objects, band = [], width // 3  # one object per vertical band: objects never overlap
    for k in range(3):
        name = DET_CLASSES[k % 2]
        bw, bh = (16, 16) if name == 'square' else (24, 8)
        x1, y1 = k * band + int(rng.integers(0, band - bw + 1)), int(rng.integers(0, height - bh))
        img[y1:y1 + bh, x1:x1 + bw] = DET_COLOURS_BGR[name]
        objects.append((name, (x1, y1, x1 + bw, y1 + bh)))
    return img, objects


def make_synthetic_det(root: str, num_train: int = 4, num_val: int = 2, height: int = 64, width: int = 96,
                       seed: int = 0) -> str:
    """Noisy images with bright squares and dark bars, in the VOC layout (``JPEGImages/`` as PNG, ``Annotations/``,
    ``ImageSets/Main/{train,val}.txt``).

    Args:
        root: Output folder.
        num_train / num_val: Images per split.
        height / width: Image size (``width >= 72``: three objects side by side).
        seed: Seed of the drawing.
    """
    rng = np.random.default_rng(seed)
    for sub in ('JPEGImages', 'Annotations', osp.join('ImageSets', 'Main')):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    ids = {'train': [f'img{i:03d}' for i in range(num_train)],
           'val': [f'img{i:03d}' for i in range(num_train, num_train + num_val)]}
    for image_id in ids['train'] + ids['val']:
        img, objects = _det_image(rng, height, width)
        cv2.imwrite(osp.join(root, 'JPEGImages', f'{image_id}.png'), img)
        with open(osp.join(root, 'Annotations', f'{image_id}.xml'), 'w') as f:
            f.write(voc_xml(f'{image_id}.png', width, height, objects))
    for split, names in ids.items():
        with open(osp.join(root, 'ImageSets', 'Main', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(names) + '\n')
    return root


def make_synthetic_cls(root: str, num_train: int = 3, num_val: int = 1, height: int = 48, width: int = 64,
                       seed: int = 0) -> str:
    """Dotted, plain and striped noisy images in ImageFolder layout: ``<root>/{train,val}/<class>/<image>.png``.

    Args:
        root: Output folder.
        num_train / num_val: Images per class and split.
        height / width: Image size.
        seed: Seed of the drawing.
    """
    rng = np.random.default_rng(seed)
    for split, count in (('train', num_train), ('val', num_val)):
        for name in CLS_CLASSES:
            os.makedirs(osp.join(root, split, name), exist_ok=True)
            for i in range(count):
                img = (rng.random((height, width, 3)) * 40 + 100).astype(np.uint8)
                if name == 'stripes':
                    img[:, ::8] = 240
                elif name == 'dots':
                    img[::8, ::8] = 10
                cv2.imwrite(osp.join(root, split, name, f'{name}{i}.png'), img)
    return root
