"""torchvision's object detectors (Faster R-CNN, RetinaNet, FCOS) as segsr task networks (task ``det``)."""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torchvision.models import detection
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from segsr.archs.task_net_util import IMAGENET_MEAN, IMAGENET_STD
from segsr.weights import load_hub_state_dict, load_into, read_state_dict

ARCHS = ('fasterrcnn_mobilenet_v3_large_fpn', 'fasterrcnn_resnet18_fpn', 'retinanet_resnet18_fpn', 'fcos_resnet18_fpn')
_HUB_WEIGHTS = {'fasterrcnn_mobilenet_v3_large_fpn': 'FasterRCNN_MobileNet_V3_Large_FPN_Weights'}
_NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d, nn.GroupNorm, nn.LayerNorm)
_CLASS_HEADS = ('model.roi_heads.box_predictor.', 'model.head.classification_head.cls_logits.')
_PREFIX = 'model.'


class _KeepSize(GeneralizedRCNNTransform):
    """torchvision's detection transform without the resize: images keep their size (boxes stay in input pixels);
    ImageNet normalisation and batching (padding to a multiple of 32) are torchvision's."""

    def resize(self, image: Tensor, target: Optional[Dict[str, Tensor]] = None):
        return image, target


def _resnet18_fpn(p6p7: bool, trainable_layers: int) -> nn.Module:
    """A ResNet-18 FPN backbone (256 channels): C2..C5 (Faster R-CNN), or C3..C5 + P6, P7 (RetinaNet, FCOS)."""
    if p6p7:
        return resnet_fpn_backbone(backbone_name='resnet18', weights=None, trainable_layers=trainable_layers,
                                   returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256),
                                   norm_layer=nn.BatchNorm2d)
    return resnet_fpn_backbone(backbone_name='resnet18', weights=None, trainable_layers=trainable_layers,
                               norm_layer=nn.BatchNorm2d)


def _build(arch: str, num_classes: int, trainable_layers: Optional[int], score_thresh: float,
           detections: int) -> nn.Module:
    if arch == 'fasterrcnn_mobilenet_v3_large_fpn':
        return detection.fasterrcnn_mobilenet_v3_large_fpn(
            weights=None, weights_backbone=None, num_classes=num_classes + 1, trainable_backbone_layers=trainable_layers,
            box_score_thresh=score_thresh, box_detections_per_img=detections)
    if arch == 'fasterrcnn_resnet18_fpn':
        return detection.FasterRCNN(_resnet18_fpn(False, trainable_layers), num_classes=num_classes + 1,
                                    box_score_thresh=score_thresh, box_detections_per_img=detections)
    cls = detection.RetinaNet if arch == 'retinanet_resnet18_fpn' else detection.FCOS
    return cls(_resnet18_fpn(True, trainable_layers), num_classes=num_classes, score_thresh=score_thresh,
               detections_per_img=detections)


@ARCH_REGISTRY.register()
class TorchvisionDetNet(nn.Module):
    """A torchvision detector behind segsr's task-network contract (``task = 'det'``).

    Contract:
        * Input: RGB ``B x 3 x H x W`` in [0, 1], any size. Images are **not resized** (torchvision's transform would
          scale them to 800 px): boxes are in input pixels; ImageNet normalisation happens inside, once.
        * ``forward(x, targets=...)`` with ``targets`` a list of ``{'boxes': N x 4 (x1, y1, x2, y2 pixels), 'labels':
          N (0 .. num_classes - 1)}`` (``N`` may be 0): ``{'losses': {term: scalar}}``, the detector's own loss terms.
          They are computed in train *and* eval mode; normalisation layers keep their mode, so a frozen detector
          (eval, no gradients) gives losses whose gradient reaches ``x`` and its BatchNorm statistics never change.
          Sampling of proposals draws from torch's global generator.
        * ``forward(x, feature_names=[...])``: ``{'features': {name: B x 256 x h x w}}`` from the backbone and FPN only
          (no heads; what TDP reads): ``fpn0`` (stride 4 for ResNet-18 Faster R-CNN; the mobilenet FPN starts at
          stride 16), ``fpn1``, ... and ``pool`` / ``p6`` / ``p7`` (:attr:`feature_names` lists them).
        * ``forward(x)``: ``{'out': [{'boxes', 'scores', 'labels'} per image]}`` (labels 0 .. num_classes - 1),
          computed in eval mode whatever the module's mode.

    Args:
        arch: ``fasterrcnn_mobilenet_v3_large_fpn``, ``fasterrcnn_resnet18_fpn``, ``retinanet_resnet18_fpn`` or
            ``fcos_resnet18_fpn`` (ResNet-18 FPN built here: torchvision ships no such detector).
        num_classes: Object classes (no background class; Faster R-CNN's background is added inside).
        pretrained: None, ``'DEFAULT'`` (torchvision's COCO weights where it has them: the mobilenet Faster R-CNN) or
            a local file: this network's state dict, a BasicSR checkpoint (``params``) or a torchvision detector's
            state dict. Class-dependent head layers of another class count are left at their initial values (logged).
        pretrained_backbone: None, ``'DEFAULT'`` (torchvision's ImageNet weights) or a local ImageNet classifier file
            (torchvision ``resnet18`` / ``mobilenet_v3_large`` state dict).
        trainable_backbone_layers: Backbone stages that train (0-5 for ResNet, 0-6 for MobileNet). Default: all.
        score_thresh: Detections scoring below are dropped. Default: 0.05.
        detections_per_img: Most detections kept per image. Default: 100.
        min_box_size: Detections narrower or lower than this (pixels) are dropped. Default: 1.
    """

    task = 'det'
    has_aux = False
    weights_included = False

    def __init__(self, arch: str = 'fasterrcnn_mobilenet_v3_large_fpn', num_classes: int = 1,
                 pretrained: Optional[str] = None, pretrained_backbone: Optional[str] = None,
                 trainable_backbone_layers: Optional[int] = None, score_thresh: float = 0.05,
                 detections_per_img: int = 100, min_box_size: float = 1.0) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"TorchvisionDetNet.arch = {arch!r} is not supported; choose from {list(ARCHS)}.")
        if int(num_classes) < 1:
            raise ValueError(f'TorchvisionDetNet.num_classes must be >= 1, got {num_classes}.')
        self.arch, self.num_classes, self.min_box_size = arch, int(num_classes), float(min_box_size)
        self.offset = 1 if arch.startswith('fasterrcnn') else 0  # Faster R-CNN's class 0 is the background
        layers = trainable_backbone_layers if trainable_backbone_layers is not None else \
            (6 if 'mobilenet' in arch else 5)
        if not pretrained_backbone and 'mobilenet' in arch:
            layers = None  # torchvision trains every layer of a backbone without weights (and warns when told so)
        self.model = _build(arch, self.num_classes, layers, float(score_thresh), int(detections_per_img))
        self.model.transform = _KeepSize(1, 1 << 16, list(IMAGENET_MEAN), list(IMAGENET_STD))
        self.feature_names: Tuple[str, ...] = self._find_feature_names()
        if pretrained_backbone:
            self._load_backbone(pretrained_backbone)
        if pretrained:
            self._load_detector(pretrained)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, x: Tensor, targets: Optional[Sequence[Dict[str, Tensor]]] = None,
                feature_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
        """See the class docstring."""
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f'TorchvisionDetNet expects a B x 3 x H x W tensor, got shape {tuple(x.shape)}.')
        if feature_names is not None:
            return {'features': self.features(x, feature_names)}
        if targets is not None:
            if len(targets) != x.size(0):
                raise ValueError(f'TorchvisionDetNet: {len(targets)} targets for {x.size(0)} images.')
            shifted = [{'boxes': t['boxes'].to(x.dtype), 'labels': t['labels'].long() + self.offset} for t in targets]
            with self._modes(heads=True):
                return {'losses': dict(self.model(list(x), shifted))}
        with self._modes(heads=False, norms=False):
            detections = self.model(list(x))
        return {'out': [self._postprocess(d) for d in detections]}

    def features(self, x: Tensor, feature_names: Sequence[str]) -> Dict[str, Tensor]:
        """Backbone + FPN features ``feature_names`` of ``x`` (normalised and padded as the detector sees it)."""
        names = (feature_names, ) if isinstance(feature_names, str) else tuple(feature_names)
        unknown = [n for n in names if n not in self.feature_names]
        if unknown:
            raise ValueError(f'TorchvisionDetNet: unknown feature name(s) {unknown}; available: '
                             f'{list(self.feature_names)}.')
        images, _ = self.model.transform(list(x))
        maps = self.model.backbone(images.tensors)
        return {self._feature_name(key): value for key, value in maps.items() if self._feature_name(key) in names}

    @staticmethod
    def _feature_name(key: str) -> str:
        return f'fpn{key}' if str(key).isdigit() else str(key)

    def _find_feature_names(self) -> Tuple[str, ...]:
        was_training = self.training
        self.eval()
        with torch.no_grad():
            maps = self.model.backbone(torch.zeros(1, 3, 64, 64))
        self.train(was_training)
        return tuple(self._feature_name(k) for k in maps)

    def _postprocess(self, det: Dict[str, Tensor]) -> Dict[str, Tensor]:
        boxes = det['boxes']
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_box_size)
        return {'boxes': boxes[keep], 'scores': det['scores'][keep], 'labels': det['labels'][keep] - self.offset}

    @contextmanager
    def _modes(self, heads: bool, norms: Optional[bool] = None) -> Iterator[None]:
        """Temporarily set every non-normalisation module's mode to ``heads`` and, unless ``norms`` is None (keep),
        every normalisation layer's to ``norms``; the previous modes come back afterwards."""
        before = [(m, m.training) for m in self.modules()]
        try:
            for module in self.modules():
                if isinstance(module, _NORM_LAYERS):
                    module.training = module.training if norms is None else norms
                else:
                    module.training = heads
            yield
        finally:
            for module, mode in before:
                module.training = mode

    # ------------------------------------------------------------------------------------------------ weights
    def _load_backbone(self, source: str) -> None:
        option = 'TorchvisionDetNet.pretrained_backbone'
        if source == 'DEFAULT':
            from torchvision.models import MobileNet_V3_Large_Weights, ResNet18_Weights

            weights = MobileNet_V3_Large_Weights.DEFAULT if 'mobilenet' in self.arch else ResNet18_Weights.DEFAULT
            state, where = load_hub_state_dict(weights), str(weights)
        else:
            state, where = read_state_dict(source, option), source
        body = self.model.backbone.body
        own = body.state_dict()
        if 'mobilenet' in self.arch:  # torchvision's mobilenet backbone is the classifier's `features` sequence
            state = {k[len('features.'):]: v for k, v in state.items() if k.startswith('features.')}
        state = {k: v for k, v in state.items() if k in own}
        if not state:
            raise ValueError(f"Option '{option}': '{where}' holds no weights of a {self.arch} backbone.")
        load_into(body, state, where, option, strict=False)
        get_root_logger().info(f"TorchvisionDetNet: backbone weights from '{where}' ({len(state)} tensors).")

    def _load_detector(self, source: str) -> None:
        option = 'TorchvisionDetNet.pretrained'
        if source == 'DEFAULT':
            if self.arch not in _HUB_WEIGHTS:
                raise ValueError(f"Option '{option}' = 'DEFAULT': torchvision has no detector weights for {self.arch}; "
                                 'use pretrained_backbone, or give a file.')
            weights = getattr(detection, _HUB_WEIGHTS[self.arch]).DEFAULT
            state, where = load_hub_state_dict(weights), str(weights)
        else:
            state, where = read_state_dict(source, option), source
        if not any(k.startswith(_PREFIX) for k in state):  # torchvision's own layout
            state = {_PREFIX + k: v for k, v in state.items()}
        own = self.state_dict()
        refit = [k for k, v in state.items() if k.startswith(_CLASS_HEADS) and k in own and own[k].shape != v.shape]
        if refit:
            get_root_logger().info(f"TorchvisionDetNet: '{where}' has another class count; its class layers "
                                   f'{refit} are not loaded.')
        state = {k: v for k, v in state.items() if k not in refit}
        load_into(self, state, where, option, allow_missing=refit)
        get_root_logger().info(f"TorchvisionDetNet: loaded weights from '{where}'.")

    def load_pretrained(self, path: str, param_key: Optional[str] = None) -> None:
        """Load a local file (see ``pretrained``)."""
        self._load_detector(path)

    def class_layers(self) -> List[str]:
        """State-dict keys of the class-dependent head layers."""
        return [k for k in self.state_dict() if k.startswith(_CLASS_HEADS)]
