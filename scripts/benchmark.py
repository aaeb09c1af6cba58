"""One-command benchmark of every method against stock BasicSR baselines (see :mod:`segsr.bench`).

Usage (from the repository root):
    python scripts/benchmark.py --profile quick --source ../shared/data/camvid # CamVid on CPU, ~105 min (starts cached)
    python scripts/benchmark.py --profile full --source ../shared/data/camvid    # CamVid on a CUDA GPU, bf16
    python scripts/benchmark.py --profile smoke     # tiny synthetic data, 2 iterations per step (CI)
Rerun the same command to resume an interrupted benchmark: finished steps and rows are skipped.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from segsr.benchmark import main  # noqa: E402

if __name__ == '__main__':
    main()
