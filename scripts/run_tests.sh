#!/usr/bin/env bash
# Set up (install segsr with its test extra) and run the test suite on CPU.
# Usage: bash scripts/run_tests.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SEGSR_SKIP_INSTALL:-0}" != "1" ]; then
  python -m pip install --disable-pip-version-check -q -e '.[dev]'
fi
python -m pytest -q -p no:cacheprovider tests "$@"
