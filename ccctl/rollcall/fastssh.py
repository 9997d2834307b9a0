"""A cold SSH probe on libssh2 (ssh2-python) driven by the asyncio event loop, no threads.

Why: a cold roll-call login through asyncssh spends most of its client CPU in asyncssh's
pure-Python protocol layer. libssh2 does the key exchange, host-key signature check,
publickey auth and channel work in C; here Python only waits for the socket. Each login
is a generator of non-blocking libssh2 calls that yields, on ``LIBSSH2_ERROR_EAGAIN``, the
directions libssh2 is blocked on (``session.block_directions()``); its ``_Connection``
resumes it when the socket is ready that way. All sockets of a loop sit in one epoll set
of their own (``_Reactor``), which the loop watches as a single reader, and the stages'
deadlines sit in one heap with one loop timer: a wait costs an ``epoll_ctl`` only when
the direction changes, a wake-up one callback for every socket ready together, and a
whole tcp+ssh check one future, with no asyncio Handle, timer or task per wait.

``fast_ssh_probe`` keeps the semantics of ``probes.ssh_probe`` without a pool: the same
host-key expectations (parsed by ``pool.DEFAULT_OPTIONS``, matched by asyncssh), the same
client key resolution, states, reasons, facts and timings.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import os
import select
import socket
import time
import weakref
from collections.abc import Generator
from typing import Any, NamedTuple

import asyncssh

from ccctl.models import CheckState, Endpoint
from ccctl.rollcall.pool import DEFAULT_OPTIONS, ClientKey, LocalConfigError, kernel_rtt_ms
from ccctl.rollcall.probes import (
    DIAG_COMMAND,
    EXEC_FACT,
    PROBE_COMMAND,
    ProbeOutcome,
    _ip_family,
    _oserror_state,
    _resolve,
    _short,
    parse_diag,
)

try:
    from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
    from ssh2.exceptions import SSH2Error
    from ssh2.session import (
        LIBSSH2_METHOD_COMP_CS,
        LIBSSH2_METHOD_COMP_SC,
        LIBSSH2_METHOD_CRYPT_CS,
        LIBSSH2_METHOD_CRYPT_SC,
        LIBSSH2_METHOD_HOSTKEY,
        LIBSSH2_METHOD_KEX,
        LIBSSH2_METHOD_MAC_CS,
        LIBSSH2_METHOD_MAC_SC,
        LIBSSH2_SESSION_BLOCK_INBOUND,
        LIBSSH2_SESSION_BLOCK_OUTBOUND,
        Session,
    )
except ImportError as _exc:  # pragma: no cover - depends on the installation
    _MISSING: str | None = f"ssh2-python is not installed ({_exc})"
    SSH2Error = OSError  # never raised; keeps the except clauses valid
    LIBSSH2_ERROR_EAGAIN = -37
    LIBSSH2_SESSION_BLOCK_INBOUND, LIBSSH2_SESSION_BLOCK_OUTBOUND = 1, 2
else:
    _MISSING = None
_HAS_EPOLL = hasattr(select, "epoll")
if not _HAS_EPOLL:  # pragma: no cover - Linux has it
    _MISSING = "the libssh2 engine needs Linux epoll"

_IN = LIBSSH2_SESSION_BLOCK_INBOUND
_OUT = LIBSSH2_SESSION_BLOCK_OUTBOUND
_EAGAIN = LIBSSH2_ERROR_EAGAIN

# Only algorithms without known weaknesses: libssh2 still offers SHA-1 kex, ssh-rsa
# signatures, CBC, arcfour and 3DES by default. kex-strict-c is the Terrapin
# (CVE-2023-48795) countermeasure and must stay in the list once it is set by hand.
_KEX = ",".join((
    "curve25519-sha256", "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
    "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256", "diffie-hellman-group-exchange-sha256",
    "ext-info-c", "kex-strict-c-v00@openssh.com",
))
# AES-GCM first: one AES-NI call per packet.
_CIPHERS = ("aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,"
            "aes128-ctr,aes192-ctr,aes256-ctr")
_MACS = "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256,hmac-sha2-512"
_METHOD_PREFS = () if _MISSING else (
    (LIBSSH2_METHOD_CRYPT_CS, _CIPHERS), (LIBSSH2_METHOD_CRYPT_SC, _CIPHERS),
    (LIBSSH2_METHOD_MAC_CS, _MACS), (LIBSSH2_METHOD_MAC_SC, _MACS),
    (LIBSSH2_METHOD_COMP_CS, "none"), (LIBSSH2_METHOD_COMP_SC, "none"),
)
#: Host-key signature algorithms we accept, in order of preference.
HOSTKEY_ALGS = (
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "rsa-sha2-512", "rsa-sha2-256",
)
_ALL_HOSTKEY_ALGS = ",".join(HOSTKEY_ALGS)

# Sockets are created non-blocking in one call where the OS allows it (Linux).
_SOCK_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
_READ_SIZE = 32768
_MAX_STDOUT = 1 << 20  # a box that floods us is broken; stop reading there
_MAX_STDERR = 4096  # only used for a one-line reason
_DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_CACHE_LIMIT = 65536

_LOST = {-2, -3, -7, -13, -43}  # banner recv/send, socket send, disconnect, socket recv
_KEX_FAILED = {-5, -8, -33}  # kex failure, key exchange failure, method not supported
_AUTH_REFUSED = {-18, -19}  # authentication failed, publickey unverified


def available() -> str | None:
    """None when the libssh2 engine can run here, else why not (ssh2-python missing)."""
    return _MISSING


class _Failed(Exception):
    """A classified failure of one login: its state and one-line reason."""

    def __init__(self, state: CheckState, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason


class _KexFailed(Exception):
    """No common algorithm: told apart from a host-key type mismatch by the caller."""


class _Policy(NamedTuple):
    """What the server's host key must be: trusted and revoked blobs, algorithms to offer."""

    trusted: frozenset[bytes]
    revoked: frozenset[bytes]
    algs: str  # comma list for LIBSSH2_METHOD_HOSTKEY


class _Exec(NamedTuple):
    """A finished remote command."""

    status: int
    stdout: bytes
    stderr: bytes
    exec_ms: float


_policies: dict[tuple[str, str, str, int], tuple[object, _Policy]] = {}
_pems: dict[int, tuple[asyncssh.SSHKey, tuple[bytes, bytes]]] = {}


def _policy(endpoint: Endpoint, addr: str) -> _Policy | None:
    """The host-key policy of an endpoint, None when verification is off.

    The expectation object comes from ``DEFAULT_OPTIONS.known_hosts`` (cached per key
    line and per known_hosts file and mtime), so parsing and errors match ssh_probe;
    the match result is cached as long as that object is the same.
    """
    known = DEFAULT_OPTIONS.known_hosts(endpoint)
    if known is None:
        return None
    cache_key = (endpoint.host_key or "", endpoint.host, addr, endpoint.port)
    hit = _policies.get(cache_key)
    if hit is not None and hit[0] is known:
        return hit[1]
    port = endpoint.port if endpoint.port != 22 else None
    keys, _cas, revoked, *_x509 = asyncssh.match_known_hosts(known, endpoint.host, addr, port)
    offered = {alg.decode() for key in keys for alg in key.sig_algorithms}
    algs = ",".join(a for a in HOSTKEY_ALGS if a in offered) or _ALL_HOSTKEY_ALGS
    policy = _Policy(
        frozenset(key.public_data for key in keys),
        frozenset(key.public_data for key in revoked),
        algs,
    )
    if len(_policies) >= _CACHE_LIMIT:
        _policies.clear()
    _policies[cache_key] = (known, policy)
    return policy


def _client_pems(endpoint: Endpoint, client_key: ClientKey) -> list[tuple[bytes, bytes]]:
    """Private keys to offer, in OpenSSH format (what libssh2 reads), parsed as ssh_probe does.

    Keys are read through ``DEFAULT_OPTIONS.client_key`` (cached per path and mtime;
    unreadable -> LocalConfigError) and re-exported once, so PKCS#8 or PEM keys that
    libssh2 cannot parse still work. Without any key, the usual ~/.ssh/id_* are tried.
    """
    if endpoint.key_path or client_key is not None:
        keys = [DEFAULT_OPTIONS.client_key(endpoint, client_key)]
    else:
        keys = []
        for path in _DEFAULT_KEYS:
            if os.path.isfile(os.path.expanduser(path)):
                try:
                    keys.append(DEFAULT_OPTIONS.client_key(endpoint, path))
                except LocalConfigError:
                    continue  # e.g. passphrase-protected: asyncssh skips those too
    pems = []
    for key in keys:
        if key is None:
            continue
        hit = _pems.get(id(key))
        if hit is None or hit[0] is not key:
            hit = (key, (key.export_private_key("openssh"), key.export_public_key("openssh")))
            if len(_pems) >= _CACHE_LIMIT:
                _pems.clear()
            _pems[id(key)] = hit
        pems.append(hit[1])
    return pems


def _strip(exc: BaseException) -> BaseException:
    """Drop tracebacks (and their frames' locals) so no libssh2 object outlives its socket."""
    seen: BaseException | None = exc
    while seen is not None:
        seen.__traceback__ = None
        seen = seen.__cause__ or seen.__context__
    return exc


class _Reactor:
    """Every probe socket of one event loop in one epoll set, which the loop itself watches.

    Why: asyncio's ``add_reader``/``remove_reader`` and its per-event dispatch (a Handle,
    a context switch into it, selector bookkeeping) are pure Python, and a login waits
    on its socket about ten times. Here a wait is one ``epoll_ctl`` made in C, and one
    loop callback serves every socket that became ready together (level-triggered: a
    socket left readable is reported again). Deadlines are kept the same way: a heap of
    (time, connection) entries in C and one loop timer for the earliest, instead of a
    ``TimerHandle`` (and its Python-level heap comparisons) per stage of every login.
    A deadline fires at most ``_TIMER_SLACK`` late, never early. The reactor is made
    when the first connection of a loop starts waiting and closed when the last one
    stops, so no descriptor or timer outlives a run.
    """

    __slots__ = ("_loop", "_epoll", "_conns", "_deadlines", "_timer", "_timer_at", "_seq")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._conns: dict[int, _Connection] = {}
        self._deadlines: list[tuple[float, int, _Connection, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._seq = 0  # ties in the heap never compare connections
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    @staticmethod
    def of(loop: asyncio.AbstractEventLoop) -> _Reactor:
        """The loop's reactor, made on first use."""
        reactor = _reactors.get(loop)
        if reactor is None:
            reactor = _reactors[loop] = _Reactor(loop)
        return reactor

    def add(self, conn: _Connection, want: int) -> None:
        """Wait for ``conn``'s socket in directions ``want``, until its run's deadline."""
        try:
            self._epoll.register(conn.fd, _EPOLL_MASK[want])
        except OSError:
            if not self._conns:
                self._close()
            raise
        self._conns[conn.fd] = conn
        if conn._done is not None:
            self.expire_at(conn.deadline, conn, conn.runs)

    def remove(self, conn: _Connection) -> None:
        """Stop waiting for ``conn``'s socket; the last one out closes the reactor."""
        self._epoll.unregister(conn.fd)
        del self._conns[conn.fd]
        if not self._conns:
            self._close()

    def expire_at(self, when: float, conn: _Connection, run: int) -> None:
        """Call ``conn.expire(run)`` at loop time ``when`` (a no-op if that run is over by then).

        Entries hold the connection, never the run's future, so a result is not kept
        alive until its deadline comes due.
        """
        self._seq += 1
        heapq.heappush(self._deadlines, (when, self._seq, conn, run))
        if self._timer is None or when < self._timer_at:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # Coalesced: one wake-up serves every deadline within the slack.
        self._timer_at = max(when, self._loop.time() + _TIMER_SLACK)
        self._timer = self._loop.call_at(self._timer_at, self._expire)

    def _expire(self) -> None:
        self._timer = None
        heap = self._deadlines
        now = self._loop.time()
        while heap and heap[0][0] <= now:
            when, _seq, conn, run = heapq.heappop(heap)
            if conn.deadline == when:
                conn.expire(run)  # may close this reactor, which empties the heap
        if heap:
            self._arm(heap[0][0])

    def _dispatch(self) -> None:
        """Step every connection whose socket is ready."""
        conns = self._conns
        for fd, _events in self._epoll.poll(0):
            conn = conns.get(fd)
            if conn is not None:
                conn.step()

    def _close(self) -> None:
        # Only when no connection waits: every entry left in the heap is stale.
        if _reactors.get(self._loop) is self:
            del _reactors[self._loop]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        if not self._loop.is_closed():
            self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()


_reactors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Reactor] = weakref.WeakKeyDictionary()
# libssh2's block directions (1 inbound, 2 outbound, 3 both) as epoll event masks.
_EPOLL_MASK = (0, select.EPOLLIN, select.EPOLLOUT, select.EPOLLIN | select.EPOLLOUT) if _HAS_EPOLL else ()
_TIMER_SLACK = 0.01


def _connect_steps(sock: socket.socket, addr: tuple[Any, ...]) -> Generator[int, None, None]:
    """A non-blocking TCP connect; raises OSError (ConnectionRefusedError, ...) on failure."""
    err = sock.connect_ex(addr)
    if err in (errno.EINPROGRESS, errno.EAGAIN):
        yield _OUT
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


class _Connection:
    """One probe connection: its socket, libssh2 session and channel, and the steps it runs.

    ``run`` drives a generator of non-blocking calls: each time it yields the directions
    it is blocked on, the connection waits (through the loop's ``_Reactor``) until the
    socket is ready that way and resumes it; registrations change only when the wanted
    directions do. A run ends with TimeoutError at its ``deadline``, which the steps
    may move (``set_deadline``) when one stage ends and the next begins. ``close`` frees
    the channel and session before it closes the socket: freed after, libssh2 could
    write its goodbye to a reused fd number of another connection.
    """

    __slots__ = ("sock", "fd", "session", "channel", "handshaken", "deadline", "tcp_rtt_ms", "runs",
                 "_loop", "_reactor", "_steps", "_want", "_done")

    def __init__(self, loop: asyncio.AbstractEventLoop, family: int) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM | _SOCK_NONBLOCK)
        if not _SOCK_NONBLOCK:
            self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.session: Any = None
        self.channel: Any = None
        self.handshaken = False
        self.deadline = 0.0  # loop time at which the current stage times out
        self.tcp_rtt_ms: float | None = None  # set once connected, by the fused tcp+ssh steps
        self.runs = 0  # runs started: the current one's number tells its deadlines from older ones
        self._loop = loop
        self._reactor: _Reactor | None = None  # while waiting
        self._steps: Generator[int, None, Any] | None = None
        self._want = 0  # the directions registered with the reactor
        self._done: asyncio.Future[Any] | None = None  # the current run's result

    def run(self, steps: Generator[int, None, Any], deadline: float) -> asyncio.Future[Any]:
        """Start ``steps``; the future gets what they return or raise, or TimeoutError at ``deadline``."""
        self._steps = steps
        self._done = done = self._loop.create_future()
        self.runs += 1
        self.deadline = deadline
        self.step()
        return done

    def set_deadline(self, deadline: float) -> None:
        """Move the current run's deadline (called from its steps)."""
        self.deadline = deadline
        if self._reactor is not None and self._done is not None:
            self._reactor.expire_at(deadline, self, self.runs)

    def step(self) -> None:
        """Run the steps until they block again, or settle the future."""
        done = self._done
        assert self._steps is not None and done is not None
        try:
            want = self._steps.send(None) or _IN
        except StopIteration as stop:
            self._settle()
            if not done.done():  # cancelled by the awaiting task's own timeout
                done.set_result(stop.value)
            return
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting probe
            self._settle()
            if not done.done():  # cancelled by the awaiting task's own timeout
                done.set_exception(_strip(exc))
            return
        except BaseException:
            self._settle()
            raise
        if want != self._want:
            try:
                self._watch(want)
            except OSError as exc:  # epoll_ctl refused (ENOMEM, ...): the run ends with it
                self._abort(done, exc)

    def expire(self, run: int) -> None:
        """The deadline of run number ``run`` passed: if it is still going, stop it and fail
        its future with TimeoutError."""
        if run == self.runs and self._done is not None:
            self._abort(self._done, TimeoutError())

    def _abort(self, done: asyncio.Future[Any], exc: Exception) -> None:
        """End the current run from outside its steps, its future failing with ``exc``."""
        self.stop()
        if not done.done():
            done.set_exception(exc)

    def _settle(self) -> None:
        """The run is over: stop waiting and forget it (its deadline entries go stale)."""
        self._watch(0)
        self._steps = None
        self._done = None

    def _watch(self, want: int) -> None:
        """Wait for exactly the directions in ``want`` (0: stop waiting)."""
        if want == self._want:
            return
        reactor = self._reactor
        if reactor is None:
            reactor = _Reactor.of(self._loop)
            reactor.add(self, want)
            self._reactor = reactor
        elif want:
            reactor._epoll.modify(self.fd, _EPOLL_MASK[want])
        else:
            reactor.remove(self)
            self._reactor = None
        self._want = want

    def stop(self) -> None:
        """Stop waiting and close the steps' generator, which frees its frame."""
        self._watch(0)
        steps, self._steps, self._done = self._steps, None, None
        if steps is not None:
            steps.close()

    def _failure(self, exc: SSH2Error, stage: str, endpoint: Endpoint) -> Exception:
        """Classify a libssh2 error raised during ``stage`` (while the session lives)."""
        code = self.session.last_errno() if self.session is not None else 0
        message = (self.session.last_error() if self.session is not None else "") or type(exc).__name__
        if code in _LOST:
            return _Failed(CheckState.UNREACHABLE, _short(f"connection lost: {message}"))
        if stage == "handshake" and code in _KEX_FAILED:
            return _KexFailed(message)
        if stage == "auth" and code in _AUTH_REFUSED:
            return _Failed(
                CheckState.AUTH_FAILED,
                f"login refused: Permission denied for user {endpoint.user} on host {endpoint.host}",
            )
        if stage == "auth" and code == -16:
            return _Failed(CheckState.ERROR, _short(f"cannot use client key: {message}"))
        return _Failed(CheckState.ERROR, _short(f"libssh2 {stage} failed: {message} ({code})"))

    def ssh_steps(
        self,
        endpoint: Endpoint,
        policy: _Policy | None,
        pems: list[tuple[bytes, bytes]] | None,
        command: str,
    ) -> Generator[int, None, Any]:
        """Handshake, check the host key, then (with ``pems``) log in and run ``command``.

        Yields the socket directions libssh2 waits for; returns an ``_Exec``, or with
        ``pems=None`` the negotiated host-key algorithm. Raises _Failed or _KexFailed.
        """
        sock = self.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.session = session = Session()
        session.set_blocking(False)
        session.method_pref(LIBSSH2_METHOD_KEX, _KEX)
        session.method_pref(LIBSSH2_METHOD_HOSTKEY, policy.algs if policy else _ALL_HOSTKEY_ALGS)
        for method, prefs in _METHOD_PREFS:
            session.method_pref(method, prefs)
        stage = "handshake"
        try:
            while session.handshake(sock) == _EAGAIN:
                yield session.block_directions()
            self.handshaken = True
            # Checked before anything is sent under the session; libssh2 has already
            # verified the server's signature with this key during the key exchange.
            blob = session.hostkey()[0]
            if policy is not None and (blob not in policy.trusted or blob in policy.revoked):
                why = "Host key is revoked" if blob in policy.revoked else "Host key is not trusted"
                raise _Failed(CheckState.HOSTKEY_MISMATCH, f"host key mismatch: {why} for host {endpoint.host}")
            if pems is None:
                return session.methods(LIBSSH2_METHOD_HOSTKEY)

            stage = "auth"
            refused: Exception | None = None
            for private, public in pems:
                try:
                    while session.userauth_publickey_frommemory(endpoint.user, private, "", public) == _EAGAIN:
                        yield session.block_directions()
                except SSH2Error as exc:
                    refused = self._failure(exc, stage, endpoint)
                    if isinstance(refused, _Failed) and refused.state is CheckState.AUTH_FAILED:
                        continue  # offer the next key, as ssh does
                    raise refused from None
                refused = None
                break
            if refused is not None or not pems:
                raise refused or _Failed(
                    CheckState.AUTH_FAILED,
                    f"login refused: no client key to offer for user {endpoint.user} on host {endpoint.host}",
                )

            stage = "exec"
            t0 = time.perf_counter()
            while (channel := session.open_session()) == _EAGAIN:
                yield session.block_directions()
            self.channel = channel
            del channel
            while self.channel.execute(command) == _EAGAIN:
                yield session.block_directions()
            read, read_stderr = self.channel.read, self.channel.read_stderr
            out: list[bytes] = []
            err_out: list[bytes] = []
            size = err_size = 0
            while True:
                # stderr first and stdout last: every read drains the socket into
                # libssh2, so only the call made just before waiting may decide to
                # wait, or an EOF taken in by another read is never noticed. Reading
                # stderr at all keeps a chatty box from filling the window and stalling.
                erc, edata = read_stderr(_READ_SIZE)
                while erc > 0:
                    if err_size < _MAX_STDERR:
                        err_out.append(edata)
                    err_size += erc
                    erc, edata = read_stderr(_READ_SIZE)
                rc, data = read(_READ_SIZE)
                if rc > 0:
                    size += rc
                    if size > _MAX_STDOUT:
                        raise _Failed(CheckState.ERROR, f"{_name(command)} output exceeds {_MAX_STDOUT} bytes")
                    out.append(data)
                    continue
                if rc != _EAGAIN:
                    break  # 0: end of stdout
                yield session.block_directions()
            erc, edata = read_stderr(_READ_SIZE)
            while erc > 0 and err_size < _MAX_STDERR:
                err_out.append(edata)
                err_size += erc
                erc, edata = read_stderr(_READ_SIZE)
            # The box closes the channel after sending the exit status; our own channel
            # close (EOF + CLOSE) would cost two packets and is implied by disconnect.
            while self.channel.wait_closed() == _EAGAIN:
                yield session.block_directions()
            exec_ms = (time.perf_counter() - t0) * 1000.0
            return _Exec(self.channel.get_exit_status(), b"".join(out), b"".join(err_out), exec_ms)
        except SSH2Error as exc:
            raise self._failure(exc, stage, endpoint) from None

    def close(self) -> None:
        """Stop waiting, say goodbye if logged in, free channel then session, close the socket."""
        self.stop()
        sock = self.sock
        if self.session is not None and self.handshaken:
            try:
                self.session.disconnect()  # one packet; EAGAIN just means it is not sent
            except SSH2Error:
                pass
        try:
            # On a shut-down socket any write libssh2 still attempts while freeing
            # (an unclosed channel's CLOSE) fails at once instead of returning EAGAIN,
            # which would make libssh2 skip the free and leak the session.
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.channel = None
        self.session = None
        sock.close()


def _both(conn: _Connection, addr: tuple[Any, ...], endpoint: Endpoint, policy: _Policy | None,
          pems: list[tuple[bytes, bytes]] | None, command: str) -> Generator[int, None, Any]:
    """Connect then run the SSH steps, as one run (one future for the whole login)."""
    yield from _connect_steps(conn.sock, addr)
    return (yield from conn.ssh_steps(endpoint, policy, pems, command))


def _tcp_then_ssh(conn: _Connection, addr: tuple[Any, ...], endpoint: Endpoint, client_key: ClientKey,
                  command: str, timeout: float) -> Generator[int, None, Any]:
    """The fused ``tcp`` and ``ssh`` stages as one run: connect, keep the handshake RTT in
    ``conn.tcp_rtt_ms``, give the login a fresh ``timeout``, then log in and run ``command``."""
    t0 = time.perf_counter()
    yield from _connect_steps(conn.sock, addr)
    rtt = kernel_rtt_ms(conn.sock)
    conn.tcp_rtt_ms = rtt if rtt is not None else (time.perf_counter() - t0) * 1000.0
    conn.set_deadline(conn._loop.time() + timeout)
    # Read only now, as the ssh stage: a local key problem is no reason to call a box down.
    policy = _policy(endpoint, addr[0])
    pems = _client_pems(endpoint, client_key)
    return (yield from conn.ssh_steps(endpoint, policy, pems, command))


async def _address(endpoint: Endpoint, deadline: float) -> tuple[int, tuple[Any, ...]]:
    """(family, sockaddr); IP literals at once, names through the resolver until ``deadline``."""
    family = _ip_family(endpoint.host)
    if family is not None:
        return family, (endpoint.host, endpoint.port)
    async with asyncio.timeout_at(deadline):
        return await _resolve(endpoint.host, endpoint.port)


async def _run_login(conn: _Connection, steps: Generator[int, None, Any], deadline: float, addr: tuple[Any, ...],
                     endpoint: Endpoint, policy: _Policy | None) -> _Exec:
    """Drive a login run to its result; a failed key exchange is explained before it is raised."""
    try:
        return await conn.run(steps, deadline)  # type: ignore[no-any-return]
    except _KexFailed as exc:
        if policy is None and conn.tcp_rtt_ms is not None:  # fused: the policy was read by the steps
            policy = _policy(endpoint, addr[0])
        raise await _explain_kex_failure(conn, addr, endpoint, policy, str(exc)) from None


async def _explain_kex_failure(
    failed: _Connection,
    addr: tuple[Any, ...],
    endpoint: Endpoint,
    policy: _Policy | None,
    message: str,
) -> _Failed:
    """Tell "the box has no host key of the expected type" from "no common algorithm".

    Only on this failure path: a second handshake (no login) offering every accepted
    host-key type, within what is left of the failed login's deadline. If that one
    succeeds, the box simply lacks the expected key type, which asyncssh also reports
    as a host-key mismatch.
    """
    if policy is not None and policy.algs != _ALL_HOSTKEY_ALGS:
        conn = _Connection(failed._loop, failed.sock.family)
        try:
            offered = await conn.run(_both(conn, addr, endpoint, None, None, ""), failed.deadline)
        except TimeoutError:
            raise  # the login's own deadline: a timeout, as without this second look
        except (_Failed, _KexFailed, OSError):
            pass
        else:
            return _Failed(
                CheckState.HOSTKEY_MISMATCH,
                f"host key mismatch: the box offers no {policy.algs} host key (it offers {offered})",
            )
        finally:
            conn.close()
    return _Failed(CheckState.ERROR, _short(f"key exchange failed: {message}"))


def _ssh_failure(exc: Exception, endpoint: Endpoint, timeout: float) -> ProbeOutcome:
    """The outcome of a failed login or command, worded as ``probes.describe_error`` does."""
    if isinstance(exc, _Failed):
        reason = exc.reason
        if exc.state is CheckState.HOSTKEY_MISMATCH and not endpoint.host_key:
            reason = "host key not verifiable: none recorded for this site and none in ~/.ssh/known_hosts"
        return ProbeOutcome(exc.state, reason)
    if isinstance(exc, TimeoutError):
        return ProbeOutcome(CheckState.TIMEOUT, f"no SSH answer within {timeout:g} s")
    if isinstance(exc, ConnectionRefusedError):
        return ProbeOutcome(CheckState.UNREACHABLE, "connection refused")
    if isinstance(exc, socket.gaierror):
        return ProbeOutcome(CheckState.UNREACHABLE, f"cannot resolve host: {exc.strerror}")
    if isinstance(exc, LocalConfigError):
        return ProbeOutcome(CheckState.ERROR, str(exc))
    if isinstance(exc, OSError):
        return ProbeOutcome(*_oserror_state(exc))
    return ProbeOutcome(CheckState.ERROR, _short(f"{type(exc).__name__}: {exc}"))


def _name(command: str) -> str:
    """How a reason names the command: the facts command by the agent's name."""
    return DIAG_COMMAND if command == PROBE_COMMAND else command


def _outcome(done: _Exec, command: str, net_rtt_ms: float | None) -> ProbeOutcome:
    """The probe's result from a finished command, as ssh_probe builds it."""
    if done.status != 0:
        detail = _short(done.stderr.decode("utf-8", "replace") or done.stdout.decode("utf-8", "replace"), 120)
        reason = f"{_name(command)} exited {done.status}" + (f": {detail}" if detail else "")
        return ProbeOutcome(CheckState.ERROR, reason, done.exec_ms, net_rtt_ms=net_rtt_ms)
    try:
        facts = parse_diag(done.stdout.decode("utf-8", "replace"))
    except ValueError as exc:
        return ProbeOutcome(CheckState.ERROR, str(exc), done.exec_ms, net_rtt_ms=net_rtt_ms)
    facts[EXEC_FACT] = round(done.exec_ms, 3)
    return ProbeOutcome(CheckState.OK, "", done.exec_ms, facts, net_rtt_ms)


async def fast_ssh_probe(
    endpoint: Endpoint,
    timeout: float,
    client_key: ClientKey = None,
    command: str = PROBE_COMMAND,
) -> ProbeOutcome:
    """Log in with host-key verification, run ``command`` and return its facts; never raises.

    The contract of ``probes.ssh_probe`` without a pool: ``rtt_ms`` is the exec round
    trip (channel open, command, exit status), ``net_rtt_ms`` the kernel's TCP RTT,
    and the whole probe, connect included, is bounded by ``timeout``. Only
    cancellation propagates.
    """
    if _MISSING is not None:
        return ProbeOutcome(CheckState.ERROR, _MISSING)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    conn: _Connection | None = None
    try:
        family, addr = await _address(endpoint, deadline)
        policy = _policy(endpoint, addr[0])
        pems = _client_pems(endpoint, client_key)
        conn = _Connection(loop, family)
        done = await _run_login(conn, _both(conn, addr, endpoint, policy, pems, command), deadline, addr,
                                endpoint, policy)
        net_rtt_ms = kernel_rtt_ms(conn.sock)
    except Exception as exc:  # noqa: BLE001 - a site's failure is a result, not a crash
        return _ssh_failure(exc, endpoint, timeout)
    finally:
        if conn is not None:
            conn.close()
    return _outcome(done, command, net_rtt_ms)


async def fast_tcp_ssh_probe(
    endpoint: Endpoint,
    timeout: float,
    client_key: ClientKey = None,
    command: str = PROBE_COMMAND,
    tcp_timeout: float | None = None,
) -> tuple[ProbeOutcome, str]:
    """The roll-call's ``tcp`` and ``ssh`` stages on one TCP connection: (outcome, stage).

    Why: a separate TCP probe costs a second connection per site (and, on the box, an
    sshd fork) only to learn what the SSH login's own connect shows. The connect is
    the ``tcp`` stage: bounded by ``tcp_timeout`` (default ``timeout``), classified and worded as ``tcp_probe``
    does, its kernel-measured handshake RTT kept as the ``tcp_rtt_ms`` fact. The
    login and command are then the ``ssh`` stage, bounded by a fresh ``timeout``, as
    ``fast_ssh_probe``. Both stages are one run of one connection, so a healthy site
    costs one future and one task wake-up. Never raises but for cancellation.
    """
    if _MISSING is not None:
        return ProbeOutcome(CheckState.ERROR, _MISSING), "ssh"
    loop = asyncio.get_running_loop()
    connect = tcp_timeout if tcp_timeout is not None else timeout
    deadline = loop.time() + connect
    conn: _Connection | None = None
    try:
        try:
            family, addr = await _address(endpoint, deadline)
            conn = _Connection(loop, family)
            done = await _run_login(conn, _tcp_then_ssh(conn, addr, endpoint, client_key, command, timeout),
                                    deadline, addr, endpoint, None)
        except Exception as exc:  # noqa: BLE001 - a site's failure is a result, not a crash
            tcp_rtt = conn.tcp_rtt_ms if conn is not None else None
            if tcp_rtt is None:
                return _tcp_failure(exc, endpoint, connect), "tcp"
            outcome = _ssh_failure(exc, endpoint, timeout)
        else:
            tcp_rtt = conn.tcp_rtt_ms
            outcome = _outcome(done, command, kernel_rtt_ms(conn.sock))
        assert tcp_rtt is not None
        outcome.facts["tcp_rtt_ms"] = round(tcp_rtt, 3)
        return outcome, "ssh"
    finally:
        if conn is not None:
            conn.close()


def fused_bound(timeout: float, tcp_timeout: float | None = None) -> float:
    """The longest ``fast_tcp_ssh_probe`` with these bounds can take: two stages, each
    ending at its deadline at the latest (plus the reactor's timer slack)."""
    connect = tcp_timeout if tcp_timeout is not None else timeout
    return connect + timeout + 2.0 * _TIMER_SLACK


def _tcp_failure(exc: Exception, endpoint: Endpoint, timeout: float) -> ProbeOutcome:
    """The outcome of a failed connect, worded as ``probes.tcp_probe`` does."""
    if isinstance(exc, ConnectionRefusedError):
        return ProbeOutcome(CheckState.UNREACHABLE, "connection refused")
    if isinstance(exc, TimeoutError):
        return ProbeOutcome(CheckState.TIMEOUT, f"no TCP answer within {timeout:g} s")
    if isinstance(exc, socket.gaierror):
        return ProbeOutcome(CheckState.UNREACHABLE, f"cannot resolve {endpoint.host}: {exc.strerror}")
    if isinstance(exc, OSError):
        return ProbeOutcome(*_oserror_state(exc))
    return ProbeOutcome(CheckState.ERROR, _short(f"{type(exc).__name__}: {exc}"))
