#!/usr/bin/env bash
# Installs everything and serves on the embedded default: SQLite in ./.geotrain, the local file share
# /fileShares/geotrain, one worker in the server process. Extra arguments go to `geotrain serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh train
exec .venv/bin/geotrain serve "$@"
