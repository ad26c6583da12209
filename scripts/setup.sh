#!/usr/bin/env bash
# Creates .venv (Python 3.11) and installs geotrain with the given extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train}"
python=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# pip (not uv/poetry): it takes the pinned torch wheels from this machine's disk
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
