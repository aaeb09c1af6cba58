"""Segmentation metrics from a confusion matrix accumulated over a whole set.

mIoU is computed once from the summed confusion matrix (not averaged per image), as in the Cityscapes, PASCAL VOC
and CamVid protocols and in torchvision's reference scripts.

Conventions:
    * Pixels whose ground truth is ``ignore_index`` (or outside ``[0, num_classes)``) are excluded entirely.
    * A class's IoU is ``TP / (TP + FP + FN)``. A class absent from both ground truth and prediction over the
      whole set has an undefined IoU (0 / 0): it is reported as NaN and left out of the mean. A class that is
      predicted but never present in the ground truth has IoU 0 and counts in the mean.
    * Pixel accuracy is ``sum(TP) / number of scored pixels``.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass
class SegMetricResult:
    """Scores of one confusion matrix.

    Attributes:
        miou: Mean IoU over classes with a defined IoU, in percent (NaN when nothing was scored).
        pixel_acc: Pixel accuracy in percent.
        mean_acc: Mean per-class recall in percent over classes present in the ground truth.
        iou: Per-class IoU in percent, NaN where undefined.
        num_pixels: Number of scored (non-ignored) pixels.
    """
    miou: float
    pixel_acc: float
    mean_acc: float
    iou: List[float] = field(default_factory=list)
    num_pixels: int = 0

    def as_dict(self, class_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
        """Plain dict (JSON-ready); per-class IoU keyed by class name when given."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(len(self.iou))]
        return dict(
            miou=self.miou,
            pixel_acc=self.pixel_acc,
            mean_acc=self.mean_acc,
            num_pixels=self.num_pixels,
            iou={n: (None if np.isnan(v) else v) for n, v in zip(names, self.iou)})


class ConfusionMatrix:
    """Confusion matrix accumulated over a set (rows: ground truth, columns: prediction).

    Args:
        num_classes: Number of scored classes; labels are ``0 .. num_classes - 1``.
        ignore_index: Ground-truth value that marks unlabelled pixels. Default: 255.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}.')
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.mat = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.mat.zero_()

    def update(self, pred: ArrayLike, target: ArrayLike) -> torch.Tensor:
        """Add a batch of predictions; returns the batch's own matrix (e.g. to keep per-image matrices).

        Args:
            pred: Predicted class indices, any shape (e.g. ``B x H x W``), or logits ``B x C x H x W``.
            target: Ground-truth class indices of the same spatial shape as ``pred``.
        """
        mat = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.mat += mat
        return mat

    def all_reduce(self) -> None:
        """Sum the matrix over all processes when ``torch.distributed`` is initialised (no-op otherwise)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            backend = torch.distributed.get_backend()
            device = torch.device('cuda', torch.cuda.current_device()) if backend == 'nccl' else torch.device('cpu')
            mat = self.mat.to(device)
            torch.distributed.all_reduce(mat)
            self.mat = mat.cpu()

    def compute(self) -> SegMetricResult:
        """Scores of the accumulated matrix."""
        mat = self.mat.to(torch.float64)
        tp = mat.diag()
        gt_count = mat.sum(dim=1)
        pred_count = mat.sum(dim=0)
        union = gt_count + pred_count - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float('nan')))
        recall = torch.where(gt_count > 0, tp / gt_count.clamp(min=1), torch.full_like(tp, float('nan')))
        total = float(mat.sum())
        return SegMetricResult(
            miou=_nanmean_percent(iou),
            pixel_acc=100.0 * float(tp.sum()) / total if total > 0 else float('nan'),
            mean_acc=_nanmean_percent(recall),
            iou=[100.0 * float(v) for v in iou],
            num_pixels=int(total))


def confusion_matrix(pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """``num_classes x num_classes`` int64 matrix (rows: ground truth) of one batch; see :class:`ConfusionMatrix`."""
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target)
    if pred.dim() == target.dim() + 1 and pred.is_floating_point():
        pred = pred.argmax(dim=1)
    if pred.shape != target.shape:
        raise ValueError(f'prediction shape {tuple(pred.shape)} != label shape {tuple(target.shape)}.')
    pred = pred.detach().reshape(-1).to('cpu', torch.int64)
    target = target.detach().reshape(-1).to('cpu', torch.int64)
    valid = (target >= 0) & (target < num_classes) & (target != ignore_index)
    pred = pred[valid].clamp(0, num_classes - 1)
    idx = target[valid] * num_classes + pred
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def _nanmean_percent(values: torch.Tensor) -> float:
    valid = ~torch.isnan(values)
    return 100.0 * float(values[valid].mean()) if bool(valid.any()) else float('nan')
