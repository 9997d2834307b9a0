#!/usr/bin/env bash
# Install the peers the benchmarks compare against, and the bench extras, quietly; safe to
# run again (only what is missing is installed).
# - Debian's janus (benchmarks/janus.py), with iproute2 and util-linux for its private
#   network namespace: needs root and apt-get; otherwise says what is missing.
# - .venv's bench extras (pip install -e .[bench]) when .venv exists (scripts/setup.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v janus >/dev/null 2>&1 || missing+=(janus)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
{ command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ]; } || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log=$(mktemp)
    # The package's own service must not start (the benchmark runs a private Janus): Debian's
    # policy-rc.d convention, only if the machine has no policy of its own.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    fi
    ok=1
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1 || ok=0
    [ -n "$policy" ] && rm -f "$policy"
    if [ "$ok" = 0 ]; then
      tail -n 5 "$log" >&2
      rm -f "$log"
      echo "bench-setup: apt-get install ${missing[*]} failed" >&2
      exit 1
    fi
    rm -f "$log"
    # Nor start at boot, where systemd runs.
    if [ -d /run/systemd/system ]; then systemctl disable janus >/dev/null 2>&1 || true; fi
  else
    echo "bench-setup: missing ${missing[*]}; install as root: apt-get install ${missing[*]}" >&2
  fi
fi

if [ -x .venv/bin/python ]; then
  log=$(mktemp)
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[bench]" >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2 || true
    rm -f "$log"
    echo "bench-setup: pip install -e .[bench] failed" >&2
    exit 1
  fi
  rm -f "$log"
fi
