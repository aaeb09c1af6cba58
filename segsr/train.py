"""Training entry point: ``python segsr/train.py -opt options/X.yml`` (same flags as ``basicsr/train.py``).

Experiments go to ``./experiments/<name>`` under the current directory, or to ``path.experiments_root``.
Multi-process: ``torchrun --nproc_per_node=N segsr/train.py -opt X.yml --launcher pytorch`` (NCCL on GPUs, gloo on
CPU).
Mixed precision: ``train.amp: bf16`` or ``auto`` (see :mod:`segsr.utils.amp`), for stock BasicSR models too.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make the repository importable ahead of segsr/ itself
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import segsr  # noqa: E402,F401  (registration before basicsr's pipeline)
import basicsr.train  # noqa: E402

from segsr.compat import apply_basicsr_fixes  # noqa: E402
from segsr.utils.amp import with_amp  # noqa: E402


def main() -> None:
    apply_basicsr_fixes()
    basicsr.train.build_model = with_amp(basicsr.train.build_model)  # honour train.amp for every model type
    basicsr.train.train_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
