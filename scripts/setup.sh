#!/usr/bin/env bash
# Creates .venv (Python 3.11) and installs geotrain with the given extras. Safe to run again: it does
# nothing when pyproject.toml has not changed since the last install of the same extras.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train}"
python=${PYTHON:-python3.11}
stamp=".venv/.installed-${extras}"
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi
echo "Installing geotrain[${extras}] into .venv (the first time takes a few minutes: torch is large)..." >&2
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# pip (not uv/poetry): it takes the pinned torch wheels from this machine's disk. The venv's own pip (23.2)
# does it; upgrading it first only cost a trip to the registry.
.venv/bin/python -m pip install -qq -e ".[${extras}]"
echo "$wanted" > "$stamp"
