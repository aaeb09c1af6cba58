#!/usr/bin/env bash
# Set up (install segsr with its test extra at the versions in constraints.txt) and run the test suite on CPU.
# Usage: bash scripts/run_tests.sh [extra pytest args]
#   SEGSR_SKIP_INSTALL=1       run with the packages already installed
#   SEGSR_DEPS=latest          install the newest releases that setup.py allows instead of constraints.txt
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SEGSR_SKIP_INSTALL:-0}" != "1" ]; then
  case "${SEGSR_DEPS:-pinned}" in
    pinned) deps=(-c constraints.txt) ;;
    latest) deps=(--upgrade --upgrade-strategy eager) ;;
    *) echo "SEGSR_DEPS must be 'pinned' or 'latest', got '${SEGSR_DEPS}'" >&2; exit 2 ;;
  esac
  python -m pip install --disable-pip-version-check -q "${deps[@]}" -e '.[dev]'
fi
python -m pytest tests "$@"
