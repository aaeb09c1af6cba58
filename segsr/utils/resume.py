"""Resuming training: find the newest intact training state, check what changed, restore everything exactly.

A training state (``training_states/<iter>.state``) written by segsr holds, besides BasicSR's epoch, iteration,
optimizers and schedulers: the position in the epoch, the random generators, model state that lives outside the
networks (Real-ESRGAN's training-pair pool) and the options that trained. Everything is plain data (tensors, numbers,
strings, lists, dicts), so states are read with ``torch.load(weights_only=True)``: a planted or downloaded state
cannot run code.

With ``--auto_resume`` the newest state whose file and whose network files (``models/net_<x>_<iter>.pth``) all
load is used; damaged ones are reported by path and skipped. An explicit ``path.resume_state`` must itself be intact.
"""
import os
import re
from collections import Counter
from typing import Dict, List, NamedTuple, Optional, Tuple

from segsr.utils.checkpoint import to_plain
from segsr.weights import read_weights

STATE_SUFFIX = '.state'
# Leftovers of interrupted atomic writes: ".<name>.<random>.tmp" (segsr.utils.checkpoint.atomic_torch_save).
_TMP_FILE = re.compile(r'^\..+\.(state|pth)\..+\.tmp$')
# Options that do not change what trains, or that resuming itself rewrites.
_VOLATILE = ('auto_resume', 'root_path', 'is_train', 'dist', 'rank', 'world_size', 'path')
# Options whose change cannot be applied to a resumed run: they shape the networks, optimizers, schedulers or the
# data order stored in the state.
_FIXED_PREFIXES = ('model_type', 'scale', 'manual_seed', 'network_', 'train.optim_', 'train.scheduler',
                   'datasets.train.batch_size_per_gpu', 'datasets.train.dataset_enlarge_ratio')


class ResumeError(RuntimeError):
    """No usable training state (the message names the files and why)."""


# ---------------------------------------------------------------------------------------------- schedulers
def load_scheduler_state(scheduler, state: dict) -> None:
    """``scheduler.load_state_dict(state)`` that gives back the ``Counter`` attributes :func:`to_plain` flattened."""
    counters = [k for k, v in vars(scheduler).items() if isinstance(v, Counter)]
    scheduler.load_state_dict(state)
    for key in counters:
        setattr(scheduler, key, Counter(getattr(scheduler, key)))


# ------------------------------------------------------------------------------------------- finding states
def remove_temporary_files(*folders: str) -> List[str]:
    """Delete leftovers of interrupted atomic writes in ``folders``; returns the removed paths."""
    removed = []
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if _TMP_FILE.match(name):
                path = os.path.join(folder, name)
                os.remove(path)
                removed.append(path)
    return removed


def network_files(opt: dict, iteration: int) -> Dict[str, str]:
    """``{'pretrain_network_<x>': models/net_<x>_<iter>.pth}`` for the networks a resume loads (BasicSR's rule)."""
    ignored = opt['path'].get('ignore_resume_networks') or []
    return {f'pretrain_{key}': os.path.join(opt['path']['models'], f"net_{key[len('network_'):]}_{iteration}.pth")
            for key in opt if key.startswith('network_') and key not in ignored}


def read_state(path: str, option_name: str = 'path.resume_state') -> dict:
    """Read and check one training state file (weights_only); ``ValueError`` naming the file when unusable."""
    state = read_weights(path, option_name)
    missing = [k for k in ('iter', 'epoch', 'optimizers', 'schedulers') if k not in state]
    if missing:
        raise ValueError(f"Option '{option_name}': '{path}' is not a training state (no {missing}).")
    return dict(state)


def check_state(path: str, opt: dict, option_name: str) -> dict:
    """Read a state and every network file it needs; ``ValueError`` naming the first file that does not load."""
    state = read_state(path, option_name)
    for name, net_path in network_files(opt, state['iter']).items():
        read_weights(net_path, f'path.{name} (saved with {os.path.basename(path)})')
    return state


def list_states(folder: str) -> List[Tuple[int, str]]:
    """``[(iteration, path)]`` of ``<iter>.state`` files in ``folder``, newest first."""
    if not os.path.isdir(folder):
        return []
    found = [(int(n[:-len(STATE_SUFFIX)]), os.path.join(folder, n)) for n in os.listdir(folder)
             if n.endswith(STATE_SUFFIX) and n[:-len(STATE_SUFFIX)].isdigit()]
    return sorted(found, reverse=True)


class ResumePoint(NamedTuple):
    """Where a run resumes: ``path``/``state`` (None for a fresh run) and the damaged states skipped on the way."""
    path: Optional[str]
    state: Optional[dict]
    skipped: List[str]


def find_resume_state(opt: dict) -> ResumePoint:
    """The state to resume from: ``--auto_resume``'s newest intact one, or ``path.resume_state``.

    Nothing is logged here (the run's log file does not exist yet): the caller logs ``skipped``.

    Raises:
        ResumeError: ``path.resume_state`` does not load, or ``--auto_resume`` found states but none is intact (the
            message lists every file and its error).
    """
    if not opt.get('auto_resume'):
        path = opt['path'].get('resume_state')
        if not path:
            return ResumePoint(None, None, [])
        try:
            return ResumePoint(path, check_state(path, opt, 'path.resume_state'), [])
        except (ValueError, FileNotFoundError) as err:
            raise ResumeError(f'Cannot resume: {err}') from err
    skipped = []
    for _, path in list_states(opt['path']['training_states']):
        try:
            state = check_state(path, opt, '--auto_resume')
        except (ValueError, FileNotFoundError) as err:
            skipped.append(f'{path}: {err}')
            continue
        opt['path']['resume_state'] = path
        return ResumePoint(path, state, skipped)
    if skipped:
        raise ResumeError('--auto_resume: no intact training state is left:\n  ' + '\n  '.join(skipped))
    return ResumePoint(None, None, [])


# ---------------------------------------------------------------------------------------------- options
def _flatten(block, prefix: str = '') -> Dict[str, object]:
    if isinstance(block, dict) and block:
        flat = {}
        for key, value in block.items():
            flat.update(_flatten(value, f'{prefix}.{key}' if prefix else str(key)))
        return flat
    return {prefix: block}


def changed_options(saved: dict, current: dict) -> Dict[str, Tuple[object, object]]:
    """``{dotted key: (saved value, current value)}`` for options that differ (volatile keys left out)."""
    missing = object()
    old = {k: v for k, v in _flatten(saved).items() if k.split('.')[0] not in _VOLATILE}
    new = {k: v for k, v in _flatten(to_plain(current, 'options')).items() if k.split('.')[0] not in _VOLATILE}
    changes = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            changes[key] = (None if a is missing else a, None if b is missing else b)
    return changes


def check_option_changes(saved: Optional[dict], opt: dict, state_path: str) -> Dict[str, Tuple[object, object]]:
    """Refuse option changes a resumed run cannot apply; return the others (they apply: the model is built from
    ``opt``). Nothing is logged here (the caller logs what it applies).

    Raises:
        ResumeError: naming every option that changed but cannot change while resuming.
    """
    if saved is None:
        return {}
    changes = changed_options(saved, opt)
    fixed = {k: v for k, v in changes.items() if k.startswith(_FIXED_PREFIXES)}
    if fixed:
        listed = '\n  '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in fixed.items())
        raise ResumeError(f'Cannot resume from {state_path} with these options changed (they shape the networks, '
                          'optimizers, schedulers or data order saved in the state):\n  ' + listed +
                          '\nRestore them, or start a new experiment from the saved weights with '
                          'path.pretrain_network_*.')
    return changes
