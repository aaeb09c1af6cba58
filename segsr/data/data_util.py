"""File-level helpers of segsr's datasets: folder scanning, stem matching, LMDB meta info, ``dataset_info.yml``.

Our dataset layout (see ``docs/datasets.md``)::

    <root>/train/hr/*.png        RGB images
    <root>/train/seg/*.png       8-bit single-channel class ids, 255 = ignore
    <root>/val/hr/*.png, <root>/val/seg/*.png
    <root>/lmdb/{train,val}_{hr,seg}.lmdb     optional, made by scripts/create_lmdb.py
    <root>/dataset_info.yml      class names, num_classes, ignore_index, palette
"""
import os
import re
from os import path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
LAYOUT_SPLITS = ('train', 'val', 'test')
_SHAPE_RE = re.compile(r'^\((\d+),\s*(\d+)(?:,\s*(\d+))?\)$')


def is_image_file(name: str) -> bool:
    """Whether ``name`` has an image extension (case-insensitive)."""
    return name.lower().endswith(IMG_EXTENSIONS)


def scan_images(folder: str) -> List[str]:
    """Sorted names of the image files directly inside ``folder`` (not recursive; symlinks followed).

    Args:
        folder: Folder to scan.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(f"Folder '{folder}' does not exist.")
    return sorted(e.name for e in os.scandir(folder) if is_image_file(e.name) and e.is_file())


def index_by_stem(folder: str, names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Map file stem -> file name for the images of ``folder``.

    Args:
        folder: Folder to scan (used in errors only when ``names`` is given).
        names: File names to index; default: :func:`scan_images` of ``folder``.

    Raises:
        ValueError: two files share a stem (e.g. ``a.png`` and ``a.jpg``), so pairing by stem is ambiguous.
    """
    index: Dict[str, str] = {}
    for name in scan_images(folder) if names is None else names:
        stem = osp.splitext(name)[0]
        if stem in index:
            raise ValueError(f"Folder '{folder}' holds both '{index[stem]}' and '{name}': files are paired by "
                             'stem, so stems must be unique.')
        index[stem] = name
    return index


def read_meta_info(meta_info_file: str) -> List[Tuple[str, Optional[Tuple[int, ...]]]]:
    """Read a BasicSR meta info file: one ``name [(h,w,c)] [compress_level]`` per line.

    Args:
        meta_info_file: Path of the file (e.g. ``<x>.lmdb/meta_info.txt``).

    Returns:
        ``(name, shape)`` per non-empty line, in file order; ``shape`` is ``(h, w, c)`` (``(h, w)`` if written
        so) or None when the line has no shape.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    if not osp.isfile(meta_info_file):
        raise FileNotFoundError(f"Meta info file '{meta_info_file}' does not exist.")
    entries = []
    with open(meta_info_file, 'r', encoding='utf-8') as f:
        for line in f:
            tokens = line.split()
            if not tokens:
                continue
            match = _SHAPE_RE.match(tokens[1]) if len(tokens) > 1 else None
            shape = tuple(int(v) for v in match.groups() if v is not None) if match else None
            entries.append((tokens[0], shape))
    return entries


def header_size(path: str) -> Optional[Tuple[int, int]]:
    """``(h, w)`` of an image from its header alone (Pillow decodes no pixels), or None if Pillow cannot tell.

    The size is the stored one, as ``cv2.IMREAD_UNCHANGED`` reads it (an EXIF orientation is not applied).
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, ValueError, Image.DecompressionBombError):  # unknown format, corrupt or huge: the read tells
        return None
    return height, width


def write_dataset_info(path: str,
                       class_names: Sequence[str],
                       palette: Sequence[Sequence[int]],
                       ignore_index: int = 255,
                       name: Optional[str] = None,
                       extra: Optional[dict] = None) -> None:
    """Write ``dataset_info.yml``.

    Args:
        path: Output file path.
        class_names: One name per class id ``0 .. num_classes - 1``.
        palette: One ``[R, G, B]`` (0..255) per class, for colouring label maps.
        ignore_index: Label value of unlabelled pixels. Default: 255.
        name: Dataset name. Default: None (left out).
        extra: Further entries to store (e.g. ``source``). Default: None.
    """
    if len(palette) != len(class_names):
        raise ValueError(f'{len(class_names)} class names but {len(palette)} palette colours.')
    info = {'name': name} if name else {}
    info.update(
        num_classes=len(class_names),
        ignore_index=int(ignore_index),
        class_names=[str(n) for n in class_names],
        palette=[[int(c) for c in rgb] for rgb in palette])
    info.update(extra or {})
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(info, f, sort_keys=False, default_flow_style=None)


def load_dataset_info(path: str) -> dict:
    """Read and check a ``dataset_info.yml`` (``path`` may be the file or the dataset root holding it).

    Args:
        path: File path or dataset root folder.

    Returns:
        Dict with at least ``num_classes``, ``ignore_index``, ``class_names`` and ``palette``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: missing keys or inconsistent lengths, naming the file.
    """
    if osp.isdir(path):
        path = osp.join(path, 'dataset_info.yml')
    if not osp.isfile(path):
        raise FileNotFoundError(f"Dataset info file '{path}' does not exist.")
    with open(path, 'r', encoding='utf-8') as f:
        info = yaml.safe_load(f) or {}
    missing = [k for k in ('num_classes', 'class_names', 'palette') if k not in info]
    if missing:
        raise ValueError(f"Dataset info file '{path}' lacks {missing}.")
    info.setdefault('ignore_index', 255)
    if not len(info['class_names']) == len(info['palette']) == info['num_classes']:
        raise ValueError(f"Dataset info file '{path}': num_classes {info['num_classes']}, "
                         f"{len(info['class_names'])} class names and {len(info['palette'])} palette colours differ.")
    return info
