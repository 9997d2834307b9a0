"""Roll-call probes: TCP reachability and an SSH login that runs the site's diagnostics.

Each probe returns a ``ProbeOutcome`` and never raises for the site's failure (only
cancellation propagates), so a runner can fan out over thousands of sites and get
one classified answer per site, as in asyncssh's ``examples/gather_results.py``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from ccctl.models import CheckState, Endpoint
from ccctl.rollcall.pool import (
    ClientKey,
    ConnectionPool,
    LocalConfigError,
    ServeAnswer,
    exec_command,
    kernel_rtt_ms,
)
from ccctl.rollcall.shfacts import AGENT, PROBE_COMMAND, SERVE_FLAG, SERVE_PROBE_COMMAND, parse_facts, parse_line

#: The agent's name on a box: it answers with one line of JSON facts.
DIAG_COMMAND = AGENT

#: The agent's long-lived form, kept open per pooled connection: it answers every line it
#: reads with the same JSON line, until EOF.
SERVE_COMMAND = f"{DIAG_COMMAND} {SERVE_FLAG}"

#: The fact under which ssh_probe records how long ccctl-diag took (exec round trip, ms).
EXEC_FACT = "ssh_exec_ms"

# Close probe sockets with an RST (SO_LINGER 0): a roll-call of 10,000 sites every few
# minutes would otherwise leave 10,000 sockets in TIME_WAIT on the command-room host.
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass
class ProbeOutcome:
    """What one probe found: a state, why, the round trip in ms and any facts gathered.

    ``rtt_ms`` is the probe's own round trip (TCP handshake; SSH exec round trip);
    ``net_rtt_ms`` is the network RTT the kernel measured on the probe's TCP
    connection, free of our event loop's lag and of the box's command time.
    """

    state: CheckState
    reason: str = ""
    rtt_ms: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    net_rtt_ms: float | None = None


@functools.lru_cache(maxsize=65536)
def _ip_family(host: str) -> int | None:
    """The address family of an IP literal, or None for a host name."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


async def _resolve(host: str, port: int) -> tuple[int, tuple[Any, ...]]:
    """(family, sockaddr) for the endpoint; IP literals skip the resolver thread."""
    family = _ip_family(host)
    if family is not None:
        return family, (host, port)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    fam, _type, _proto, _canon, addr = infos[0]
    return fam, addr


# Created non-blocking in one call where the OS allows (Linux), saving setblocking's fcntl.
_NONBLOCK_STREAM = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)

# connect() results that mean "the handshake goes on; wait until the socket is writable".
_CONNECTING = frozenset({errno.EINPROGRESS, errno.EINTR})


async def _connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, addr: tuple[Any, ...],
                   deadline: float) -> None:
    """Connect a non-blocking socket, waiting for writability until ``deadline`` (loop time).

    What ``loop.sock_connect`` does, minus its per-call partials, done-callbacks and
    transport checks, with the deadline as one timer instead of an ``asyncio.timeout``
    scope: this is the per-site path of every roll-call, warm ones included.
    Raises TimeoutError at the deadline and OSError (ConnectionRefusedError, ...) on failure.
    """
    err = sock.connect_ex(addr)
    if err in _CONNECTING:
        fd = sock.fileno()
        waiter: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            loop.remove_writer(fd)
            if not waiter.done():
                waiter.set_result(None)

        def expire() -> None:
            if not waiter.done():
                waiter.set_exception(TimeoutError())

        loop.add_writer(fd, ready)
        timer = loop.call_at(deadline, expire)
        try:
            await waiter
        except BaseException:
            loop.remove_writer(fd)
            raise
        finally:
            timer.cancel()
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))  # OSError picks the subclass for the errno


async def tcp_probe(endpoint: Endpoint, timeout: float) -> ProbeOutcome:
    """Open a TCP connection to the site's SSH port, time the handshake, and close it.

    Uses a bare non-blocking socket and our own writability wait (``_connect``): no
    transport, protocol or stream objects (``open_connection`` costs about twice as
    much) and about 10 µs less per probe than ``loop.sock_connect``. The RTT is the kernel's handshake measurement where Linux
    offers it (TCP_INFO), because a wall-clock timer would add the event loop's lag when
    thousands of probes finish at once; elsewhere the timer is used.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sock: socket.socket | None = None
    try:
        family = _ip_family(endpoint.host)
        if family is not None:
            addr: tuple[Any, ...] = (endpoint.host, endpoint.port)
        else:
            async with asyncio.timeout_at(deadline):
                family, addr = await _resolve(endpoint.host, endpoint.port)
        sock = socket.socket(family, _NONBLOCK_STREAM)
        if not _NONBLOCK_STREAM & ~socket.SOCK_STREAM:
            sock.setblocking(False)
        t0 = time.perf_counter()
        await _connect(loop, sock, addr, deadline)
        net_rtt_ms = kernel_rtt_ms(sock)
        rtt_ms = net_rtt_ms if net_rtt_ms is not None else (time.perf_counter() - t0) * 1000.0
    except ConnectionRefusedError:
        return ProbeOutcome(CheckState.UNREACHABLE, "connection refused")
    except TimeoutError:
        return ProbeOutcome(CheckState.TIMEOUT, f"no TCP answer within {timeout:g} s")
    except socket.gaierror as exc:
        return ProbeOutcome(CheckState.UNREACHABLE, f"cannot resolve {endpoint.host}: {exc.strerror}")
    except OSError as exc:
        return ProbeOutcome(*_oserror_state(exc))
    finally:
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            except OSError:
                pass
            sock.close()
    return ProbeOutcome(CheckState.OK, "", rtt_ms, net_rtt_ms=net_rtt_ms)


# Errors of this host, not of the site: reported as ERROR so nobody drives to a commune.
_LOCAL_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL}


def _oserror_state(exc: OSError) -> tuple[CheckState, str]:
    """UNREACHABLE with the errno text, or ERROR when the fault is on this host."""
    if exc.errno in _LOCAL_ERRNOS:
        return CheckState.ERROR, f"local: {_oserror_text(exc)}"
    return CheckState.UNREACHABLE, _oserror_text(exc)


def _oserror_text(exc: OSError) -> str:
    """A short errno text such as ``no route to host``."""
    if exc.errno is not None and exc.errno in errno.errorcode:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def describe_error(exc: BaseException, timeout: float) -> tuple[CheckState, str]:
    """Map an exception from an SSH login or command to a state and a one-line reason."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return CheckState.HOSTKEY_MISMATCH, f"host key mismatch: {exc.reason}"
    if isinstance(exc, asyncssh.KeyExchangeFailed) and "host key" in exc.reason.lower():
        # The expected key is of a type the box does not offer at all.
        return CheckState.HOSTKEY_MISMATCH, f"host key mismatch: {exc.reason}"
    if isinstance(exc, asyncssh.PermissionDenied):
        return CheckState.AUTH_FAILED, f"login refused: {exc.reason}"
    if isinstance(exc, (TimeoutError, asyncssh.TimeoutError)):
        return CheckState.TIMEOUT, f"no SSH answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return CheckState.UNREACHABLE, "connection refused"
    if isinstance(exc, asyncssh.ConnectionLost):
        return CheckState.UNREACHABLE, f"connection lost: {exc.reason}"
    if isinstance(exc, (ConnectionError, asyncssh.ChannelOpenError)) and "closed" in str(exc):
        return CheckState.UNREACHABLE, f"connection lost: {exc}"
    if isinstance(exc, socket.gaierror):
        return CheckState.UNREACHABLE, f"cannot resolve host: {exc.strerror}"
    if isinstance(exc, LocalConfigError):
        return CheckState.ERROR, str(exc)
    if isinstance(exc, OSError):
        return _oserror_state(exc)
    return CheckState.ERROR, _short(f"{type(exc).__name__}: {exc}")


def _short(text: str, limit: int = 200) -> str:
    """One line, at most ``limit`` characters, for a reason column."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def parse_diag(stdout: str) -> dict[str, Any]:
    """The facts from the SSH stage's output: the agent's JSON or the ``sh`` facts line.

    See ``shfacts.parse_facts``; raises ValueError with a short message otherwise.
    """
    return parse_facts(stdout)


def _parse_answer(line: bytes) -> dict[str, Any]:
    """The facts from one serve answer line (already the facts line, no banner to skip)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("diag output is not JSON (not UTF-8)") from None
    return parse_line(text.strip())


async def ssh_probe(
    endpoint: Endpoint,
    timeout: float,
    client_key: ClientKey = None,
    pool: ConnectionPool | None = None,
) -> ProbeOutcome:
    """Log in with host-key verification, read the box's facts and return them.

    The facts come from ``ccctl-diag`` where the box has it, else from one ``sh`` line
    (``shfacts.PROBE_COMMAND``; ``facts_via`` says which). With a pool they come from the
    connection's long-lived serve session (one line out, one line back) where the box
    keeps one, else from one command per probe. ``rtt_ms`` (and the ``ssh_exec_ms`` fact) is the diagnostics round trip (the
    serve request, or channel open, command and exit status), never the login;
    ``net_rtt_ms`` is the SSH connection's TCP RTT as the kernel measured it. The whole
    probe, login included, is bounded by ``timeout``.
    """
    answer: ServeAnswer | None = None
    try:
        async with asyncio.timeout(timeout):
            if pool is not None:
                answer = await pool.serve_query(endpoint, SERVE_PROBE_COMMAND, timeout=timeout,
                                                client_key=client_key)
            if answer is None:
                result, rtt_ms, net_rtt_ms = await exec_command(
                    endpoint, PROBE_COMMAND, timeout=timeout, client_key=client_key, pool=pool
                )
    except Exception as exc:  # noqa: BLE001 - a site's failure is a result, not a crash
        state, reason = describe_error(exc, timeout)
        if state is CheckState.HOSTKEY_MISMATCH and not endpoint.host_key:
            reason = "host key not verifiable: none recorded for this site and none in ~/.ssh/known_hosts"
        return ProbeOutcome(state, reason)
    if answer is not None:
        try:
            facts = _parse_answer(answer.line)
        except ValueError as exc:
            return ProbeOutcome(CheckState.ERROR, str(exc), answer.exec_ms, net_rtt_ms=answer.net_rtt_ms)
        facts[EXEC_FACT] = round(answer.exec_ms, 3)
        return ProbeOutcome(CheckState.OK, "", answer.exec_ms, facts, answer.net_rtt_ms)
    if result.exit_status != 0:
        detail = _short(_text(result.stderr) or _text(result.stdout), 120)
        status = exit_text(result)
        reason = f"{DIAG_COMMAND} exited {status}" + (f": {detail}" if detail else "")
        return ProbeOutcome(CheckState.ERROR, reason, rtt_ms, net_rtt_ms=net_rtt_ms)
    try:
        facts = parse_diag(_text(result.stdout))
    except ValueError as exc:
        return ProbeOutcome(CheckState.ERROR, str(exc), rtt_ms, net_rtt_ms=net_rtt_ms)
    facts[EXEC_FACT] = round(rtt_ms, 3)
    return ProbeOutcome(CheckState.OK, "", rtt_ms, facts, net_rtt_ms)


def exit_text(result: asyncssh.SSHCompletedProcess) -> str:
    """``3`` or ``signal KILL``: how the remote command ended."""
    if result.exit_status is not None and result.exit_status >= 0:
        return str(result.exit_status)
    if result.exit_signal:
        return f"signal {result.exit_signal[0]}"
    return "without status"


def _text(data: str | bytes | None) -> str:
    """Command output as text whatever encoding asyncssh handed back."""
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data
