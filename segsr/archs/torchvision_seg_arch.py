"""torchvision's semantic-segmentation networks as segsr task networks (trainable task net or frozen judge)."""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, segmentation

from segsr.archs.task_net_util import SegTaskNet
from segsr.weights import load_hub_state_dict, load_into, read_state_dict

_RESNET_TAPS = {'layer1': 'C2', 'layer2': 'C3', 'layer3': 'C4', 'layer4': 'C5'}


@dataclass(frozen=True)
class _ArchSpec:
    builder: Callable[..., nn.Module]
    weights: object  # torchvision WeightsEnum member of the full segmentation network
    backbone_weights: object  # torchvision WeightsEnum member of the ImageNet backbone
    family: str  # 'resnet' or 'mobilenet'
    supports_aux: bool
    final_layers: Tuple[str, ...]  # key prefixes (torchvision layout) of the layers that output class logits


_ARCHS: Dict[str, _ArchSpec] = {
    'deeplabv3_resnet50':
    _ArchSpec(segmentation.deeplabv3_resnet50, segmentation.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
              ResNet50_Weights.IMAGENET1K_V1, 'resnet', True, ('classifier.4.', 'aux_classifier.4.')),
    'deeplabv3_mobilenet_v3_large':
    _ArchSpec(segmentation.deeplabv3_mobilenet_v3_large,
              segmentation.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
              MobileNet_V3_Large_Weights.IMAGENET1K_V1, 'mobilenet', True, ('classifier.4.', 'aux_classifier.4.')),
    'lraspp_mobilenet_v3_large':
    _ArchSpec(segmentation.lraspp_mobilenet_v3_large,
              segmentation.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
              MobileNet_V3_Large_Weights.IMAGENET1K_V1, 'mobilenet', False,
              ('classifier.low_classifier.', 'classifier.high_classifier.')),
    'fcn_resnet50':
    _ArchSpec(segmentation.fcn_resnet50, segmentation.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
              ResNet50_Weights.IMAGENET1K_V1, 'resnet', True, ('classifier.4.', 'aux_classifier.4.')),
}
_PREFIX = 'model.'
_BACKBONE_PREFIX = 'model.backbone.'


def _mobilenet_stage_positions(features: nn.Module) -> Tuple[int, int]:
    """Positions of the low (C2, stride 8) and high (C5, stride 16) outputs, as torchvision's builders pick them."""
    stages = [0] + [i for i, b in enumerate(features) if getattr(b, '_is_cn', False)] + [len(features) - 1]
    return stages[-4], stages[-1]


@ARCH_REGISTRY.register()
class TorchvisionSegNet(SegTaskNet):
    """A torchvision segmentation network (DeepLabV3, LR-ASPP, FCN) behind segsr's task-network contract.

    The torchvision model is kept as ``self.model`` (so our state-dict keys are torchvision's with a ``model.``
    prefix); ``forward`` runs its backbone stage by stage so intermediate features can be returned.

    Features (``feature_names``):
        ResNet-50 variants: ``'C2'``, ``'C3'``, ``'C4'``, ``'C5'`` = outputs of ``layer1`` .. ``layer4`` (strides
        4, 8, 8, 8: layer3/4 are dilated). MobileNetV3 variants: ``'low'`` (stride 8, 40 channels, the aux / LR-ASPP
        low input), ``'high'`` (stride 16, 960 channels) and ``'C5'`` (alias of ``'high'``).

    Weights: ``pretrained`` (full network) wins over ``pretrained_backbone``. Local files may hold a plain state
    dict of this wrapper, a BasicSR checkpoint (``params_ema`` preferred over ``params`` unless ``param_key`` is
    given), or a torchvision checkpoint of the underlying model (unprefixed keys). Torchvision-layout weights (hub
    or file) whose class count differs from ``num_classes`` are loaded except their final classifier layers, which
    stay randomly initialised (logged). Aux-head weights are ignored (logged) when the network has no aux head.
    Nothing is ever downloaded unless ``'hub'`` is asked for.

    Args:
        arch: One of ``deeplabv3_resnet50``, ``deeplabv3_mobilenet_v3_large``, ``lraspp_mobilenet_v3_large``,
            ``fcn_resnet50``.
        num_classes: Number of classes.
        aux_loss: Build the auxiliary FCN head. None: yes where the architecture has one (not LR-ASPP).
        pretrained: None (random init), ``'hub'`` (torchvision's COCO weights with the 21 VOC classes) or the
            path of a local weights file.
        pretrained_backbone: None, ``'hub'`` (torchvision's ImageNet weights) or the path of a torchvision
            backbone checkpoint (e.g. ``resnet50-0676ba61.pth``, ``mobilenet_v3_large-8738ca79.pth``).
        input_norm: Normalise ``[0, 1]`` RGB input with ImageNet mean/std inside the network.
        param_key: Key of the state dict inside a BasicSR checkpoint (default: ``params_ema``, else ``params``).
    """

    def __init__(self,
                 arch: str,
                 num_classes: int,
                 aux_loss: Optional[bool] = None,
                 pretrained: Optional[str] = None,
                 pretrained_backbone: Optional[str] = None,
                 input_norm: bool = True,
                 param_key: Optional[str] = None) -> None:
        if arch not in _ARCHS:
            raise ValueError(f"TorchvisionSegNet: unknown arch '{arch}'; choose one of {sorted(_ARCHS)}.")
        spec = _ARCHS[arch]
        aux = spec.supports_aux if aux_loss is None else bool(aux_loss)
        if aux and not spec.supports_aux:
            raise ValueError(f"TorchvisionSegNet: arch '{arch}' has no aux head; set aux_loss to false.")
        if spec.family == 'resnet':
            names = tuple(_RESNET_TAPS.values())
        else:
            names = ('low', 'high', 'C5')
        super().__init__(num_classes, has_aux=aux, feature_names=names, input_norm=input_norm)
        self.arch = arch
        self._spec = spec

        kwargs = {} if arch.startswith('lraspp') else {'aux_loss': aux}
        # weights=None, weights_backbone=None: torchvision must never download on its own.
        self.model = spec.builder(weights=None, weights_backbone=None, num_classes=self.num_classes, **kwargs)
        if spec.family == 'resnet':
            self._taps = dict(_RESNET_TAPS)
            self._low, self._high = 'C4', 'C5'
        else:
            low_pos, high_pos = _mobilenet_stage_positions(list(self.model.backbone.values()))
            self._taps = {str(low_pos): 'low', str(high_pos): 'high'}
            self._low, self._high = 'low', 'high'

        if pretrained is not None:
            if pretrained_backbone is not None:
                get_root_logger().warning(f"TorchvisionSegNet: pretrained='{pretrained}' loads the full network; "
                                          f"ignoring pretrained_backbone='{pretrained_backbone}'.")
            if pretrained == 'hub':
                self._load_state(load_hub_state_dict(spec.weights), spec.weights.url, self.pretrained_option)
            else:
                self.load_pretrained(pretrained, param_key=param_key)
        elif pretrained_backbone is not None:
            self.load_pretrained_backbone(pretrained_backbone)

    def _forward_logits(self, x: Tensor,
                        feature_names: Tuple[str, ...]) -> Tuple[Tensor, Optional[Tensor], Dict[str, Tensor]]:
        taps = {}
        for name, module in self.model.backbone.items():
            x = module(x)
            if name in self._taps:
                taps[self._taps[name]] = x
        if 'high' in taps:
            taps['C5'] = taps['high']
        low, high = taps[self._low], taps[self._high]
        if isinstance(self.model, segmentation.LRASPP):
            out = self.model.classifier({'low': low, 'high': high})
        else:
            out = self.model.classifier(high)
        aux = self.model.aux_classifier(low) if self.has_aux else None
        return out, aux, taps

    def _convert_state_dict(self, state: Dict[str, Tensor], source: str) -> Tuple[Dict[str, Tensor], List[str]]:
        if any(k.startswith(_PREFIX) for k in state):  # our own layout: strict apart from an unused aux head
            return self._drop_aux_keys(state, source, _PREFIX + 'aux_classifier.'), []
        # torchvision layout of the underlying model (hub file or a local copy of it)
        state = self._drop_aux_keys(state, source, 'aux_classifier.')
        own = self.model.state_dict()
        replaced = [k for k in state if k.startswith(self._spec.final_layers) and k in own
                    and state[k].shape != own[k].shape]
        if replaced:
            get_root_logger().warning(
                f"TorchvisionSegNet: '{source}' was trained for {state[replaced[0]].shape[0]} classes, this network "
                f'has {self.num_classes}: loading everything except the final classifier layers {replaced}, which '
                'keep their random initialisation.')
        state = {_PREFIX + k: v for k, v in state.items() if k not in replaced}
        return state, [_PREFIX + k for k in replaced]

    def load_pretrained_backbone(self, source: str) -> None:
        """Load ImageNet weights into the backbone.

        Args:
            source: ``'hub'`` (torchvision's ImageNet weights) or the path of a torchvision classification
                checkpoint of the backbone (``resnet50-*.pth`` / ``mobilenet_v3_large-*.pth``); keys that already
                carry the ``backbone.`` prefix of a segmentation checkpoint are accepted too.

        Raises:
            FileNotFoundError, ValueError: naming the argument and the file; RuntimeError: a failed hub download.
        """
        option_name = f'{type(self).__name__}.pretrained_backbone'
        if source == 'hub':
            weights = self._spec.backbone_weights
            state, source = load_hub_state_dict(weights), weights.url
        else:
            state = read_state_dict(source, option_name)
        if self._spec.family == 'resnet':  # conv1.*, layer1.* ... fc.*
            mapped = {_BACKBONE_PREFIX + k: v for k, v in state.items() if not k.startswith('fc.')}
        else:  # features.N.* ... classifier.*
            mapped = {_BACKBONE_PREFIX + (k[len('features.'):] if k.startswith('features.') else k): v
                      for k, v in state.items() if not k.startswith('classifier.')}
        if any(k.startswith('backbone.') for k in state):  # backbone part of a segmentation checkpoint
            mapped = {_PREFIX + k: v for k, v in state.items() if k.startswith('backbone.')}
        load_into(self, mapped, source, option_name, prefix=_BACKBONE_PREFIX)
        get_root_logger().info(f"TorchvisionSegNet({self.arch}): loaded backbone weights from '{source}'.")
