"""SSH connections for roll-call: cached client options and a pool kept open between rounds.

A cold SSH login costs a key exchange, a signature and a host-key check; across
thousands of sites that is most of a roll-call's CPU. Two things cut it:

* ``ClientOptions`` parses each private key, expected host key and known_hosts file
  once and builds one ``SSHClientConnectionOptions`` per (client key, keepalive)
  pair. asyncssh re-runs ``prepare()`` on every ``connect()`` even when ``options=``
  is given, so what matters is that the kwargs it re-reads are already-parsed
  objects (no file reads, no key parsing) and that ``config=None`` stops it from
  looking for ``~/.ssh/config`` on every connection.
* ``ConnectionPool`` keeps one authenticated connection per (host, port, user) with
  SSH keepalives, so a warm roll-call pays no login.
* ``ConnectionPool.serve_query`` goes further: it keeps one long-lived session per pooled connection
  running the agent's serve command (``ccctl-diag --serve``), so a warm probe is one line
  written and one line read, two SSH packets, instead of a channel open, an exec request
  and the exit-status, EOF and close exchange of a command per probe. Boxes without it
  fall back to one command per probe. The session itself and its bookkeeping live in
  ``ccctl.rollcall.diagsession``; here the pool lends it a connection, that connection's
  lock, and a fresh login when the connection dies.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import asyncssh

from ccctl.models import Endpoint
from ccctl.rollcall.diagsession import DiagChannel, ServeAnswer, SessionEnded

#: What the caller may hand over as the login key: a parsed key, a path, or None
#: (then the endpoint's ``key_path``, then asyncssh's defaults are used).
ClientKey = asyncssh.SSHKey | str | None

#: The verification input asyncssh accepts: None (no check), a parsed known_hosts
#: object, or a tuple of (trusted host keys, trusted CA keys, revoked keys).
KnownHosts = Any

_NO_CHECK = "no-check"

# AES-GCM first: asyncssh runs chacha20-poly1305 as several cryptography calls per
# packet, which was a quarter of a cold login's client CPU; AES-GCM is one call (and
# AES-NI). The defaults stay behind it for boxes without GCM.
PREFERRED_CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"


class LocalConfigError(Exception):
    """A local key or known_hosts file could not be read: our mistake, not the site's."""


# Linux's struct tcp_info: tcpi_rtt (smoothed RTT in microseconds) is the u32 at byte 68.
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_TCPI_RTT = struct.Struct("=I")
_TCPI_RTT_OFFSET = 68


def kernel_rtt_ms(sock: Any) -> float | None:
    """The kernel's smoothed RTT of a connected TCP socket in ms, or None if unavailable.

    Why: a wall-clock timer in a busy event loop adds the loop's own lag (hundreds of
    ms when 500 logins finish together), which would mark healthy sites as slow.
    """
    if _TCP_INFO is None or sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCPI_RTT_OFFSET + 4)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCPI_RTT_OFFSET + 4:
        return None
    rtt_us = _TCPI_RTT.unpack_from(info, _TCPI_RTT_OFFSET)[0]
    return rtt_us / 1000.0 if rtt_us else None


def _mtime(path: str) -> int:
    """The file's mtime in ns, so cached parses follow edits to the file."""
    return os.stat(path).st_mtime_ns


class ClientOptions:
    """Parse keys and known_hosts once and hand out shared connection options.

    Why: 10,000 logins with ``client_keys=[path]`` read and parse the same key file
    10,000 times; here each distinct key, host key line and known_hosts file is parsed
    once per process (re-read when the file's mtime changes).
    """

    def __init__(self) -> None:
        self._keys: dict[tuple[str, int], asyncssh.SSHKey] = {}
        self._host_keys: dict[str, KnownHosts] = {}
        self._known_hosts_files: dict[tuple[str, int], KnownHosts] = {}
        self._options: dict[tuple[bytes | None, float], asyncssh.SSHClientConnectionOptions] = {}

    def client_key(self, endpoint: Endpoint, client_key: ClientKey) -> asyncssh.SSHKey | None:
        """The key to log in with: the endpoint's own ``key_path`` wins over the run default."""
        chosen: ClientKey = endpoint.key_path or client_key
        if chosen is None or isinstance(chosen, asyncssh.SSHKey):
            return chosen
        path = os.path.expanduser(chosen)
        try:
            cache_key = (path, _mtime(path))
            key = self._keys.get(cache_key)
            if key is None:
                key = asyncssh.read_private_key(path)
                self._keys[cache_key] = key
        except (OSError, ValueError, asyncssh.KeyImportError) as exc:
            raise LocalConfigError(f"cannot read client key {path}: {exc}") from exc
        return key

    def known_hosts(self, endpoint: Endpoint) -> KnownHosts:
        """The host-key expectation for one endpoint, parsed once per distinct input.

        An OpenSSH public key line becomes a trusted-key list (no host-name
        matching, the key is tied to the site); ``known_hosts:/path`` loads that
        file; no key at all falls back to ``~/.ssh/known_hosts`` like ``ssh`` does.
        """
        if not endpoint.verify_host_key:
            return None
        spec = (endpoint.host_key or "").strip()
        if spec.startswith("known_hosts:"):
            return self._known_hosts_file(os.path.expanduser(spec[len("known_hosts:"):]))
        if not spec:
            default = os.path.expanduser("~/.ssh/known_hosts")
            if os.path.isfile(default):
                return self._known_hosts_file(default)
            return ([], [], [])
        trusted = self._host_keys.get(spec)
        if trusted is None:
            try:
                trusted = ([asyncssh.import_public_key(spec)], [], [])
            except (ValueError, asyncssh.KeyImportError) as exc:
                raise LocalConfigError(f"bad expected host key: {exc}") from exc
            self._host_keys[spec] = trusted
        return trusted

    def _known_hosts_file(self, path: str) -> KnownHosts:
        """One parsed known_hosts file, re-read when it changes."""
        try:
            cache_key = (path, _mtime(path))
            parsed = self._known_hosts_files.get(cache_key)
            if parsed is None:
                parsed = asyncssh.read_known_hosts(path)
                self._known_hosts_files[cache_key] = parsed
        except (OSError, ValueError) as exc:
            raise LocalConfigError(f"cannot read known_hosts {path}: {exc}") from exc
        return parsed

    def options(
        self, key: asyncssh.SSHKey | None, keepalive_interval: float = 0.0
    ) -> asyncssh.SSHClientConnectionOptions:
        """Shared options for one login key: public-key auth only, no config files, no agent."""
        cache_key = (key.public_data if key is not None else None, keepalive_interval)
        opts = self._options.get(cache_key)
        if opts is None:
            kwargs: dict[str, Any] = {
                "config": None,
                "known_hosts": None,
                "x509_trusted_certs": None,
                "x509_trusted_cert_paths": [],
                "preferred_auth": "publickey",
                "gss_kex": False,
                "gss_auth": False,
                "password_auth": False,
                "kbdint_auth": False,
                "host_based_auth": False,
                "request_pty": False,
                "encryption_algs": PREFERRED_CIPHERS,
                "keepalive_interval": keepalive_interval,
                "keepalive_count_max": 3,
            }
            if key is not None:
                kwargs["client_keys"] = [key]
                kwargs["agent_path"] = None
            opts = asyncssh.SSHClientConnectionOptions(**kwargs)
            self._options[cache_key] = opts
        return opts


#: The process-wide cache used when the caller does not bring one.
DEFAULT_OPTIONS = ClientOptions()


async def connect_ssh(
    endpoint: Endpoint,
    *,
    timeout: float,
    client_key: ClientKey = None,
    keepalive_interval: float = 0.0,
    options: ClientOptions | None = None,
) -> asyncssh.SSHClientConnection:
    """Open and authenticate one SSH connection with verified host key; raises on failure."""
    cache = options or DEFAULT_OPTIONS
    key = cache.client_key(endpoint, client_key)
    return await asyncssh.connect(
        endpoint.host,
        endpoint.port,
        options=cache.options(key, keepalive_interval),
        config=None,
        username=endpoint.user,
        known_hosts=cache.known_hosts(endpoint),
        connect_timeout=timeout,
        login_timeout=timeout,
    )


def _verify_spec(endpoint: Endpoint) -> tuple[str, str | None]:
    """What a pooled connection was verified against; a change forces a new login."""
    if not endpoint.verify_host_key:
        return (_NO_CHECK, endpoint.key_path)
    return (endpoint.host_key or "", endpoint.key_path)


@dataclass
class _Entry:
    conn: asyncssh.SSHClientConnection
    verify: tuple[str, str | None]
    users: int = 0
    sock: Any = None  # the connection's socket, for the kernel RTT
    diag: DiagChannel = field(default_factory=DiagChannel)


class ConnectionPool:
    """Authenticated SSH connections kept open between roll-call rounds.

    Keyed by (host, port, user). Connections carry SSH keepalives so a dead link is
    noticed and closed by asyncssh; ``acquire`` drops closed ones and reconnects.
    ``max_size`` bounds open connections (least recently used idle ones are closed
    first). Whoever creates the pool owns it and must ``await pool.close()``.
    """

    def __init__(
        self,
        *,
        keepalive_interval: float = 30.0,
        max_size: int = 20000,
        options: ClientOptions | None = None,
    ) -> None:
        self.keepalive_interval = keepalive_interval
        self.max_size = max_size
        self.options = options or DEFAULT_OPTIONS
        self._entries: OrderedDict[tuple[str, int, str], _Entry] = OrderedDict()
        self._locks: dict[tuple[str, int, str], asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.opened = 0
        self.reused = 0
        self._closed = False

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(endpoint: Endpoint) -> tuple[str, int, str]:
        """The pool key of an endpoint."""
        return (endpoint.host, endpoint.port, endpoint.user)

    def live_rtt_ms(self, endpoint: Endpoint) -> float | None:
        """The kernel RTT of a live, verified pooled connection to ``endpoint``, else None.

        A warm round uses it instead of a fresh TCP connect: the open connection, kept
        under SSH keepalives, already proves the endpoint reachable.
        """
        entry = self._entries.get(self.key(endpoint))
        if entry is None or entry.conn.is_closed() or entry.verify != _verify_spec(endpoint):
            return None
        rtt = kernel_rtt_ms(entry.sock)
        return rtt if rtt is not None else 0.0

    async def acquire(
        self, endpoint: Endpoint, *, timeout: float, client_key: ClientKey = None
    ) -> tuple[asyncssh.SSHClientConnection, bool]:
        """A live connection to the endpoint and whether it was reused; raises on login failure.

        Call ``release`` when done with it (it stays open in the pool).
        """
        entry, reused = await self._checkout(endpoint, timeout=timeout, client_key=client_key)
        return entry.conn, reused

    async def _checkout(
        self, endpoint: Endpoint, *, timeout: float, client_key: ClientKey
    ) -> tuple[_Entry, bool]:
        """The live entry for the endpoint (logging in if needed), counted as in use.

        A live, matching entry is handed out without the lock: the lock only keeps two
        probes of one site from logging in twice.
        """
        if self._closed:
            raise RuntimeError("connection pool is closed")
        key = self.key(endpoint)
        entry = self._entries.get(key)
        if entry is not None and not entry.conn.is_closed() and entry.verify == _verify_spec(endpoint):
            self.reused += 1
            self._entries.move_to_end(key)
            entry.users += 1
            return entry, True
        async with self._lock(key):
            entry = self._entries.get(key)
            if entry is not None and (
                entry.conn.is_closed() or entry.verify != _verify_spec(endpoint)
            ):
                self._drop(key, entry)
                entry = None
            if entry is not None:
                self.reused += 1
                self._entries.move_to_end(key)
                reused = True
            else:
                conn = await connect_ssh(
                    endpoint,
                    timeout=timeout,
                    client_key=client_key,
                    keepalive_interval=self.keepalive_interval,
                    options=self.options,
                )
                self.opened += 1
                if self._closed:  # closed while we were logging in
                    self._close_later(conn)
                    raise RuntimeError("connection pool is closed")
                entry = _Entry(conn, _verify_spec(endpoint), sock=conn.get_extra_info("socket"))
                self._entries[key] = entry
                self._evict()
                reused = False
            entry.users += 1
            return entry, reused

    def _lock(self, key: tuple[str, int, str]) -> asyncio.Lock:
        """The site's lock: one login, and one serve session opening, at a time per key."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def serve_query(
        self, endpoint: Endpoint, command: str, *, timeout: float, client_key: ClientKey = None
    ) -> ServeAnswer | None:
        """Ask the box's long-lived ``command`` session on the pooled connection for one line.

        The session is opened on first use and kept with the connection, so a warm
        request is one line out and one line back. Returns None when the box has no such
        session (the command ended before answering, or exited 0 as an old agent ignoring
        the flag): the caller then runs its one-shot command, and the pool remembers that
        for this connection. A dead connection or session is replaced once, as in
        ``exec_command``; a timeout or cancellation drops the connection, since its
        session may be wedged. Raises the underlying exception on failure; callers
        classify it.
        """
        key = self.key(endpoint)
        known = self._entries.get(key)
        if known is not None and known.diag.off and not known.conn.is_closed():
            return None
        for attempt in (1, 2):
            entry, reused = await self._checkout(endpoint, timeout=timeout, client_key=client_key)
            try:
                asked = await entry.diag.ask(entry.conn, command, self._lock(key))
            except SessionEnded:
                if entry.conn.is_closed():
                    self.discard(endpoint, entry.conn)
                    if reused and attempt == 1:
                        continue
                    raise asyncssh.ConnectionLost("SSH connection closed") from None
                if entry.diag.off or attempt == 2:
                    return None
                continue
            except _STALE_ERRORS:
                self.discard(endpoint, entry.conn)
                if reused and attempt == 1:
                    continue
                raise
            except BaseException:
                self.discard(endpoint, entry.conn)
                raise
            finally:
                entry.users -= 1
            if asked is None:
                return None
            line, exec_ms = asked
            return ServeAnswer(line, exec_ms, kernel_rtt_ms(entry.sock))
        raise AssertionError("unreachable")  # pragma: no cover

    def release(self, endpoint: Endpoint, conn: asyncssh.SSHClientConnection) -> None:
        """Hand a connection back after use."""
        entry = self._entries.get(self.key(endpoint))
        if entry is not None and entry.conn is conn:
            entry.users = max(0, entry.users - 1)

    def discard(self, endpoint: Endpoint, conn: asyncssh.SSHClientConnection) -> None:
        """Close and forget a connection that failed, so the next acquire logs in afresh."""
        key = self.key(endpoint)
        entry = self._entries.get(key)
        if entry is not None and entry.conn is conn:
            self._drop(key, entry)
        else:
            self._close_later(conn)

    def _drop(self, key: tuple[str, int, str], entry: _Entry) -> None:
        del self._entries[key]
        self._close_later(entry.conn)

    def _close_later(self, conn: asyncssh.SSHClientConnection) -> None:
        """Close without blocking the caller; ``close()`` awaits the stragglers."""
        conn.close()
        task = asyncio.ensure_future(conn.wait_closed())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _evict(self) -> None:
        """Close least recently used idle connections above ``max_size``."""
        if len(self._entries) <= self.max_size:
            return
        for key, entry in list(self._entries.items()):
            if len(self._entries) <= self.max_size:
                break
            if entry.users == 0:
                self._drop(key, entry)

    async def close(self) -> None:
        """Close every connection and wait until they are all closed; the pool is then unusable."""
        self._closed = True
        entries, self._entries = list(self._entries.values()), OrderedDict()
        for entry in entries:
            entry.conn.close()
        await asyncio.gather(
            *(entry.conn.wait_closed() for entry in entries),
            *self._closing,
            return_exceptions=True,
        )

    async def __aenter__(self) -> ConnectionPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ExecOutcome(NamedTuple):
    """A finished remote command with its timings."""

    result: asyncssh.SSHCompletedProcess
    exec_ms: float  # channel open + command + exit status, by the wall clock
    net_rtt_ms: float | None  # the SSH connection's TCP RTT as the kernel measured it


async def _timed_run(conn: asyncssh.SSHClientConnection, command: str) -> ExecOutcome:
    """Run ``command`` on an open connection and time it."""
    t0 = time.perf_counter()
    result = await conn.run(command, check=False)
    exec_ms = (time.perf_counter() - t0) * 1000.0
    return ExecOutcome(result, exec_ms, kernel_rtt_ms(conn.get_extra_info("socket")))


#: Errors on a reused connection that mean "the link died while idle": reconnect once.
_STALE_ERRORS = (
    asyncssh.ChannelOpenError,
    asyncssh.ConnectionLost,
    asyncssh.DisconnectError,
    ConnectionError,
    BrokenPipeError,
)


async def _exec_once(
    endpoint: Endpoint, command: str, *, timeout: float, client_key: ClientKey
) -> ExecOutcome:
    """Open a connection, run one command, close it: the pool-less path."""
    conn = await connect_ssh(endpoint, timeout=timeout, client_key=client_key)
    try:
        return await _timed_run(conn, command)
    finally:
        conn.close()
        await conn.wait_closed()


async def exec_command(
    endpoint: Endpoint,
    command: str,
    *,
    timeout: float,
    client_key: ClientKey = None,
    pool: ConnectionPool | None = None,
) -> ExecOutcome:
    """Run one command on a site and return its result and timings.

    With a pool the connection is reused and, if a reused one turns out dead, dropped
    and replaced once. Without a pool a connection is opened and closed around the
    command. Raises the underlying exception on failure; callers classify it.
    """
    if pool is None:
        return await _exec_once(endpoint, command, timeout=timeout, client_key=client_key)
    for attempt in (1, 2):
        conn, reused = await pool.acquire(endpoint, timeout=timeout, client_key=client_key)
        try:
            outcome = await _timed_run(conn, command)
        except _STALE_ERRORS:
            pool.discard(endpoint, conn)
            if reused and attempt == 1:
                continue
            raise
        except BaseException:
            # A timeout or cancellation mid-command may leave the channel wedged.
            pool.discard(endpoint, conn)
            raise
        pool.release(endpoint, conn)
        return outcome
    raise AssertionError("unreachable")  # pragma: no cover

