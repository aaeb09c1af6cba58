"""Classification loss (issue 21): cross-entropy of image-level logits."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from segsr.losses.seg_loss import check_reduction


@LOSS_REGISTRY.register()
class ClassCrossEntropyLoss(nn.Module):
    """Cross-entropy of ``B x C`` class logits against ``B`` class indices.

    Args:
        loss_weight: Weight of this loss. Default: 1.0.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        class_weights: Optional per-class weights.
        label_smoothing: Label smoothing in ``[0, 1)``. Default: 0.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 class_weights: Optional[Sequence[float]] = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.label_smoothing = float(label_smoothing)
        if class_weights is not None:
            self.register_buffer('class_weights', torch.as_tensor(class_weights, dtype=torch.float32))
        else:
            self.class_weights = None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: ``B x C`` class scores.
            target: ``B`` class indices.
        """
        if logits.dim() != 2 or target.shape != logits.shape[:1]:
            raise ValueError(f'ClassCrossEntropyLoss: expected B x C logits and B labels, got logits '
                             f'{tuple(logits.shape)} and labels {tuple(target.shape)}.')
        return self.loss_weight * F.cross_entropy(logits, target.long(), weight=self.class_weights,
                                                  reduction=self.reduction, label_smoothing=self.label_smoothing)
