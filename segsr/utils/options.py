"""Option helpers: segsr's ``parse_options``, optimizer / scheduler factories and early validation of option files.

Nothing here mutates the caller's dicts (blocks are deep-copied before ``type`` is popped), except
:func:`parse_options`, which builds the run's own dict.
"""
import argparse
import os
import random
import re
import warnings
from copy import deepcopy
from typing import Iterable, List, Optional, Tuple

import torch
import yaml

from segsr.utils.option_keys import check_option_keys
from segsr.utils.option_types import (BASICSR_SCHEDULERS, optimizer_class, registered_class, scheduler_class,
                                      typed_blocks)

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
    cls = optimizer_class(optim_type)
    if cls is None:
        known = sorted(n for n in vars(torch.optim) if optimizer_class(n) is not None and n != 'Optimizer')
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
    kwargs = deepcopy(dict(sched_opt))
    sched_type = kwargs.pop('type', None)
    cls = scheduler_class(sched_type)
    if cls is None:
        raise ValueError(f"{option_name}.type '{sched_type}' is not supported; use one of "
                         f'{list(BASICSR_SCHEDULERS)} or a class of torch.optim.lr_scheduler.')
    if sched_type == 'OneCycleLR':
        kwargs.setdefault('total_steps', int(total_iter))
        kwargs.setdefault('max_lr', [g['lr'] for g in optimizer.param_groups])
    if sched_type == 'PolynomialLR':
        kwargs.setdefault('total_iters', int(total_iter))
    return cls(optimizer, **kwargs)


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
    for typed in typed_blocks(opt):
        name, kind, block = typed.type_option, typed.kind, typed.block
        if kind not in registries:  # optimizers and schedulers are checked when built
            continue
        if not isinstance(block, dict) or 'type' not in block:
            raise ValueError(f"{source}: option '{name}' is missing (the block needs a 'type').")
        registry = registries[kind]
        if registered_class(registry, block['type']) is None:
            known = ', '.join(sorted(k for k, _ in registry))
            raise ValueError(f"{source}: option '{name}' = '{block['type']}' is not a registered {kind}. "
                             f'Known {kind}s: {known}.')


# ------------------------------------------------------------------------------------------ parse_options
class _ValueLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that also reads ``1e-4`` (no dot) as a float, as YAML 1.2 does."""


_EXPONENT_FLOAT = re.compile(r'^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$')
_ValueLoader.add_implicit_resolver('tag:yaml.org,2002:float', _EXPONENT_FLOAT, list('-+0123456789'))


def parse_force_yml_value(text: str):
    """Type a ``--force_yml`` value like YAML does: ``1e-4`` / ``2.0`` float, ``3`` int, ``true``, ``~``, ``[1, 2]``.

    Args:
        text: The text after ``=``; anything YAML reads as neither number, boolean, null nor list stays a string.
    """
    return yaml.load(text, Loader=_ValueLoader)


def apply_force_yml(opt: dict, entries: Iterable[str], source: str = 'options') -> None:
    """Set ``a:b:c=value`` entries in ``opt`` (in place: the run's own freshly parsed dict).

    Missing (or null) blocks on the way are created; the value is typed by :func:`parse_force_yml_value`.

    Args:
        opt: The run's options.
        entries: ``--force_yml`` entries, e.g. ``['train:optim_g:lr=2e-4', 'path:experiments_root=/tmp/x']``.
        source: The option file, named in errors.

    Raises:
        ValueError: an entry without ``=``, or a key below a value that is not a block (names file and key).
    """
    for entry in entries:
        keys, sep, text = entry.partition('=')
        path = [k.strip() for k in keys.split(':')]
        if not sep or not all(path):
            raise ValueError(f"{source}: --force_yml '{entry}' must look like 'train:optim_g:lr=2e-4'.")
        node = opt
        for depth, key in enumerate(path[:-1]):
            if node.get(key) is None:  # missing or ``key: ~``
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                dotted = '.'.join(path[:depth + 1])
                raise ValueError(f"{source}: --force_yml '{entry}': option '{dotted}' is {node!r}, not a block.")
        node[path[-1]] = parse_force_yml_value(text.strip())


def _parse_cli(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument('-opt', type=str, required=True, help='Path to option YAML file.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true')
    parser.add_argument('--debug', action='store_true')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--force_yml', nargs='+', default=None,
                        help='Set options, e.g. train:ema_decay=0.999 path:experiments_root=/tmp/x')
    return parser.parse_args(argv)


def load_option_file(path: str) -> dict:
    """Read an option YAML file as BasicSR does (ordered mappings).

    Args:
        path: The option file.

    Raises:
        ValueError: the file does not hold a mapping.
    """
    from basicsr.utils.options import ordered_yaml

    with open(path, mode='r') as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    if not isinstance(opt, dict):
        raise ValueError(f'{path}: an option file must be a YAML mapping, got {type(opt).__name__}.')
    return opt


def check_total_iter(opt: dict, source: str = 'options') -> None:
    """Raise ``ValueError`` unless ``train.total_iter`` is a whole number >= 1 (training needs it).

    Args:
        opt: Options (not modified).
        source: The option file, named in the error.
    """
    value = (opt.get('train') or {}).get('total_iter')
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1 and value == int(value)
    if not ok:
        raise ValueError(f"{source}: option 'train.total_iter' must be a whole number of iterations >= 1, "
                         f'got {value!r}.')


def _init_distributed(opt: dict, launcher: str) -> None:
    from basicsr.utils.dist_util import get_dist_info, init_dist

    opt['dist'] = launcher != 'none'
    if launcher == 'slurm' and 'dist_params' in opt:
        init_dist(launcher, **opt['dist_params'])
    elif launcher != 'none':
        init_dist(launcher)
    opt['rank'], opt['world_size'] = get_dist_info()


def _seed(opt: dict) -> None:
    from basicsr.utils import set_random_seed

    if opt.get('manual_seed') is None:
        opt['manual_seed'] = random.randint(1, 10000)
    set_random_seed(opt['manual_seed'] + opt['rank'])


def _resolve_num_gpu(opt: dict, source: str) -> None:
    if opt.get('num_gpu', 'auto') == 'auto':
        opt['num_gpu'] = torch.cuda.device_count()
    if opt['num_gpu'] != 0 and not torch.cuda.is_available():
        warnings.warn(f"{source}: num_gpu={opt['num_gpu']} but CUDA is not available; running on CPU.")
        opt['num_gpu'] = 0


def _prepare_datasets(opt: dict) -> None:
    for phase, dataset in (opt.get('datasets') or {}).items():
        dataset['phase'] = phase.split('_')[0]  # val_1, val_2, test_1 ...
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key, value in dataset.items():
            if key.startswith('dataroot') and isinstance(value, str):
                dataset[key] = os.path.expanduser(value)


def _set_paths(opt: dict, root_path: str, is_train: bool) -> None:
    """Expand user paths; put the run under ``path.experiments_root`` / ``results_root`` or ``<root>/experiments``."""
    path = opt.setdefault('path', {})
    for key, value in path.items():
        if isinstance(value, str) and ('resume_state' in key or 'pretrain_network' in key):
            path[key] = os.path.expanduser(value)
    root_key = 'experiments_root' if is_train else 'results_root'
    default = os.path.join(root_path, 'experiments' if is_train else 'results', opt['name'])
    root = os.path.abspath(os.path.expanduser(path[root_key])) if path.get(root_key) else default
    path.update({root_key: root, 'log': root, 'visualization': os.path.join(root, 'visualization')})
    if is_train:
        path.update(models=os.path.join(root, 'models'), training_states=os.path.join(root, 'training_states'))


def _apply_debug(opt: dict, debug: bool, is_train: bool) -> None:
    if debug and not opt['name'].startswith('debug'):
        opt['name'] = 'debug_' + opt['name']
    if is_train and 'debug' in opt['name']:
        if 'val' in opt:
            opt['val']['val_freq'] = 8
        opt.setdefault('logger', {}).update(print_freq=1, save_checkpoint_freq=8)


def check_options(opt: dict, source: str, is_train: bool) -> None:
    """Every check made before a run starts: registered types, known keys, ``train.total_iter`` (training).

    Args:
        opt: Options (not modified).
        source: The option file, named in errors and warnings.
        is_train: Training options (``train.total_iter`` is required).

    Raises:
        ValueError: see :func:`check_registered_types`, :func:`segsr.utils.option_keys.check_option_keys`,
            :func:`check_total_iter`.
    """
    check_registered_types(opt, source)
    check_option_keys(opt, source)
    if is_train:
        check_total_iter(opt, source)


def parse_options(root_path: str, is_train: bool = True,
                  argv: Optional[List[str]] = None) -> Tuple[dict, argparse.Namespace]:
    """segsr's replacement of ``basicsr.utils.options.parse_options`` (same command line, same derived values).

    Differences: ``--force_yml a:b:c=value`` sets any key (missing blocks are created, values typed by YAML, no
    ``exec``) before anything is derived from the options, so it also moves ``path.experiments_root``, the seed or
    ``num_gpu``; ``path.experiments_root`` (training) / ``path.results_root`` (testing) are honoured; ``num_gpu`` > 0
    without CUDA runs on CPU with a warning, a missing ``num_gpu`` is ``auto``; option files are checked before
    anything starts (:func:`check_options`: registered types, known keys, ``train.total_iter``). See docs/options.md.

    Args:
        root_path: Folder under which ``experiments/<name>`` (training) or ``results/<name>`` (testing) go.
        is_train: Training (True) or testing options.
        argv: Command-line arguments; default ``sys.argv[1:]``.

    Returns:
        ``(opt, args)`` as BasicSR's: the options and the parsed command line.
    """
    args = _parse_cli(argv)
    opt = load_option_file(args.opt)
    apply_force_yml(opt, args.force_yml or (), args.opt)
    check_options(opt, args.opt, is_train)
    _init_distributed(opt, args.launcher)
    _seed(opt)
    opt['auto_resume'] = args.auto_resume
    opt['is_train'] = is_train
    _apply_debug(opt, args.debug, is_train)
    _resolve_num_gpu(opt, args.opt)
    _prepare_datasets(opt)
    _set_paths(opt, root_path, is_train)
    return opt, args


def registered_names(kind: str) -> List[str]:
    """Names registered in one of BasicSR's registries (``arch``, ``dataset``, ``loss``, ``metric``, ``model``)."""
    from basicsr.utils import registry

    reg = getattr(registry, f'{kind.upper()}_REGISTRY')
    return sorted(k for k, _ in reg)
