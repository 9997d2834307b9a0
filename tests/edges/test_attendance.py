"""Attendance and stats cover the sites served by edges, read from the edges themselves.

Two real Janus edges (each in its namespace, admin API on), the real server: sites on both
report the Janus handle they play on; each edge's admin API confirms it (``handle_info``:
watching one of ccctl's mountpoints) before the join is recorded, gives the figures of
``GET /api/broadcast`` and ``/metrics``, and says when a site is gone even if the site never
says so. ``broadcast attendance`` names the edge that served each site.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ccctl.edges.viewer import EdgeViewer
from ccctl.media.state import attendance, resolve_broadcast
from ccctl.registry import open_registry
from tests.edges.test_failover import MOVE_S, Harness, harness  # noqa: F401 - the fixture


async def sessions(h: Harness) -> dict[str, dict[str, Any]]:
    r = await h.client.get("/api/broadcast", headers=h.ctl)
    assert r.status == 200
    return {s["site_id"]: s for s in (await r.json())["sessions"]}


@pytest.mark.asyncio
async def test_sites_on_two_edges_in_attendance_and_stats(harness: Harness) -> None:  # noqa: F811
    h = harness
    where = {s: await h.where(s) for s in ("s1", "s2", "s3")}
    assert {s: w["edge"] for s, w in where.items()} == {"s1": "e0", "s2": "e1", "s3": "e0"}
    viewers: dict[str, EdgeViewer] = {}
    try:
        # A report naming a handle the edge does not have is refused (the edge has the last word).
        r = await h.client.post("/api/sites/s1/edge", json={"state": "watching", "edge": "e0", "session": 1,
                                                            "handle": 2}, headers=h.site_auth("s1"))
        assert r.status == 409
        for s, w in where.items():
            viewers[s] = await h.watch(s, w)
        # ... and so is one naming another site's handle.
        r = await h.client.post("/api/sites/s3/edge", json={"state": "watching", "edge": "e0", **viewers["s1"].ids},
                                headers=h.site_auth("s3"))
        assert r.status == 409
        for s, edge in (("s1", "e0"), ("s2", "e1"), ("s3", "e0")):
            assert [(k, d["edge"], d["by"]) for k, d in h.events(s)] == [("join", edge, "edge")]
        # Stats: every site with its edge, and what the edge sent it (after a health round).
        deadline = time.monotonic() + MOVE_S
        while time.monotonic() < deadline:
            rows = await sessions(h)
            if all((rows.get(s) or {}).get("packets_sent") for s in where):
                break
            await asyncio.sleep(0.2)  # a bounded poll on the health loop's round (every 2 s)
        assert {s: (r["edge"], r["tier"], r["state"]) for s, r in rows.items()} == {
            "s1": ("e0", "low", "connected"), "s2": ("e1", "low", "connected"), "s3": ("e0", "low", "connected")}
        assert all(r["packets_sent"] > 0 and r["bytes_sent"] > 0 for r in rows.values())
        metrics = await (await h.client.get("/metrics", headers=h.ctl)).text()
        bid = (await (await h.client.get("/api/broadcast", headers=h.ctl)).json())["id"]
        assert f'ccctl_site_info{{broadcast="{bid}",site="s2",tier="low",state="connected"}} 1' in metrics
        assert f'ccctl_broadcast_sessions{{broadcast="{bid}",tier="low"}} 3' in metrics
        # s3 goes away without a word to ccctl (its session destroyed on the edge): the edge says so.
        await viewers.pop("s3").close()
        deadline = time.monotonic() + MOVE_S
        while len(h.events("s3")) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # bounded poll on the health loop, as above
        assert [(k, d["edge"], d.get("reason")) for k, d in h.events("s3")] == [
            ("join", "e0", None), ("leave", "e0", "gone_from_edge")]
        assert set(await sessions(h)) == {"s1", "s2"}
    finally:
        for viewer in viewers.values():
            await viewer.close()
    r = await h.client.delete("/api/broadcast", headers=h.ctl)
    assert r.status == 200
    with open_registry(h.db_url) as db:
        rows = {r["site_id"]: r for r in attendance(db, resolve_broadcast(db, None))}
    assert {s: (r["edge"], r["joins"], r["connected"]) for s, r in rows.items()} == {
        "s1": ("e0", 1, False), "s2": ("e1", 1, False), "s3": ("e0", 1, False)}
    assert all(r["seconds"] > 0 for r in rows.values())
