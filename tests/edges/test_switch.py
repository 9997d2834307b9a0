"""A tier change of a site playing from an edge is Janus's ``switch`` on its own connection.

The real server, a real Janus edge in its namespace, an aiortc viewer over Janus's HTTP
protocol: the operator's ``PUT /api/sites/{site}/tier`` moves the viewer to the other tier's
mountpoint; the viewer keeps its session and handle (no new connection) and decodes the new
tier: a larger picture after ``high``, sound and no more picture after ``audio``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ccctl.edges.viewer import EdgeViewer
from tests.edges.test_failover import Harness, harness  # noqa: F401 - the fixture
from tests.edges.test_feed import TIERS, TIMEOUT, frames


async def tier(h: Harness, site: str, to: str) -> tuple[int, dict[str, Any]]:
    r = await h.client.put(f"/api/sites/{site}/tier", json={"tier": to}, headers=h.ctl)
    return r.status, (await r.json() if r.status == 200 else {"text": await r.text()})


async def video_packets(viewer: EdgeViewer) -> int:
    stats = await viewer.pc.getStats()
    return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp" and s.kind == "video")


async def switched(viewer: EdgeViewer, wait: asyncio.Event) -> None:
    await asyncio.wait_for(wait.wait(), TIMEOUT)


@pytest.mark.asyncio
async def test_a_tier_change_on_an_edge_is_a_switch_on_the_same_connection(harness: Harness) -> None:  # noqa: F811
    h = harness
    where = await h.where("s1")
    assert (where["edge"], where["tier"]) == ("e0", "low")
    viewer = await h.watch("s1", where)
    ids = dict(viewer.ids)
    try:
        assert {f.width for f in await frames(viewer, "video", 3)} == {TIERS["low"].width}
        wait = viewer.switched
        status, body = await tier(h, "s1", "high")
        assert status == 200, body
        assert body == {"site_id": "s1", "tier": "high", "previous": "low", "edge": "e0"}
        await switched(viewer, wait)  # Janus told the viewer, on its own long poll
        assert viewer.ids == ids and not viewer.hangup.is_set()  # the same session and handle
        high = await h.edges_mount("e0", "high")
        assert viewer.mount_id == high
        # The same connection now decodes the high tier's picture (from its next keyframe).
        widths = []
        while TIERS["high"].width not in widths and len(widths) < 200:
            widths += [f.width for f in await frames(viewer, "video", 1)]
        assert widths[-1] == TIERS["high"].width, widths

        wait = viewer.switched
        status, body = await tier(h, "s1", "audio")
        assert status == 200 and body["previous"] == "high", body
        await switched(viewer, wait)
        assert viewer.ids == ids
        await frames(viewer, "audio", 25)  # what was in flight before the switch is in by now
        before = await video_packets(viewer)
        assert len(await frames(viewer, "audio", 25)) == 25  # sound goes on ...
        assert await video_packets(viewer) == before  # ... and no picture comes any more
        assert (await tier(h, "s1", "audio"))[0] == 200  # the same tier again: nothing to do
        status, body = await tier(h, "s1", "nope")
        assert status == 400 and "unknown tier" in body["text"]
    finally:
        await viewer.close()
    tiers = [(d["from"], d["to"], d["edge"]) for k, d in h.tier_events("s1")]
    assert tiers == [("low", "high", "e0"), ("high", "audio", "e0")]
    # Asked again (say its edge died), it is given the tier the operator chose.
    assert (await h.where("s1"))["tier"] == "audio"
    status, _ = await tier(h, "s2", "high")  # s2 plays nowhere: nothing to move
    assert status == 404
