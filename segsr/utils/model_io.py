"""Load an SR generator or a segmentation network from whatever file a user has: one loader for every command.

``segsr-infer``, ``segsr-export``, ``segsr/evaluate.py``, ``segsr/sr_bench.py`` and the benchmark (through
``evaluate.build_method``) load generators with :func:`load_generator`, which takes

(a) a segsr/BasicSR **options file** (``.yml`` / ``.yaml``): ``network_g`` is built with BasicSR's registry and
    ``path.pretrain_network_g`` loaded (``param_key_g``, default ``params``; ``strict_load_g``);
(b) a **checkpoint** (``.pth``, ``.pt``, ``.ckpt``, ``.bin``, ...): read by :func:`segsr.weights.read_weights` with
    ``torch.load(..., weights_only=True)`` (tensors and plain containers only: no code from the file runs). With a
    network block (``network=``, or a ``'network'`` entry saved in the file) that block is built and the state dict
    loaded (``param_key``, else ``params_ema``, ``params``, ``state_dict``, ``model``, else the file itself). Without
    one, the architecture is detected from the state dict's keys and shapes by
    `spandrel <https://github.com/chaiNNer-org/spandrel>`_ (ESRGAN/RRDB, Real-ESRGAN Compact, SwinIR, HAT, OmniSR,
    SPAN, DAT, ...; our ``net_g_*.pth`` files are unwrapped first, ``params_ema`` preferred);
(c) a **.safetensors** file, read with ``safetensors.torch.load_file`` and then as (b).

Segmentation networks (``segsr-infer --seg``) load with :func:`load_segmenter`: a block given by the caller, or the
``'network'`` entry that segsr's training writes into ``net_task_*.pth`` (see :mod:`segsr.utils.checkpoint`).
"""
import os
from copy import deepcopy
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Union

import torch
import yaml
from torch import Tensor, nn
from torch.nn import functional as F

from segsr.weights import extract_state_dict, freeze, load_state_from_checkpoint, read_weights

OPTIONS_EXTS = ('.yml', '.yaml')
NetworkArg = Optional[Union[str, Mapping]]


@dataclass
class LoadedNetwork:
    """A network ready for inference and what is known about it.

    Attributes:
        net: The module, in eval mode, gradients off, on the requested device.
        scale: Output size / input size (1 for segmentation networks).
        arch: Architecture name (the registry ``type``, or spandrel's name).
        source: How it was loaded, for logs (file, detection route, key).
        multiple_of: Input height and width must be multiples of this; :meth:`__call__` pads (reflect) and crops.
        min_size: Smallest input height / width the network accepts.
        supports_half: Whether float16 weights are expected to work (spandrel's flag; True for registry builds).
        supports_bfloat16: Same for bfloat16.
        network: The option block it was built from (None for spandrel detection).
    """

    net: nn.Module
    scale: int
    arch: str
    source: str
    multiple_of: int = 1
    min_size: int = 1
    supports_half: bool = True
    supports_bfloat16: bool = True
    network: Optional[dict] = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def __call__(self, x: Tensor) -> Tensor:
        """Run on a ``B x C x H x W`` batch of any size: pad to the size rules, forward, crop to ``scale`` x input.

        ``x`` is never modified: the network gets its own copy (spandrel's RCAN scales its input in place).
        """
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, self.multiple_of, self.min_size)
        out = self.net(padded.clone() if padded is x else padded)
        out = main_output(out)
        return out[..., :h * self.scale, :w * self.scale]


def main_output(out: Union[Tensor, Mapping]) -> Tensor:
    """A network's image or logits tensor: the output itself, or ``out['out']`` for networks that return a dict."""
    return out['out'] if isinstance(out, Mapping) else out


def pad_to_multiple(x: Tensor, multiple: int, min_size: int = 1) -> Tensor:
    """Pad the bottom and right of ``x`` (reflect where possible, else replicate) to a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h = _padded_size(h, multiple, min_size) - h
    pad_w = _padded_size(w, multiple, min_size) - w
    if not pad_h and not pad_w:
        return x
    mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _padded_size(size: int, multiple: int, min_size: int) -> int:
    size = max(size, min_size)
    return size + (-size) % max(multiple, 1)


def default_multiple(scale: int) -> int:
    """Real-ESRGAN's rule: x2 and x1 generators may unshuffle their input (RRDBNet does), so pad to 2 / 4."""
    return {1: 4, 2: 2}.get(int(scale), 1)


def parse_network_block(value: NetworkArg, option_name: str, keys: Iterable[str] = ('network_g', )) -> Optional[dict]:
    """A network block from a dict, a YAML/JSON file, or an inline YAML/JSON string (``'{type: SegUNet, ...}'``).

    A file holding a whole options file gives its block under the first of ``keys`` present.

    Raises:
        ValueError: the value is not a block with a ``type``, or names an unregistered one, naming ``option_name``.
    """
    from segsr.utils.options import check_registered_types

    if value is None:
        return None
    if isinstance(value, Mapping):
        block = deepcopy(dict(value))
    elif os.path.isfile(os.path.expanduser(str(value))):
        with open(os.path.expanduser(str(value)), 'r', encoding='utf-8') as f:
            block = yaml.safe_load(f)
    else:
        try:
            block = yaml.safe_load(str(value))
        except yaml.YAMLError as err:
            raise ValueError(f"Option '{option_name}': '{value}' is neither a file nor a YAML/JSON block: "
                             f'{err}') from err
    if isinstance(block, dict) and 'type' not in block:
        block = next((block[k] for k in keys if isinstance(block.get(k), dict)), block)
    if not isinstance(block, dict) or 'type' not in block:
        raise ValueError(f"Option '{option_name}': '{value}' is not a network block with a 'type' (e.g. "
                         "'{type: RRDBNet, num_feat: 64, num_block: 23, scale: 4}' or a YAML file holding one).")
    check_registered_types({'network_g': block}, source=option_name)
    return block


def load_generator(model: str, network: NetworkArg = None, device: Union[str, torch.device] = 'cpu',
                   param_key: Optional[str] = None, option_name: str = 'model',
                   network_option: str = 'network') -> LoadedNetwork:
    """Load an SR generator from an options file, a checkpoint or a ``.safetensors`` file (see the module doc).

    Args:
        model: Options file (``.yml``/``.yaml``) or weights file.
        network: Network block (dict, YAML/JSON file or inline string) to build instead of detecting the
            architecture. Not allowed with an options file (it has its own ``network_g``).
        device: Where the network goes.
        param_key: Key of the nested state dict in a checkpoint; default: ``params_ema``, then ``params``, ...
        option_name: The option that named ``model``, for error messages (e.g. ``--model``).
        network_option: The option that gave ``network`` (e.g. ``--network``).

    Returns:
        A :class:`LoadedNetwork` in eval mode on ``device``.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: unreadable checkpoint, unknown architecture, weights that do not fit: naming the file and what
            to pass instead.
    """
    device = torch.device(device)
    if str(model).lower().endswith(OPTIONS_EXTS):
        if network is not None:
            raise ValueError(f"Option '{option_name}': '{model}' is an options file (it has its own network_g); "
                             'do not pass a network block with it.')
        return _from_options(str(model), device, option_name)
    ckpt = read_weights(model, option_name)
    block = parse_network_block(network, network_option) if network is not None else None
    if block is None and isinstance(ckpt.get('network'), Mapping):
        block = parse_network_block(ckpt['network'], f"'network' entry of {model}")
    if block is not None:
        return _from_block(block, ckpt, str(model), device, param_key, option_name)
    return _detect(ckpt, str(model), device, param_key, option_name)


def _from_options(path: str, device: torch.device, option_name: str) -> LoadedNetwork:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Option '{option_name}': options file '{path}' does not exist.")
    with open(path, 'r', encoding='utf-8') as f:
        opt = yaml.safe_load(f) or {}
    if not isinstance(opt.get('network_g'), dict):
        raise ValueError(f"Option '{option_name}': options file '{path}' has no 'network_g' block.")
    path_opt = opt.get('path') or {}
    weights = path_opt.get('pretrain_network_g')
    if not weights:
        raise ValueError(f"Option '{option_name}': options file '{path}' does not set 'path.pretrain_network_g', so "
                         'it names no weights to load; set it, or pass the checkpoint itself.')
    block = parse_network_block(opt['network_g'], f'{path}: network_g')
    ckpt = read_weights(weights, f'{path}: path.pretrain_network_g')
    return _from_block(block, ckpt, weights, device, path_opt.get('param_key_g', 'params'),
                       f'{path}: path.pretrain_network_g', strict=path_opt.get('strict_load_g', True),
                       declared_scale=opt.get('scale'))


def _from_block(block: dict, ckpt: Mapping, path: str, device: torch.device, param_key: Optional[str],
                option_name: str, strict: bool = True, declared_scale: Optional[int] = None) -> LoadedNetwork:
    from basicsr.archs import build_network

    try:
        net = build_network(deepcopy(block))
    except (TypeError, ValueError) as err:  # missing or unknown constructor arguments
        raise ValueError(f"Option '{option_name}': cannot build {block['type']} from {block}: {err}") from err
    load_state_from_checkpoint(net, ckpt, path, param_key or 'params_ema', option_name, strict)
    net = freeze(net.to(device))
    scale = int(declared_scale or block.get('upscale') or block.get('scale') or _probe_scale(net, block, device))
    return LoadedNetwork(net=net, scale=scale, arch=block['type'], source=f'{block["type"]} ({path})',
                         multiple_of=default_multiple(scale), network=block)


@torch.no_grad()
def _probe_scale(net: nn.Module, block: dict, device: torch.device) -> int:
    """Scale of a network whose block declares none: output height of a 16 x 16 input / 16."""
    channels = int(block.get('num_in_ch', block.get('in_chans', block.get('in_channels', 3))))
    out = net(torch.zeros(1, channels, 16, 16, device=device))
    out = main_output(out)
    return max(1, out.shape[-2] // 16)


def _detect(ckpt: Mapping, path: str, device: torch.device, param_key: Optional[str],
            option_name: str) -> LoadedNetwork:
    """Identify the architecture with spandrel and load the weights into it."""
    import spandrel

    state = extract_state_dict(ckpt, path, param_key if param_key in ckpt else None)
    hint = ("pass the options file it was trained with (path.pretrain_network_g set to it) or its network block "
            "(segsr-infer/segsr-export: --network '{type: RRDBNet, num_feat: 64, ...}'; evaluate/sr_bench configs: "
            "'network_g' next to 'path').")
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as err:
        raise ValueError(f"Option '{option_name}': spandrel cannot identify the architecture of '{path}'; {hint}") \
            from err
    except (RuntimeError, KeyError, ValueError, IndexError, AssertionError, TypeError) as err:
        raise ValueError(f"Option '{option_name}': spandrel recognised an architecture in '{path}' but its weights do "
                         f'not fit what it built ({type(err).__name__}: {str(err)[:300]}); {hint}') from err
    if not isinstance(desc, spandrel.ImageModelDescriptor) or desc.input_channels != desc.output_channels:
        raise ValueError(f"Option '{option_name}': '{path}' holds a {desc.architecture.name} model "
                         f'({desc.purpose}, {desc.input_channels} -> {desc.output_channels} channels), not an '
                         'image-to-image SR network.')
    req = desc.size_requirements
    return LoadedNetwork(net=freeze(desc.model.to(device)), scale=int(desc.scale), arch=desc.architecture.name,
                         source=f'{desc.architecture.name} detected by spandrel ({path})',
                         multiple_of=max(int(req.multiple_of), default_multiple(desc.scale)),
                         min_size=int(req.minimum), supports_half=bool(desc.supports_half),
                         supports_bfloat16=bool(desc.supports_bfloat16))


def load_segmenter(path: str, network: NetworkArg = None, device: Union[str, torch.device] = 'cpu',
                   param_key: Optional[str] = 'params', option_name: str = '--seg',
                   network_option: str = '--seg-network') -> LoadedNetwork:
    """Load a segmentation network (``forward(x)['out']`` logits, ``num_classes``) for inference.

    Args:
        path: Checkpoint (``.pth`` or ``.safetensors``).
        network: Its network block (dict, YAML/JSON file or inline string); default: the ``'network'`` entry
            segsr's training saves in ``net_task_*.pth``.
        device: Where the network goes.
        param_key: Key of the nested state dict (falls back as in :func:`load_generator`).
        option_name: The option that named ``path``.
        network_option: The option that gave ``network``.

    Raises:
        ValueError: no block given and none recorded in the file, or weights that do not fit, naming the file.
    """
    device = torch.device(device)
    ckpt = read_weights(path, option_name)
    keys = ('network_task', 'network')
    block = parse_network_block(network, network_option, keys) if network is not None else None
    if block is None and isinstance(ckpt.get('network'), Mapping):
        block = parse_network_block(ckpt['network'], f"'network' entry of {path}", keys)
    if block is None:
        raise ValueError(f"Option '{option_name}': '{path}' does not record its network block (segsr's training "
                         f"saves it in net_task_*.pth); pass it with {network_option}, e.g. "
                         "'{type: SegUNet, num_classes: 11}' or the training options file.")
    loaded = _from_block(block, ckpt, str(path), device, param_key, option_name, declared_scale=1)
    if not hasattr(loaded.net, 'num_classes'):
        raise ValueError(f"Option '{option_name}': {block['type']} has no 'num_classes'; it is not a segmentation "
                         'network (SegUNet, TorchvisionSegNet, ...).')
    loaded.multiple_of = 1
    return loaded
