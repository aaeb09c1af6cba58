"""Seconds per training step and peak memory of training option files, each measured in a fresh process.

The model is built from the YAML file as ``segsr/train.py`` builds it (``train.amp`` included), then ``iters``
training steps run on one fixed batch of random images (``batch`` x ``gt_size``, random labels for models that
need them; no data loading in the timing) after ``warmup`` untimed steps. Reported: median seconds per step and
peak memory (CUDA: peak allocated by PyTorch; CPU: peak resident set size of the process, which includes the
interpreter and libraries, about 0.4-0.5 GB).

Used by ``scripts/benchmark_gan_step.py`` and the benchmark (:mod:`segsr.bench.runner`).
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence, Union

import torch
import yaml

import segsr  # noqa: F401  (before basicsr)
from basicsr.models import build_model

from segsr.compat import apply_basicsr_fixes
from segsr.tasks import get_task, task_of_dataset_opt
from segsr.utils.amp import enable_amp
from segsr.utils.misc import module_command

Size = Union[int, Sequence[int]]


def runtime_opt(path: str, device: str, workdir: str) -> dict:
    """Training options of ``path`` for one process on ``device``, with every output path inside ``workdir``."""
    with open(path) as f:
        opt = yaml.safe_load(f)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False, num_gpu=int(device == 'cuda'))
    opt['path'] = dict(opt.get('path') or {}, resume_state=None)
    for key in ('models', 'training_states', 'visualization', 'log'):
        opt['path'][key] = osp.join(workdir, key)
        os.makedirs(opt['path'][key], exist_ok=True)
    opt['path']['experiments_root'] = workdir
    for phase, d in opt['datasets'].items():
        d.update(phase=phase.split('_')[0], scale=opt['scale'])
    return opt


def _pair(size: Size) -> tuple:
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))


def _num_classes(opt: dict) -> Optional[int]:
    train_set = opt['datasets']['train']
    names = train_set.get('class_names')
    return train_set.get('num_classes') or (len(names) if names else None) or \
        (opt.get('network_task') or {}).get('num_classes')


def random_batch(opt: dict, batch: int, gt_size: Size) -> dict:
    """A fixed batch: random HR images, their bicubic LR and, for a task dataset, random targets of its task
    (:meth:`segsr.tasks.Task.random_targets`: label maps, boxes or class indices in ``[0, num_classes)``)."""
    height, width = _pair(gt_size)
    scale = opt['scale']
    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(batch, 3, height, width, generator=generator)
    lq = torch.nn.functional.interpolate(gt, scale_factor=1 / scale, mode='bicubic', align_corners=False)
    data = {'gt': gt, 'lq': lq.clamp(0, 1)}
    num_classes = _num_classes(opt)
    train_set = opt['datasets']['train']
    task = task_of_dataset_opt(train_set) or (get_task('seg') if train_set.get('num_classes') else None)
    if task is not None:
        if not num_classes:
            raise ValueError(f"{opt.get('name', 'options')}: datasets.train needs num_classes or class_names (or "
                             'network_task.num_classes) to time a task model on random targets.')
        data.update(task.random_targets(batch, height, width, num_classes, generator))
    return data


def measure(path: str, iters: int = 20, warmup: int = 3, batch: Optional[int] = None,
            gt_size: Optional[Size] = None, device: str = 'auto') -> dict:
    """Build ``path``'s model and time its training steps in this process (call it in a fresh one)."""
    device = 'cuda' if device == 'auto' and torch.cuda.is_available() else device.replace('auto', 'cpu')
    with tempfile.TemporaryDirectory() as workdir:
        opt = runtime_opt(path, device, workdir)
        torch.manual_seed(0)
        model = enable_amp(build_model(opt), opt)
        train_set = opt['datasets']['train']
        batch = batch or train_set['batch_size_per_gpu']
        gt_size = gt_size or train_set.get('gt_size', opt.get('gt_size'))
        model.feed_data(random_batch(opt, batch, gt_size))
        if device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(warmup + iters):
            _sync(device)
            start = time.perf_counter()
            model.optimize_parameters(step + 1)
            _sync(device)
            if step >= warmup:
                times.append(time.perf_counter() - start)
        if device == 'cuda':
            peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return dict(config=path, model=opt['model_type'], network_d=(opt.get('network_d') or {}).get('type'),
                semantic=getattr(model, 'net_sem', None) is not None, device=device, batch=batch,
                gt_size=list(_pair(gt_size)), sec_per_iter=statistics.median(times), peak_mb=peak_mb,
                threads=torch.get_num_threads(), amp=str(getattr(model, 'amp_dtype', None) or 'float32'))


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def measure_in_subprocess(path: str, iters: int = 20, warmup: int = 3, batch: Optional[int] = None,
                          gt_size: Optional[int] = None, device: str = 'auto', env: Optional[dict] = None) -> dict:
    """:func:`measure` in a fresh Python process (own peak memory, no state shared with other configs).

    ``env``: extra environment variables for that process (on top of this one's).
    """
    args = [path, '--iters', str(iters), '--warmup', str(warmup), '--device', device]
    args += ['--batch', str(batch)] if batch else []
    args += ['--gt-size', str(gt_size)] if gt_size else []
    cmd, module_env = module_command('segsr.step_bench', *args)  # cwd is kept
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(module_env, **(env or {})))
    if proc.returncode != 0:
        raise RuntimeError(f'{path}: step measurement failed:\n{proc.stderr[-4000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    """``python -m segsr.step_bench CONFIG``: measure one config, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--batch', type=int, default=None)
    parser.add_argument('--gt-size', type=int, default=None)
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    args = parser.parse_args(argv)
    apply_basicsr_fixes()  # stock models (the ESRGAN reference step) on CPU
    result = measure(osp.abspath(args.config), args.iters, args.warmup, args.batch, args.gt_size, args.device)
    sys.stdout.write(json.dumps(result) + '\n')


if __name__ == '__main__':
    main()
