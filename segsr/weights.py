"""Weights: read a weight file without running code from it, find its state dict, load it into a network, freeze it.

Every loader of segsr goes through this module: BasicSR's ``load_network`` (``SegsrModelMixin``, and stock models
once :func:`segsr.compat.apply_basicsr_fixes` ran), :func:`load_checkpoint` (frozen networks, judges), the task
networks' ``load_pretrained`` and :mod:`segsr.utils.model_io`. So every file failure reads the same way:

- a missing file is a ``FileNotFoundError``, every unreadable file (empty, truncated, text, a pickle of anything but
  tensors and plain containers, a file of another kind) and every state dict that does not fit is a ``ValueError``;
- each names the option (or argument) that gave the file, and the file.

Files are read by :func:`read_weights`: ``.safetensors`` with ``safetensors.torch.load_file``, everything else with
``torch.load(..., weights_only=True)``, which builds tensors and plain containers only (a pickle that would build
other objects, and so could run code, is refused, not executed); callers that accept TorchScript archives (OpenAI's
CLIP files) ask for them. Networks stored as programs (TorchScript, ``torch.export``) are read by
:func:`read_program`.

This module imports nothing from :mod:`segsr.models` or :mod:`segsr.archs`.
"""
import os
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from basicsr.utils import get_root_logger
from torch import Tensor, nn

# Keys under which other training code nests a state dict, tried in this order when no ``param_key`` is given.
NESTED_STATE_KEYS = ('params_ema', 'params', 'state_dict', 'model')
PROGRAM_KINDS = ('torchscript', 'export')
_LIST_LIMIT = 8


def short_list(items: Sequence[Any]) -> str:
    """``[a, b, ..., h, ...] (n in all)``: at most eight items of a list, for error messages."""
    items = list(items)
    shown = ', '.join(str(i) for i in items[:_LIST_LIMIT])
    return f'[{shown}{", ..." if len(items) > _LIST_LIMIT else ""}] ({len(items)} in all)'


def _option(option_name: Optional[str]) -> str:
    return f"Option '{option_name}': " if option_name else ''


def existing_file(path: str, option_name: str) -> str:
    """``path`` with ``~`` expanded.

    Raises:
        FileNotFoundError: no such file, naming ``option_name`` and the file.
    """
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{_option(option_name)}path '{path}' does not exist.")
    return path


# --------------------------------------------------------------------------------------------------- reading
def read_weights(path: str, option_name: str = 'checkpoint', torchscript: bool = False) -> Mapping:
    """Read a weight file on the CPU without running code from it.

    Args:
        path: A ``.pth`` / ``.pt`` / ... file (``torch.load(..., weights_only=True)``) or a ``.safetensors`` file
            (``~`` is expanded).
        option_name: Option or argument that named the file, for error messages.
        torchscript: Also accept a TorchScript archive (``torch.jit.save``); its ``state_dict()`` is returned.

    Returns:
        What the file holds (a state dict, or a dict nesting one).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable checkpoint (empty, corrupt, truncated, not a checkpoint, or a pickle of
            anything but tensors and plain containers), naming the option and the file.
    """
    path = existing_file(path, option_name)
    if os.path.getsize(path) == 0:
        raise ValueError(f"Option '{option_name}': checkpoint file '{path}' is empty (0 bytes): an interrupted copy, "
                         'download or save?')
    try:
        if path.lower().endswith('.safetensors'):
            from safetensors.torch import load_file

            return load_file(path, device='cpu')
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # UnpicklingError, SafetensorError, RuntimeError, EOFError, ... name the file
        error = ValueError(f"Option '{option_name}': '{path}' is not a readable checkpoint (read with "
                           'weights_only=True: tensors and plain containers only, no code runs): '
                           f'{type(err).__name__}: {err}')
        if torchscript:
            try:
                return read_program(path, option_name).state_dict()
            except ValueError:  # neither format: report the first error
                pass
        raise error from err
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"Option '{option_name}': '{path}' holds a {type(checkpoint).__name__}, not a state dict.")
    return checkpoint


def read_program(path: str, option_name: str, kind: str = 'torchscript') -> nn.Module:
    """Read a network saved as a program, on the CPU: TorchScript (``torch.jit.save``) or ``torch.export`` (``.pt2``).

    Args:
        path: The file (``~`` is expanded).
        option_name: Option or argument that named the file, for error messages.
        kind: ``torchscript`` or ``export``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a program of that kind, naming the option and the file.
    """
    if kind not in PROGRAM_KINDS:
        raise ValueError(f"Option '{option_name}': kind {kind!r} is not one of {list(PROGRAM_KINDS)}.")
    path = existing_file(path, option_name)
    try:
        if kind == 'torchscript':
            return torch.jit.load(path, map_location='cpu')
        return torch.export.load(path).module()
    except Exception as err:  # torch raises many types for a file of another kind or a damaged one
        raise ValueError(f"Option '{option_name}': cannot load '{path}' as a {kind} file (kind: torchscript for "
                         f'torch.jit.save files, export for .pt2): {err}') from err


def extract_state_dict(checkpoint: Any, source: str, param_key: Optional[str] = None,
                       option_name: Optional[str] = None) -> Dict[str, Tensor]:
    """Return the flat state dict held by a read checkpoint, without ``module.`` (DDP) prefixes.

    Args:
        checkpoint: What :func:`read_weights` returned: a flat state dict, or a dict nesting one under
            ``params_ema``, ``params`` (BasicSR), ``state_dict`` or ``model`` (torchvision's reference scripts).
        source: Name of the file (or hub address) for error messages.
        param_key: Nested key to use. None: the first of ``params_ema``, ``params``, ``state_dict``, ``model``
            present, else the checkpoint itself.
        option_name: Option that named the file, for error messages.

    Returns:
        A new dict (the checkpoint is not modified).

    Raises:
        ValueError: the checkpoint is not a dict of tensors, or ``param_key`` is absent.
    """
    where = _option(option_name)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{where}Weights file '{source}' holds a {type(checkpoint).__name__}, not a state dict.")
    if param_key is not None:
        if param_key not in checkpoint:
            raise ValueError(f"{where}Weights file '{source}' has no key '{param_key}'; its top-level keys are "
                             f'{short_list(checkpoint.keys())}.')
        state = checkpoint[param_key]
    else:
        nested = [k for k in NESTED_STATE_KEYS if isinstance(checkpoint.get(k), Mapping)]
        state = checkpoint[nested[0]] if nested else checkpoint
    if not isinstance(state, Mapping):
        raise ValueError(f"{where}Weights file '{source}': the state dict is a {type(state).__name__}, not a dict.")
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ValueError(f"{where}Weights file '{source}' is not a state dict: entries {short_list(not_tensors)} are "
                         'not tensors. Pass the key of the nested state dict as param_key.')
    return {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state.items()}


def read_state_dict(path: str, option_name: str, param_key: Optional[str] = None,
                    torchscript: bool = False) -> Dict[str, Tensor]:
    """:func:`read_weights` then :func:`extract_state_dict` (``param_key`` as there), errors naming the option."""
    checkpoint = read_weights(path, option_name, torchscript)
    return extract_state_dict(checkpoint, os.path.expanduser(str(path)), param_key, option_name)


def basicsr_state_dict(ckpt: Mapping, path: str, param_key: Optional[str],
                       option_name: str) -> Tuple[Optional[str], Dict[str, Tensor]]:
    """The key and the state dict BasicSR's ``load_network`` takes from a checkpoint (a new dict, no ``module.``).

    Args:
        ckpt: What :func:`read_weights` returned for ``path``.
        path: The file, for messages.
        param_key: Key of the state dict; ``params`` is used instead when ``param_key`` is absent and ``params``
            present (BasicSR's fallback). None: see :func:`extract_state_dict`.
        option_name: Option that named the file, for errors.

    Raises:
        ValueError: neither key is there, or the entry is not a state dict, naming the option and the file.
    """
    if param_key is not None and param_key not in ckpt and 'params' in ckpt:
        get_root_logger().info(f"Loading: {param_key} does not exist in '{path}', use params.")
        param_key = 'params'
    return param_key, extract_state_dict(ckpt, path, param_key, option_name)


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


# --------------------------------------------------------------------------------------------------- loading
def _fit_problems(net: nn.Module, state: Mapping, prefix: str, allowed: Iterable[str]) -> Tuple[List[str], ...]:
    """Missing keys, unexpected keys and shape mismatches (``key: file (..) vs net (..)``) of ``state``."""
    own = {k: v for k, v in net.state_dict().items() if k.startswith(prefix)}
    allowed = set(allowed)
    # Checkpoints written before BatchNorm counted its batches lack num_batches_tracked; BatchNorm fills it in.
    missing = [k for k in own if k not in state and k not in allowed and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in own]
    mismatched = [f'{k}: file {tuple(state[k].shape)} vs net {tuple(own[k].shape)}'
                  for k in own if k in state and state[k].shape != own[k].shape]
    return missing, unexpected, mismatched


def _plural(count: int, noun: str, plural: str) -> str:
    return f'{count} {noun if count == 1 else plural}'


def load_into(net: nn.Module, state: Mapping, source: str, option_name: Optional[str] = None, strict: bool = True,
              prefix: str = '', allow_missing: Iterable[str] = ()) -> None:
    """Load ``state`` into ``net`` after checking keys and shapes; a misfit is a ``ValueError`` naming the file.

    Args:
        net: Network to load into (not wrapped: pass the bare model).
        state: State dict with the network's own key names (not modified).
        source: File or hub address named in errors.
        option_name: Option or argument that named the file, named in errors.
        strict: Require exactly the network's keys (tensors of another shape are refused either way, as by
            ``torch.nn.Module.load_state_dict``).
        prefix: Only the network's keys starting with this prefix must be present (e.g. ``'model.backbone.'``
            to load a backbone only); every key of ``state`` must start with it.
        allow_missing: Keys of the network that may be absent from ``state`` (they keep their current values).

    Raises:
        ValueError: keys are missing or unexpected (``strict``), or of another shape.
    """
    missing, unexpected, mismatched = _fit_problems(net, state, prefix, allow_missing)
    if not strict:
        missing, unexpected = [], []
    counts, details = [], []
    for items, noun, plural, label in ((missing, 'missing key', 'missing keys', 'Missing key(s): '),
                                       (unexpected, 'unexpected key', 'unexpected keys', 'Unexpected key(s): '),
                                       (mismatched, 'shape mismatch', 'shape mismatches', 'size mismatch for ')):
        if items:
            counts.append(_plural(len(items), noun, plural))
            details.append(label + short_list(items))
    where = f"{_option(option_name)}weights file '{source}' does not fit {type(net).__name__}"
    where += f' (keys {prefix}*)' if prefix else ''
    if counts:
        raise ValueError(f"{where}: {', '.join(counts)}. {'; '.join(details)}.")
    try:
        net.load_state_dict(dict(state), strict=False)
    except RuntimeError as err:  # anything torch refuses beyond the checks above
        raise ValueError(f'{where}: {err}') from err


def load_state_from_checkpoint(net: nn.Module, ckpt: Mapping, path: str, param_key: Optional[str] = 'params',
                               option_name: str = 'path', strict: bool = True) -> None:
    """Load the state dict held by an already read checkpoint into ``net``.

    ``param_key`` is used when the checkpoint has it; otherwise the first of ``params_ema``, ``params``,
    ``state_dict``, ``model`` present, else the checkpoint itself (see :func:`extract_state_dict`).

    Args:
        net: Network to load into.
        ckpt: What :func:`read_weights` returned for ``path``.
        path: The file, named in errors and in the log.
        param_key: Preferred key of the nested state dict.
        option_name: Option that named the file, for errors.
        strict: Require exactly the network's keys.

    Raises:
        ValueError: naming ``option_name`` and the file.
    """
    key = param_key if param_key in ckpt else None
    load_into(net, extract_state_dict(ckpt, path, key, option_name), path, option_name, strict)
    get_root_logger().info(f'Loaded {type(net).__name__} from {path} (param key: {key or "auto"}).')


def load_checkpoint(net: nn.Module, path: str, param_key: Optional[str] = 'params', option_name: str = 'path',
                    strict: bool = True) -> None:
    """Load a BasicSR checkpoint (``{'params': ..}`` / ``{'params_ema': ..}``) or a plain state dict into ``net``.

    The file is read by :func:`read_weights` (``.pth`` with ``weights_only=True``, or ``.safetensors``); see
    :func:`load_state_from_checkpoint` for the key rules.

    Args:
        net: Network to load into.
        path: The file.
        param_key: Preferred key of the nested state dict.
        option_name: Option that named the file, for errors.
        strict: Require exactly the network's keys.

    Raises:
        FileNotFoundError / ValueError: naming ``option_name`` and the file.
    """
    load_state_from_checkpoint(net, read_weights(path, option_name), path, param_key, option_name, strict)


def pretrain_option_name(path_opt: Mapping, load_path: str, default: str) -> str:
    """The ``path.pretrain_network_*`` option(s) naming ``load_path`` (``' / '``-joined), else ``default``."""
    def norm(p) -> str:
        return os.path.abspath(os.path.expanduser(str(p)))

    names = [f'path.{key}' for key, value in path_opt.items()
             if key.startswith('pretrain_network') and value is not None and norm(value) == norm(load_path)]
    return ' / '.join(names) or default


def weights_included(net_opt: Optional[Mapping]) -> bool:
    """Whether the network of block ``net_opt`` comes with its own weights (``ImportedSegNet``: a TorchScript or
    exported file, a factory's ``pretrained``), so that no ``path.pretrain_network_*`` checkpoint is needed."""
    from basicsr.utils.registry import ARCH_REGISTRY

    if not isinstance(net_opt, Mapping) or net_opt.get('type') not in ARCH_REGISTRY:
        return False
    return bool(getattr(ARCH_REGISTRY.get(net_opt['type']), 'weights_included', False))  # stock archs: no such flag


# -------------------------------------------------------------------------------------------- frozen networks
def freeze(net: nn.Module) -> nn.Module:
    """Put ``net`` in eval mode and switch off gradients of all its parameters (returns it)."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@contextmanager
def frozen_eval(net: nn.Module) -> Iterator[nn.Module]:
    """Run ``net`` in eval mode with ``requires_grad`` off for all its parameters; restore both on exit."""
    flags = [(p, p.requires_grad) for p in net.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with eval_mode(net):
            yield net
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Run ``net`` in eval mode (gradients untouched); restore its previous mode on exit."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)
