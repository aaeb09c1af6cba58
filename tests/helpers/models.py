"""Building and running models in tests: runtime options, batches, checkpoints, reference computations."""
import copy
import math

import torch
from basicsr.archs import build_network
from basicsr.data import build_dataloader, build_dataset

from conftest import read_log, run_entry, write_yaml
from segsr.utils.checkpoint import atomic_torch_save


def hand_ce(logits, target, ignore_index):
    values = []
    b, c, h, w = logits.shape
    for n in range(b):
        for i in range(h):
            for j in range(w):
                t = int(target[n, i, j])
                if t == ignore_index:
                    continue
                z = logits[n, :, i, j]
                values.append(-(float(z[t]) - math.log(sum(math.exp(float(v)) for v in z))))  # plain floats
    return values


def training_checkpoint(block: dict, path) -> torch.nn.Module:
    """A generator saved as segsr's training saves ``net_g_*.pth``: ``{'params_ema': sd, 'params': sd}``."""
    torch.manual_seed(0)
    net = build_network(dict(block)).eval()
    state = net.state_dict()
    atomic_torch_save({'params_ema': state, 'params': {k: torch.zeros_like(v) for k, v in state.items()}}, str(path))
    return net


class Payload:
    """Unpickling this object would create a file: the classic code-execution pickle, harmless here."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')


def runtime_opt(opt, tmp_path, is_train=True, device='cpu'):
    opt = copy.deepcopy(opt)
    opt.update(is_train=is_train, dist=False, rank=0, world_size=1, num_gpu=int(device == 'cuda'), auto_resume=False)
    for phase, d in opt['datasets'].items():
        d.update(phase=phase.split('_')[0], scale=opt['scale'])
    root = tmp_path / 'exp'
    opt['path'].update(experiments_root=str(root), models=str(root / 'models'), log=str(root),
                       training_states=str(root / 'training_states'), visualization=str(root / 'visualization'))
    for p in ('models', 'training_states', 'visualization'):
        (root / p).mkdir(parents=True, exist_ok=True)
    return opt


def first_batch(opt):
    train_opt = opt['datasets']['train']
    loader = build_dataloader(build_dataset(train_opt), train_opt, num_gpu=0, dist=False, sampler=None, seed=0)
    return next(iter(loader))


def val_loader(opt):
    val_opt = opt['datasets']['val']
    return build_dataloader(build_dataset(val_opt), val_opt, num_gpu=0, dist=False, sampler=None, seed=0)


def train_then_resume(opt, tmp_path):
    run_entry('train.py', write_yaml(tmp_path / 'a.yml', opt), tmp_path)
    exp = tmp_path / 'experiments' / opt['name']
    assert (exp / 'training_states' / '2.state').is_file()
    opt['train']['total_iter'] = 4
    run_entry('train.py', write_yaml(tmp_path / 'b.yml', opt), tmp_path, '--auto_resume')
    log = read_log(exp)
    assert 'Resuming training from epoch' in log and 'iter: 2.' in log
    assert (exp / 'training_states' / '4.state').is_file()
    return exp, log


def params_of(net):
    """A copy of ``net``'s state dict, to compare with after a step."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def changed(before, net):
    """Whether any tensor of ``net`` differs from the copy ``before`` (:func:`params_of`)."""
    return any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
