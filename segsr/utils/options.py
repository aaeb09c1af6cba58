"""Option helpers: optimizer / scheduler factories and early validation of option files.

Nothing here mutates the caller's dicts: blocks are deep-copied before ``type`` is popped.
"""
import os
import warnings
from copy import deepcopy
from typing import Iterable, Iterator, List, Optional, Tuple

import torch
import yaml

_BASICSR_SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')


def build_optimizer(optim_type: str, params: Iterable, lr: float, **kwargs) -> torch.optim.Optimizer:
    """Build any ``torch.optim`` optimizer by class name (``Adam``, ``AdamW``, ``SGD``, ``RMSprop``, ...).

    Args:
        optim_type: Class name in ``torch.optim``.
        params: Parameters or parameter groups.
        lr: Learning rate.
        **kwargs: Further keyword arguments of the optimizer (``weight_decay``, ``betas``, ``momentum``...).

    Raises:
        ValueError: ``optim_type`` is not an optimizer of ``torch.optim``.
    """
    cls = getattr(torch.optim, str(optim_type), None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        known = sorted(n for n, c in vars(torch.optim).items()
                       if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and n != 'Optimizer')
        raise ValueError(f"Optimizer type '{optim_type}' is not supported; use one of {known}.")
    return cls(params, lr=lr, **kwargs)


def build_optimizer_from_opt(optim_opt: dict, params: Iterable, option_name: str) -> torch.optim.Optimizer:
    """Build an optimizer from an option block such as ``train.optim_g`` without mutating it.

    Args:
        optim_opt: Block with ``type``, ``lr`` and optimizer keyword arguments.
        params: Parameters to optimize.
        option_name: Dotted option name used in error messages, e.g. ``train.optim_task``.
    """
    if not isinstance(optim_opt, dict) or 'type' not in optim_opt or 'lr' not in optim_opt:
        raise ValueError(f"Option '{option_name}' must be a block with 'type' and 'lr', got {optim_opt!r}.")
    kwargs = deepcopy(dict(optim_opt))
    optim_type = kwargs.pop('type')
    lr = kwargs.pop('lr')
    try:
        return build_optimizer(optim_type, params, lr, **kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Option '{option_name}': {err}") from err


def build_scheduler(sched_opt: dict, optimizer: torch.optim.Optimizer, total_iter: int,
                    option_name: str = 'train.scheduler'):
    """Build a learning-rate scheduler stepped once per iteration, without mutating ``sched_opt``.

    BasicSR's ``MultiStepLR``/``MultiStepRestartLR``/``CosineAnnealingRestartLR`` keep their meaning; any other
    ``type`` is looked up in ``torch.optim.lr_scheduler`` (e.g. ``OneCycleLR``, ``CosineAnnealingLR``,
    ``PolynomialLR``). ``OneCycleLR.total_steps`` and ``PolynomialLR.total_iters`` default to ``total_iter``.

    Args:
        sched_opt: The ``train.scheduler`` block.
        optimizer: Optimizer to schedule.
        total_iter: ``train.total_iter``.
        option_name: Option name used in error messages.
    """
    from basicsr.models import lr_scheduler as basicsr_lr

    kwargs = deepcopy(dict(sched_opt))
    sched_type = kwargs.pop('type', None)
    if sched_type in ('MultiStepLR', 'MultiStepRestartLR'):
        return basicsr_lr.MultiStepRestartLR(optimizer, **kwargs)
    if sched_type == 'CosineAnnealingRestartLR':
        return basicsr_lr.CosineAnnealingRestartLR(optimizer, **kwargs)
    cls = getattr(torch.optim.lr_scheduler, str(sched_type), None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.lr_scheduler.LRScheduler)):
        raise ValueError(f"{option_name}.type '{sched_type}' is not supported; use one of "
                         f'{list(_BASICSR_SCHEDULERS)} or a class of torch.optim.lr_scheduler.')
    if sched_type == 'OneCycleLR':
        kwargs.setdefault('total_steps', int(total_iter))
        kwargs.setdefault('max_lr', [g['lr'] for g in optimizer.param_groups])
    if sched_type == 'PolynomialLR':
        kwargs.setdefault('total_iters', int(total_iter))
    return cls(optimizer, **kwargs)


def _typed_blocks(opt: dict) -> Iterator[Tuple[str, str, Optional[dict]]]:
    """Yield ``(option_name, registry_kind, block)`` for every block whose ``type`` names a registered class."""
    if 'model_type' in opt:
        yield 'model_type', 'model', {'type': opt['model_type']}
    for key, block in opt.items():
        if key.startswith('network_'):
            yield f'{key}.type', 'arch', block
    for phase, block in (opt.get('datasets') or {}).items():
        yield f'datasets.{phase}.type', 'dataset', block
    for key, block in (opt.get('train') or {}).items():
        if key.endswith('_opt') and isinstance(block, dict):
            yield f'train.{key}.type', 'loss', block
    val = opt.get('val') or {}
    for name, block in (val.get('metrics') or {}).items():
        yield f'val.metrics.{name}.type', 'metric', block
    if isinstance(val.get('judge'), dict):
        yield 'val.judge.network.type', 'arch', val['judge'].get('network')


def check_registered_types(opt: dict, source: str = 'options') -> None:
    """Check that every ``type`` in an option dict names a registered class, before anything is built.

    Args:
        opt: Parsed options.
        source: Where the options came from (the YAML path), named in the error.

    Raises:
        ValueError: naming the file, the option key and the unknown type, with the known names.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    registries = dict(
        model=MODEL_REGISTRY, arch=ARCH_REGISTRY, dataset=DATASET_REGISTRY, loss=LOSS_REGISTRY, metric=METRIC_REGISTRY)
    for name, kind, block in _typed_blocks(opt):
        if not isinstance(block, dict) or 'type' not in block:
            raise ValueError(f"{source}: option '{name}' is missing (the block needs a 'type').")
        registry = registries[kind]
        if block['type'] not in registry and f"{block['type']}_basicsr" not in registry:  # Registry.get's fallback
            known = ', '.join(sorted(k for k, _ in registry))
            raise ValueError(f"{source}: option '{name}' = '{block['type']}' is not a registered {kind}. "
                             f'Known {kind}s: {known}.')


def _user_path(opt_path: str, key: str) -> Optional[str]:
    with open(opt_path, 'r') as f:
        raw = yaml.safe_load(f) or {}
    value = (raw.get('path') or {}).get(key)
    return os.path.expanduser(value) if value else None


def finalize_options(opt: dict, opt_path: str, is_train: bool) -> None:
    """Post-process options parsed by ``basicsr.utils.options.parse_options`` (in place: this is the run's own
    freshly parsed dict, not a caller's).

    - ``path.experiments_root`` (training) or ``path.results_root`` (testing) given in the YAML is honoured
      instead of ``<cwd>/experiments/<name>``; the models/log/visualization folders follow it.
    - ``num_gpu`` > 0 on a machine without CUDA falls back to CPU with a warning, so stock configs run anywhere.
    - Every ``type`` is checked against the registries.
    """
    root_key = 'experiments_root' if is_train else 'results_root'
    custom_root = _user_path(opt_path, root_key)
    if custom_root:
        root = os.path.abspath(custom_root)
        opt['path'][root_key] = root
        opt['path']['log'] = root
        opt['path']['visualization'] = os.path.join(root, 'visualization')
        if is_train:
            opt['path']['models'] = os.path.join(root, 'models')
            opt['path']['training_states'] = os.path.join(root, 'training_states')
    if opt.get('num_gpu', 0) != 0 and not torch.cuda.is_available():
        warnings.warn(f"{opt_path}: num_gpu={opt['num_gpu']} but CUDA is not available; running on CPU.")
        opt['num_gpu'] = 0
    check_registered_types(opt, source=opt_path)


def registered_names(kind: str) -> List[str]:
    """Names registered in one of BasicSR's registries (``arch``, ``dataset``, ``loss``, ``metric``, ``model``)."""
    from basicsr.utils import registry

    reg = getattr(registry, f'{kind.upper()}_REGISTRY')
    return sorted(k for k, _ in reg)
