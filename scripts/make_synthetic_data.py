"""Write a synthetic labelled street-scene dataset in segsr's layout (optionally with LMDBs).

Example:
    python scripts/make_synthetic_data.py --out datasets/synthetic --num-train 64 --num-val 16 --lmdb
"""
import argparse
import os.path as osp
import shutil
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import segsr  # noqa: E402,F401  (before basicsr)
from segsr.data.lmdb_util import make_layout_lmdbs  # noqa: E402
from segsr.data.synthetic import write_synthetic_dataset  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='datasets/synthetic', help='Output root (default datasets/synthetic).')
    parser.add_argument('--num-train', type=int, default=64)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--height', type=int, default=256)
    parser.add_argument('--width', type=int, default=256)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-classes', type=int, default=6, help='2..6 (default 6).')
    parser.add_argument('--lmdb', action='store_true', help='Also write <out>/lmdb/{train,val}_{hr,seg}.lmdb.')
    parser.add_argument('--overwrite', action='store_true', help='Delete an existing output folder first.')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if osp.exists(args.out):
        if not args.overwrite:
            sys.exit(f"make_synthetic_data: '{args.out}' exists; pass --overwrite to replace it.")
        shutil.rmtree(args.out)
    info = write_synthetic_dataset(args.out, args.num_train, args.num_val, args.height, args.width, args.seed,
                                   args.num_classes)
    print(f"Wrote {args.num_train} train and {args.num_val} val scenes ({info['num_classes']} classes: "
          f"{', '.join(info['class_names'])}) to {args.out}")
    if args.lmdb:
        for path in make_layout_lmdbs(args.out):
            print(f'Wrote {path}')


if __name__ == '__main__':
    main()
