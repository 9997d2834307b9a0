"""The media stage of a roll-call: a short WebRTC exchange with the box over SSH signalling.

The box's agent answers ``ccctl-media-probe``: it reads one JSON line ``{"sdp": OFFER}``,
answers with one line ``{"sdp": ANSWER}`` and echoes every data-channel message until the
channel closes. The data channel is unordered with no retransmissions, so lost packets stay
lost and show as loss. Pings spaced 10 ms apart give the RTT and loss; a burst of 1 KiB
messages gives a throughput estimate from the echoes' timing. ICE stays on the path the
SSH connection takes: we gather on its local address and check only the box's address,
with no STUN servers.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

import asyncssh

from ccctl.media.net import gather_only_on, only_peer
from ccctl.models import CheckState, Endpoint
from ccctl.rollcall.pool import ClientKey, ConnectionPool, connect_ssh, kernel_rtt_ms
from ccctl.rollcall.probes import ProbeOutcome, describe_error, exit_text

#: The command a box's agent answers with the WebRTC side of the media probe.
MEDIA_COMMAND = "ccctl-media-probe"
#: Exit status of a shell that does not know the command.
NOT_FOUND = 127

PINGS = 50
PING_INTERVAL_S = 0.010
PING_SIZE = 64
BURST_MESSAGES = 64
BURST_SIZE = 1024
#: After the last send, stop waiting for echoes once none came for this long.
QUIET_S = 0.25
#: The burst's echoes are awaited this long at most (a capped link echoes slowly).
BURST_WAIT_S = 2.0
#: Time kept free before the probe's deadline to close everything down.
TEARDOWN_S = 0.2

_PING, _BURST = b"P", b"B"
_SEQ = struct.Struct("!I")

# --- measurement --------------------------------------------------------------------------


class _Echoes:
    """Send times and echo arrivals of one probe; ``arrived`` is set on every echo."""

    def __init__(self) -> None:
        self.ping_sent: dict[int, float] = {}
        self.rtts: list[float] = []
        self.burst_bytes = 0
        self.burst_count = 0
        self.burst_last = 0.0
        self.arrived = asyncio.Event()

    def on_message(self, message: str | bytes) -> None:
        now = time.perf_counter()
        if not isinstance(message, bytes) or len(message) < 1 + _SEQ.size:
            return
        kind, (seq,) = message[:1], _SEQ.unpack_from(message, 1)
        if kind == _PING:
            sent = self.ping_sent.pop(seq, None)
            if sent is not None:
                self.rtts.append((now - sent) * 1000.0)
        elif kind == _BURST:
            self.burst_bytes += len(message)
            self.burst_count += 1
            self.burst_last = now
        self.arrived.set()

    async def quiet(self, done: Callable[[], bool], deadline: float) -> None:
        """Wait until ``done()``, or no echo came for ``QUIET_S``, or the deadline (loop time)."""
        loop = asyncio.get_running_loop()
        while not done():
            left = min(QUIET_S, deadline - loop.time())
            if left <= 0:
                return
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                return


def _message(kind: bytes, seq: int, size: int) -> bytes:
    head = kind + _SEQ.pack(seq)
    return head + b"\0" * (size - len(head))


async def _measure(channel: Any, echoes: _Echoes, deadline: float) -> dict[str, Any]:
    """Pings then a burst over an open channel; the ``media_*`` facts.

    Waiting for echoes ends at ``deadline`` (loop time) with what has arrived by then.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    for seq in range(PINGS):
        # Pacing the pings is the measurement, not synchronisation.
        await asyncio.sleep(max(0.0, start + seq * PING_INTERVAL_S - loop.time()))
        echoes.ping_sent[seq] = time.perf_counter()
        channel.send(_message(_PING, seq, PING_SIZE))
    await echoes.quiet(lambda: not echoes.ping_sent, deadline)
    lost = len(echoes.ping_sent)
    t0 = time.perf_counter()
    for seq in range(BURST_MESSAGES):
        channel.send(_message(_BURST, seq, BURST_SIZE))
    await echoes.quiet(lambda: echoes.burst_count >= BURST_MESSAGES, min(deadline, loop.time() + BURST_WAIT_S))
    elapsed = echoes.burst_last - t0
    kbps = echoes.burst_bytes * 8 / elapsed / 1000.0 if echoes.burst_bytes and elapsed > 0 else 0.0
    rtt = statistics.median(echoes.rtts) if echoes.rtts else None
    return {
        "media_rtt_ms": round(rtt, 3) if rtt is not None else None,
        "media_loss_pct": round(100.0 * lost / PINGS, 1),
        "media_kbps": round(kbps, 1),
    }


class _NoProbe(Exception):
    """The box ended the command without an answer; the message says how."""


async def _answer(conn: asyncssh.SSHClientConnection, process: asyncssh.SSHClientProcess[str], offer: str) -> str:
    """Send the offer and read the box's answer line; the answer SDP.

    The box may end the command before we write (no probe there: the shell answers 127
    at once, while our offer takes a while to gather), so a refused write is not a
    network failure: like an answer that never comes, it is judged by what the box said
    (exit status and stderr, see ``_ended``). A dead connection still raises as such.
    """
    try:
        process.stdin.write(json.dumps({"sdp": offer}) + "\n")
    except BrokenPipeError:  # "Channel not open for sending": the command has ended
        line = ""
    else:
        line = await process.stdout.readline()
    if not line:
        raise await _ended(conn, process)
    try:
        sdp = json.loads(line)["sdp"]
    except (ValueError, KeyError, TypeError):
        raise _NoProbe(f"{MEDIA_COMMAND} answer is not {{\"sdp\": ...}} JSON") from None
    if not isinstance(sdp, str):
        raise _NoProbe(f"{MEDIA_COMMAND} answer is not {{\"sdp\": ...}} JSON")
    return sdp


async def _ended(conn: asyncssh.SSHClientConnection, process: asyncssh.SSHClientProcess[str]) -> Exception:
    """Why the probe command ended without answering, from its exit status and stderr.

    Exit 127, or a shell saying the command is not found, means the box has no probe; any other end is
    reported with its status and the first of its stderr. A command that ended because
    the connection did is the connection's failure (UNREACHABLE), not the box's answer.
    """
    done = await process.wait(check=False)
    err = " ".join(str(done.stderr or "").split())
    no_status = (done.exit_status is None or done.exit_status < 0) and not done.exit_signal
    if no_status and conn.is_closed():
        return asyncssh.ConnectionLost("SSH connection closed")
    if done.exit_status == NOT_FOUND or (MEDIA_COMMAND in err and "not found" in err.lower()):
        return _NoProbe("box has no media probe")
    return _NoProbe(f"{MEDIA_COMMAND} exited {exit_text(done)}" + (f": {err[:120]}" if err else ""))


async def _exchange(conn: asyncssh.SSHClientConnection, deadline: float) -> dict[str, Any]:
    """Run the probe command on ``conn`` and measure; raises on any failure."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    local_ip = conn.get_extra_info("sockname")[0]
    peer_ip = conn.get_extra_info("peername")[0]
    process = await conn.create_process(MEDIA_COMMAND, encoding="utf-8")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("ccctl-probe", ordered=False, maxRetransmits=0)
    echoes = _Echoes()
    opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    channel.on("message", echoes.on_message)

    @channel.on("open")
    def _open() -> None:
        if not opened.done():
            opened.set_result(None)

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState == "failed" and not opened.done():
            opened.set_exception(ConnectionError("media connection failed (ICE or DTLS)"))

    try:
        with gather_only_on(local_ip):
            await pc.setLocalDescription(await pc.createOffer())
        sdp = await _answer(conn, process, pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(only_peer(sdp, peer_ip), "answer"))
        await opened
        return await _measure(channel, echoes, deadline - TEARDOWN_S)
    finally:
        channel.close()
        await pc.close()
        process.close()


async def media_probe(
    endpoint: Endpoint,
    timeout: float,
    client_key: ClientKey = None,
    pool: ConnectionPool | None = None,
) -> ProbeOutcome:
    """Measure RTT, loss and throughput to a box over WebRTC, signalled over SSH.

    Facts: ``media_rtt_ms`` (median ping echo), ``media_loss_pct`` (pings never echoed),
    ``media_kbps`` (burst echo throughput). ``rtt_ms`` is the media RTT, the probe's own
    round trip as for the other stages; ``net_rtt_ms`` the kernel's RTT of the SSH
    connection. The whole probe, login included, is bounded by ``timeout``; the peer
    connection, the command and (without a pool) the SSH connection are closed on every path.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    conn: asyncssh.SSHClientConnection | None = None
    net_rtt: float | None = None
    failed = False
    try:
        async with asyncio.timeout_at(deadline):
            if pool is not None:
                conn, _reused = await pool.acquire(endpoint, timeout=timeout, client_key=client_key)
            else:
                conn = await connect_ssh(endpoint, timeout=timeout, client_key=client_key)
            net_rtt = kernel_rtt_ms(conn.get_extra_info("socket"))
            facts = await _exchange(conn, deadline)
    except _NoProbe as exc:
        return ProbeOutcome(CheckState.ERROR, str(exc), net_rtt_ms=net_rtt)
    except TimeoutError:
        failed = True
        return ProbeOutcome(CheckState.TIMEOUT, f"no media answer within {timeout:g} s", net_rtt_ms=net_rtt)
    except Exception as exc:  # noqa: BLE001 - a site's failure is a result, not a crash
        failed = True
        state, reason = describe_error(exc, timeout)
        return ProbeOutcome(state, reason, net_rtt_ms=net_rtt)
    except BaseException:
        failed = True
        raise
    finally:
        if conn is not None:
            if pool is None:
                conn.close()
                await conn.wait_closed()
            elif failed:
                pool.discard(endpoint, conn)  # the session may be left wedged
            else:
                pool.release(endpoint, conn)
    return ProbeOutcome(CheckState.OK, "", facts["media_rtt_ms"], facts, net_rtt)
