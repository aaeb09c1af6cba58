"""Shared base class and weight-loading helpers of segsr's segmentation task networks.

A task network is used two ways: trained along with the SR network (SR4IR phase 2, the task branch of the
segmentation-aware GAN) and frozen, as a judge of SR outputs or as the feature extractor of a task-driven
perceptual loss. Every task network therefore follows one contract, implemented once in :class:`SegTaskNet`:

- input: RGB float tensor ``B x 3 x H x W`` in ``[0, 1]``, any ``H`` and ``W``; ImageNet normalisation happens
  inside (non-persistent buffers, so they never appear in a state dict);
- output: ``{'out': logits B x num_classes x H x W}``, plus ``'aux'`` (aux logits at input size) when the net
  has an aux head and ``'features'`` (name -> tensor) when feature names are requested.

The loading helpers read the weight files users have: a plain state dict of our wrapper, a BasicSR checkpoint
(``{'params': ...}`` / ``{'params_ema': ...}``), a torchvision checkpoint, and torchvision's hub weights.
Every failure names the file.
"""
import os
from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from basicsr.utils import get_root_logger
from torch import Tensor, nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Keys under which other training code nests a state dict, tried in this order when no ``param_key`` is given.
_NESTED_STATE_KEYS = ('params_ema', 'params', 'state_dict', 'model')
_LIST_LIMIT = 8

TaskNetOutput = Dict[str, Union[Tensor, Dict[str, Tensor]]]


def _short_list(items: Sequence[Any]) -> str:
    items = list(items)
    shown = ', '.join(str(i) for i in items[:_LIST_LIMIT])
    return f'[{shown}{", ..." if len(items) > _LIST_LIMIT else ""}] ({len(items)} in all)'


def extract_state_dict(checkpoint: Any, source: str, param_key: Optional[str] = None) -> Dict[str, Tensor]:
    """Return the flat state dict held by a loaded checkpoint, without ``module.`` (DDP) prefixes.

    Args:
        checkpoint: What ``torch.load`` returned: a flat state dict, or a dict nesting one under ``params_ema``,
            ``params`` (BasicSR), ``state_dict`` or ``model`` (torchvision's reference scripts).
        source: Name of the file (or hub address) for error messages.
        param_key: Nested key to use. None: the first of ``params_ema``, ``params``, ``state_dict``, ``model``
            present, else the checkpoint itself.

    Returns:
        A new dict (the checkpoint is not modified).

    Raises:
        ValueError: the checkpoint is not a dict of tensors, or ``param_key`` is absent.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"Weights file '{source}' holds a {type(checkpoint).__name__}, not a state dict.")
    if param_key is not None:
        if param_key not in checkpoint:
            raise ValueError(f"Weights file '{source}' has no key '{param_key}'; its top-level keys are "
                             f'{_short_list(checkpoint.keys())}.')
        state = checkpoint[param_key]
    else:
        nested = [k for k in _NESTED_STATE_KEYS if isinstance(checkpoint.get(k), Mapping)]
        state = checkpoint[nested[0]] if nested else checkpoint
    if not isinstance(state, Mapping):
        raise ValueError(f"Weights file '{source}': the state dict is a {type(state).__name__}, not a dict.")
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ValueError(f"Weights file '{source}' is not a state dict: entries {_short_list(not_tensors)} are "
                         'not tensors. Pass the key of the nested state dict as param_key.')
    return {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state.items()}


def read_weights_file(path: str, param_key: Optional[str] = None) -> Dict[str, Tensor]:
    """Read a state dict from a local ``.pth`` file on the CPU (``weights_only``: no code runs while loading).

    Args:
        path: File path (``~`` is expanded).
        param_key: See :func:`extract_state_dict`.

    Raises:
        FileNotFoundError: the file does not exist.
        RuntimeError: the file cannot be read by ``torch.load`` (corrupt, truncated, or holds non-tensor objects).
        ValueError: the file holds no state dict.
    """
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file '{path}' does not exist.")
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or unsafe files
        raise RuntimeError(f"Cannot read weights file '{path}': {err}") from err
    return extract_state_dict(checkpoint, source=path, param_key=param_key)


def load_hub_state_dict(weights: Any) -> Dict[str, Tensor]:
    """Download (or take from the torch hub cache) the state dict of torchvision weights.

    Only called when a user asked for ``'hub'`` weights. Tests replace this function to stay offline.

    Args:
        weights: A torchvision ``WeightsEnum`` member, e.g. ``DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1``.

    Raises:
        RuntimeError: the download failed; the message names the address and suggests a local file.
    """
    logger = get_root_logger()
    logger.info(f'Loading torchvision weights {weights} from {weights.url} (cache: {torch.hub.get_dir()}).')
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as err:  # URLError, HTTPError, hash mismatch...
        raise RuntimeError(f"Cannot get torchvision weights {weights} from '{weights.url}': {err}. Without internet "
                           'access, download the file elsewhere and pass its local path instead of "hub".') from err
    return extract_state_dict(state, source=weights.url)


def load_state_dict_checked(net: nn.Module, state: Mapping, source: str, prefix: str = '',
                            allow_missing: Iterable[str] = ()) -> None:
    """Load ``state`` into ``net`` after checking keys and shapes, with an error naming ``source`` on mismatch.

    Args:
        net: Network to load into.
        state: State dict with the network's own key names (not modified).
        source: File or hub address named in errors.
        prefix: Only the network's keys starting with this prefix must be present (e.g. ``'model.backbone.'``
            to load a backbone only); every key of ``state`` must start with it.
        allow_missing: Keys of the network that may be absent from ``state`` (they keep their current values).

    Raises:
        ValueError: keys are missing, unexpected or of another shape.
    """
    own = {k: v for k, v in net.state_dict().items() if k.startswith(prefix)}
    allowed = set(allow_missing)
    # Checkpoints written before BatchNorm counted its batches lack num_batches_tracked; BatchNorm fills it in.
    missing = [k for k in own if k not in state and k not in allowed and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in own]
    mismatched = [f'{k}: file {tuple(state[k].shape)} vs net {tuple(own[k].shape)}'
                  for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f'missing keys {_short_list(missing)}')
    if unexpected:
        problems.append(f'unexpected keys {_short_list(unexpected)}')
    if mismatched:
        problems.append(f'shape mismatch {_short_list(mismatched)}')
    if problems:
        raise ValueError(f"Weights file '{source}' does not fit {type(net).__name__}"
                         f"{f' (keys {prefix}*)' if prefix else ''}: " + '; '.join(problems) + '.')
    net.load_state_dict(dict(state), strict=False)


class SegTaskNet(nn.Module):
    """Base class of segmentation task networks: input normalisation, output contract and weight loading.

    Subclasses build their layers, set :attr:`feature_names` and implement :meth:`_forward_logits`; they may
    override :meth:`_convert_state_dict` to accept foreign checkpoint layouts.

    Args:
        num_classes: Number of segmentation classes (logit channels).
        has_aux: Whether the network has an auxiliary head (then ``forward`` returns ``'aux'``).
        feature_names: Names of the features ``forward`` can return.
        in_channels: Number of input channels.
        input_norm: Normalise ``[0, 1]`` RGB input with ImageNet mean/std inside the network.
    """

    weights_included = False  # True for networks that come with their weights (ImportedSegNet): no checkpoint needed

    def __init__(self, num_classes: int, has_aux: bool, feature_names: Sequence[str], in_channels: int = 3,
                 input_norm: bool = True) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}.')
        if input_norm and in_channels != 3:
            raise ValueError(f'input_norm=True needs RGB input (in_channels=3), got in_channels={in_channels}.')
        self.num_classes = int(num_classes)
        self.has_aux = bool(has_aux)
        self.feature_names: Tuple[str, ...] = tuple(feature_names)
        self.in_channels = int(in_channels)
        self.input_norm = bool(input_norm)
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _check_feature_names(self, feature_names: Optional[Sequence[str]]) -> Tuple[str, ...]:
        if feature_names is None:
            return ()
        names = (feature_names, ) if isinstance(feature_names, str) else tuple(feature_names)
        unknown = [n for n in names if n not in self.feature_names]
        if unknown:
            raise ValueError(f'{type(self).__name__}: unknown feature name(s) {unknown}; available: '
                             f'{list(self.feature_names)}.')
        return names

    def forward(self, x: Tensor, feature_names: Optional[Sequence[str]] = None) -> TaskNetOutput:
        """Segment a batch of images.

        Args:
            x: ``B x C x H x W`` float tensor; RGB in ``[0, 1]`` when ``input_norm`` is on.
            feature_names: Features to return under ``'features'`` (see :attr:`feature_names`).

        Returns:
            ``{'out': B x num_classes x H x W}``, plus ``'aux'`` (same size) when :attr:`has_aux`, plus
            ``'features'`` (name -> tensor) when ``feature_names`` is given.
        """
        names = self._check_feature_names(feature_names)
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(f'{type(self).__name__} expects a B x {self.in_channels} x H x W tensor, '
                             f'got shape {tuple(x.shape)}.')
        size = x.shape[-2:]
        if self.input_norm:
            x = (x - self.mean) / self.std
        out, aux, features = self._forward_logits(x, names)
        result: TaskNetOutput = {'out': self._to_size(out, size)}
        if self.has_aux:
            result['aux'] = self._to_size(aux, size)
        if feature_names is not None:
            result['features'] = {n: features[n] for n in names}
        return result

    @staticmethod
    def _to_size(logits: Tensor, size: torch.Size) -> Tensor:
        if logits.shape[-2:] == size:
            return logits
        return F.interpolate(logits, size=size, mode='bilinear', align_corners=False)

    def _forward_logits(self, x: Tensor,
                        feature_names: Tuple[str, ...]) -> Tuple[Tensor, Optional[Tensor], Dict[str, Tensor]]:
        """Run the network on normalised input.

        Returns:
            Logits (any resolution; resized to the input by :meth:`forward`), aux logits or None, and a dict
            holding at least the requested features.
        """
        raise NotImplementedError

    def _convert_state_dict(self, state: Dict[str, Tensor], source: str) -> Tuple[Dict[str, Tensor], List[str]]:
        """Map a loaded state dict to this network's keys.

        Args:
            state: Flat state dict read from ``source`` (may be modified: it is the loader's own copy).
            source: File or hub address.

        Returns:
            The state dict to load and the keys of this network that may stay absent from it.
        """
        return state, []

    def _drop_aux_keys(self, state: Dict[str, Tensor], source: str, aux_prefix: str) -> Dict[str, Tensor]:
        """Drop the aux head's weights from ``state`` when this network has no aux head (logged)."""
        if self.has_aux:
            return state
        dropped = [k for k in state if k.startswith(aux_prefix)]
        if dropped:
            get_root_logger().info(f"{type(self).__name__}: '{source}' has an aux head; ignoring its "
                                   f'{len(dropped)} tensors because this network has none.')
        return {k: v for k, v in state.items() if not k.startswith(aux_prefix)}

    def load_pretrained(self, path: str, param_key: Optional[str] = None) -> None:
        """Load weights from a local file: a plain state dict of this network, a BasicSR checkpoint
        (``params`` / ``params_ema``) or a layout accepted by :meth:`_convert_state_dict`.

        Args:
            path: File path.
            param_key: Nested key of the state dict (see :func:`extract_state_dict`).

        Raises:
            FileNotFoundError, RuntimeError, ValueError: naming the file.
        """
        self._load_state(read_weights_file(path, param_key), source=os.path.expanduser(str(path)))

    def _load_state(self, state: Dict[str, Tensor], source: str) -> None:
        state, allow_missing = self._convert_state_dict(dict(state), source)
        load_state_dict_checked(self, state, source, allow_missing=allow_missing)
        get_root_logger().info(f"{type(self).__name__}: loaded weights from '{source}'.")
