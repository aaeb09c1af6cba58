"""Seconds per training step and peak memory of GAN configs, side by side (e.g. RRDB+P vs RRDB+P+SeD).

Each config runs in its own process: the model is built from the YAML file as ``segsr/train.py`` builds it, then
``--iters`` training steps run on one fixed batch of random images (``--batch`` x ``--gt-size``; no data loading
in the timing), after ``--warmup`` untimed steps. Reported: median seconds per step, peak memory (CUDA: peak
allocated by PyTorch; CPU: peak resident set size of the process) and the ratio to the first config.

Example:
    python scripts/benchmark_gan_step.py options/sed/cpu/train_rrdb_p_x4.yml options/sed/cpu/train_rrdb_p_sed_x4.yml
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

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
import yaml  # noqa: E402

import segsr  # noqa: E402,F401  (before basicsr)
from basicsr.models import build_model  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='+', help='Training option files (GAN models).')
    parser.add_argument('--iters', type=int, default=20, help='Timed steps. Default: 20.')
    parser.add_argument('--warmup', type=int, default=3, help='Untimed steps first. Default: 3.')
    parser.add_argument('--batch', type=int, default=None, help='Batch size (default: the config\'s).')
    parser.add_argument('--gt-size', type=int, default=None, help='HR crop size (default: the config\'s).')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    parser.add_argument('--json', default=None, help='Also write the results to this JSON file.')
    parser.add_argument('--one', action='store_true', help=argparse.SUPPRESS)  # internal: measure one config
    return parser.parse_args(argv)


def _runtime_opt(path: str, device: str, workdir: str) -> dict:
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


def measure_one(args: argparse.Namespace) -> dict:
    """Build one config's model, time its training steps; returns the numbers (run in a fresh process)."""
    path = args.configs[0]
    device = 'cuda' if args.device == 'auto' and torch.cuda.is_available() else args.device.replace('auto', 'cpu')
    with tempfile.TemporaryDirectory() as workdir:
        opt = _runtime_opt(path, device, workdir)
        torch.manual_seed(0)
        model = build_model(opt)
        train_set = opt['datasets']['train']
        batch = args.batch or train_set['batch_size_per_gpu']
        gt_size = args.gt_size or train_set.get('gt_size', opt.get('gt_size'))
        scale = opt['scale']
        gt = torch.rand(batch, 3, gt_size, gt_size)
        data = {'gt': gt, 'lq': torch.nn.functional.interpolate(gt, scale_factor=1 / scale, mode='bicubic',
                                                                 align_corners=False).clamp(0, 1)}
        model.feed_data(data)
        if device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(args.warmup + args.iters):
            if device == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.optimize_parameters(step + 1)
            if device == 'cuda':
                torch.cuda.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
        if device == 'cuda':
            peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return dict(config=path, model=opt['model_type'], network_d=opt['network_d']['type'],
                semantic=getattr(model, 'net_sem', None) is not None, device=device, batch=batch, gt_size=gt_size,
                sec_per_iter=statistics.median(times), peak_mb=peak_mb, threads=torch.get_num_threads())


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args)))
        return
    rows = []
    for path in args.configs:
        cmd = [sys.executable, osp.abspath(__file__), path, '--one', '--iters', str(args.iters), '--warmup',
               str(args.warmup), '--device', args.device]
        cmd += ['--batch', str(args.batch)] if args.batch else []
        cmd += ['--gt-size', str(args.gt_size)] if args.gt_size else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f'{path}: measurement failed:\n{proc.stderr[-4000:]}')
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = rows[0]
    lines = ['| config | model | network_d | device | batch x crop | s / iter | x first | peak MB | x first |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {osp.basename(r['config'])} | {r['model']} | {r['network_d']}{' + sem' if r['semantic'] else ''}"
                     f" | {r['device']} ({r['threads']} threads) | {r['batch']} x {r['gt_size']} | "
                     f"{r['sec_per_iter']:.3f} | {r['sec_per_iter'] / base['sec_per_iter']:.2f} | "
                     f"{r['peak_mb']:.0f} | {r['peak_mb'] / base['peak_mb']:.2f} |")
    print('\n'.join(lines))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=2)


if __name__ == '__main__':
    main()
