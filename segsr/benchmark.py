"""One-command benchmark: task-aware SR methods against stock BasicSR baselines on one labelled dataset.

The ``segsr-benchmark`` command and ``python -m segsr.benchmark``; the benchmark itself is the package
:mod:`segsr.bench` (profiles, data, row recipes, options, runner, report).
"""
import argparse
from typing import List, Optional

import segsr  # noqa: F401  (before basicsr)
from segsr.bench.options import default_cache_dir
from segsr.bench.profile import load_profile, profile_names
from segsr.bench.runner import Benchmark
from segsr.compat import apply_basicsr_fixes


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line of ``segsr-benchmark``.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--profile', default='quick', help=f'{" | ".join(profile_names())}, or a profile YAML path.')
    parser.add_argument('--data', default=None, help="Dataset root in segsr's layout (default: the profile's).")
    parser.add_argument('--source', default=None,
                        help='Raw dataset to prepare --data from when it is not prepared yet (CamVid profiles: the '
                        'SegNet-layout CamVid folder with train/, trainannot/, val/, valannot/).')
    parser.add_argument('--out', default=None, help='Work/output folder (default: experiments/<profile name>).')
    parser.add_argument('--device', default=None, choices=['cpu', 'cuda', 'auto'], help="Default: the profile's.")
    parser.add_argument('--cache', default=None,
                        help=f'Where starting points are trained and found again (default: {default_cache_dir()}).')
    parser.add_argument('--judge', default=None, help='Use this judge checkpoint instead of training one.')
    parser.add_argument('--deployed', default=None,
                        help='Use this deployed segmenter (your own network): a checkpoint that matches deployed.network, '
                        'or a TorchScript / torch.export (.pt2) file, used as it is (ImportedSegNet with RGB in [0, 1]; '
                        'other input conventions or a factory: set deployed.network in a profile, docs/methods.md).')
    parser.add_argument('--l1-start', default=None,
                        help='Start every fine-tuned row from this generator checkpoint (must match generator).')
    parser.add_argument('--jobs', type=int, default=None,
                        help="Training runs at a time (default: the profile's jobs, else 1): starting points together, "
                        'then fine-tuned runs together; more than 1 suits a large GPU.')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Run (or resume) the benchmark of ``--profile``.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    apply_basicsr_fixes()
    Benchmark(load_profile(args.profile), args.out, args.data, args.device, args.judge, args.source, args.cache,
              args.deployed, args.l1_start, args.jobs).run()


if __name__ == '__main__':
    main()
