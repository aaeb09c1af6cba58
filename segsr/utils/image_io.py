"""Image files for inference and data: 8- and 16-bit, grayscale, BGR and BGRA, read and written with OpenCV unchanged.

Arrays follow OpenCV: ``H x W`` (grayscale), ``H x W x 3`` (BGR) or ``H x W x 4`` (BGRA), ``uint8`` or ``uint16``.
"""
import os
from typing import Tuple

import cv2
import numpy as np
from basicsr.utils import get_root_logger

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
ALPHA_EXTS = ('.png', '.webp', '.tif', '.tiff')  # formats that keep an alpha channel
DEEP_EXTS = ('.png', '.tif', '.tiff')  # formats that keep 16 bits per channel


def max_value(img: np.ndarray) -> int:
    """The white level of an image array: 65535 for ``uint16``, 255 for ``uint8``."""
    return 65535 if img.dtype == np.uint16 else 255


def read_image(path: str) -> np.ndarray:
    """Read an image as stored (``cv2.IMREAD_UNCHANGED``): bit depth and alpha kept.

    Raises:
        ValueError: the file cannot be decoded or is not 8/16-bit with 1, 3 or 4 channels, naming the file.
    """
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"Cannot read image '{path}': missing, not an image, or a format OpenCV cannot decode.")
    return check_image(img, f"'{path}'")


def check_image(img: np.ndarray, where: str) -> np.ndarray:
    """Check a decoded image's depth and channels; return it with a single channel axis squeezed away.

    Args:
        img: What ``cv2.imread`` / ``cv2.imdecode`` with ``cv2.IMREAD_UNCHANGED`` returned.
        where: The file (or LMDB key) in words, quoted, for errors, e.g. ``"'a.png'"``.

    Raises:
        ValueError: not 8/16-bit (float or 32-bit TIFFs, ...) or not 1, 3 or 4 channels, naming ``where``.
    """
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"Image {where} has {img.dtype} pixels; 8- and 16-bit images are supported.")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ValueError(f"Image {where} has shape {img.shape}; 1, 3 or 4 channels are supported.")
    return img


def split_image(img: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(rgb, alpha)`` as float32 in [0, 1]: ``H x W x 3`` RGB (grayscale repeated) and ``H x W`` alpha or None."""
    scaled = img.astype(np.float32) / max_value(img)
    if scaled.ndim == 2:
        return np.repeat(scaled[:, :, None], 3, axis=2), None
    rgb = np.ascontiguousarray(scaled[:, :, 2::-1])
    return rgb, (scaled[:, :, 3] if scaled.shape[2] == 4 else None)


def merge_image(rgb: np.ndarray, alpha, like: np.ndarray) -> np.ndarray:
    """Inverse of :func:`split_image`: float RGB (+ alpha) in [0, 1] -> an array of ``like``'s layout and depth."""
    white = max_value(like)
    if like.ndim == 2:
        planes = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        planes = rgb[:, :, ::-1]
        if alpha is not None:
            planes = np.concatenate([planes, alpha[:, :, None]], axis=2)
    planes = np.array(planes, dtype=np.float32, order='C')  # one output-sized copy, then in place
    np.nan_to_num(planes, copy=False, nan=0.0)
    np.clip(planes, 0, 1, out=planes)
    planes *= white
    return np.rint(planes, out=planes).astype(like.dtype)


def write_image(path: str, img: np.ndarray) -> None:
    """Write an image, creating folders; 16-bit images go to 8 bits (with a warning) in formats without 16 bits.

    Raises:
        OSError: OpenCV could not write the file, naming it.
    """
    if img.dtype == np.uint16 and os.path.splitext(path)[1].lower() not in DEEP_EXTS:
        get_root_logger().warning(f'{path}: this format has no 16-bit mode; written with 8 bits per channel.')
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"Cannot write image '{path}'.")
