"""Sites served by edges through ccctl's server: assignment by room, and failover when an edge dies.

The real server (aiohttp app, media core, registry on a SQLite file) runs a broadcast; two
real Janus edges in their own namespaces are registered; sites ask ccctl where to play
from (``GET /api/sites/{site}/edge``) and watch there with an aiortc viewer over Janus's
HTTP protocol, or from ccctl itself over WHEP when no edge has room.
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from ccctl.edges.janus import JanusClient
from ccctl.edges.local import ADMIN_KEY, JanusEdge
from ccctl.edges.viewer import EdgeViewer
from ccctl.media import tokens
from ccctl.media.core import MediaCore
from ccctl.media.server import SERVER_KEY, create_app
from ccctl.media.state import attendance, resolve_broadcast
from ccctl.registry import open_registry
from ccctl.registry.edges import Edge, add_edge, remove_edge
from ccctl.registry.sites import add_site
from tests.edges.test_feed import TIERS, frames
from tests.media.conftest import Site

SITES = ("s1", "s2", "s3")
MOVE_S = 10.0  # the bound: a dead edge's sites are back within 10 s


class Harness:
    def __init__(self, client: TestClient, secret: bytes, db_url: str, edges: list[JanusEdge]) -> None:
        self.client, self.secret, self.db_url, self.edges = client, secret, db_url, edges
        self.ctl = {"Authorization": f"Bearer {tokens.control_token(secret)}"}

    def site_auth(self, site: str) -> dict[str, str]:
        with open_registry(self.db_url) as db:
            return {"Authorization": f"Bearer {tokens.site_token(self.secret, site, tokens.generation(db, site))}"}

    async def where(self, site: str) -> dict[str, Any]:
        r = await self.client.get(f"/api/sites/{site}/edge", headers=self.site_auth(site))
        assert r.status == 200
        return dict(await r.json())

    async def watch(self, site: str, where: dict[str, Any]) -> EdgeViewer:
        """Play from the edge ccctl named, then tell ccctl (attendance)."""
        viewer = await EdgeViewer(where["url"], where["mount"], where["pin"]).start()
        await asyncio.wait_for(viewer.connected.wait(), 30)
        assert len(await frames(viewer, "video", 3)) == 3 and len(await frames(viewer, "audio", 3)) == 3
        r = await self.client.post(f"/api/sites/{site}/edge",
                                   json={"state": "watching", "edge": where["edge"], **viewer.ids},
                                   headers=self.site_auth(site))
        assert r.status == 204, await r.text()
        return viewer

    async def edges_mount(self, edge: str, tier: str) -> int:
        """The id of the server's mountpoint for ``tier`` on ``edge``."""
        manager = self.client.server.app[SERVER_KEY].edges
        return int(manager.edges[edge].feed.mounts[tier].id)

    def tier_events(self, site: str) -> list[tuple[str, dict[str, Any]]]:
        """The site's tier events in the broadcast's log."""
        with open_registry(self.db_url) as db:
            rows = db.query("SELECT kind, detail FROM broadcast_events WHERE site_id = ? AND kind = 'tier' "
                            "ORDER BY id", (site,))
        return [(kind, json.loads(detail)) for kind, detail in rows]

    def events(self, site: str) -> list[tuple[str, dict[str, Any]]]:
        """The site's join/leave events in the broadcast's log."""
        with open_registry(self.db_url) as db:
            rows = db.query("SELECT kind, detail FROM broadcast_events WHERE site_id = ? AND kind IN ('join', 'leave') "
                            "ORDER BY id", (site,))
        return [(kind, json.loads(detail)) for kind, detail in rows]


@pytest_asyncio.fixture
async def harness(two_edges: list[JanusEdge], units_template: Path, tmp_path: Path) -> AsyncIterator[Harness]:
    db_path = tmp_path / "registry.db"
    shutil.copy(units_template, db_path)
    db_url = f"sqlite:///{db_path}"
    with open_registry(db_url) as db:
        for site in SITES:
            add_site(db, {"id": site, "name": f"Điểm cầu {site}", "unit_code": "26740", "tier": "low"})
        for e in two_edges:
            add_edge(db, Edge(name=f"e{e.index}", api_url=e.url, admin_key_file=str(e.key_file), capacity=2,
                              admin_url=e.admin_url))
    app = create_app(db_url, tmp_path / "home", core_factory=functools.partial(MediaCore, tiers=TIERS))
    client = TestClient(TestServer(app))
    await client.start_server()
    h = Harness(client, tokens.load_secret(tmp_path / "home"), db_url, two_edges)
    try:
        r = await client.post("/api/broadcast", json={"title": "Họp trực tuyến"}, headers=h.ctl)
        assert r.status == 201, await r.text()
        yield h
    finally:
        await client.close()


async def edge_mounts(e: JanusEdge) -> list[dict[str, Any]]:
    async with JanusClient(e.url, ADMIN_KEY) as client:
        return await client.list()


@pytest.mark.asyncio
async def test_sites_spread_by_room_and_move_when_an_edge_dies(harness: Harness) -> None:
    h = harness
    where = {s: await h.where(s) for s in SITES}
    # Most room first (capacity 2 each), then fewest sites, then name.
    assert {s: w["edge"] for s, w in where.items()} == {"s1": "e0", "s2": "e1", "s3": "e0"}
    assert all(w["tier"] == "low" for w in where.values())
    viewers = {s: await h.watch(s, w) for s, w in where.items()}
    try:
        h.edges[0].kill()
        killed = time.monotonic()
        for s in ("s1", "s3"):  # their edge is gone: their viewers notice
            await asyncio.wait_for(viewers[s].hangup.wait(), MOVE_S)
        # They ask ccctl again until it stops sending them to the dead edge (a bounded poll:
        # the health loop probes every 2 s).
        moved: dict[str, dict[str, Any]] = {}
        while len(moved) < 2 and time.monotonic() - killed < MOVE_S:
            for s in ("s1", "s3"):
                if s not in moved and (w := await h.where(s))["edge"] != "e0":
                    moved[s] = w
            await asyncio.sleep(0.2)
        assert len(moved) == 2, f"not moved within {MOVE_S:g} s: {set(('s1', 's3')) - set(moved)}"
        # e1 has room for one more (capacity 2): s1 goes there, s3 to ccctl itself.
        assert moved["s1"]["edge"] == "e1" and moved["s3"] == {"edge": None}
        for s in ("s1", "s3"):
            await viewers.pop(s).close()
        viewers["s1"] = await h.watch("s1", moved["s1"])
        # Attendance: s1 joined by e0, left when e0 went down (recorded by ccctl, not the site),
        # joined again by e1; s3 left e0 the same way.
        assert [(k, d["edge"], d.get("reason")) for k, d in h.events("s1")] == [
            ("join", "e0", None), ("leave", "e0", "edge_down"), ("join", "e1", None)]
        assert [(k, d["edge"], d.get("reason")) for k, d in h.events("s3")] == [
            ("join", "e0", None), ("leave", "e0", "edge_down")]
        stale = await h.client.post("/api/sites/s3/edge", json={"state": "watching", "edge": "e0"},
                                    headers=h.site_auth("s3"))
        assert stale.status == 409  # not the edge it was given (that one is dead)
        site = Site()  # s3 plays from ccctl over WHEP
        offer = await site.offer()
        r = await h.client.post("/whep/s3", data=offer,
                                headers={**h.site_auth("s3"), "Content-Type": "application/sdp"})
        assert r.status == 201, await r.text()
        await site.accept(await r.text())
        assert len(await site.frames(3)) == 3
        await site.close()
        r = await h.client.get("/api/edges", headers=h.ctl)
        status = {e["name"]: e for e in (await r.json())["edges"]}
        assert status["e0"]["up"] is False and status["e1"]["up"] is True and status["e1"]["sites"] == 2
        # s2 stays where it was, and keeps playing.
        assert (await h.where("s2"))["edge"] == "e1" and len(await frames(viewers["s2"], "video", 3)) == 3
    finally:
        for viewer in viewers.values():
            await viewer.close()
    r = await h.client.delete("/api/broadcast", headers=h.ctl)
    assert r.status == 200
    assert await edge_mounts(h.edges[1]) == []  # the broadcast over, its mountpoints are gone
    assert h.events("s2")[-1][0] == "leave"
    with open_registry(h.db_url) as db:
        rows = {r["site_id"]: r for r in attendance(db, resolve_broadcast(db, None))}
    assert rows["s2"]["joins"] == 1 and not rows["s2"]["connected"] and rows["s2"]["seconds"] > 0
    assert rows["s1"]["joins"] == 2 and rows["s3"]["joins"] == 2  # s3: e0, then ccctl itself by WHEP


@pytest.mark.asyncio
async def test_a_removed_edge_is_unfed_and_its_sites_move(harness: Harness) -> None:
    h = harness
    first = await h.where("s1")
    assert first["edge"] == "e0"
    viewer = await h.watch("s1", first)
    try:
        with open_registry(h.db_url) as db:
            remove_edge(db, "e0")
        await asyncio.wait_for(viewer.hangup.wait(), MOVE_S)  # its mountpoints destroyed
        assert await edge_mounts(h.edges[0]) == []
        assert [(k, d["edge"], d.get("reason")) for k, d in h.events("s1")] == [
            ("join", "e0", None), ("leave", "e0", "edge_removed")]
        again = await h.where("s1")
        assert again["edge"] == "e1"
        bad = await h.client.post("/api/sites/s1/edge", json={"state": "dancing"}, headers=h.site_auth("s1"))
        assert bad.status == 400
        assert (await h.client.post("/api/sites/s1/edge", json={"state": "left"})).status == 401
    finally:
        await viewer.close()
    manager = h.client.server.app[SERVER_KEY].edges
    assert [e["name"] for e in manager.status()] == ["e1"]


@pytest.mark.asyncio
async def test_a_silent_edge_is_found_dead_and_its_sites_move(harness: Harness) -> None:
    """An edge that stops answering (its link blackholed both ways: no error, no hangup, only
    silence) is as dead as a killed one: its sites are elsewhere within 10 s."""
    from ccctl.sim.netns import shape, why_unavailable

    reason = why_unavailable()
    if reason:
        pytest.skip(reason)
    h = harness
    first = await h.where("s1")
    assert first["edge"] == "e0"
    viewer = await h.watch("s1", first)
    try:
        e0 = h.edges[0]
        shape(e0.dev, loss_pct=100)  # what ccctl and the sites send to it
        shape(e0.peer, loss_pct=100, netns=e0.netns)  # what it sends back
        silent = time.monotonic()
        await asyncio.wait_for(viewer.hangup.wait(), MOVE_S)  # no media: the site's cue
        moved: dict[str, Any] = {}
        while time.monotonic() - silent < MOVE_S:  # bounded poll, as a site would ask again
            if (moved := await h.where("s1"))["edge"] != "e0":
                break
            await asyncio.sleep(0.2)
        assert moved.get("edge") == "e1", f"not moved within {MOVE_S:g} s: {moved}"
        assert [(k, d.get("reason")) for k, d in h.events("s1")] == [("join", None), ("leave", "edge_down")]
    finally:
        await viewer.close()
    viewer = await h.watch("s1", moved)
    await viewer.close()
