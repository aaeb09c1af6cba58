"""Task-driven perceptual (TDP) loss of SR4IR (Kim, Oh, Lee, CVPR 2024).

The distance between a segmentation network's features of the SR image and of the HR image, for chosen layers
(``C5`` = the backbone output of DeepLabV3 in the paper). Unlike VGG's perceptual loss, the feature network is a
task network that usually trains in the same run (SR4IR's phase 2), so the loss takes the network at call time
and guarantees, whatever state the caller left it in:

- the network runs in eval mode (BatchNorm uses running statistics; its running statistics do not move);
- HR features are computed without autograd, so they carry no gradient;
- the network's own parameters get no gradient (the SR image does);
- the network's mode and ``requires_grad`` flags are restored afterwards.
"""
from typing import Dict, Mapping, Optional

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

from segsr.losses.seg_loss import check_reduction
# frozen_eval is still imported from here by segsr.models.sr4ir_model (segsr/models/ is being refactored)
from segsr.weights import frozen_eval

_CRITERIA = ('l1', 'l2', 'charbonnier')


def feature_distance(x: Tensor, y: Tensor, criterion: str = 'l1', reduction: str = 'mean',
                     eps: float = 1e-12) -> Tensor:
    """Element-wise ``l1`` / ``l2`` (squared error) / ``charbonnier`` distance of two feature maps, reduced.

    Args:
        x: Features of the SR image.
        y: Features of the HR image (same shape).
        criterion: ``'l1'``, ``'l2'`` or ``'charbonnier'`` (``sqrt(d^2 + eps)``, as BasicSR's CharbonnierLoss).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        eps: Charbonnier's epsilon.
    """
    if x.shape != y.shape:
        raise ValueError(f'TDPLoss: SR and HR features differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}.')
    if criterion == 'l1':
        dist = (x - y).abs()
    elif criterion == 'l2':
        dist = (x - y).pow(2)
    elif criterion == 'charbonnier':
        dist = torch.sqrt((x - y).pow(2) + eps)
    else:
        raise ValueError(f"TDPLoss: criterion '{criterion}' is not one of {list(_CRITERIA)}.")
    if reduction == 'mean':
        return dist.mean()
    if reduction == 'sum':
        return dist.sum()
    return dist


@LOSS_REGISTRY.register()
class TDPLoss(nn.Module):
    """Task-driven perceptual loss: distance between task-network features of SR and HR images.

    Args:
        layer_weights: Feature name -> weight, e.g. ``{'C5': 1.0}``; names are the task network's
            ``feature_names`` (``C2``..``C5`` for the torchvision ResNet nets, ``enc1``.., ``bottleneck``..
            for :class:`SegUNet`).
        criterion: ``'l1'`` (paper), ``'l2'`` or ``'charbonnier'``. Default: ``'l1'``.
        loss_weight: Weight of the whole loss. Default: 1.0.
        reduction: ``'mean'`` (per layer, then the weighted sum), ``'sum'``, or ``'none'`` (the weighted
            element-wise map; all layers must then have the same shape). Default: ``'mean'``.
        eps: Epsilon of the Charbonnier criterion. Default: 1e-12.
    """

    def __init__(self,
                 layer_weights: Mapping[str, float],
                 criterion: str = 'l1',
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 eps: float = 1e-12) -> None:
        super().__init__()
        if not isinstance(layer_weights, Mapping) or not layer_weights:
            raise ValueError(f'TDPLoss: layer_weights must be a non-empty mapping such as {{C5: 1.0}}, '
                             f'got {layer_weights!r}.')
        if criterion not in _CRITERIA:
            raise ValueError(f"TDPLoss: criterion '{criterion}' is not one of {list(_CRITERIA)}.")
        self.layer_weights: Dict[str, float] = {str(k): float(v) for k, v in layer_weights.items()}
        self.criterion = criterion
        self.loss_weight = float(loss_weight)
        self.reduction = check_reduction(reduction)
        self.eps = float(eps)

    @property
    def layer_names(self):
        return list(self.layer_weights)

    def check_network(self, net: nn.Module, option_name: str = 'train.tdp_opt') -> None:
        """Raise ``ValueError`` (naming ``option_name``) if ``net`` cannot return every configured layer."""
        net = getattr(net, 'module', net)
        available = list(getattr(net, 'feature_names', ()))
        missing = [n for n in self.layer_names if n not in available]
        if missing:
            raise ValueError(f"Option '{option_name}.layer_weights': {type(net).__name__} has no feature(s) "
                             f'{missing}; available: {available}.')

    def forward(self, sr: Tensor, hr: Tensor, net: nn.Module) -> Tensor:
        """
        Args:
            sr: SR images ``B x 3 x H x W`` in [0, 1] (gradients flow back into them).
            hr: HR images of the same size (no gradient).
            net: Task network with the :class:`segsr.archs.task_net_util.SegTaskNet` contract
                (``net(x, feature_names)['features']``); a DDP/DataParallel wrapper is unwrapped.
        """
        net = getattr(net, 'module', net)
        with frozen_eval(net):
            with torch.no_grad():
                hr_feats = net(hr, feature_names=self.layer_names)['features']
            sr_feats = net(sr, feature_names=self.layer_names)['features']
        return self.distance(sr_feats, hr_feats)

    def distance(self, sr_feats: Mapping[str, Tensor], hr_feats: Mapping[str, Tensor]) -> Tensor:
        """Weighted distance of precomputed features (``name -> tensor``); HR features are detached."""
        total: Optional[Tensor] = None
        for name, weight in self.layer_weights.items():
            if name not in sr_feats or name not in hr_feats:
                raise KeyError(f"TDPLoss: feature '{name}' is missing from the given features.")
            term = weight * feature_distance(sr_feats[name], hr_feats[name].detach(), self.criterion,
                                             self.reduction, self.eps)
            if total is not None and total.shape != term.shape:
                raise ValueError("TDPLoss: reduction 'none' needs all layers to have the same shape; got "
                                 f'{tuple(total.shape)} and {tuple(term.shape)} (layer {name}).')
            total = term if total is None else total + term
        return self.loss_weight * total
