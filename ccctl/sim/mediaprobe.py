"""The box side of the media probe: answer a WebRTC offer and echo the data channel.

``ccctl-media-probe`` reads one JSON line ``{"sdp": OFFER}``, prints one line
``{"sdp": ANSWER}`` and echoes every data-channel message back until the channel closes,
the client hangs up or ``MAX_SESSION_S`` pass. ICE is gathered on the box's own address
only and checks only the client's address. Faults bend the echoes: ``loss:PCT`` drops
that share of them (the same ones every time for a site) and ``bwcap:KBPS`` paces them so
the echoed throughput does not exceed the cap.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import asyncssh

from ccctl.media.net import gather_only_on, only_peer
from ccctl.sim.faults import BWCAP, LOSS, Fault

MAX_SESSION_S = 15.0


class EchoShaper:
    """Decides, per echo, whether to drop it and when it may leave, per the site's fault.

    Loss is spread evenly by error diffusion from an offset seeded by the site id, so
    ``loss:30`` drops 30 of every 100 echoes, the same ones on every run.
    """

    def __init__(self, site_id: str, fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        self.loss_pct = fault.arg if fault is not None and kind == LOSS and fault.arg else 0.0
        self.kbps = fault.arg if fault is not None and kind == BWCAP and fault.arg else 0.0
        digest = hashlib.sha256(site_id.encode()).digest()
        self._acc = float(int.from_bytes(digest[:4], "big") % 100)
        self._next_free = 0.0

    def drop(self) -> bool:
        """True when this echo is to be lost."""
        if not self.loss_pct:
            return False
        self._acc += self.loss_pct
        if self._acc >= 100:
            self._acc -= 100
            return True
        return False

    def delay(self, now: float, size: int) -> float:
        """Seconds to hold an echo of ``size`` bytes so the cap holds (0 without a cap)."""
        if not self.kbps:
            return 0.0
        self._next_free = max(now, self._next_free) + size * 8 / (self.kbps * 1000.0)
        return self._next_free - now


async def answer_media_probe(process: asyncssh.SSHServerProcess[str], site_id: str, host: str,
                             fault: Fault | None = None) -> int:
    """Serve one ``ccctl-media-probe`` session on ``process``; the exit status."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    line = await process.stdin.readline()
    try:
        offer = json.loads(line)["sdp"]
    except (ValueError, KeyError, TypeError):
        process.stderr.write("ccctl-media-probe: expected one line {\"sdp\": OFFER}\n")
        return 2
    peer_ip = process.get_extra_info("peername")[0]
    loop = asyncio.get_running_loop()
    shaper = EchoShaper(site_id, fault)
    closed = asyncio.Event()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

    @pc.on("datachannel")
    def _channel(channel: Any) -> None:
        def echo(message: str | bytes) -> None:
            if channel.readyState == "open":
                channel.send(message)

        @channel.on("message")
        def _message(message: str | bytes) -> None:
            if shaper.drop():
                return
            wait = shaper.delay(loop.time(), len(message))
            if wait:
                loop.call_later(wait, echo, message)
            else:
                echo(message)

        channel.on("close", closed.set)

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState in ("failed", "closed"):
            closed.set()

    try:
        async with asyncio.timeout(MAX_SESSION_S):
            await pc.setRemoteDescription(RTCSessionDescription(only_peer(offer, peer_ip), "offer"))
            with gather_only_on(host):
                await pc.setLocalDescription(await pc.createAnswer())
            process.stdout.write(json.dumps({"sdp": pc.localDescription.sdp}) + "\n")
            hangup = asyncio.ensure_future(process.stdin.read())  # EOF: the client is gone
            ended = asyncio.ensure_future(closed.wait())
            try:
                await asyncio.wait((hangup, ended), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (hangup, ended):
                    task.cancel()
                    if task.done() and not task.cancelled():
                        task.exception()  # a cut connection is just the end of the session
    except TimeoutError:
        pass
    finally:
        await pc.close()
    return 0
