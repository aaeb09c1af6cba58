"""Detection loss (issue 21): the weighted sum of a detector's own loss terms."""
from typing import Mapping, Optional

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn


@LOSS_REGISTRY.register()
class DetectionLoss(nn.Module):
    """Sum of the loss terms a detector computes from its targets (torchvision's ``loss_classifier``,
    ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``; RetinaNet's ``classification`` / ``bbox_regression``;
    FCOS's ``bbox_ctrness`` ...), each with an optional weight, times ``loss_weight``.

    Detectors compute their losses themselves (anchor matching, sampling): this loss only weighs and sums them, so
    one option block (``train.task_sr_opt: {type: DetectionLoss, loss_weight: 0.34}``) works for every detector.

    Args:
        loss_weight: Weight of the sum. Default: 1.0.
        term_weights: Optional ``{term: weight}``; terms not named have weight 1. A name the detector does not
            compute is an error at the first call, naming it.
    """

    def __init__(self, loss_weight: float = 1.0, term_weights: Optional[Mapping[str, float]] = None) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.term_weights = {str(k): float(v) for k, v in (term_weights or {}).items()}

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            losses: The detector's ``{term: scalar}`` loss dict.
        """
        if not losses:
            raise ValueError('DetectionLoss: the detector returned no loss terms.')
        unknown = sorted(set(self.term_weights) - set(losses))
        if unknown:
            raise ValueError(f'DetectionLoss: term_weights names {unknown}, which the detector does not compute; '
                             f'its terms: {sorted(losses)}.')
        total = sum(self.term_weights.get(name, 1.0) * value for name, value in losses.items())
        return self.loss_weight * total
