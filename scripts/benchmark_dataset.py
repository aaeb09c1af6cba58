"""Samples per second of PairedImageSegDataset read from disk vs LMDB, with training crops.

Example (after scripts/prepare_camvid.py):
    python scripts/benchmark_dataset.py --root datasets/camvid --num-samples 200
    python scripts/benchmark_dataset.py --root datasets/camvid --num-workers 2 --lq-downsample matlab torch
"""
import argparse
import os.path as osp
import random
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import segsr  # noqa: E402,F401  (before basicsr)
from torch.utils.data import DataLoader  # noqa: E402

from segsr.data.data_util import load_dataset_info  # noqa: E402
from segsr.data.paired_image_seg_dataset import PairedImageSegDataset  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--root', default='datasets/camvid', help='Dataset root in our layout.')
    parser.add_argument('--split', default='train')
    parser.add_argument('--gt-size', type=int, default=192)
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--num-samples', type=int, default=200)
    parser.add_argument('--num-workers', type=int, default=0, help='0: read in this process (default).')
    parser.add_argument('--lq-downsample', nargs='+', default=['matlab'], choices=['matlab', 'torch'])
    parser.add_argument('--backends', nargs='+', default=['disk', 'lmdb'], choices=['disk', 'lmdb'])
    parser.add_argument('--phase', default='train', help="'train' (crops + flips) or 'val' (whole images).")
    return parser.parse_args()


def build(args: argparse.Namespace, backend: str, lq_downsample: str) -> PairedImageSegDataset:
    info = load_dataset_info(args.root)
    if backend == 'lmdb':
        roots = {k: osp.join(args.root, 'lmdb', f'{args.split}_{d}.lmdb') for k, d in (('gt', 'hr'), ('seg', 'seg'))}
    else:
        roots = {k: osp.join(args.root, args.split, d) for k, d in (('gt', 'hr'), ('seg', 'seg'))}
    return PairedImageSegDataset(
        dict(name=f'{osp.basename(osp.normpath(args.root))}-{backend}', phase=args.phase, scale=args.scale,
             dataroot_gt=roots['gt'], dataroot_seg=roots['seg'], io_backend=dict(type=backend),
             num_classes=info['num_classes'], ignore_index=info['ignore_index'], gt_size=args.gt_size,
             use_hflip=True, use_rot=True, lq_downsample=lq_downsample))


def time_samples(dataset: PairedImageSegDataset, num_samples: int, num_workers: int) -> float:
    """Seconds to produce ``num_samples`` samples in random order."""
    rng = random.Random(0)
    indices = [rng.randrange(len(dataset)) for _ in range(num_samples)]
    if num_workers == 0:
        dataset[indices[0]]  # warm-up: opens the file client
        start = time.perf_counter()
        for i in indices:
            dataset[i]
        return time.perf_counter() - start
    loader = DataLoader(dataset, batch_size=1, sampler=indices, num_workers=num_workers, persistent_workers=False)
    iterator = iter(loader)
    next(iterator)  # warm-up: starts the workers
    start = time.perf_counter()
    count = 1
    for _ in iterator:
        count += 1
    return (time.perf_counter() - start) * num_samples / max(count - 1, 1)


def main() -> None:
    args = parse_args()
    print(f'{args.root} [{args.split}], phase {args.phase}, gt_size {args.gt_size}, scale {args.scale}, '
          f'{args.num_samples} samples, num_workers {args.num_workers}')
    for lq_downsample in args.lq_downsample:
        for backend in args.backends:
            seconds = time_samples(build(args, backend, lq_downsample), args.num_samples, args.num_workers)
            print(f'  {backend:5s} lq_downsample={lq_downsample:7s} {args.num_samples / seconds:8.1f} samples/s '
                  f'({1000 * seconds / args.num_samples:6.1f} ms/sample)')


if __name__ == '__main__':
    main()
