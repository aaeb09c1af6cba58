"""Seconds per training step and peak memory of training configs, side by side (e.g. RRDB+P vs RRDB+P+SeD).

Each config runs in its own process (:mod:`segsr.step_bench`): the model is built from the YAML file as
``segsr/train.py`` builds it, then ``--iters`` training steps run on one fixed batch of random images (``--batch`` x
``--gt-size``; no data loading in the timing), after ``--warmup`` untimed steps. Reported: median seconds per step,
peak memory (CUDA: peak allocated by PyTorch; CPU: peak resident set size of the process) and the ratio to the
first config.

Example:
    python scripts/benchmark_gan_step.py options/sed/cpu/train_rrdb_p_x4.yml options/sed/cpu/train_rrdb_p_sed_x4.yml
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from segsr.step_bench import measure_in_subprocess  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='+', help='Training option files.')
    parser.add_argument('--iters', type=int, default=20, help='Timed steps. Default: 20.')
    parser.add_argument('--warmup', type=int, default=3, help='Untimed steps first. Default: 3.')
    parser.add_argument('--batch', type=int, default=None, help='Batch size (default: the config\'s).')
    parser.add_argument('--gt-size', type=int, default=None, help='HR crop size (default: the config\'s).')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    parser.add_argument('--json', default=None, help='Also write the results to this JSON file.')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = []
    for path in args.configs:
        try:
            rows.append(measure_in_subprocess(path, args.iters, args.warmup, args.batch, args.gt_size, args.device))
        except RuntimeError as err:
            sys.exit(str(err))
    base = rows[0]
    lines = ['| config | model | network_d | device | batch x crop | s / iter | x first | peak MB | x first |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        crop = 'x'.join(str(v) for v in r['gt_size'])
        lines.append(f"| {osp.basename(r['config'])} | {r['model']} | {r['network_d']}{' + sem' if r['semantic'] else ''}"
                     f" | {r['device']} ({r['threads']} threads, {r['amp']}) | {r['batch']} x {crop} | "
                     f"{r['sec_per_iter']:.3f} | {r['sec_per_iter'] / base['sec_per_iter']:.2f} | "
                     f"{r['peak_mb']:.0f} | {r['peak_mb'] / base['peak_mb']:.2f} |")
    sys.stdout.write('\n'.join(lines) + '\n')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=2)


if __name__ == '__main__':
    main()
