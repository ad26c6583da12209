#!/usr/bin/env bash
# Installs everything and runs the whole test suite (lint and types first). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# The browser tests drive Debian's Chromium: Playwright's own browser download cannot reach its host here.
# It installs beside the Python packages (both mostly wait on the disk).
chromium_log="$(mktemp)"
chromium_pid=""
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  install_chromium() { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium; }
  # the package lists on the machine first; refreshed only when they do not have it
  { install_chromium || { $sudo apt-get update -qq && install_chromium; }; } >"$chromium_log" 2>&1 &
  chromium_pid=$!
fi
bash scripts/setup.sh test
if [ -n "$chromium_pid" ] && ! wait "$chromium_pid"; then
  cat "$chromium_log" >&2
  echo "Chromium could not be installed: the browser tests will fail." >&2
fi
rm -f "$chromium_log"
# The PostgreSQL tests run against the local server for real: start it if it is down.
if command -v pg_ctlcluster >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort | tail -n 1)" main start || true
fi
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
# mypy takes half a minute from a cold cache: it checks beside the tests rather than before them
types_log="$(mktemp)"
.venv/bin/mypy >"$types_log" 2>&1 &
types=$!
status=0
.venv/bin/pytest -q "$@" || status=$?
if wait "$types"; then
  tail -n 1 "$types_log"
else
  cat "$types_log"
  status=1
fi
rm -f "$types_log"
exit "$status"
