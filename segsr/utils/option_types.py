"""The typed blocks of an option dict (blocks whose ``type`` names a class) and the classes their types name.

One list, read by both checks made before a run starts: :func:`segsr.utils.options.check_registered_types` (does
each ``type`` name a registered class?) and :func:`segsr.utils.option_keys.check_option_keys` (does each block take
only keys its class accepts?).
"""
from typing import Iterator, NamedTuple, Optional

import torch

# BasicSR's scheduler names -> classes of basicsr.models.lr_scheduler (its MultiStepLR is MultiStepRestartLR)
BASICSR_SCHEDULERS = {'MultiStepLR': 'MultiStepRestartLR', 'MultiStepRestartLR': 'MultiStepRestartLR',
                      'CosineAnnealingRestartLR': 'CosineAnnealingRestartLR'}


class TypedBlock(NamedTuple):
    """A block whose ``type`` names a class.

    Attributes:
        name: Dotted option name of the block (``network_g``, ``datasets.train``, ``train.optim_g``, ...);
            ``model_type`` for the model (whose ``type`` is the top-level ``model_type`` key).
        kind: ``model``, ``arch``, ``dataset``, ``loss``, ``metric`` (BasicSR's registries), ``optimizer``
            (``torch.optim``) or ``scheduler`` (BasicSR's or ``torch.optim.lr_scheduler``'s).
        block: The block itself (not necessarily a dict: a wrong option file may hold anything there).
    """
    name: str
    kind: str
    block: object

    @property
    def type_option(self) -> str:
        """The option that holds the block's type: ``model_type`` or ``<name>.type``."""
        return self.name if self.kind == 'model' else f'{self.name}.type'


def sub_block(opt: object, key: str) -> dict:
    """``opt[key]`` when ``opt`` is a dict and that entry a dict, else an empty dict."""
    value = opt.get(key) if isinstance(opt, dict) else None
    return value if isinstance(value, dict) else {}


def typed_blocks(opt: dict) -> Iterator[TypedBlock]:
    """Every typed block of ``opt`` (not modified): the model, ``network_*``, ``datasets.<phase>``, ``train.*_opt``
    (dict blocks only: ``pixel_opt: ~`` switches a loss off), ``train.optim_*``, ``train.scheduler*``,
    ``val.metrics.<name>`` and ``val.judge.network`` (when ``val.judge`` is a block)."""
    if 'model_type' in opt:
        yield TypedBlock('model_type', 'model', {'type': opt['model_type']})
    for key, block in opt.items():
        if key.startswith('network_'):
            yield TypedBlock(key, 'arch', block)
    for phase, block in sub_block(opt, 'datasets').items():
        yield TypedBlock(f'datasets.{phase}', 'dataset', block)
    for key, block in sub_block(opt, 'train').items():
        if key.endswith('_opt'):
            if isinstance(block, dict):
                yield TypedBlock(f'train.{key}', 'loss', block)
        elif key.startswith('optim_'):
            yield TypedBlock(f'train.{key}', 'optimizer', block)
        elif key.startswith('scheduler'):
            yield TypedBlock(f'train.{key}', 'scheduler', block)
    val = sub_block(opt, 'val')
    for name, block in sub_block(val, 'metrics').items():
        yield TypedBlock(f'val.metrics.{name}', 'metric', block)
    if isinstance(val.get('judge'), dict):
        yield TypedBlock('val.judge.network', 'arch', val['judge'].get('network'))


def optimizer_class(name: object) -> Optional[type]:
    """The ``torch.optim`` optimizer class called ``name``, or None."""
    cls = getattr(torch.optim, str(name), None)
    return cls if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) else None


def scheduler_class(name: object) -> Optional[type]:
    """The scheduler class a ``train.scheduler*`` ``type`` names (BasicSR's first, then torch's), or None."""
    from basicsr.models import lr_scheduler as basicsr_lr

    if name in BASICSR_SCHEDULERS:
        return getattr(basicsr_lr, BASICSR_SCHEDULERS[name])
    cls = getattr(torch.optim.lr_scheduler, str(name), None)
    return cls if isinstance(cls, type) and issubclass(cls, torch.optim.lr_scheduler.LRScheduler) else None


def registered_class(registry, name: object) -> Optional[type]:
    """The class ``name`` registers in a BasicSR registry (with ``Registry.get``'s ``_basicsr`` fallback), or None."""
    for candidate in (name, f'{name}_basicsr'):
        if isinstance(name, str) and candidate in registry:
            return registry.get(candidate)
    return None
