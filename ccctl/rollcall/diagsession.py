"""The persistent diagnostics channel of a pooled SSH connection (``ccctl-diag --serve``).

A warm probe over the pool should cost one line written and one line read, two SSH
packets, not a channel open, an exec request and the exit-status, EOF and close exchange
of a command per probe. So each pooled connection may carry one long-lived session running
the agent's serve command; this module is that session (``DiagSession``: requests out,
answer lines matched back in order) and the per-connection bookkeeping around it
(``DiagChannel``: open on first use, note how a session ended, replace one that died,
and give up for boxes that have no serve command so they fall back to one command per
probe). Connections, their locks and their replacement stay with ``ConnectionPool``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import NamedTuple, cast

import asyncssh

from ccctl.rollcall.shfacts import MAX_LINE, is_facts_line

#: A connection whose serve sessions died (or could not open) this often gets one
#: command per probe instead.
_MAX_SERVE_DEATHS = 3

#: An answer line longer than this is no diagnostics line: the session is closed.
_MAX_LINE = MAX_LINE


class SessionEnded(Exception):
    """A serve session's channel closed while the connection stayed up."""


class DiagSession(asyncssh.SSHClientSession[bytes]):
    """The client end of one long-lived serve channel: a line out, a line back.

    Requests may be pipelined (several sites behind one pooled connection): the agent
    answers each line once and in order, so answers go to waiters first in, first out; a
    cancelled waiter keeps its place so the answers after it still line up. Requests made
    in the same event-loop pass leave as one SSH packet. Lines are
    split here from the raw bytes, without asyncssh's stream layer and codec, because this
    is the per-probe path of a warm roll-call. Output before the first facts line (shell
    noise) is skipped; stderr is ignored; a line longer than ``_MAX_LINE`` ends the session.
    """

    def __init__(self) -> None:
        self._chan: asyncssh.SSHClientChannel[bytes] | None = None
        self._buf = b""
        self._waiters: deque[asyncio.Future[bytes]] = deque()
        self._unsent = 0
        self.answers = 0
        self.ended = False
        self.exit_status: int | None = None
        self.exit_signal: str | None = None

    @property
    def unsupported(self) -> bool:
        """True once ended in a way that says the box has no serve command.

        A serve agent never exits by itself while its input is open, so a channel that
        ended before its first answer (command not found, unknown option) or with exit
        status 0 (an old agent that ignored the flag, printed once and exited) means
        "not here"; a signal or error after answers means the session died.
        """
        return self.ended and (self.answers == 0 or self.exit_status == 0)

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self._chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype is not None:
            return
        buf = self._buf + data if self._buf else data
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            line = buf[start:end]
            start = end + 1
            if not self.answers and not is_facts_line(line):
                continue
            self.answers += 1
            if self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(line)
        self._buf = buf[start:]
        if len(self._buf) > _MAX_LINE and self._chan is not None:
            self._chan.close()

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every waiter: with the connection's error if it died, else ``SessionEnded``."""
        self.ended = True
        error = exc if exc is not None else SessionEnded()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def ask(self) -> asyncio.Future[bytes]:
        """Send one request line; the future gets the answer line (without its newline)."""
        if self.ended or self._chan is None:
            raise SessionEnded()
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        self._unsent += 1
        if self._unsent == 1:
            loop.call_soon(self._flush)
        return waiter

    def _flush(self) -> None:
        """Send the request lines asked for since the last flush, in one packet."""
        count, self._unsent = self._unsent, 0
        if not self.ended and self._chan is not None:
            try:
                self._chan.write(b"\n" * count)
            except OSError:
                pass  # the channel is closing: connection_lost fails the waiters


class ServeAnswer(NamedTuple):
    """One answer line of a serve session with its timings."""

    line: bytes  # the answer, without its newline
    exec_ms: float  # request written to answer read, by the wall clock
    net_rtt_ms: float | None  # the SSH connection's TCP RTT as the kernel measured it


class DiagChannel:
    """One pooled connection's serve session and whether it is still worth having.

    ``off`` means "one command per probe from now on": the box has no serve command,
    or its sessions died (or could not open) ``_MAX_SERVE_DEATHS`` times.
    """

    def __init__(self) -> None:
        self.session: DiagSession | None = None
        self.off = False
        self.deaths = 0

    async def ask(
        self, conn: asyncssh.SSHClientConnection, command: str, lock: asyncio.Lock
    ) -> tuple[bytes, float] | None:
        """One answer line and its round trip in ms, opening a session first if needed.

        Returns None when the box gets no session (see ``open``). Raises
        ``SessionEnded`` if the session ended before answering; on a live connection
        that end is noted first, so the caller may retry for a fresh session unless
        ``off``. Other errors (the connection's) propagate unnoted.
        """
        session = self.session
        try:
            if session is not None and session.ended:
                self.ended(session)
                session = None
            if session is None:
                async with lock:
                    session = await self.open(conn, command)
                if session is None:
                    return None
            t0 = time.perf_counter()
            line = await session.ask()
            return line, (time.perf_counter() - t0) * 1000.0
        except SessionEnded:
            if not conn.is_closed():
                assert session is not None
                self.ended(session)
            raise

    async def open(self, conn: asyncssh.SSHClientConnection, command: str) -> DiagSession | None:
        """The live serve session, opened now if needed; None if the box gets none.

        Call under the site's lock so concurrent probes share one session. A session
        refused on a live connection counts as a death (this probe runs the one-shot
        command; after ``_MAX_SERVE_DEATHS`` the connection stops trying); a dead
        connection raises, for the caller's reconnect.
        """
        session = self.session
        if session is not None and not session.ended:
            return session
        if self.off:
            return None
        try:
            _chan, opened = await conn.create_session(DiagSession, command, encoding=None)
        except asyncssh.ChannelOpenError:
            if conn.is_closed():
                raise
            self.deaths += 1
            self.off = self.deaths >= _MAX_SERVE_DEATHS
            return None
        self.session = cast(DiagSession, opened)
        return self.session

    def ended(self, session: DiagSession) -> None:
        """Note, once, how a serve session ended: unsupported, or died (to be replaced)."""
        if self.session is not session:
            return
        self.session = None
        if session.unsupported:
            self.off = True
        else:
            self.deaths += 1
            if self.deaths >= _MAX_SERVE_DEATHS:
                self.off = True
