#!/usr/bin/env bash
# Sourced by scripts/test.sh: make sure the real services the tests use are there.
# - PostgreSQL: a private throw-away cluster on a free loopback port, exported as
#   CCCTL_TEST_PG (unless CCCTL_TEST_PG is already set). Installed from Debian if missing.
# - OpenSSH sshd: installed from Debian if missing (the tests start their own on loopback).
# Installing needs root and apt-get; without them the PostgreSQL and sshd tests say why they
# did not run.

_can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
_apt_updated=""
_apt_install() {
  _can_apt || return 1
  if [ -z "$_apt_updated" ]; then apt-get update -qq >/dev/null 2>&1 || true; _apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

_pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return 0; }; done
  return 1
}

# - Chromium: Debian's build, for the join page's browser test (Playwright drives it).
if ! command -v chromium >/dev/null 2>&1; then
  _apt_install chromium || echo "services: chromium not available; the browser test will say so" >&2
fi

if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
  _apt_install openssh-server || echo "services: sshd not available; the OpenSSH tests will say so" >&2
fi

# - Janus: Debian's janus, for the edge tests (tests/edges start their own in network
#   namespaces). The package's own service must not start: policy-rc.d says so during the
#   install (only if the machine has no policy of its own), as scripts/bench-setup.sh does.
if ! command -v janus >/dev/null 2>&1 && [ ! -x /usr/bin/janus ] && _can_apt; then
  _janus_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    _janus_policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$_janus_policy" && chmod +x "$_janus_policy"
  fi
  _apt_install --no-install-recommends janus iproute2 || echo "services: janus not available; the edge tests will say so" >&2
  if [ -n "$_janus_policy" ]; then rm -f "$_janus_policy"; fi
  if [ -d /run/systemd/system ]; then systemctl disable janus >/dev/null 2>&1 || true; fi
  unset _janus_policy
fi

# Run a command as the owner of the private cluster: postgres when we are root (initdb
# refuses root), else ourselves.
_as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }

if [ -z "${CCCTL_TEST_PG:-}" ]; then
  pgbin=$(_pg_bin || true)
  if [ -z "$pgbin" ]; then
    _apt_install postgresql || true
    pgbin=$(_pg_bin || true)
  fi
  if [ -n "$pgbin" ] && { [ "$(id -u)" != 0 ] || id postgres >/dev/null 2>&1; }; then
    pgdir=$(mktemp -d /tmp/ccctl-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres "$pgdir"
    pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # A throw-away password: other local users cannot log in to the test server.
    pgpass=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    printf '%s\n' "$pgpass" > "$pgdir/pwfile"
    [ "$(id -u)" = 0 ] && chown postgres "$pgdir/pwfile"
    if _as_pg "'$pgbin/initdb' -D '$pgdir/data' -A scram-sha-256 --pwfile='$pgdir/pwfile' -U postgres -E UTF8 >'$pgdir/initdb.log' 2>&1 && \
        '$pgbin/pg_ctl' -D '$pgdir/data' -l '$pgdir/server.log' -w -o \"-c listen_addresses=127.0.0.1 -p $pgport -k '$pgdir' -c fsync=off\" start >/dev/null"; then
      rm -f "$pgdir/pwfile"
      export CCCTL_TEST_PG="postgresql://postgres:$pgpass@127.0.0.1:$pgport/postgres"
      _ccctl_pg_stop() { _as_pg "'$pgbin/pg_ctl' -D '$pgdir/data' -m immediate stop >/dev/null 2>&1"; rm -rf "$pgdir"; }
      trap _ccctl_pg_stop EXIT
      echo "services: PostgreSQL on 127.0.0.1:$pgport" >&2
    else
      echo "services: PostgreSQL did not start; see $pgdir" >&2
    fi
  else
    echo "services: no PostgreSQL; the PostgreSQL tests will say so" >&2
  fi
fi
