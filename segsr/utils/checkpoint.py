"""Checkpoint files: atomic writing for BasicSR models; :mod:`segsr.weights` reads them without running code.

BasicSR writes ``net_g_latest.pth`` and ``N.state`` in place, so a crash mid-write leaves a truncated file that a
later ``--auto_resume`` picks up. Here every file is written to a temporary name in the same folder, flushed to
disk and then renamed over the target (``os.replace`` is atomic on POSIX and Windows).

A network checkpoint written here is ``{param_key: state_dict}`` (BasicSR's layout) plus, when the caller gives it,
``'network'``: the network block it was built from (plain dicts, lists, numbers and strings, so it loads with
``weights_only=True``), which makes the file self-describing. Loaders that take a state dict by its key (BasicSR's
``load_network``, :func:`segsr.weights.extract_state_dict`, spandrel) ignore the extra key.
"""
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any, List, Optional, Union

import torch
from basicsr.utils.dist_util import master_only


def atomic_torch_save(obj: Any, path: str) -> None:
    """Save ``obj`` with ``torch.save`` so that ``path`` is either the old or the complete new file.

    Args:
        obj: Anything ``torch.save`` accepts.
        path: Destination file path. Its folder must exist.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def to_plain(obj, where: str = 'state'):
    """Convert a state to what ``weights_only=True`` loads: tensors, numbers, strings, None, lists, tuples, dicts.

    ``Counter`` (BasicSR's and torch's MultiStepLR milestones) becomes a dict. Anything else is a ``TypeError`` naming
    where it sits, raised when the state is built (so at the first save, not at resume).
    """
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, dict):  # OrderedDict and Counter included
        return {k: to_plain(v, f'{where}[{k!r}]') for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f'{where}[{i}]') for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise TypeError(f'{where}: a {type(obj).__name__} cannot be stored in a training state (plain data only).')


def bare_state_dict(net: torch.nn.Module) -> dict:
    """CPU state dict of a (possibly DDP/DataParallel-wrapped) network without ``module.`` prefixes."""
    if isinstance(net, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        net = net.module
    state = {}
    for key, param in net.state_dict().items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        state[key] = param.detach().cpu()
    return state


def plain_block(block: Mapping) -> dict:
    """A JSON-plain deep copy of a network option block (what ``weights_only=True`` loading accepts).

    Values JSON cannot hold (none come from YAML options) are saved as their ``str``, so saving never fails.
    """
    return json.loads(json.dumps(dict(block), default=str))


@master_only
def save_network(self, net: Union[torch.nn.Module, List[torch.nn.Module]], net_label: str, current_iter: int,
                 param_key: Union[str, List[str]] = 'params', network: Optional[Mapping] = None) -> None:
    """Drop-in replacement of ``BaseModel.save_network`` that writes atomically and raises on failure.

    Args:
        network: The network's option block; when given it is saved under ``'network'`` (see the module doc).
    """
    iter_name = 'latest' if current_iter == -1 else current_iter
    save_path = os.path.join(self.opt['path']['models'], f'{net_label}_{iter_name}.pth')
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(keys):
        raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys for {net_label}.')
    payload = {key: bare_state_dict(n) for n, key in zip(nets, keys)}
    if network is not None:
        payload['network'] = plain_block(network)
    atomic_torch_save(payload, save_path)


def training_state(model, epoch: int, current_iter: int) -> dict:
    """What a training state holds, as plain data (:func:`to_plain`): loadable with ``weights_only=True``.

    BasicSR's ``epoch``, ``iter``, ``optimizers`` and ``schedulers``; Real-ESRGAN's training-pair pool
    (``pool``: its ``TrainingPairPool.state_dict()``) when the model has a filled one; and what the training loop adds
    through ``model.loop_state()`` when it set that callable (position in the epoch, random generators, options; see
    :mod:`segsr.train`).
    """
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in model.optimizers],
        'schedulers': [s.state_dict() for s in model.schedulers],
    }
    pool = getattr(model, 'pair_pool', None)  # Real-ESRGAN models (segsr's and the patched stock ones)
    pool_state = pool.state_dict() if pool is not None else None
    if pool_state is not None:
        state['pool'] = pool_state
    loop_state = getattr(model, 'loop_state', None)
    if loop_state is not None:
        state.update(loop_state())
    return to_plain(state)


@master_only
def save_training_state(self, epoch: int, current_iter: int) -> None:
    """Drop-in replacement of ``BaseModel.save_training_state``: atomic, plain data (see :func:`training_state`)."""
    if current_iter == -1:
        return
    atomic_torch_save(training_state(self, epoch, current_iter),
                      os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))
