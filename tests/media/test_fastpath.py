"""The tight fan-out path on the wire: what a real receiver sees of sequence, SRs and RTT."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ccctl.media.core import MediaCore

from .conftest import JoinFn, Site, until

# The tight path only (conftest's ``core`` runs both paths).
pytestmark = [pytest.mark.asyncio, pytest.mark.parametrize("core", ["tight"], indirect=True)]


async def receiver_stats(site: Site, kind: str) -> dict[str, Any]:
    stats = await site.transceivers[kind].receiver.getStats()
    return {s.type: s for s in stats.values()}


async def test_tier_switches_lose_no_packet_and_keep_one_stream(core: MediaCore, join: JoinFn) -> None:
    site, _ = await join("s-wire", "high")
    await site.frame_sized(320)
    await core.set_tier("s-wire", "low")
    await site.frame_sized(160)
    await core.set_tier("s-wire", "high")
    await site.frame_sized(320)
    inbound = (await receiver_stats(site, "video"))["inbound-rtp"]
    # One SSRC throughout, sequence numbers continuous across both switches: nothing lost.
    assert inbound.packetsReceived > 20 and inbound.packetsLost == 0
    (session,) = core.sessions()
    assert session.forwarders is not None
    assert session.forwarders["video"].sender._ssrc == inbound.ssrc


async def test_sender_reports_reach_the_site_and_give_rtt(core: MediaCore, join: JoinFn) -> None:
    site, _ = await join("s-rtcp", "low")
    await site.frames(2)

    async def reported() -> Any:
        remote = (await receiver_stats(site, "video")).get("remote-outbound-rtp")
        return remote if remote is not None and remote.packetsSent > 0 else None

    remote = await until(reported)
    (row,) = await core.stats()
    assert 0 < remote.packetsSent <= row["packets_sent"]

    async def rtt() -> Any:
        (row,) = await core.stats()
        return row["rtt_ms"] is not None and row

    row = await until(rtt)  # the site's receiver reports echo our SR (LSR/DLSR)
    assert 0 <= row["rtt_ms"] < 1000


async def test_a_site_whose_socket_is_full_skips_to_a_keyframe_and_holds_up_nobody(
        core: MediaCore, join: JoinFn, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    # The Python send path: its socket is swapped below (test_native.py has the native path's).
    monkeypatch.setenv("CCCTL_NATIVE", "0")
    slow, _ = await join("s-slow", "low")
    other, _ = await join("s-other", "low")
    await slow.frames(1)
    await other.frames(1)
    session = next(s for s in core.sessions() if s.site_id == "s-slow")
    assert session.forwarders is not None
    video = session.forwarders["video"]
    # Loopback UDP never reports a full buffer (the kernel hands each datagram straight to
    # the receiver), so the slow site's sends go to a Unix datagram socket nobody reads:
    # a real kernel socket that fills up and answers EAGAIN, as a congested uplink would.
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(tmp_path / "slow.sock"))
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setblocking(False)
    try:
        video._sock, video._addr = sender, str(tmp_path / "slow.sock")
        forced = core.program._video["low"].keyframes.forced
        await until(lambda: asyncio.sleep(0, result=video.dropped > 0))
        frames = await other.frames(10)  # the other site of the tier goes on, in order
        assert len(frames) == 10
        await until(lambda: asyncio.sleep(0, result=core.program._video["low"].keyframes.forced > forced))
        delivered = video.delivered
        sink.setblocking(False)
        while True:  # the uplink clears: the site resumes, at a keyframe
            try:
                sink.recv(65536)
            except BlockingIOError:
                break
        await until(lambda: asyncio.sleep(0, result=video.delivered > delivered))
    finally:
        sender.close()
        sink.close()
