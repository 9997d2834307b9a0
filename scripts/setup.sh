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
# The native fan-out sender (ccctl/media/native, built by pip below) needs a C compiler and
# Python's headers: as root, install what is missing, as scripts/services.sh does for
# PostgreSQL. Without them (or with CCCTL_NATIVE_BUILD=0) the build is skipped and the fan-out
# uses its Python path.
if [ "${CCCTL_NATIVE_BUILD:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  need=""
  command -v cc >/dev/null 2>&1 || need="gcc libc6-dev"
  if ! .venv/bin/python -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    case "$(readlink -f "$(command -v "$py")")" in /usr/bin/*) need="$need $(basename "$(readlink -f "$(command -v "$py")")")-dev" ;; esac
  fi
  if [ -n "$need" ]; then
    # shellcheck disable=SC2086
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need; } >/dev/null 2>&1 \
      || echo "setup: could not install$need; the fan-out will use its Python path" >&2
  fi
fi
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
.venv/bin/python -c 'from ccctl.media import native; print("setup:", native.describe())' >&2
