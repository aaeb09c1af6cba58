"""Check the keys of an option dict before anything is built: a misspelled key must not be silently ignored.

Which keys are known:

- **segsr's own models** (``model_type`` registered from the ``segsr`` package): the keys each class of the model
  declares where it reads them (class attribute ``OPTION_KEYS``, ``{block: keys}`` with ``''`` the top level,
  merged along the MRO), plus, for the BasicSR classes it builds on (``SRModel``, ``SRGANModel``, ...), the keys
  their source reads (below). An unknown key is a ``ValueError``.
- **stock models** (BasicSR's, or any other package's): the keys their classes' source reads, found by an AST scan
  (:mod:`segsr.utils.option_scan`: ``opt['k']``, ``opt.get('k')``, ``train_opt['k']``, ``'k' in opt`` ...). An
  unknown key is only an :class:`OptionKeyWarning`: stock configs keep running unchanged.
- **every model**: the keys the pipeline reads or adds, from the same scan of BasicSR's ``train.py``, ``test.py``,
  ``utils/options.py``, ``data/__init__.py``, ``utils/logger.py``, ``utils/misc.py`` and segsr's entry-point
  helpers, plus :data:`EXTRA_KEYS` (keys stock configs carry but BasicSR 1.4.2 never reads, and reserved keys);
  ``path.pretrain_network_<x>`` / ``param_key_<x>`` / ``strict_load_<x>`` for every known ``network_<x>``.

Blocks checked: the top level, ``train``, ``val``, ``path``, ``logger``, ``datasets.<phase>`` (keys of the dataset
class: ``OPTION_KEYS`` of segsr's datasets, scanned source of the others, plus the dataloader's), nested blocks a
segsr class declares (``val.judge``, ``train.cqmix``), and typed blocks
(:func:`segsr.utils.option_types.typed_blocks`) against their class's signature (any key when it takes
``**kwargs``): ``network_*`` and ``val.judge.network`` (the arch), ``train.*_opt`` (the loss), ``train.optim_*``
(the ``torch.optim`` class), ``train.scheduler*`` (BasicSR's or ``torch.optim.lr_scheduler``'s class),
``val.metrics.<name>`` (the metric function, plus ``type`` and ``better``).
"""
import difflib
import functools
import importlib
import inspect
import warnings
from typing import Dict, FrozenSet, Iterator, List, NamedTuple, Optional, Set, Tuple

from segsr.utils.option_scan import Reads, merge_reads, scan_object
from segsr.utils.option_types import optimizer_class, registered_class, scheduler_class, sub_block, typed_blocks

MAIN_BLOCKS = ('', 'train', 'val', 'path', 'logger')
PIPELINE_MODULES = ('basicsr.train', 'basicsr.test', 'basicsr.utils.options', 'basicsr.data', 'basicsr.utils.logger',
                    'basicsr.utils.misc', 'basicsr.models', 'segsr.utils.amp', 'segsr.utils.checkpoint',
                    'segsr.compat', 'segsr.train', 'segsr.data.resumable', 'segsr.utils.resume')
EXTRA_KEYS = {
    '': ('deterministic', ),  # reserved: deterministic training
    'path': ('ignore_resume_networks', ),  # read by basicsr.utils.misc.check_resume
    # in BasicSR's / Real-ESRGAN's stock configs: 1.4.2 always shuffles; RealESRGANDataset's crop is the model's
    # top-level gt_size (segsr's GAN step reads datasets.train.gt_size)
    'dataset': ('use_shuffle', 'gt_size'),
}
NETWORK_PATH_KEYS = ('pretrain_network_{}', 'param_key_{}', 'strict_load_{}')


class OptionKeyWarning(UserWarning):
    """An option key that a stock model's code never reads (segsr's own models raise ``ValueError`` instead)."""


class UnknownKey(NamedTuple):
    """An unknown option key, dotted (``train.task_adv_optt``), with the closest known one (or None)."""
    key: str
    suggestion: Optional[str]

    def __str__(self) -> str:
        hint = f"did you mean '{self.suggestion}'?" if self.suggestion else 'no similar known key.'
        return f"'{self.key}': {hint}"


# ------------------------------------------------------------------------------------------------- known keys
def is_segsr_class(cls: type) -> bool:
    """Whether ``cls`` is defined in the segsr package."""
    return cls.__module__.split('.')[0] == 'segsr'


def _main_blocks(reads: Reads) -> Reads:
    return {block: set(keys) for block, keys in reads.items() if block in MAIN_BLOCKS + ('dataset', )}


@functools.lru_cache(maxsize=None)
def pipeline_keys() -> Dict[str, FrozenSet[str]]:
    """Keys the training / testing pipeline reads or adds, by block (``dataset``: every dataset block)."""
    scans = [scan_object(importlib.import_module(name)) for name in PIPELINE_MODULES]
    extra = {block: set(keys) for block, keys in EXTRA_KEYS.items()}
    return {block: frozenset(keys) for block, keys in merge_reads(extra, *map(_main_blocks, scans)).items()}


def declared_keys(cls: type) -> Dict[str, Tuple[str, ...]]:
    """``OPTION_KEYS`` declared by ``cls`` itself (not inherited) and by the parts it lists in ``PARTS`` (a model's
    validator, TDP term, ...), as ``{block: keys}``."""
    declared = vars(cls).get('OPTION_KEYS') or {}
    if isinstance(declared, (tuple, list)):
        return {'dataset': tuple(declared)}
    keys: Dict[str, Tuple[str, ...]] = {}
    for part_keys in [declared] + [vars(part).get('OPTION_KEYS') or {} for part in vars(cls).get('PARTS', ())]:
        for block, names in part_keys.items():
            keys[block] = keys.get(block, ()) + tuple(names)
    return keys


@functools.lru_cache(maxsize=None)
def class_keys(cls: type, root: str = '') -> Dict[str, FrozenSet[str]]:
    """Keys ``cls`` reads along its MRO: declarations of segsr classes, scanned source of the others.

    Args:
        cls: A model or dataset class.
        root: What ``self.opt`` is in its source: ``''`` (models) or ``'dataset'``.
    """
    parts = []
    for klass in cls.__mro__:
        if klass is object or klass.__module__.split('.')[0] in ('torch', 'typing', 'builtins'):
            continue
        parts.append(declared_keys(klass) if is_segsr_class(klass) else _main_blocks(scan_object(klass, root)))
    return {block: frozenset(keys) for block, keys in merge_reads(*parts).items()}


def model_known_keys(model_cls: type) -> Dict[str, Set[str]]:
    """Known keys of every checked block for a model class (pipeline + the class + network path keys)."""
    known = merge_reads(pipeline_keys(), class_keys(model_cls))
    networks = [key[len('network_'):] for key in known.get('', ()) if key.startswith('network_')]
    known.setdefault('path', set()).update(tmpl.format(n) for tmpl in NETWORK_PATH_KEYS for n in networks)
    return known


def dataset_known_keys(dataset_cls: Optional[type]) -> Set[str]:
    """Known keys of a ``datasets.<phase>`` block: the dataset class's and the pipeline's (dataloader, phase...)."""
    keys = set(pipeline_keys().get('dataset', ()))
    if dataset_cls is not None:
        keys |= set(class_keys(dataset_cls, 'dataset').get('dataset', ()))
    return keys


# --------------------------------------------------------------------------------------------- typed blocks
def signature_keys(obj: object, skip: Tuple[str, ...] = ()) -> Optional[Set[str]]:
    """Keyword names ``obj`` (a class or function) accepts, plus ``type``; None when it takes ``**kwargs``."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - set(skip) | {'type'}


def signature_blocks(opt: dict) -> Iterator[Tuple[str, object, Optional[Set[str]]]]:
    """``(dotted name, block, accepted keys or None for any)`` for every typed block checked by signature: the
    arch, loss, metric, optimizer and scheduler blocks of :func:`segsr.utils.option_types.typed_blocks`."""
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY

    def sig(obj, skip=()):
        return signature_keys(obj, skip) if obj is not None else None

    lookups = {
        'arch': lambda t: sig(registered_class(ARCH_REGISTRY, t)),
        'loss': lambda t: sig(registered_class(LOSS_REGISTRY, t)),
        'metric': lambda t: sig(registered_class(METRIC_REGISTRY, t), ('img', 'img2')),
        'optimizer': lambda t: sig(optimizer_class(t), ('params', )),
        'scheduler': lambda t: sig(scheduler_class(t), ('optimizer', )),
    }
    for name, kind, block in typed_blocks(opt):
        if kind not in lookups:
            continue
        keys = lookups[kind](_type_of(block))
        if keys is not None and kind == 'metric':
            keys = keys | {'better'}
        yield name, block, keys


def _type_of(block: object) -> object:
    return block.get('type') if isinstance(block, dict) else None


# ---------------------------------------------------------------------------------------------- the checker
def _unknown_in(block: object, prefix: str, known: Set[str]) -> List[UnknownKey]:
    if not isinstance(block, dict):
        return []
    dotted = (prefix + '.') if prefix else ''
    out = []
    for key in block:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            out.append(UnknownKey(f'{dotted}{key}', f'{dotted}{close[0]}' if close else None))
    return out


def _dataset_unknown(opt: dict) -> List[UnknownKey]:
    from basicsr.utils.registry import DATASET_REGISTRY

    out = []
    for phase, block in sub_block(opt, 'datasets').items():
        dataset_cls = registered_class(DATASET_REGISTRY, _type_of(block))
        out += _unknown_in(block, f'datasets.{phase}', dataset_known_keys(dataset_cls))
    return out


def model_class(opt: dict) -> Optional[type]:
    """The registered class of ``opt['model_type']`` (None when absent or unknown)."""
    from basicsr.utils.registry import MODEL_REGISTRY

    return registered_class(MODEL_REGISTRY, opt.get('model_type'))


def find_unknown_keys(opt: dict) -> List[UnknownKey]:
    """Every unknown key of ``opt`` (not modified) for its ``model_type``; [] when the model type is unknown."""
    cls = model_class(opt)
    if cls is None:
        return []
    known = model_known_keys(cls)
    out = []
    for block in MAIN_BLOCKS + tuple(b for b in known if '.' in b):
        node = opt if not block else functools.reduce(sub_block, block.split('.'), opt)
        out += _unknown_in(node, block, known.get(block, set()))
    out += _dataset_unknown(opt)
    for name, block, keys in signature_blocks(opt):
        out += _unknown_in(block, name, keys) if keys is not None else []
    return out


def check_option_keys(opt: dict, source: str = 'options') -> None:
    """Refuse (segsr's models) or warn about (stock models) option keys that the run never reads.

    Args:
        opt: Options (not modified).
        source: Where they came from (the YAML path), named in the message.

    Raises:
        ValueError: ``model_type`` is one of segsr's models and a key is unknown; the message names the file, each
            dotted key and the closest known key.

    Warns:
        OptionKeyWarning: the same, for a stock model.
    """
    unknown = find_unknown_keys(opt)
    if not unknown:
        return
    cls = model_class(opt)
    lines = '\n'.join(f'  {item}' for item in unknown)
    if is_segsr_class(cls):
        raise ValueError(f"{source}: unknown option key(s) for {cls.__name__} (a misspelled key would be silently "
                         f"ignored):\n{lines}")
    warnings.warn(f'{source}: option key(s) that {cls.__name__} never reads (ignored):\n{lines}', OptionKeyWarning,
                  stacklevel=2)
