"""Atomic checkpoint writing for BasicSR models.

BasicSR writes ``net_g_latest.pth`` and ``N.state`` in place, so a crash mid-write leaves a truncated file that a
later ``--auto_resume`` picks up. Here every file is written to a temporary name in the same folder, flushed to
disk and then renamed over the target (``os.replace`` is atomic on POSIX and Windows).
"""
import os
import tempfile
from typing import Any, List, Union

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


@master_only
def save_network(self, net: Union[torch.nn.Module, List[torch.nn.Module]], net_label: str, current_iter: int,
                 param_key: Union[str, List[str]] = 'params') -> None:
    """Drop-in replacement of ``BaseModel.save_network`` that writes atomically and raises on failure."""
    iter_name = 'latest' if current_iter == -1 else current_iter
    save_path = os.path.join(self.opt['path']['models'], f'{net_label}_{iter_name}.pth')
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(keys):
        raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys for {net_label}.')
    atomic_torch_save({key: bare_state_dict(n) for n, key in zip(nets, keys)}, save_path)


@master_only
def save_training_state(self, epoch: int, current_iter: int) -> None:
    """Drop-in replacement of ``BaseModel.save_training_state`` that writes atomically."""
    if current_iter == -1:
        return
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in self.optimizers],
        'schedulers': [s.state_dict() for s in self.schedulers],
    }
    atomic_torch_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))
