"""Segmentation losses."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

_REDUCTIONS = ('none', 'mean', 'sum')


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is one of BasicSR's (``none``, ``mean``, ``sum``), else raise ``ValueError``."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f'Unsupported reduction mode: {reduction}. Supported ones are: {list(_REDUCTIONS)}')
    return reduction


def segmentation_cross_entropy(logits: torch.Tensor,
                               target: torch.Tensor,
                               ignore_index: int = 255,
                               reduction: str = 'mean',
                               weight: Optional[torch.Tensor] = None,
                               label_smoothing: float = 0.0) -> torch.Tensor:
    """Pixel-wise cross-entropy that skips ``ignore_index`` pixels.

    Args:
        logits: ``B x C x H x W`` class scores.
        target: ``B x H x W`` integer labels.
        ignore_index: Label value that is not scored. Default: 255.
        reduction: ``'mean'`` (over scored pixels; 0 when none is scored), ``'sum'`` or ``'none'``
            (``B x H x W`` map with 0 at ignored pixels).
        weight: Optional per-class weights (length C).
        label_smoothing: Label smoothing in ``[0, 1)``.
    """
    check_reduction(reduction)
    if logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(f'logits {tuple(logits.shape)} and labels {tuple(target.shape)} differ in size.')
    target = target.long()
    loss = F.cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, reduction='none', label_smoothing=label_smoothing)
    if reduction == 'none':
        return loss
    if reduction == 'sum':
        return loss.sum()
    valid = target != ignore_index
    if weight is not None:  # PyTorch's weighted mean: divide by the summed weights of the scored pixels
        denom = weight.to(loss.dtype)[target.clamp(0, logits.shape[1] - 1)][valid].sum()
    else:
        denom = valid.sum().to(loss.dtype)
    return loss.sum() / denom.clamp(min=1e-12) if bool(valid.any()) else loss.sum() * 0.0


@LOSS_REGISTRY.register()
class SegCrossEntropyLoss(nn.Module):
    """Cross-entropy for semantic segmentation with an ignore label.

    Args:
        loss_weight: Weight of this loss. Default: 1.0.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. ``'mean'`` averages over scored pixels. Default: ``'mean'``.
        ignore_index: Label value that is not scored. Default: 255.
        class_weights: Optional per-class weights.
        label_smoothing: Label smoothing in ``[0, 1)``. Default: 0.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 ignore_index: int = 255,
                 class_weights: Optional[Sequence[float]] = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        if class_weights is not None:
            self.register_buffer('class_weights', torch.as_tensor(class_weights, dtype=torch.float32))
        else:
            self.class_weights = None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: ``B x C x H x W`` class scores.
            target: ``B x H x W`` labels.
        """
        return self.loss_weight * segmentation_cross_entropy(
            logits, target, self.ignore_index, self.reduction, self.class_weights, self.label_smoothing)


@LOSS_REGISTRY.register()
class TaskAdversarialLoss(SegCrossEntropyLoss):
    """Generator-side task-adversarial loss of the segmentation-aware GAN.

    Cross-entropy of the discriminator's task head on the *SR* image against the HR image's labels: the generator
    is pushed to produce images that the (jointly trained) task branch segments correctly. Same arguments as
    :class:`SegCrossEntropyLoss` (``loss_weight``, ``reduction``, ``ignore_index``, ``class_weights``,
    ``label_smoothing``).
    """


@LOSS_REGISTRY.register()
class DiscriminatorTaskLoss(nn.Module):
    """Discriminator-side task loss: the task head learns segmentation on HR images (and optionally on SR).

    Args:
        loss_weight: Weight of the cross-entropy on HR images. Default: 1.0.
        sr_weight: Weight of the cross-entropy on (detached) SR images; 0 switches it off. Default: 0.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        ignore_index: Label value that is not scored. Default: 255.
        class_weights: Optional per-class weights.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 sr_weight: float = 0.0,
                 reduction: str = 'mean',
                 ignore_index: int = 255,
                 class_weights: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.sr_weight = sr_weight
        self.ce = SegCrossEntropyLoss(1.0, reduction, ignore_index, class_weights)

    def forward(self, hr_logits: torch.Tensor, target: torch.Tensor,
                sr_logits: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """
        Args:
            hr_logits: Task-head logits on HR images, ``B x C x H x W``.
            target: Labels, ``B x H x W``.
            sr_logits: Task-head logits on SR images; used when ``sr_weight > 0``.

        Returns:
            ``(loss on HR, loss on SR or None)``, each already weighted.
        """
        l_hr = self.loss_weight * self.ce(hr_logits, target)
        l_sr = None
        if self.sr_weight > 0 and sr_logits is not None:
            l_sr = self.sr_weight * self.ce(sr_logits, target)
        return l_hr, l_sr
