"""A segmenter you already have, used as it is: TorchScript, ``torch.export`` programs and models from a factory.

``ImportedSegNet`` puts a network that segsr did not define behind the task-network contract of
:class:`segsr.archs.task_net_util.SegTaskNet` (RGB in ``[0, 1]`` in, ``{'out': logits at input size}`` out), so it can
be the frozen network of *SR for my segmenter*, SR4IR's task network, a TDP feature extractor or a judge, with no arch
code::

    network_task: {type: ImportedSegNet, num_classes: 11, path: my_segmenter.pt}          # TorchScript
    network_task: {type: ImportedSegNet, num_classes: 11, path: my_segmenter.pt2}         # torch.export program
    network_task:                                                                           # a factory of a package
      type: ImportedSegNet
      num_classes: 11
      factory: "segmentation_models_pytorch:Unet"      # an importable name, never code from a file
      kwargs: {encoder_name: resnet18, encoder_weights: null, classes: 11}
      pretrained: my_unet_weights.pth                  # optional: a state dict of the factory's model
      mean: imagenet                                   # input normalisation (default: none)
      feature_layers: {C5: encoder.layer4}             # named features for TDP / SeD (factory models only)

The model's output may be a tensor of logits, a dict with ``out`` (torchvision) or ``logits``, an object with
``.logits`` (Hugging Face ``transformers``) or a tuple whose first element is the logits, at any stride: the logits are
resized (bilinear) to the input size.
"""
import importlib
import os
from collections.abc import Mapping
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from segsr.archs.task_net_util import IMAGENET_MEAN, IMAGENET_STD, SegTaskNet
from segsr.weights import load_into, read_program, read_state_dict

KINDS = ('torchscript', 'export', 'factory')
_PREFIX = 'model.'
Stats = Union[None, str, Sequence[float]]


def import_factory(spec: str):
    """The callable named by ``'package.module:function'`` (``function`` may be dotted: ``Class.method``).

    Only installed, importable modules are used; nothing is read from a file path.

    Raises:
        ValueError: the name is malformed, cannot be imported or is not callable (the message names ``factory``).
    """
    if not isinstance(spec, str) or spec.count(':') != 1 or not all(spec.split(':')):
        raise ValueError(f"ImportedSegNet: factory {spec!r} must be 'package.module:function' (an importable name).")
    module_name, attr = spec.split(':')
    try:
        target = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"ImportedSegNet: factory '{spec}': cannot import module '{module_name}' ({err}); install "
                         'the package that provides it.') from err
    for part in attr.split('.'):
        if not hasattr(target, part):
            raise ValueError(f"ImportedSegNet: factory '{spec}': '{module_name}' has no attribute '{attr}'.")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"ImportedSegNet: factory '{spec}' is a {type(target).__name__}, not a callable.")
    return target


def _stats(value: Stats, default: Tuple[float, float, float], scale: float, key: str) -> Optional[Tensor]:
    if value is None:
        return None
    if value == 'imagenet':
        value = [v * scale for v in default]
    if isinstance(value, str) or len(value) != 3:
        raise ValueError(f"ImportedSegNet: {key} must be 'imagenet' or three numbers (RGB), got {value!r}.")
    return torch.tensor([float(v) for v in value]).view(1, 3, 1, 1)


@ARCH_REGISTRY.register()
class ImportedSegNet(SegTaskNet):
    """A user's segmentation network, loaded as it is (see the module docstring for the option blocks).

    The network carries its own weights (a TorchScript or exported file, or ``pretrained`` for a factory model):
    ``path.pretrain_network_*`` is not needed. An exported program's train/eval mode is the one it was exported in
    (``torch.export`` programs cannot switch it): export it in eval mode, and use it frozen.

    Args:
        num_classes: Number of classes the network outputs (checked on every forward).
        path: A TorchScript file (``torch.jit.save``; any extension but ``.pt2``) or a ``torch.export`` program
            (``torch.export.save``, ``.pt2``).
        factory: ``'package.module:function'`` building an ``nn.Module`` (instead of ``path``).
        kwargs: Keyword arguments of the factory.
        pretrained: A weights file (state dict, BasicSR or torchvision checkpoint) loaded into the factory's model.
        param_key: Key of the state dict inside ``pretrained``.
        kind: ``torchscript``, ``export`` or ``factory``. Default: ``factory`` with ``factory``, ``export`` for a
            ``.pt2`` path, else ``torchscript``.
        input_scale: Multiply the ``[0, 1]`` input by this first (255 for a network that takes 0-255 input).
        mean, std: Normalisation after ``input_scale``: three numbers (RGB) or ``'imagenet'`` (ImageNet's statistics
            times ``input_scale``). Default: none.
        output_key: Take the logits from this key / attribute of the output (default: ``out``, then ``logits``).
        feature_layers: ``{feature name: dotted submodule path}`` whose outputs are the named features (TDP, SeD
            semantics); factory models only (TorchScript and exported programs take no hooks).
    """

    weights_included = True  # the network comes with its weights: no pretrain_network_* needed

    def __init__(self,
                 num_classes: int,
                 path: Optional[str] = None,
                 factory: Optional[str] = None,
                 kwargs: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 param_key: Optional[str] = None,
                 kind: Optional[str] = None,
                 input_scale: float = 1.0,
                 mean: Stats = None,
                 std: Stats = None,
                 output_key: Optional[str] = None,
                 feature_layers: Optional[Dict[str, str]] = None) -> None:
        resolved = self._kind(kind, path, factory)
        feature_layers = dict(feature_layers or {})
        if feature_layers and resolved != 'factory':
            raise ValueError(f'ImportedSegNet: feature_layers need a factory model; a {resolved} file takes no '
                             'forward hooks (use its logits only: SR for my segmenter, judges).')
        super().__init__(num_classes, has_aux=False, feature_names=tuple(feature_layers), input_norm=False)
        self.kind = resolved
        self.source = factory if self.kind == 'factory' else os.path.expanduser(str(path))
        self.output_key = output_key
        self.input_scale = float(input_scale)
        for name, value, default in (('mean', mean, IMAGENET_MEAN), ('std', std, IMAGENET_STD)):
            stats = _stats(value, default, self.input_scale, name)
            self.register_buffer(f'in_{name}', stats if stats is not None else torch.zeros(0), persistent=False)
        self.model = self._load(kwargs, pretrained, param_key)
        self._features: Dict[str, Tensor] = {}
        self._hook_features(feature_layers)

    # building
    @staticmethod
    def _kind(kind: Optional[str], path: Optional[str], factory: Optional[str]) -> str:
        if (path is None) == (factory is None):
            raise ValueError('ImportedSegNet: give exactly one of path (a TorchScript or torch.export file) and '
                             "factory ('package.module:function').")
        guessed = 'factory' if factory is not None else 'export' if str(path).endswith('.pt2') else 'torchscript'
        if kind is not None and kind not in KINDS:
            raise ValueError(f'ImportedSegNet: kind {kind!r} is not one of {list(KINDS)}.')
        if kind is not None and (kind == 'factory') != (factory is not None):
            given = 'factory' if factory else 'path'
            raise ValueError(f"ImportedSegNet: kind '{kind}' does not fit the {given} given.")
        return kind or guessed

    def _load(self, kwargs: Optional[dict], pretrained: Optional[str], param_key: Optional[str]) -> nn.Module:
        if self.kind != 'factory':
            if kwargs or pretrained:
                raise ValueError(f"ImportedSegNet: kwargs and pretrained are for factory models; '{self.source}' "
                                 'holds its own weights.')
            return read_program(self.source, 'ImportedSegNet.path', self.kind)
        model = import_factory(self.source)(**dict(kwargs or {}))
        if not isinstance(model, nn.Module):
            raise ValueError(f"ImportedSegNet: factory '{self.source}' returned a {type(model).__name__}, not a "
                             'torch.nn.Module.')
        if pretrained is not None:
            state = read_state_dict(pretrained, self.pretrained_option, param_key)
            load_into(model, state, os.path.expanduser(str(pretrained)), self.pretrained_option)
            get_root_logger().info(f"ImportedSegNet: loaded weights from '{pretrained}' into '{self.source}'.")
        return model

    def _hook_features(self, feature_layers: Dict[str, str]) -> None:
        modules = dict(self.model.named_modules())
        for name, layer in feature_layers.items():
            if layer not in modules:
                near = [m for m in modules if m and m.split('.')[0] == str(layer).split('.')[0]][:8]
                raise ValueError(f"ImportedSegNet: feature_layers.{name} = '{layer}' is not a submodule of "
                                 f"'{self.source}'" + (f'; e.g. {near}' if near else '') + '.')
            modules[layer].register_forward_hook(self._keep(name))

    def _keep(self, name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            self._features[name] = output

        return hook

    # running
    def train(self, mode: bool = True) -> 'ImportedSegNet':
        """Like ``nn.Module.train``; an exported program keeps the mode it was exported in."""
        if self.kind != 'export':
            return super().train(mode)
        self.training = mode
        return self

    def _forward_logits(self, x: Tensor,
                        feature_names: Tuple[str, ...]) -> Tuple[Tensor, Optional[Tensor], Dict[str, Tensor]]:
        if self.input_scale != 1.0:
            x = x * self.input_scale
        if self.in_mean.numel():
            x = x - self.in_mean
        if self.in_std.numel():
            x = x / self.in_std
        self._features = {}
        logits = self._logits_of(self.model(x))
        if logits.dim() != 4 or logits.size(0) != x.size(0) or logits.size(1) != self.num_classes:
            raise ValueError(f"ImportedSegNet ('{self.source}'): the network returned logits of shape "
                             f'{tuple(logits.shape)} for input {tuple(x.shape)}; expected B x num_classes '
                             f'({self.num_classes}) x h x w.')
        features, self._features = self._features, {}
        return logits, None, features

    def _logits_of(self, out) -> Tensor:
        """The logits tensor of a model's output (tensor, dict, object with ``.logits``, or tuple)."""
        keys = (self.output_key, ) if self.output_key else ('out', 'logits')
        if isinstance(out, Mapping):
            found = [out[k] for k in keys if k in out]
        elif isinstance(out, Tensor):
            found = [out]
        elif isinstance(out, (tuple, list)) and out and not self.output_key:
            found = [out[0]]
        else:
            found = [getattr(out, k) for k in keys if isinstance(getattr(out, k, None), Tensor)]
        if not found or not isinstance(found[0], Tensor):
            raise ValueError(f"ImportedSegNet ('{self.source}'): cannot find the logits in an output of type "
                             f'{type(out).__name__}; looked for {list(keys)} (set output_key).')
        return found[0]

    def _convert_state_dict(self, state: Dict[str, Tensor], source: str) -> Tuple[Dict[str, Tensor], List[str]]:
        """Our own layout (``model.*``) or the wrapped model's keys (prefixed here)."""
        if any(k.startswith(_PREFIX) for k in state):
            return state, []
        return {_PREFIX + k: v for k, v in state.items()}, []
