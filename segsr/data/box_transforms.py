"""Transforms that keep an image and its boxes aligned (flips, rotations, crops, HR -> LR scaling, padding).

Boxes are float32 ``(N, 4)`` arrays ``[x1, y1, x2, y2]`` in 0-based pixel-edge coordinates: a box covers the
pixels of columns ``x1 <= c < x2`` and rows ``y1 <= r < y2`` (the convention of
:mod:`segsr.data.det_annotations`). Images are ``(H, W)`` or ``(H, W, C)`` arrays; labels are ``(N,)`` arrays (any
per-box values: class ids, difficult flags). Nothing here modifies its inputs.

The image side reuses :mod:`segsr.data.seg_transforms` (``apply_flips``, ``augment_seg``,
``paired_random_crop_seg``), so boxes move exactly as label maps do and random draws are BasicSR's.
"""
from typing import List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from segsr.data.seg_transforms import apply_flips, augment_seg, crop_size, paired_random_crop_seg

Size = Tuple[int, int]
BoxSample = Tuple[np.ndarray, np.ndarray, np.ndarray]
ArrayT = TypeVar('ArrayT')  # a numpy array or a torch tensor


def as_boxes(boxes: np.ndarray) -> np.ndarray:
    """``boxes`` as a float32 ``(N, 4)`` array (a copy); raises ``ValueError`` for another shape."""
    boxes = np.array(boxes, dtype=np.float32)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f'Boxes must be an (N, 4) array of [x1, y1, x2, y2], got shape {boxes.shape}.')
    return boxes


def _check_labels(boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape[:1] != boxes.shape[:1]:
        raise ValueError(f'{boxes.shape[0]} boxes but labels of shape {labels.shape}: one label per box.')
    return labels.copy()


# ------------------------------------------------------------------------------------------- flips and rotations
def flip_boxes(boxes: np.ndarray, size: Size, hflip: bool, vflip: bool, rot90: bool) -> np.ndarray:
    """Move boxes as :func:`segsr.data.seg_transforms.apply_flips` moves an image of ``size``.

    The order is apply_flips' (BasicSR's): horizontal flip, vertical flip, then a transpose of H and W.

    Args:
        boxes: ``(N, 4)`` boxes on the image before the transform.
        size: ``(H, W)`` of the image before the transform.
        hflip: Flip left-right: ``x -> W - x``.
        vflip: Flip up-down: ``y -> H - y``.
        rot90: Swap the axes: ``(x, y) -> (y, x)``.

    Returns:
        float32 ``(N, 4)`` boxes on the transformed image.
    """
    height, width = size
    boxes = as_boxes(boxes)
    if hflip:
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    if vflip:
        boxes[:, [1, 3]] = height - boxes[:, [3, 1]]
    if rot90:
        boxes = boxes[:, [1, 0, 3, 2]]
    return boxes


def _flipped(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, flags: Tuple[bool, bool, bool]) -> BoxSample:
    boxes = as_boxes(boxes)
    return apply_flips(img, *flags), flip_boxes(boxes, img.shape[:2], *flags), _check_labels(boxes, labels)


def hflip(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> BoxSample:
    """Flip an image and its boxes left-right.

    Args:
        img: ``(H, W[, C])`` image.
        boxes: ``(N, 4)`` boxes.
        labels: ``(N,)`` labels.

    Returns:
        ``(img, boxes, labels)`` transformed (labels unchanged, copied).
    """
    return _flipped(img, boxes, labels, (True, False, False))


def vflip(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> BoxSample:
    """Flip an image and its boxes up-down.

    Args:
        img: ``(H, W[, C])`` image.
        boxes: ``(N, 4)`` boxes.
        labels: ``(N,)`` labels.

    Returns:
        ``(img, boxes, labels)`` transformed (labels unchanged, copied).
    """
    return _flipped(img, boxes, labels, (False, True, False))


def rot90(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> BoxSample:
    """Transpose an image and its boxes (swap H and W), as ``apply_flips(..., rot90=True)`` does.

    A transpose is BasicSR's "rot90"; after a vertical flip it is a 90 degree rotation.

    Args:
        img: ``(H, W[, C])`` image.
        boxes: ``(N, 4)`` boxes.
        labels: ``(N,)`` labels.

    Returns:
        ``(img, boxes, labels)`` transformed (labels unchanged, copied); the image is ``(W, H[, C])``.
    """
    return _flipped(img, boxes, labels, (False, False, True))


def augment_boxes(img: np.ndarray,
                  boxes: np.ndarray,
                  labels: np.ndarray,
                  maps: Sequence[np.ndarray] = (),
                  use_hflip: bool = True,
                  use_rot: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[np.ndarray]]:
    """Random flips / rotations of an image, its boxes and any label maps, with ``augment_seg``'s draws.

    Args:
        img: ``(H, W[, C])`` image.
        boxes: ``(N, 4)`` boxes.
        labels: ``(N,)`` labels.
        maps: Further arrays of the image's size (label maps) moved the same way.
        use_hflip: Allow horizontal flips. Default: True.
        use_rot: Allow vertical flips and transposes. Default: True.

    Returns:
        ``(img, boxes, labels, maps)`` transformed.
    """
    boxes = as_boxes(boxes)
    arrays, flags = augment_seg([img, *maps], use_hflip, use_rot, return_status=True)
    return arrays[0], flip_boxes(boxes, img.shape[:2], *flags), _check_labels(boxes, labels), arrays[1:]


# ----------------------------------------------------------------------------------------------------- crops
def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas (pixels) of ``(N, 4)`` boxes; 0 for empty ones."""
    boxes = as_boxes(boxes)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def clip_boxes(boxes: np.ndarray, size: Size) -> np.ndarray:
    """Clip ``(N, 4)`` boxes to an image of ``size = (H, W)`` (boxes outside it become empty)."""
    boxes = as_boxes(boxes)
    height, width = size
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes


def crop(img: np.ndarray,
         boxes: np.ndarray,
         labels: np.ndarray,
         top: int,
         left: int,
         h: int,
         w: int,
         min_visible: float = 0.5,
         min_side: float = 2,
         return_keep: bool = False) -> Union[BoxSample, Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Crop a window of an image and keep the boxes still visible in it, clipped to it.

    The drop rule: a box is kept when, clipped to the window, it is not empty, each of its sides is at least
    ``min_side`` pixels, and its area is at least ``min_visible`` times its area before the crop.

    Args:
        img: ``(H, W[, C])`` image.
        boxes: ``(N, 4)`` boxes.
        labels: ``(N,)`` labels.
        top: First row of the window.
        left: First column of the window.
        h: Window height.
        w: Window width.
        min_visible: Least share of a box's area left in the window (0 keeps any visible part). Default: 0.5.
        min_side: Least width and height (pixels of the window) of a kept box. Default: 2.
        return_keep: Also return the bool ``(N,)`` mask of kept boxes (to filter other per-box arrays).

    Returns:
        ``(patch, boxes, labels)`` with boxes in the window's coordinates, and ``keep`` when ``return_keep``.
        ``patch`` is a view of ``img``.

    Raises:
        ValueError: the window is empty or not inside the image.
    """
    height, width = img.shape[:2]
    if h <= 0 or w <= 0 or top < 0 or left < 0 or top + h > height or left + w > width:
        raise ValueError(f'Crop window (top {top}, left {left}, height {h}, width {w}) is not inside the image '
                         f'of size {(height, width)}.')
    boxes = as_boxes(boxes)
    labels = _check_labels(boxes, labels)
    clipped = clip_boxes(boxes - np.array([left, top, left, top], dtype=np.float32), (h, w))
    sides = np.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1])
    area = box_areas(clipped)
    keep = (sides > 0) & (sides >= min_side) & (area >= min_visible * box_areas(boxes))
    out = (img[top:top + h, left:left + w, ...], clipped[keep], labels[keep])
    return (*out, keep) if return_keep else out


def _random_window(size: Size, gt_size: Union[int, Sequence[int]], scale: int,
                   lq: Optional[np.ndarray], gt_path: str) -> Tuple[int, int, Optional[np.ndarray]]:
    """``(top, left, lq_patch)`` of a window drawn by ``paired_random_crop_seg`` (same checks and draws).

    It crops two zero-copy index maps in place of the image and label map: their patches' first values are the
    window's row and column.
    """
    rows = np.broadcast_to(np.arange(size[0])[:, None], size)
    cols = np.broadcast_to(np.arange(size[1])[None, :], size)
    row_patch, col_patch, lq_patch = paired_random_crop_seg(rows, cols, gt_size, scale, lq, gt_path)
    return int(row_patch[0, 0]), int(col_patch[0, 0]), lq_patch


def paired_random_crop_boxes(img_gt: np.ndarray,
                             boxes: np.ndarray,
                             labels: np.ndarray,
                             gt_size: Union[int, Sequence[int]],
                             scale: int,
                             img_lq: Optional[np.ndarray] = None,
                             gt_path: str = '',
                             min_visible: float = 0.5,
                             min_side: float = 2) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Crop the same random window from an HR image and its boxes (and the matching LQ window).

    The contract of :func:`segsr.data.seg_transforms.paired_random_crop_seg`: without ``img_lq`` the window's
    corner may be any HR pixel; with ``img_lq`` it lies on the LQ grid (a multiple of ``scale``) and the LQ window
    is ``gt_size // scale`` wide. Boxes follow :func:`crop`'s drop rule and stay in HR pixels of the window
    (:func:`scale_boxes` with ``1 / scale`` gives the LQ window's boxes).

    Args:
        img_gt: HR image, ``(H, W[, C])``.
        boxes: ``(N, 4)`` boxes on ``img_gt``.
        labels: ``(N,)`` labels.
        gt_size: Side of the square HR window, or its ``(height, width)``; must be divisible by ``scale``.
        scale: Scale factor between HR and LQ.
        img_lq: Optional LQ image of shape ``(H // scale, W // scale[, C])``.
        gt_path: Path or key of the HR image, named in errors.
        min_visible: See :func:`crop`. Default: 0.5.
        min_side: See :func:`crop` (HR pixels). Default: 2.

    Returns:
        ``(gt_patch, boxes, labels, lq_patch)``; ``lq_patch`` is None when ``img_lq`` is None.

    Raises:
        ValueError: as ``paired_random_crop_seg`` (LQ size, ``gt_size`` not divisible, image too small).
    """
    top, left, lq_patch = _random_window(img_gt.shape[:2], gt_size, scale, img_lq, gt_path)
    crop_h, crop_w = crop_size(gt_size)
    gt_patch, boxes, labels = crop(img_gt, boxes, labels, top, left, crop_h, crop_w, min_visible, min_side)
    return gt_patch, boxes, labels, lq_patch


def scale_boxes(boxes: np.ndarray, factor: float) -> np.ndarray:
    """Boxes of an image resized by ``factor`` (pixel edges scale exactly: ``1 / scale`` maps HR to LR).

    Args:
        boxes: ``(N, 4)`` boxes.
        factor: Positive resize factor, e.g. ``1 / 4`` from HR to x4 LR, ``4`` back.

    Returns:
        float32 ``(N, 4)`` boxes.
    """
    if not factor > 0:
        raise ValueError(f'Box scale factor must be positive, got {factor}.')
    return as_boxes(boxes) * np.float32(factor)


# --------------------------------------------------------------------------------------------------- batching
def pad_boxes(boxes: np.ndarray, labels: np.ndarray, max_boxes: int,
              path: str = '') -> Tuple[np.ndarray, np.ndarray, int]:
    """Fixed-size box and label arrays, so that PyTorch's ``default_collate`` batches images with any box count.

    Args:
        boxes: ``(N, 4)`` boxes.
        labels: ``(N,)`` integer labels.
        max_boxes: Rows of the padded arrays (the dataset option ``max_boxes``).
        path: Image named in the error.

    Returns:
        ``(boxes, labels, count)``: float32 ``(max_boxes, 4)`` with zero rows after the first ``count``, int64
        ``(max_boxes,)`` padded with -1, and ``count = N``.

    Raises:
        ValueError: ``N > max_boxes``, naming the option.
    """
    boxes = as_boxes(boxes)
    labels = _check_labels(boxes, labels)
    count = boxes.shape[0]
    if count > max_boxes:
        raise ValueError(f"Image '{path}' has {count} boxes, more than the option max_boxes = {max_boxes}: raise "
                         'max_boxes.')
    padded_boxes = np.zeros((max_boxes, 4), dtype=np.float32)
    padded_labels = np.full((max_boxes, ), -1, dtype=np.int64)
    padded_boxes[:count] = boxes
    padded_labels[:count] = labels
    return padded_boxes, padded_labels, count


def unpad_boxes(boxes: ArrayT, labels: ArrayT, count: int) -> Tuple[ArrayT, ArrayT]:
    """The first ``count`` rows of padded boxes and labels (numpy arrays or tensors of one sample).

    Args:
        boxes: ``(max_boxes, 4)`` padded boxes.
        labels: ``(max_boxes,)`` padded labels.
        count: Number of real boxes (an int or a 0-d tensor).

    Returns:
        ``(boxes[:count], labels[:count])``.
    """
    count = int(count)
    return boxes[:count], labels[:count]
