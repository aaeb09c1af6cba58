"""Frozen semantic extractors: image -> semantic feature map, the condition of SeD's discriminators.

SeD (Li et al., CVPR 2024) conditions the discriminator on the semantics of the HR image, taken from a pretrained
vision model: CLIP RN50 truncated after ``layer3`` (1024 channels at 1/16 resolution). Every extractor here
follows one contract, implemented once in :class:`segsr.archs.semantic_extractor.SemanticExtractor`:

- input: RGB float tensor ``B x 3 x H x W`` in ``[0, 1]``, any ``H`` and ``W`` (not only 224); the extractor's own
  normalisation (CLIP's or ImageNet's) happens inside;
- output: ``B x out_channels x ceil-ish(H / stride) x (W / stride)`` features, computed without autograd;
- frozen: every parameter has ``requires_grad=False`` and the module stays in eval mode even when a parent
  calls ``.train()`` (BatchNorm statistics never move);
- ``out_channels`` and ``stride`` are measured at build time, so a discriminator can be checked against them
  before training starts.

Extractors:
    - :class:`CLIPSemanticExtractor`: CLIP ModifiedResNet (RN50, RN101, ...) through the optional ``open_clip_torch``
      package (``pip install -e '.[clip]'``), weights from open_clip's hub tags or a local file;
    - :class:`ResNetSemanticExtractor`: a torchvision ResNet truncated after a layer, ImageNet weights from the hub
      or a local file;
    - :class:`TaskNetSemanticExtractor`: any of segsr's task networks (e.g. a trained ``SegUNet`` judge) and one of
      its named features.
"""
import os
from typing import Any, Dict, Optional, Tuple

from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor

from segsr.archs.semantic_extractor import SemanticExtractor
from segsr.archs.task_net_util import IMAGENET_MEAN, IMAGENET_STD, SegTaskNet
from segsr.weights import load_hub_state_dict, load_into, read_state_dict

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_LAYERS = ('layer1', 'layer2', 'layer3', 'layer4')
CLIP_EXTRA_HINT = "install the optional 'clip' extra: pip install -e '.[clip]' (package open_clip_torch)"


def _check_layer(layer: str, owner: str) -> int:
    if layer not in _LAYERS:
        raise ValueError(f"{owner}: layer '{layer}' is not supported; use one of {list(_LAYERS)}.")
    return _LAYERS.index(layer) + 1


@ARCH_REGISTRY.register()
class CLIPSemanticExtractor(SemanticExtractor):
    """CLIP's ModifiedResNet image tower truncated after ``layer`` (SeD's semantic extractor), via open_clip.

    RN50 after ``layer3`` gives 1024 channels at stride 16. CLIP's normalisation is applied inside. Needs the
    optional ``open_clip_torch`` package (``pip install -e '.[clip]'``); a clear ``ImportError`` says so otherwise.

    Args:
        model_name: open_clip model name of a ModifiedResNet tower: ``RN50`` (default), ``RN101``, ``RN50x4`` ...
        pretrained: None (random init, for tests), an open_clip pretrained tag (``openai``, ``yfcc15m``,
            ``cc12m``: downloaded on first use) or the path of a local file: OpenAI's TorchScript ``RN50.pt``, a
            state dict of the full CLIP model (``visual.*`` keys), of the image tower alone, or of this module.
        layer: Last ResNet layer kept: ``layer1`` .. ``layer4``. Default: ``layer3``.
    """

    def __init__(self, model_name: str = 'RN50', pretrained: Optional[str] = 'openai', layer: str = 'layer3') -> None:
        super().__init__(CLIP_MEAN, CLIP_STD)
        open_clip = _import_open_clip()
        num_layers = _check_layer(layer, 'CLIPSemanticExtractor')
        config = open_clip.get_model_config(model_name)
        vision = (config or {}).get('vision_cfg') or {}
        if not isinstance(vision.get('layers'), (list, tuple)):
            raise ValueError(f"CLIPSemanticExtractor: open_clip model '{model_name}' is not a ModifiedResNet (RN*) "
                             'model; use RN50, RN101, RN50x4, RN50x16 or RN50x64.')
        from open_clip.modified_resnet import ModifiedResNet
        width = vision.get('width', 64)
        self.visual = ModifiedResNet(layers=vision['layers'], output_dim=config['embed_dim'],
                                     heads=width * 32 // vision.get('head_width', 64),
                                     image_size=vision.get('image_size', 224), width=width)
        self.dropped = ('attnpool', ) + _LAYERS[num_layers:]
        for name in self.dropped:  # layers after the cut and the attention pool are never used
            delattr(self.visual, name)
        self.num_layers = num_layers
        self.model_name = model_name
        if pretrained is not None:
            self.load_weights(pretrained)
        self.freeze_and_measure()

    def extract(self, x: Tensor) -> Tensor:
        x = self.visual.stem(x.type(self.visual.conv1.weight.dtype))
        for name in _LAYERS[:self.num_layers]:
            x = getattr(self.visual, name)(x)
        return x.float()

    def load_weights(self, source: str) -> None:
        """Load CLIP image-tower weights from an open_clip pretrained tag or a local file (see class doc)."""
        if os.path.isfile(os.path.expanduser(str(source))):
            # a (nested) state dict, or a TorchScript archive such as OpenAI's CLIP files
            state = read_state_dict(source, 'CLIPSemanticExtractor.pretrained', torchscript=True)
            origin = os.path.expanduser(str(source))
        else:
            state, origin = _download_clip_visual(self.model_name, source), f'open_clip:{self.model_name}/{source}'
        if not any(k.startswith('visual.') for k in state):  # image tower alone
            state = {'visual.' + k: v for k, v in state.items()}
        drop = tuple(f'visual.{name}.' for name in self.dropped)
        state = {k: v for k, v in state.items() if k.startswith('visual.') and not k.startswith(drop)}
        load_into(self, state, origin, 'CLIPSemanticExtractor.pretrained')
        get_root_logger().info(f"CLIPSemanticExtractor({self.model_name}): loaded weights from '{origin}'.")


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as err:
        raise ImportError(f'CLIPSemanticExtractor needs open_clip: {CLIP_EXTRA_HINT}. Without it, use '
                          'ResNetSemanticExtractor or TaskNetSemanticExtractor.') from err
    return open_clip


def _download_clip_visual(model_name: str, tag: str) -> Dict[str, Tensor]:
    """Image-tower state dict of an open_clip pretrained model (downloads into open_clip's cache)."""
    open_clip = _import_open_clip()
    try:
        model = open_clip.create_model(model_name, pretrained=tag, device='cpu')
    except Exception as err:  # unknown tag, no internet, corrupt cache...
        raise RuntimeError(f"CLIPSemanticExtractor: cannot get open_clip weights '{model_name}' / '{tag}': {err}. "
                           'Without internet access, download the checkpoint elsewhere (e.g. OpenAI\'s RN50.pt) and '
                           'pass its local path as pretrained.') from err
    return {'visual.' + k: v for k, v in model.visual.state_dict().items()}


@ARCH_REGISTRY.register()
class ResNetSemanticExtractor(SemanticExtractor):
    """A torchvision ResNet truncated after ``layer`` (ImageNet normalisation inside).

    ResNet-50 after ``layer3`` gives 1024 channels at stride 16, like CLIP RN50.

    Args:
        arch: torchvision ResNet name: ``resnet18``, ``resnet34``, ``resnet50`` (default), ``resnet101``,
            ``resnet152``.
        pretrained: None (random init), ``'hub'`` (torchvision's default ImageNet weights, downloaded on first use)
            or the path of a local torchvision classification checkpoint (e.g. ``resnet50-0676ba61.pth``; keys
            with a ``backbone.`` prefix, as in segmentation checkpoints, are accepted too) or of this module.
        layer: Last layer kept: ``layer1`` .. ``layer4``. Default: ``layer3``.
    """

    def __init__(self, arch: str = 'resnet50', pretrained: Optional[str] = None, layer: str = 'layer3') -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        import torchvision

        if not arch.startswith('resnet') or not hasattr(torchvision.models, arch):
            raise ValueError(f"ResNetSemanticExtractor: unknown arch '{arch}'; use resnet18, resnet34, resnet50, "
                             'resnet101 or resnet152.')
        self.num_layers = _check_layer(layer, 'ResNetSemanticExtractor')
        self.arch = arch
        full = getattr(torchvision.models, arch)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = full.conv1, full.bn1, full.relu, full.maxpool
        for name in _LAYERS[:self.num_layers]:
            setattr(self, name, getattr(full, name))
        if pretrained is not None:
            self.load_weights(pretrained)
        self.freeze_and_measure()

    def extract(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in _LAYERS[:self.num_layers]:
            x = getattr(self, name)(x)
        return x

    def load_weights(self, source: str) -> None:
        """Load ``'hub'`` ImageNet weights or a local checkpoint (see class doc)."""
        if source == 'hub':
            import torchvision

            weights = torchvision.models.get_model_weights(self.arch).DEFAULT
            state, origin = load_hub_state_dict(weights), weights.url
        else:
            state = read_state_dict(source, 'ResNetSemanticExtractor.pretrained')
            origin = os.path.expanduser(str(source))
        if any(k.startswith('backbone.') for k in state):
            state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
        own = set(self.state_dict())
        state = {k: v for k, v in state.items() if k in own or not k.startswith(_dropped_prefixes(self.num_layers))}
        load_into(self, state, origin, 'ResNetSemanticExtractor.pretrained')
        get_root_logger().info(f"ResNetSemanticExtractor({self.arch}): loaded weights from '{origin}'.")


def _dropped_prefixes(num_layers: int) -> Tuple[str, ...]:
    return tuple(f'{name}.' for name in _LAYERS[num_layers:]) + ('fc.', )


@ARCH_REGISTRY.register()
class TaskNetSemanticExtractor(SemanticExtractor):
    """One named feature of a segsr task network (e.g. the bottleneck ``C5`` of a trained ``SegUNet``).

    The task network normalises its input itself. Use it when no CLIP or ImageNet weights are reachable: a
    segmentation network trained on your own data is a semantic extractor too.

    Args:
        network: Option block of a registered task network, e.g. ``{type: SegUNet, num_classes: 11}``.
        feature: Name of the feature to return (see the network's ``feature_names``). Default: ``C5``.
        pretrained: Path of the network's weights (a BasicSR checkpoint or a plain state dict); None keeps
            the weights the network's own options give it (random unless its block sets ``pretrained``).
        param_key: Key of the state dict inside a BasicSR checkpoint (default: ``params_ema``, else ``params``).
    """

    def __init__(self, network: Dict[str, Any], feature: str = 'C5', pretrained: Optional[str] = None,
                 param_key: Optional[str] = None) -> None:
        super().__init__()
        from basicsr.archs import build_network

        if not isinstance(network, dict) or 'type' not in network:
            raise ValueError("TaskNetSemanticExtractor: 'network' must be a network block with a 'type'.")
        net = build_network(dict(network))
        if not isinstance(net, SegTaskNet):
            raise ValueError(f"TaskNetSemanticExtractor: network type '{network['type']}' is not a segsr task "
                             'network (SegUNet, TorchvisionSegNet, ...).')
        if feature not in net.feature_names:
            raise ValueError(f"TaskNetSemanticExtractor: network '{network['type']}' has no feature '{feature}'; "
                             f'available: {list(net.feature_names)}.')
        if pretrained is not None:
            net.load_pretrained(pretrained, param_key=param_key)
        self.net = net
        self.feature = feature
        self.freeze_and_measure()

    def extract(self, x: Tensor) -> Tensor:
        return self.net(x, feature_names=[self.feature])['features'][self.feature]
