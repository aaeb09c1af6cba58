"""Focal frequency loss: a penalty on the spectrum of SR - HR that weights each frequency by its own error.

Jiang, Dai, Wu, Loy, "Focal Frequency Loss for Image Reconstruction and Synthesis", ICCV 2021. A periodic artefact
(the grid a frozen segmenter's stride can induce) puts its energy into a few frequencies; the focal weights, the
per-frequency error to the power ``alpha`` normalised by the largest one, make those peaks cost most.
"""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

from segsr.losses.seg_loss import check_reduction


def focal_frequency_loss(pred: Tensor, target: Tensor, alpha: float = 1.0, log_weight: bool = False,
                         reduction: str = 'mean') -> Tensor:
    """Focal frequency distance between two ``B x C x H x W`` batches (orthonormal 2-D FFT per channel).

    Args:
        pred: Predicted images.
        target: Reference images, same shape.
        alpha: Exponent of the focal weight. Default: 1.0.
        log_weight: Take ``log(1 + w)`` of the weight before normalising (the paper's ``log_matrix``). Default: False.
        reduction: ``'none'`` (``B x C x H x W`` map), ``'mean'`` or ``'sum'``. Default: ``'mean'``.
    """
    check_reduction(reduction)
    if pred.shape != target.shape:
        raise ValueError(f'pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape.')
    diff = torch.fft.fft2(pred.float(), norm='ortho') - torch.fft.fft2(target.float(), norm='ortho')
    distance = diff.real**2 + diff.imag**2
    with torch.no_grad():  # the focal weight is a constant of each step, as in the paper
        weight = distance.sqrt()**alpha
        if log_weight:
            weight = torch.log1p(weight)
        weight = weight / weight.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-12)
    loss = weight * distance
    if reduction == 'none':
        return loss
    return loss.sum() if reduction == 'sum' else loss.mean()


@LOSS_REGISTRY.register()
class FocalFrequencyLoss(nn.Module):
    """:func:`focal_frequency_loss` with BasicSR's ``loss_weight`` / ``reduction``.

    Args:
        loss_weight: Weight of this loss. Default: 1.0.
        alpha: Exponent of the focal weight. Default: 1.0.
        log_weight: Log-scale the weight before normalising. Default: False.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
    """

    def __init__(self, loss_weight: float = 1.0, alpha: float = 1.0, log_weight: bool = False,
                 reduction: str = 'mean') -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.alpha = float(alpha)
        self.log_weight = bool(log_weight)
        self.reduction = check_reduction(reduction)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor = None, **kwargs) -> Tensor:
        """Weighted loss; ``weight`` is accepted for BasicSR's signature and must be None."""
        if weight is not None:
            raise ValueError('FocalFrequencyLoss takes no pixel weight.')
        return self.loss_weight * focal_frequency_loss(pred, target, self.alpha, self.log_weight, self.reduction)
