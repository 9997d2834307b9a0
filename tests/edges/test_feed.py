"""Feeding: a live program reaches real viewers through two real Janus edges."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest

from ccctl.edges import EdgeError
from ccctl.edges.feed import EdgeFeed
from ccctl.edges.local import JanusEdge
from ccctl.edges.viewer import EdgeViewer
from ccctl.media.program import Program, read_counter
from ccctl.media.tiers import TierSpec
from ccctl.registry.edges import Edge

TIERS = {"high": TierSpec("high", 320, 180, 300_000), "low": TierSpec("low", 160, 90, 120_000),
         "audio": TierSpec("audio")}
TIMEOUT = 30.0


def edge_record(e: JanusEdge) -> Edge:
    return Edge(name=f"edge{e.index}", api_url=e.url, admin_key_file=str(e.key_file))


async def frames(viewer: EdgeViewer, kind: str, n: int) -> list[av.frame.Frame]:
    """The next ``n`` decoded frames of ``kind`` the viewer receives."""
    async def take() -> list[av.frame.Frame]:
        while kind not in viewer.tracks:  # the track arrives with the offer, before start
            await asyncio.sleep(0.05)
        return [await viewer.tracks[kind].recv() for _ in range(n)]
    return await asyncio.wait_for(take(), TIMEOUT)


@pytest.mark.asyncio
async def test_two_edges_carry_sound_and_picture(no_leftover_namespaces: None, two_edges: list[JanusEdge]) -> None:
    program = Program("testsrc", TIERS, fps=15)
    await program.start()
    feeds = []
    viewers = []
    try:
        for e in two_edges:
            feeds.append(await EdgeFeed(edge_record(e), program, broadcast_id=7).open())
        assert all(set(f.mounts) == {"high", "low", "audio"} for f in feeds)
        for feed, e in zip(feeds, two_edges, strict=True):
            for tier in ("high", "low"):
                mount = feed.mounts[tier]
                viewers.append((tier, await EdgeViewer(e.url, mount.id, mount.pin).start()))
        for tier, viewer in viewers:
            await asyncio.wait_for(viewer.connected.wait(), TIMEOUT)
            pictures = await frames(viewer, "video", 5)
            sounds = await frames(viewer, "audio", 5)
            width = TIERS[tier].width
            assert {f.width for f in pictures} == {width}  # each tier's own encode
            counters = [read_counter(f) for f in pictures]
            assert counters == sorted(counters) and counters[-1] > counters[0]  # the program, moving
            assert all(f.sample_rate == 48000 for f in sounds)
        for feed in feeds:
            assert await feed.viewers() == {"high": 1, "low": 1, "audio": 0}
            assert all(s.packets > 0 for s in feed.sinks)
    finally:
        for _, viewer in viewers:
            await viewer.close()
        for feed in feeds:
            await feed.close()
        await program.close()
    # The broadcast over, the mountpoints are gone from both edges.
    for e in two_edges:
        from ccctl.edges.janus import JanusClient
        from ccctl.edges.local import ADMIN_KEY

        async with JanusClient(e.url, ADMIN_KEY) as client:
            assert await client.list() == []


@pytest.mark.asyncio
async def test_wrong_pin_is_refused(two_edges: list[JanusEdge]) -> None:
    program = Program("testsrc", TIERS, fps=15)
    await program.start()
    feed = await EdgeFeed(edge_record(two_edges[0]), program, broadcast_id=8).open()
    try:
        with pytest.raises(EdgeError, match="pin"):
            await EdgeViewer(two_edges[0].url, feed.mounts["low"].id, "not-the-pin").start()
    finally:
        await feed.close()
        await program.close()


@pytest.mark.asyncio
async def test_a_dead_edge_fails_to_open_and_leaves_nothing(two_edges: list[JanusEdge], tmp_path: Path) -> None:
    program = Program("testsrc", TIERS, fps=15)
    await program.start()
    two_edges[0].kill()
    feed = EdgeFeed(edge_record(two_edges[0]), program, broadcast_id=9)
    try:
        with pytest.raises(EdgeError, match="not answering"):
            await feed.open()
        assert feed.sinks == [] and not any(f.forwarders for f in (program.audio_feed, program.feed("low")))
    finally:
        await program.close()


@pytest.mark.asyncio
async def test_srtp_to_an_edge_plays_and_its_key_stays_between_ccctl_and_janus(
        two_edges: list[JanusEdge], tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Edge 0 (not on loopback: SRTP by default) gets SRTP, edge 1 is registered ``--no-srtp``:
    both play (decoded pictures and sound); Janus says which mountpoints take SRTP; the key
    of each mountpoint appears in no reply, log or record."""
    import base64
    import logging

    from ccctl.edges.janus import JanusClient
    from ccctl.edges.local import ADMIN_KEY

    caplog.set_level(logging.DEBUG)
    keys: list[bytes] = []
    create = JanusClient.create_rtp

    async def spy(self: JanusClient, *args: object, srtp_key: bytes | None = None, **kw: object) -> object:
        if srtp_key is not None:
            keys.append(srtp_key)  # watched, not replaced: the real request goes to the real edge
        return await create(self, *args, srtp_key=srtp_key, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(JanusClient, "create_rtp", spy)
    program = Program("testsrc", TIERS, fps=15)
    await program.start()
    plain = Edge(name="plain", api_url=two_edges[1].url, admin_key_file=str(two_edges[1].key_file), srtp=False)
    assert edge_record(two_edges[0]).uses_srtp() and not plain.uses_srtp()
    feeds = [await EdgeFeed(edge_record(two_edges[0]), program, broadcast_id=11).open(),
             await EdgeFeed(plain, program, broadcast_id=11).open()]
    viewers = []
    replies = []
    try:
        assert len(keys) == 3 and len(set(keys)) == 3  # one key per mountpoint (3 tiers), none for the plain edge
        assert all(s.srtp for s in feeds[0].sinks) and not any(s.srtp for s in feeds[1].sinks)
        for feed, e, srtp in ((feeds[0], two_edges[0], True), (feeds[1], two_edges[1], False)):
            async with JanusClient(e.url, ADMIN_KEY) as client:
                for mount in feed.mounts.values():
                    info = await client.info(mount.id, mount.secret)
                    assert bool(info.get("srtp")) is srtp
                    replies.append(repr(info))
                replies.append(repr(await client.list()))
            mount = feed.mounts["high"]
            viewer = await EdgeViewer(e.url, mount.id, mount.pin).start()
            viewers.append(viewer)
            await asyncio.wait_for(viewer.connected.wait(), TIMEOUT)
            pictures = await frames(viewer, "video", 5)
            assert {f.width for f in pictures} == {TIERS["high"].width}
            counters = [read_counter(f) for f in pictures]
            assert counters == sorted(counters) and counters[-1] > counters[0]
            assert all(f.sample_rate == 48000 for f in await frames(viewer, "audio", 5))
    finally:
        for viewer in viewers:
            await viewer.close()
        for feed in feeds:
            await feed.close()
        await program.close()
    secrets_seen = [base64.b64encode(k).decode() for k in keys] + [k.hex() for k in keys]
    logs = caplog.text + "".join(replies) + "".join(
        (e.folder / "janus.log").read_text(errors="replace") for e in two_edges)
    assert not [k for k in secrets_seen if k in logs]
