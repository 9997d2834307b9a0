#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install ccctl into it, editable, with the extras named in $1
# (e.g. "test"). Safe to run again: it only installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."
py=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    py=$candidate; break
  fi
done
[ -n "$py" ] || { echo "setup: Python 3.11 or newer is needed" >&2; exit 1; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
extras=${1:-}
spec="."
[ -n "$extras" ] && spec=".[$extras]"
log=$(mktemp)
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" >"$log" 2>&1; then
  grep -v '^WARNING: Location' "$log" >&2 || true
  rm -f "$log"
  echo "setup: pip install failed" >&2
  exit 1
fi
rm -f "$log"
.venv/bin/python -c 'import ccctl.cli' || { echo "setup: ccctl did not install" >&2; exit 1; }
