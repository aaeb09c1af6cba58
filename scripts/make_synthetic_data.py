"""Write a synthetic labelled street-scene dataset in segsr's layout (see :mod:`segsr.data.synthetic`; also
``segsr-make-synthetic``).

Example:
    python scripts/make_synthetic_data.py --out datasets/synthetic --num-train 64 --num-val 16 --lmdb
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from segsr.data.synthetic import main  # noqa: E402

if __name__ == '__main__':
    main()
