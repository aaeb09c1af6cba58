"""torchvision's image classifiers (ResNet, MobileNetV3) as segsr task networks (task ``cls``)."""
from typing import Dict, Optional, Sequence, Tuple

import torchvision
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from segsr.archs.task_net_util import IMAGENET_MEAN, IMAGENET_STD
from segsr.weights import load_hub_state_dict, load_into, read_state_dict

_RESNETS = ('resnet18', 'resnet34', 'resnet50')
_MOBILENETS = ('mobilenet_v3_small', 'mobilenet_v3_large')
ARCHS = _RESNETS + _MOBILENETS
_PREFIX = 'model.'


@ARCH_REGISTRY.register()
class TorchvisionClsNet(nn.Module):
    """A torchvision classifier behind segsr's task-network contract (``task = 'cls'``).

    Input: RGB ``B x 3 x H x W`` in [0, 1], any size (adaptive pooling); ImageNet normalisation happens inside.
    Output: ``{'out': B x num_classes logits}``, plus ``'features'`` with ``feature_names``: ResNet ``layer1`` ..
    ``layer4`` (strides 4 .. 32; SR4IR's TDP reads ``layer4``), MobileNetV3 ``stage1`` .. ``stage4`` (the outputs of
    the stride-4, 8, 16 and 32 stages; ``stage4`` is the last conv's output).

    Args:
        arch: ``resnet18``, ``resnet34``, ``resnet50``, ``mobilenet_v3_small`` or ``mobilenet_v3_large``.
        num_classes: Number of classes.
        pretrained: None, ``'DEFAULT'`` (torchvision's ImageNet weights) or a local file: this network's state dict,
            a BasicSR checkpoint (``params``) or a torchvision classifier's state dict. A final layer of another class
            count keeps its initial values (logged).
        dropout: MobileNetV3's classifier dropout. Default: torchvision's 0.2.
    """

    task = 'cls'
    has_aux = False
    weights_included = False

    def __init__(self, arch: str = 'resnet18', num_classes: int = 1000, pretrained: Optional[str] = None,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"TorchvisionClsNet.arch = {arch!r} is not supported; choose from {list(ARCHS)}.")
        if int(num_classes) < 1:
            raise ValueError(f'TorchvisionClsNet.num_classes must be >= 1, got {num_classes}.')
        self.arch, self.num_classes = arch, int(num_classes)
        kwargs = {'dropout': float(dropout)} if arch in _MOBILENETS else {}
        self.model = getattr(torchvision.models, arch)(weights=None, num_classes=self.num_classes, **kwargs)
        if arch in _RESNETS:
            self.feature_names: Tuple[str, ...] = ('layer1', 'layer2', 'layer3', 'layer4')
            self._stage_ends = ()
        else:
            self.feature_names = ('stage1', 'stage2', 'stage3', 'stage4')
            self._stage_ends = self._mobilenet_stage_ends()
        self.register_buffer('mean', Tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', Tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            self.load_pretrained(pretrained)

    def _mobilenet_stage_ends(self) -> Tuple[int, ...]:
        """Indices in ``model.features`` of the last block of each stride-4, 8, 16, 32 stage."""
        strides, ends, stride = [], [], 1
        for block in self.model.features:
            stride *= max((m.stride[0] for m in block.modules() if isinstance(m, nn.Conv2d)), default=1)
            strides.append(stride)
        for target in (4, 8, 16, 32):
            ends.append(max(i for i, s in enumerate(strides) if s == target))
        return tuple(ends)

    def forward(self, x: Tensor, feature_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
        """Class logits of ``x`` (and the named features)."""
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f'TorchvisionClsNet expects a B x 3 x H x W tensor, got shape {tuple(x.shape)}.')
        names = () if feature_names is None else ((feature_names, ) if isinstance(feature_names, str)
                                                   else tuple(feature_names))
        unknown = [n for n in names if n not in self.feature_names]
        if unknown:
            raise ValueError(f'TorchvisionClsNet: unknown feature name(s) {unknown}; available: '
                             f'{list(self.feature_names)}.')
        x = (x - self.mean) / self.std
        taps: Dict[str, Tensor] = {}
        logits = self._resnet(x, taps) if self.arch in _RESNETS else self._mobilenet(x, taps)
        out: Dict[str, object] = {'out': logits}
        if feature_names is not None:
            out['features'] = {n: taps[n] for n in names}
        return out

    def _resnet(self, x: Tensor, taps: Dict[str, Tensor]) -> Tensor:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        for name in self.feature_names:
            x = getattr(m, name)(x)
            taps[name] = x
        return m.fc(m.avgpool(x).flatten(1))

    def _mobilenet(self, x: Tensor, taps: Dict[str, Tensor]) -> Tensor:
        m = self.model
        for i, block in enumerate(m.features):
            x = block(x)
            if i in self._stage_ends:
                taps[self.feature_names[self._stage_ends.index(i)]] = x
        return m.classifier(m.avgpool(x).flatten(1))

    def load_pretrained(self, path: str, param_key: Optional[str] = None) -> None:
        """Load weights: ``'DEFAULT'`` (torchvision hub) or a local file (see ``pretrained``)."""
        option = 'TorchvisionClsNet.pretrained'
        if path == 'DEFAULT':
            weights = torchvision.models.get_model_weights(self.arch).DEFAULT
            state, where = load_hub_state_dict(weights), str(weights)
        else:
            state, where = read_state_dict(path, option, param_key), path
        if not any(k.startswith(_PREFIX) for k in state):  # torchvision's own layout
            state = {_PREFIX + k: v for k, v in state.items()}
        own = self.state_dict()
        refit = [k for k, v in state.items() if k in own and own[k].shape != v.shape and
                 k.startswith(('model.fc.', 'model.classifier.3.'))]
        if refit:
            get_root_logger().info(f"TorchvisionClsNet: '{where}' has another class count; {refit} are not loaded.")
        load_into(self, {k: v for k, v in state.items() if k not in refit}, where, option, allow_missing=refit)
        get_root_logger().info(f"TorchvisionClsNet: loaded weights from '{where}'.")
