"""A site playing from a Janus edge follows its moves between broadcasts.

The real server with two live broadcasts over two real Janus edges (each in its own
namespace), an aiortc viewer over Janus's HTTP protocol as the join page's edge player does:
a district's broadcast holds the site on its edge's mountpoint; a centre broadcast (every
site) takes it, and ccctl hangs up the site's handle there, so that it asks again and is given
the centre's mountpoint; when the centre ends, its mountpoints go and the site is given the
district's again. (edge.js asks again on a hangup in the same way: tests/edges/test_browser.py.)
"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from ccctl.edges.local import JanusEdge
from ccctl.edges.viewer import EdgeViewer
from ccctl.media import tokens
from ccctl.media.core import MediaCore
from ccctl.media.server import SERVER_KEY, create_app
from ccctl.registry import open_registry
from ccctl.registry.edges import Edge, add_edge
from ccctl.registry.sites import add_site
from tests.edges.test_failover import MOVE_S, Harness
from tests.edges.test_feed import TIERS

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def idle(two_edges: list[JanusEdge], units_template: Path, tmp_path: Path) -> AsyncIterator[Harness]:
    """The server with sites s1, s2 and the two edges registered; nothing live yet."""
    db_path = tmp_path / "registry.db"
    shutil.copy(units_template, db_path)
    db_url = f"sqlite:///{db_path}"
    with open_registry(db_url) as db:
        for site in ("s1", "s2"):
            add_site(db, {"id": site, "name": f"Điểm cầu {site}", "unit_code": "26740", "tier": "low"})
        for e in two_edges:
            add_edge(db, Edge(name=f"e{e.index}", api_url=e.url, admin_key_file=str(e.key_file), capacity=2,
                              admin_url=e.admin_url))
    app = create_app(db_url, tmp_path / "home", core_factory=functools.partial(MediaCore, tiers=TIERS))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Harness(client, tokens.load_secret(tmp_path / "home"), db_url, two_edges)
    finally:
        await client.close()


async def start(h: Harness, sites: list[str] | None) -> int:
    r = await h.client.post("/api/broadcast", json={"title": "Họp", **({"sites": sites} if sites else {})},
                            headers=h.ctl)
    assert r.status == 201, await r.text()
    return int((await r.json())["id"])


def mount(h: Harness, bid: int, where: dict[str, Any]) -> int:
    """The id of broadcast ``bid``'s mountpoint for the tier and edge ``where`` names."""
    room = h.client.server.app[SERVER_KEY].rooms[bid]
    return int(room.edges.edges[where["edge"]].feed.mounts[where["tier"]].id)


async def test_a_site_on_an_edge_follows_a_centre_broadcast_and_back(idle: Harness) -> None:
    h = idle
    viewers: list[EdgeViewer] = []
    try:
        district = await start(h, ["s1"])
        where = await h.where("s1")
        assert where["edge"] and where["mount"] == mount(h, district, where)
        viewers.append(await h.watch("s1", where))  # plays, and told ccctl (attendance)
        centre = await start(h, None)
        # The centre takes s1: ccctl hangs up its handle on the district's mountpoint.
        await asyncio.wait_for(viewers[-1].hangup.wait(), MOVE_S)
        assert ("leave", f"moved to broadcast {centre}") in [(k, d.get("reason")) for k, d in h.events("s1")]
        moved = await h.where("s1")  # it asks again, as edge.js does on a hangup
        assert moved["edge"] and moved["mount"] == mount(h, centre, moved) != where["mount"]
        viewers.append(await h.watch("s1", moved))
        assert "s1" in h.client.server.app[SERVER_KEY].rooms[centre].edges.watching
        assert "s1" not in h.client.server.app[SERVER_KEY].rooms[district].edges.watching
        # The centre ends: its mountpoints go, the site asks again and is given the district's.
        stopped = await h.client.delete(f"/api/broadcast?broadcast={centre}", headers=h.ctl)
        assert stopped.status == 200, await stopped.text()
        await asyncio.wait_for(viewers[-1].hangup.wait(), MOVE_S)
        back = await h.where("s1")
        assert back["edge"] and back["mount"] == mount(h, district, back)
        viewers.append(await h.watch("s1", back))
    finally:
        for viewer in viewers:
            await viewer.close()
