"""Transforms that keep an image, its integer label map and (optionally) its LQ image aligned.

BasicSR's ``paired_random_crop`` needs an LQ image and its ``augment`` flips in place with ``cv2.flip``, which
neither handles 2-D arrays of every dtype nor label maps. Everything here works on numpy arrays of shape
``(H, W)`` or ``(H, W, C)`` of any dtype; label maps are only ever indexed, sliced, flipped or transposed, never
interpolated. Random draws use Python's :mod:`random`, like BasicSR, so ``basicsr.utils.set_random_seed`` and
BasicSR's dataloader ``worker_init_fn`` make them reproducible.

Conventions: images are HWC float32 in ``[0, 1]`` (BGR, as read by OpenCV); label maps are 2-D integer arrays.
"""
import random
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.nn import functional as F

# 'matlab' is the classic SR benchmark LR; the others are other downsampling implementations and one mild
# Real-ESRGAN-style degradation, for training on a mix (a list of them) or scoring under a kernel never trained on.
LQ_DOWNSAMPLE_METHODS = ('matlab', 'torch', 'pil_lanczos', 'cv2_area', 'blur_jpeg', 'matlab_u8', 'torch_u8')
BLUR_JPEG_SIGMA = 0.8  # Gaussian blur of the HR image (pixels), before 'blur_jpeg' downsamples it ...
BLUR_JPEG_QUALITY = 75  # ... and JPEG-encodes the 8-bit LR image at this quality


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right border so that height and width are multiples of ``scale`` (no copy).

    Args:
        img: Array of shape ``(H, W)`` or ``(H, W, C)``.
        scale: Scale factor.

    Returns:
        A view of ``img`` of shape ``(H - H % scale, W - W % scale, ...)``.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f'mod_crop expects a 2-D or 3-D array, got shape {img.shape}.')
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale, ...]


def paired_random_crop_seg(img_gt: np.ndarray,
                           seg: np.ndarray,
                           gt_size: Union[int, Sequence[int]],
                           scale: int,
                           img_lq: Optional[np.ndarray] = None,
                           gt_path: str = '') -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Crop the same random window from an HR image and its label map (and the matching LQ window).

    Without ``img_lq`` the window's corner may be any HR pixel. With ``img_lq`` the corner lies on the LQ grid
    (a multiple of ``scale`` in HR pixels) and the LQ window is ``gt_size // scale`` wide, as in BasicSR.

    Args:
        img_gt: HR image, ``(H, W, C)``.
        seg: Label map, ``(H, W)``.
        gt_size: Side of the square HR window, or its ``(height, width)``; must be divisible by ``scale``.
        scale: Scale factor between HR and LQ.
        img_lq: Optional LQ image of shape ``(H // scale, W // scale, C)``.
        gt_path: Path or key of the HR image, named in errors.

    Returns:
        ``(gt_patch, seg_patch, lq_patch)``; ``lq_patch`` is None when ``img_lq`` is None.

    Raises:
        ValueError: the label map's size differs from the image's, the LQ size times ``scale`` is not the HR
            size, or the image is smaller than ``gt_size``.
    """
    h, w = img_gt.shape[:2]
    if seg.shape[:2] != (h, w):
        raise ValueError(f"Label map of '{gt_path}' has size {seg.shape[:2]}, image has size {(h, w)}.")
    crop_h, crop_w = crop_size(gt_size)
    if crop_h % scale or crop_w % scale:
        raise ValueError(f'gt_size {gt_size} is not divisible by scale {scale}.')
    if h < crop_h or w < crop_w:
        raise ValueError(f"Image '{gt_path}' of size ({h}, {w}) is smaller than gt_size {gt_size}: "
                         'remove it or lower gt_size.')
    if img_lq is None:
        top, left = random.randint(0, h - crop_h), random.randint(0, w - crop_w)
        return (img_gt[top:top + crop_h, left:left + crop_w, ...], seg[top:top + crop_h, left:left + crop_w],
                None)

    h_lq, w_lq = img_lq.shape[:2]
    if (h_lq * scale, w_lq * scale) != (h, w):
        raise ValueError(f"LQ of '{gt_path}' has size {(h_lq, w_lq)}; times scale {scale} it must equal the "
                         f'HR size {(h, w)}.')
    lq_h, lq_w = crop_h // scale, crop_w // scale
    top, left = random.randint(0, h_lq - lq_h), random.randint(0, w_lq - lq_w)
    top_gt, left_gt = top * scale, left * scale
    return (img_gt[top_gt:top_gt + crop_h, left_gt:left_gt + crop_w, ...],
            seg[top_gt:top_gt + crop_h, left_gt:left_gt + crop_w],
            img_lq[top:top + lq_h, left:left + lq_w, ...])


def crop_size(gt_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``(height, width)`` of a training crop given as one side or as ``[height, width]``."""
    if isinstance(gt_size, (list, tuple)):
        if len(gt_size) != 2:
            raise ValueError(f'gt_size must be an int or [height, width], got {gt_size!r}.')
        return int(gt_size[0]), int(gt_size[1])
    return int(gt_size), int(gt_size)


def apply_flips(arr: np.ndarray, hflip: bool, vflip: bool, rot90: bool) -> np.ndarray:
    """Apply a horizontal flip, a vertical flip and a transpose of H and W, in this order (BasicSR's order).

    Args:
        arr: Array of shape ``(H, W)`` or ``(H, W, C)``; not modified.
        hflip: Flip left-right.
        vflip: Flip up-down.
        rot90: Swap the H and W axes (with ``vflip`` this is a 90 degree rotation).

    Returns:
        A C-contiguous array.
    """
    if arr.ndim not in (2, 3):
        raise ValueError(f'Augmentation expects a 2-D or 3-D array, got shape {arr.shape}.')
    if hflip:
        arr = arr[:, ::-1, ...]
    if vflip:
        arr = arr[::-1, ...]
    if rot90:
        arr = arr.swapaxes(0, 1)
    return np.ascontiguousarray(arr)


def augment_seg(arrays: Sequence[np.ndarray],
                hflip: bool = True,
                rotation: bool = True,
                return_status: bool = False) -> Union[List[np.ndarray], Tuple[List[np.ndarray], Tuple[bool, ...]]]:
    """Randomly flip / rotate (0, 90, 180, 270 degrees) several arrays identically.

    Draws the same random numbers as ``basicsr.data.transforms.augment`` but works on 2-D label maps and any
    dtype, and never modifies its inputs.

    Args:
        arrays: Images ``(H, W, C)`` and/or label maps ``(H, W)`` of the same height and width.
        hflip: Allow horizontal flips. Default: True.
        rotation: Allow vertical flips and H/W transposes. Default: True.
        return_status: Also return ``(hflip, vflip, rot90)`` as applied. Default: False.

    Returns:
        The augmented arrays (a list, in input order), and the status when ``return_status``.
    """
    do_hflip = hflip and random.random() < 0.5
    do_vflip = rotation and random.random() < 0.5
    do_rot90 = rotation and random.random() < 0.5
    out = [apply_flips(a, do_hflip, do_vflip, do_rot90) for a in arrays]
    if return_status:
        return out, (do_hflip, do_vflip, do_rot90)
    return out


def build_label_lut(label_map: Optional[Mapping[int, int]], size: int = 256) -> np.ndarray:
    """Look-up table that maps raw label values to class ids.

    Args:
        label_map: ``{raw_value: new_value}``, e.g. ``{11: 255}`` to make CamVid's *Unlabelled* the ignore
            value. Values not listed map to themselves. None means identity.
        size: Number of entries: 256 for uint8 label maps, 65536 for uint16.

    Returns:
        int64 array of shape ``(size,)``.

    Raises:
        ValueError: a key or value is not an integer, or a key is outside ``0..65535``. Keys ``>= size`` are
            left out of the table (they cannot occur in label maps of that dtype).
    """
    lut = np.arange(size, dtype=np.int64)
    for raw, new in (label_map or {}).items():
        try:
            raw_i, new_i = int(raw), int(new)
        except (TypeError, ValueError) as err:
            raise ValueError(f'label_map entries must be integers, got {raw!r}: {new!r}.') from err
        if not 0 <= raw_i < 65536:
            raise ValueError(f'label_map key {raw!r} is not a valid label value (0..65535).')
        if raw_i < size:
            lut[raw_i] = new_i
    return lut


def remap_labels(label: np.ndarray, label_map: Optional[Mapping[int, int]] = None,
                 lut: Optional[np.ndarray] = None) -> np.ndarray:
    """Map raw label values through ``label_map`` (or a prebuilt ``lut``) with one table look-up.

    Args:
        label: Integer label map (uint8 or uint16).
        label_map: ``{raw_value: new_value}``; ignored when ``lut`` is given.
        lut: Table from :func:`build_label_lut`: 256 entries for uint8 label maps, 65536 for uint16. A smaller
            table than a uint16 map's largest value raises ``ValueError``.

    Returns:
        int64 label map of the same shape.
    """
    if label.dtype not in (np.uint8, np.uint16):
        raise ValueError(f'Label maps must be uint8 or uint16, got {label.dtype}.')
    if lut is None:
        lut = build_label_lut(label_map, int(np.iinfo(label.dtype).max) + 1)
    elif label.dtype != np.uint8 and lut.shape[0] <= int(label.max()):
        raise ValueError(f'A look-up table of {lut.shape[0]} entries cannot map label value {int(label.max())}; '
                         'build it with size=65536 for uint16 label maps.')
    return lut[label]


def invalid_label_values(label: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Sorted unique values of ``label`` that are neither a class id in ``[0, num_classes)`` nor ``ignore_index``.

    Args:
        label: Integer label map.
        num_classes: Number of classes.
        ignore_index: Value that marks unlabelled pixels. Default: 255.
    """
    bad = ((label < 0) | (label >= num_classes)) & (label != ignore_index)
    return np.unique(label[bad])


def describe_invalid_labels(bad: np.ndarray, num_classes: int, ignore_index: int = 255) -> str:
    """The part of an error message that lists invalid label values (from :func:`invalid_label_values`).

    Args:
        bad: Offending values.
        num_classes: Number of classes.
        ignore_index: Value that marks unlabelled pixels. Default: 255.
    """
    shown = ', '.join(str(v) for v in bad[:20]) + (', ...' if len(bad) > 20 else '')
    return (f'has values [{shown}] outside the classes 0..{num_classes - 1} and ignore_index {ignore_index}. '
            'Remap them with the label_map option (e.g. {11: 255}) or fix num_classes.')


def validate_labels(label: np.ndarray, num_classes: int, ignore_index: int = 255, path: str = '') -> None:
    """Raise if ``label`` holds values outside the classes.

    Args:
        label: Integer label map (after any remapping).
        num_classes: Number of classes.
        ignore_index: Value that marks unlabelled pixels. Default: 255.
        path: File or LMDB key named in the error.

    Raises:
        ValueError: naming ``path`` and the offending values.
    """
    bad = invalid_label_values(label, num_classes, ignore_index)
    if bad.size:
        raise ValueError(f"Label map '{path}' {describe_invalid_labels(bad, num_classes, ignore_index)}")


def downsample(img: np.ndarray, scale: int, method: str = 'matlab') -> np.ndarray:
    """Downsampling of an HR image by an integer factor (deterministic for a given image and method).

    Args:
        img: HWC (or HW) float32 RGB image in ``[0, 1]``; height and width must be multiples of ``scale``.
        scale: Integer scale factor.
        method: ``'matlab'`` (``basicsr.utils.matlab_functions.imresize``, MATLAB's antialiased bicubic with
            ``a = -0.5``, the classic SR benchmark LR), ``'torch'`` (``F.interpolate(mode='bicubic',
            antialias=True)``: ``a = -0.75``, sharper), ``'pil_lanczos'`` (Pillow's antialiased Lanczos-3, sharper
            still), ``'cv2_area'`` (OpenCV's pixel-area average: a box filter, softer) or ``'blur_jpeg'`` (Gaussian
            blur of sigma ``BLUR_JPEG_SIGMA`` px, MATLAB bicubic, then JPEG at quality ``BLUR_JPEG_QUALITY``: a mild
            Real-ESRGAN-style camera degradation; the output is 8-bit). ``'matlab_u8'`` / ``'torch_u8'``: the same
            as ``'matlab'`` / ``'torch'``, rounded to 8 bits as a saved LR file is.

    Returns:
        HWC float32 image of size ``(H // scale, W // scale)``, clipped to ``[0, 1]`` (not quantized, except
        ``'blur_jpeg'`` and the ``_u8`` methods).
    """
    if method not in LQ_DOWNSAMPLE_METHODS:
        raise ValueError(f"Unknown downsampling method '{method}'; use one of {list(LQ_DOWNSAMPLE_METHODS)}.")
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f'Image size {(h, w)} is not a multiple of scale {scale}.')
    img = np.ascontiguousarray(img, dtype=np.float32)
    planar = img[:, :, None] if img.ndim == 2 else img
    out = _DOWNSAMPLERS[method](planar, scale)
    out = np.ascontiguousarray(np.clip(out, 0, 1), dtype=np.float32)
    return out[:, :, 0] if img.ndim == 2 else out


def _matlab(img: np.ndarray, scale: int) -> np.ndarray:
    from basicsr.utils.matlab_functions import imresize

    out = imresize(img, 1 / scale)
    return out[:, :, None] if out.ndim == 2 else out


def _torch(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    tensor = torch.from_numpy(img).permute(2, 0, 1)[None]
    out = F.interpolate(tensor, size=(h // scale, w // scale), mode='bicubic', align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).numpy()


def _pil_lanczos(img: np.ndarray, scale: int) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    planes = [np.asarray(Image.fromarray(img[:, :, c], mode='F').resize((w // scale, h // scale), Image.LANCZOS))
              for c in range(img.shape[2])]
    return np.stack(planes, axis=2)


def _cv2_area(img: np.ndarray, scale: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    out = cv2.resize(img, (w // scale, h // scale), interpolation=cv2.INTER_AREA)
    return out[:, :, None] if out.ndim == 2 else out


def _blur_jpeg(img: np.ndarray, scale: int) -> np.ndarray:
    import cv2

    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=BLUR_JPEG_SIGMA, borderType=cv2.BORDER_REFLECT_101)
    lq = _matlab(blurred[:, :, None] if blurred.ndim == 2 else blurred, scale)
    lq8 = (np.clip(lq, 0, 1) * 255).round().astype(np.uint8)
    bgr = lq8[:, :, ::-1] if lq8.shape[2] == 3 else lq8
    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, BLUR_JPEG_QUALITY])
    if not ok:
        raise RuntimeError('OpenCV could not JPEG-encode the LR image.')
    dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    dec = dec[:, :, None] if dec.ndim == 2 else dec[:, :, ::-1]
    return dec.astype(np.float32) / 255.


def _in_8_bits(method):
    def quantized(img: np.ndarray, scale: int) -> np.ndarray:
        return (np.clip(method(img, scale), 0, 1) * 255).round() / np.float32(255)

    return quantized


_DOWNSAMPLERS = {'matlab': _matlab, 'torch': _torch, 'pil_lanczos': _pil_lanczos, 'cv2_area': _cv2_area,
                 'blur_jpeg': _blur_jpeg, 'matlab_u8': _in_8_bits(_matlab), 'torch_u8': _in_8_bits(_torch)}
