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
