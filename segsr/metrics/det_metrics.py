"""Object detection scores (COCO mAP) of a set of images, through torchmetrics and pycocotools.

segsr does not compute mAP itself: :class:`DetectionScores` keeps every image's predictions and ground truth and
hands the images asked for to ``torchmetrics.detection.MeanAveragePrecision`` (``iou_type='bbox'``,
``box_format='xyxy'``, ``class_metrics=True``, backend ``pycocotools``), i.e. to COCO's own ``COCOeval``, with
COCO's own IoU and recall thresholds (torchmetrics' defaults are their float32 roundings, e.g. 0.00999999977 for
recall 0.01, which move the AP of a class whose recall lands exactly on a recall point). For bootstrap draws,
:meth:`DetectionScores.map_50` gives the same AP@.5 from one COCO matching of all images (milliseconds per draw).

Conventions (COCO's, reported in percent):
    * ``map`` is AP averaged over the IoU thresholds 0.50:0.05:0.95, ``map_50`` / ``map_75`` at one threshold;
      each AP is the 101-point interpolated precision (recall 0, 0.01, ..., 1) of one class, averaged over classes.
    * Boxes are pixel ``x1, y1, x2, y2``; IoU is continuous (no ``+ 1`` on widths). At most 100 detections per image
      and class are kept (the highest scores, COCO's ``maxDets``).
    * Images without ground truth: an image with neither ground truth nor predictions changes nothing. A
      prediction on an image (or of a class) without ground truth is a false positive of its class. A class without
      any ground truth in the scored images has an undefined AP (COCO's -1, NaN here) and is left out of the mean,
      even when it has predictions. Scores with no class defined are NaN.
"""
import contextlib
import copy
import io
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from segsr.metrics.inputs import ArrayLike, as_class_indices, as_finite_tensor, check_classes

_SUMMARY_KEYS = ('map', 'map_50', 'map_75')
# pycocotools' Params.setDetParams: IoU 0.50:0.05:0.95 and recall 0:0.01:1, float64
_COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).tolist()
_COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101).tolist()


def _check_boxes(value: ArrayLike, name: str) -> torch.Tensor:
    """Pixel ``xyxy`` boxes ``(N, 4)`` as float64 (an empty input is ``(0, 4)``)."""
    boxes = as_finite_tensor(value, name, torch.float64)
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f'{name}: expected boxes of shape (N, 4) in x1, y1, x2, y2, got shape {tuple(boxes.shape)}.')
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f'{name}: box {row} {boxes[row].tolist()} has x2 < x1 or y2 < y1 (expected x1, y1, x2, y2).')
    return boxes


def _check_labels(value: ArrayLike, name: str, num_classes: int, count: int) -> torch.Tensor:
    """Class indices ``(count,)`` in ``[0, num_classes)`` as int64."""
    shape = tuple(as_finite_tensor(value, name).shape)
    if len(shape) > 1 or (shape[0] if shape else 1) != count:
        raise ValueError(f'{name}: expected shape ({count},) (one label per box), got shape {shape}.')
    return as_class_indices(value, name, num_classes)


def _check_scores(value: ArrayLike, name: str, count: int) -> torch.Tensor:
    """Confidence scores ``(count,)`` as float64."""
    scores = as_finite_tensor(value, name, torch.float64)
    scores = scores.reshape(-1) if scores.numel() == 0 else scores
    if scores.dim() != 1 or scores.shape[0] != count:
        raise ValueError(f'{name}: expected shape ({count},) (one score per box), got shape {tuple(scores.shape)}.')
    return scores


def _percent(value: torch.Tensor) -> float:
    """A COCO score in percent; COCO's -1 (undefined) becomes NaN."""
    number = float(value)
    return float('nan') if number < 0 else 100.0 * number


def _ap50_per_class(precision: torch.Tensor) -> np.ndarray:
    """AP@.5 per class from COCOeval's precision array ``(T, R, K, A, M)`` as COCO's ``summarize`` computes it:
    the mean over recall thresholds at the first IoU threshold (0.5), area 'all', the largest ``maxDets``; -1
    entries (no ground truth) are left out, a class with none defined is NaN."""
    prec = precision[0, :, :, 0, -1].numpy()  # (R, K)
    defined = prec > -1
    with np.errstate(invalid='ignore'):
        return np.where(defined.any(0), np.where(defined, prec, 0).sum(0) / np.maximum(defined.sum(0), 1), np.nan)


class DetectionScores:
    """Per-image detections and ground truth of a set; COCO mAP of any subset (see the module docstring).

    Args:
        num_classes: Number of object classes; labels are ``0 .. num_classes - 1`` (no background class).
        class_names: Names for the per-class keys of :meth:`summary` (``ap50_<name>``); default ``'0', '1', ...``.

    Raises:
        ValueError: ``num_classes < 1``, or ``class_names`` not ``num_classes`` distinct names.
    """

    def __init__(self, num_classes: int, class_names: Optional[Sequence[str]] = None) -> None:
        self.class_names = check_classes(num_classes, class_names)
        self.num_classes = int(num_classes)
        self.preds: List[Dict[str, torch.Tensor]] = []
        self.targets: List[Dict[str, torch.Tensor]] = []
        self._matched: Optional[_MatchedImages] = None  # built by map_50, dropped when the images change

    def __len__(self) -> int:
        return len(self.preds)

    def reset(self) -> None:
        """Forget every image."""
        self.preds, self.targets, self._matched = [], [], None

    def add(self, pred_boxes: ArrayLike, pred_scores: ArrayLike, pred_labels: ArrayLike, gt_boxes: ArrayLike,
            gt_labels: ArrayLike) -> None:
        """Add one image.

        Args:
            pred_boxes: Predicted boxes ``(N, 4)``, pixel ``x1, y1, x2, y2`` (``N`` may be 0).
            pred_scores: Their confidence scores ``(N,)``.
            pred_labels: Their class indices ``(N,)`` in ``[0, num_classes)``.
            gt_boxes: Ground-truth boxes ``(M, 4)``, pixel ``x1, y1, x2, y2`` (``M`` may be 0).
            gt_labels: Their class indices ``(M,)``.

        Raises:
            ValueError: A wrong shape, a box with ``x2 < x1`` or ``y2 < y1``, a label out of range, a non-integer
                label or a non-finite value; the message names the argument.
        """
        boxes = _check_boxes(pred_boxes, 'pred_boxes')
        scores = _check_scores(pred_scores, 'pred_scores', len(boxes))
        labels = _check_labels(pred_labels, 'pred_labels', self.num_classes, len(boxes))
        gt = _check_boxes(gt_boxes, 'gt_boxes')
        gt_lab = _check_labels(gt_labels, 'gt_labels', self.num_classes, len(gt))
        self.preds.append(dict(boxes=boxes, scores=scores, labels=labels))
        self.targets.append(dict(boxes=gt, labels=gt_lab))
        self._matched = None

    def _indices(self, indices: Optional[Sequence[int]]) -> List[int]:
        """``indices`` as ints (all images for ``None``); ``ValueError`` naming ``indices`` when out of range."""
        if indices is None:
            return list(range(len(self)))
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f'indices: {bad[:5]} out of range for {len(self)} images.')
        return idx

    def summary(self, indices: Optional[Sequence[int]] = None, per_class: bool = True) -> Dict[str, float]:
        """COCO scores of the images ``indices`` (repeats count as separate images, as a bootstrap draw needs).

        Args:
            indices: Positions of the images (in :meth:`add` order); default all.
            per_class: Also score each class (``ap50_<name>``, ``ap_<name>``): one more ``COCOeval`` pass per class.
                ``False`` for speed when only ``map`` / ``map_50`` / ``map_75`` are wanted (for many draws of
                AP@.5 alone use :meth:`map_50`).

        Returns:
            ``map`` (AP@[.5:.95]), ``map_50``, ``map_75``, ``num_images`` and, with ``per_class``, ``ap50_<name>``
            (AP@.5) and ``ap_<name>`` (AP@[.5:.95]) per class; scores in percent, NaN where undefined.

        Raises:
            ValueError: an index out of range.
        """
        idx = self._indices(indices)
        out: Dict[str, float] = {key: float('nan') for key in _SUMMARY_KEYS}
        out['num_images'] = len(idx)
        if per_class:
            out.update({f'{p}_{n}': float('nan') for p in ('ap50', 'ap') for n in self.class_names})
        if idx:
            out.update(self._coco_scores(idx, per_class))
        return out

    def map_50(self, indices: Optional[Sequence[int]] = None) -> float:
        """COCO AP@.5 of the images ``indices``, equal to ``summary(indices, per_class=False)['map_50']``, fast.

        The first call matches every image's detections to its ground truth once (pycocotools' ``evaluate`` at IoU
        0.5, area 'all', 100 detections); each call then only ranks the chosen images' matches
        (``COCOeval.accumulate``): about half a millisecond for 87 images, against a third of a second for
        :meth:`summary`. Meant for bootstrap draws (repeats count as separate images).

        Args:
            indices: Positions of the images (in :meth:`add` order); default all.

        Returns:
            AP@.5 in percent, NaN when no class has ground truth in the images.

        Raises:
            ValueError: an index out of range.
        """
        idx = self._indices(indices)
        if not idx:
            return float('nan')
        if self._matched is None:
            self._matched = _MatchedImages(self)
        return self._matched.map_50(idx)

    def _coco_scores(self, idx: List[int], per_class: bool) -> Dict[str, float]:
        """torchmetrics' COCO evaluation of the images ``idx`` (not empty), in percent (see :meth:`summary`)."""
        from torchmetrics.detection import MeanAveragePrecision  # imported here: ``import segsr`` stays light

        metric = MeanAveragePrecision(iou_type='bbox', box_format='xyxy', iou_thresholds=_COCO_IOU_THRESHOLDS,
                                      rec_thresholds=_COCO_RECALL_POINTS, class_metrics=per_class,
                                      extended_summary=per_class, backend='pycocotools')
        metric.update([self.preds[i] for i in idx], [self.targets[i] for i in idx])
        result = metric.compute()
        out = {key: _percent(result[key]) for key in _SUMMARY_KEYS}
        if per_class:  # classes: the labels present in the draw, in COCOeval's (sorted) order
            ap50 = _ap50_per_class(result['precision'])
            for k, cls in enumerate(result['classes'].reshape(-1).tolist()):
                out[f'ap50_{self.class_names[cls]}'] = 100.0 * float(ap50[k])
                out[f'ap_{self.class_names[cls]}'] = _percent(result['map_per_class'].reshape(-1)[k])
        return out


class _MatchedImages:
    """pycocotools' per-image matches (IoU 0.5, area 'all', 100 detections) of every image of a
    :class:`DetectionScores`; :meth:`map_50` ranks those of any multiset of the images, as COCO does."""

    def __init__(self, scores: DetectionScores) -> None:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        images = [{'id': i} for i in range(len(scores))]
        categories = [{'id': k} for k in range(scores.num_classes)]
        truth, found = [], []
        for i, (pred, target) in enumerate(zip(scores.preds, scores.targets)):
            for box, label in zip(target['boxes'].tolist(), target['labels'].tolist()):
                truth.append(_coco_box(box, i, label, len(truth) + 1))
            for box, score, label in zip(pred['boxes'].tolist(), pred['scores'].tolist(), pred['labels'].tolist()):
                found.append(dict(_coco_box(box, i, label, len(found) + 1), score=score))
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
            sets = []
            for annotations in (truth, found):
                coco = COCO()
                coco.dataset = {'images': images, 'annotations': annotations, 'categories': categories}
                coco.createIndex()
                sets.append(coco)
            self._eval = COCOeval(sets[0], sets[1], iouType='bbox')
            params = self._eval.params
            params.imgIds, params.catIds = list(range(len(scores))), list(range(scores.num_classes))
            params.iouThrs, params.recThrs = np.array([0.5]), np.array(_COCO_RECALL_POINTS)
            params.areaRng, params.areaRngLbl, params.maxDets = [[0, 1e10]], ['all'], [100]
            self._eval.evaluate()
        self._matches = self._eval.evalImgs  # class k, image i at k * images + i (one area range)
        self._num_images, self._num_classes = len(scores), scores.num_classes

    def map_50(self, idx: List[int]) -> float:
        """AP@.5 (percent, NaN without ground truth) of the images ``idx`` (not empty; repeats count)."""
        draw = copy.copy(self._eval)
        draw.evalImgs = [self._matches[k * self._num_images + i] for k in range(self._num_classes) for i in idx]
        draw.params = draw._paramsEval = copy.copy(self._eval.params)
        draw.params.imgIds = list(range(len(idx)))
        with contextlib.redirect_stdout(io.StringIO()):
            draw.accumulate()
        precision = draw.eval['precision'][0, :, :, 0, 0]  # (recall points, classes); -1: no ground truth
        defined = precision[precision > -1]
        return 100.0 * float(defined.mean()) if defined.size else float('nan')


def _coco_box(box: Sequence[float], image: int, label: int, ann_id: int) -> dict:
    """A COCO annotation of a pixel ``x1, y1, x2, y2`` box (area width x height, as torchmetrics gives COCO)."""
    x1, y1, x2, y2 = box
    return dict(id=ann_id, image_id=image, category_id=int(label), bbox=[x1, y1, x2 - x1, y2 - y1],
                area=(x2 - x1) * (y2 - y1), iscrowd=0)
