"""Build LMDBs of images or label maps that BasicSR's FileClient reads (keys = file stems).

Examples:
    # one folder
    python scripts/create_lmdb.py --input datasets/camvid/train/seg --lmdb datasets/camvid/lmdb/train_seg.lmdb --label
    # every split of a dataset in our layout: <root>/lmdb/{train,val}_{hr,seg}.lmdb
    python scripts/create_lmdb.py --layout datasets/camvid

An existing LMDB is kept unless --overwrite is given; LMDBs are built in a temporary folder and renamed into place.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import segsr  # noqa: E402,F401  (before basicsr)
from segsr.data.lmdb_util import make_layout_lmdbs, make_lmdb  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--input', help='Folder of images or label maps.')
    source.add_argument('--layout', help='Dataset root in our layout: converts <split>/hr and <split>/seg.')
    parser.add_argument('--lmdb', help='Output LMDB folder (ends with .lmdb); required with --input.')
    parser.add_argument('--label', action='store_true', help='The folder holds single-channel label maps.')
    parser.add_argument('--splits', nargs='+', help='With --layout: splits to convert (default: all present).')
    parser.add_argument('--compress-level', type=int, default=1, help='PNG compression level 0..9 (default 1).')
    parser.add_argument('--overwrite', action='store_true', help='Replace existing LMDBs.')
    args = parser.parse_args()
    if args.input and not args.lmdb:
        parser.error('--lmdb is required with --input.')
    return args


def main() -> None:
    args = parse_args()
    if args.layout:
        paths = make_layout_lmdbs(args.layout, args.splits, args.compress_level, args.overwrite)
    else:
        make_lmdb(args.input, args.lmdb, label=args.label, compress_level=args.compress_level, overwrite=args.overwrite)
        paths = [args.lmdb]
    for path in paths:
        print(f'Wrote {path}')


if __name__ == '__main__':
    try:
        main()
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        sys.exit(f'create_lmdb: {err}')
