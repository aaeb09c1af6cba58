"""Testing entry point: ``python segsr/test.py -opt options/X.yml`` (same flags as ``basicsr/test.py``).

Results go to ``./results/<name>`` under the current directory, or to ``path.results_root``.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make the repository importable ahead of segsr/ itself
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import segsr  # noqa: E402,F401  (registration before basicsr's pipeline)
import basicsr.test  # noqa: E402

from segsr.compat import apply_basicsr_fixes  # noqa: E402


def main() -> None:
    apply_basicsr_fixes()
    basicsr.test.test_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
