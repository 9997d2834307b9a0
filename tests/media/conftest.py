"""Fixtures for the media core: a running MediaCore and real aiortc subscriber peers.

Both ends are real ``RTCPeerConnection`` objects in this process (as in aiortc's own
tests/test_rtcpeerconnection.py). ICE is pinned to 127.0.0.1: aioice would otherwise offer
every interface address of the machine, and no STUN server is configured on either side,
so nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aioice.ice
import av
import pytest
import pytest_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from ccctl.media.core import MediaCore
from ccctl.media.program import read_counter
from ccctl.media.tiers import TierSpec

# Small tiers keep software H.264 fast on CI; one test uses the real 720p/360p sizes.
SMALL_TIERS = {"high": TierSpec("high", 320, 180, 400_000), "low": TierSpec("low", 160, 90, 150_000),
               "audio": TierSpec("audio")}
TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Gather host candidates on 127.0.0.1 only (aioice skips loopback by default)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    yield


class Site:
    """A subscribing site: a real peer with recvonly transceivers, as a WHEP client makes."""

    def __init__(self, kinds: tuple[str, ...] = ("audio", "video")) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.transceivers = {kind: self.pc.addTransceiver(kind, direction="recvonly") for kind in kinds}

    async def offer(self) -> str:
        """The WHEP offer (ICE candidates included)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        """Apply the server's answer; ICE and DTLS then connect on their own."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def track(self, kind: str) -> MediaStreamTrack | None:
        """The remote track of ``kind``, None when the answer sends none."""
        transceiver = self.transceivers.get(kind)
        return None if transceiver is None else transceiver.receiver.track

    async def frames(self, n: int, kind: str = "video", timeout: float = TIMEOUT) -> list[Any]:
        """The next ``n`` decoded frames of ``kind``; fails if they do not come in time."""
        track = self.track(kind)
        assert track is not None, f"no {kind} track"
        return [await asyncio.wait_for(track.recv(), timeout) for _ in range(n)]

    async def frame_sized(self, width: int, limit: int = 100) -> av.VideoFrame:
        """The first decoded video frame ``width`` pixels wide (after a tier switch)."""
        for _ in range(limit):
            (frame,) = await self.frames(1)
            if frame.width == width:
                return frame
        raise AssertionError(f"no {width}-wide frame in {limit} frames")

    async def close(self) -> None:
        """Close the peer connection."""
        await self.pc.close()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy (bounded; a condition, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)
    return value


def counters(frames: list[av.VideoFrame]) -> list[int]:
    """The test pattern's frame counters of decoded frames."""
    return [read_counter(f) for f in frames]


@pytest.fixture
def events() -> list[tuple[str, str, dict[str, Any]]]:
    """Where the core's on_event calls land."""
    return []


@pytest_asyncio.fixture(params=["tight", "stock"])
async def core(request: pytest.FixtureRequest, events: list[tuple[str, str, dict[str, Any]]]) -> AsyncIterator[MediaCore]:
    """A running core on the small tiers, on each fan-out path; closed afterwards."""
    media = MediaCore("testsrc", on_event=lambda kind, site, detail: events.append((kind, site, detail)),
                      tiers=SMALL_TIERS, fanout=request.param)
    await media.start()
    try:
        yield media
    finally:
        await media.close()


JoinFn = Callable[..., Awaitable[tuple[Site, str]]]


@pytest_asyncio.fixture
async def join(core: MediaCore) -> AsyncIterator[JoinFn]:
    """Subscribe a new site to ``core``: returns (site, session_id); sites closed afterwards."""
    sites: list[Site] = []

    async def _join(site_id: str, tier: str = "high", kinds: tuple[str, ...] = ("audio", "video"),
                    media: MediaCore | None = None) -> tuple[Site, str]:
        site = Site(kinds)
        sites.append(site)
        session_id, answer = await (media or core).subscribe(site_id, await site.offer(), tier)
        await site.accept(answer)
        return site, session_id

    try:
        yield _join
    finally:
        for site in sites:
            await site.close()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Sockets a test opens (real UDP, loopback); closed afterwards."""
    made: list[socket.socket] = []
    yield made
    for s in made:
        s.close()
