"""Shared base class of segsr's segmentation task networks.

A task network is used two ways: trained along with the SR network (SR4IR phase 2, the task branch of the
segmentation-aware GAN) and frozen, as a judge of SR outputs or as the feature extractor of a task-driven
perceptual loss. Every task network therefore follows one contract, implemented once in :class:`SegTaskNet`:

- input: RGB float tensor ``B x 3 x H x W`` in ``[0, 1]``, any ``H`` and ``W``; ImageNet normalisation happens
  inside (non-persistent buffers, so they never appear in a state dict);
- output: ``{'out': logits B x num_classes x H x W}``, plus ``'aux'`` (aux logits at input size) when the net
  has an aux head and ``'features'`` (name -> tensor) when feature names are requested.

Weights load through :mod:`segsr.weights`, from the files users have: a plain state dict of our wrapper, a BasicSR
checkpoint (``{'params': ...}`` / ``{'params_ema': ...}``), a torchvision checkpoint, torchvision's hub weights.
Every failure names the argument and the file.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from basicsr.utils import get_root_logger
from torch import Tensor, nn
from torch.nn import functional as F

from segsr.weights import load_into, read_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TaskNetOutput = Dict[str, Union[Tensor, Dict[str, Tensor]]]


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
            path: File path (``.pth`` or ``.safetensors``).
            param_key: Nested key of the state dict (see :func:`segsr.weights.extract_state_dict`).

        Raises:
            FileNotFoundError, ValueError: naming the argument (``<class>.pretrained``) and the file.
        """
        option_name = self.pretrained_option
        self._load_state(read_state_dict(path, option_name, param_key), os.path.expanduser(str(path)), option_name)

    @property
    def pretrained_option(self) -> str:
        """The argument that names this network's weights file, for errors: ``<class>.pretrained``."""
        return f'{type(self).__name__}.pretrained'

    def _load_state(self, state: Dict[str, Tensor], source: str, option_name: str) -> None:
        state, allow_missing = self._convert_state_dict(dict(state), source)
        load_into(self, state, source, option_name, allow_missing=allow_missing)
        get_root_logger().info(f"{type(self).__name__}: loaded weights from '{source}'.")
