"""Convert a SegNet-layout CamVid folder into segsr's layout (see :mod:`segsr.data.camvid`; also
``segsr-prepare-camvid``).

Example:
    python scripts/prepare_camvid.py --src ../shared/data/camvid --out datasets/camvid
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from segsr.data.camvid import main  # noqa: E402

if __name__ == '__main__':
    main()
