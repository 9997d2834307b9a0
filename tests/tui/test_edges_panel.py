"""The Janus edges serving the live broadcast, on the dashboard (issue 14): the header lists
each edge with the sites watching from it and its capacity (or down), from the change stream;
a site's detail panel names the edge serving it.

The Pilot test runs the real server with a live broadcast and two real Janus edges, each in
its own network namespace (the ``two_edges`` fixture of tests/edges: it needs root and
Debian's janus, and says so when it skips); a real aiortc viewer plays one site through the
edge ccctl names for it. The rendering of the edges' line is also checked on its own."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from rich.text import Text

from ccctl.edges.local import JanusEdge
from ccctl.edges.viewer import EdgeViewer
from ccctl.media import tokens
from ccctl.media.core import MediaCore
from ccctl.media.server import create_app
from ccctl.registry import open_registry
from ccctl.registry.edges import Edge, add_edge
from ccctl.tui.widgets.detail import Detail
from ccctl.tui.widgets.header import Header, edges_line, edges_of
from tests.edges.conftest import edges_available, two_edges  # noqa: F401 - fixtures used by name
from tests.edges.test_feed import TIERS, frames
from tests.tui.pilot import SIZE, make_app, until

BOUND_S = 60.0  # a bound on each wait, not a synchronisation


@pytest_asyncio.fixture
async def served(two_edges: list[JanusEdge], dash_db_url: str,  # noqa: F811 - the imported fixture
                 tmp_path: Path) -> AsyncIterator[tuple[TestClient, Path]]:
    """The real server with both edges registered (capacity 2 and 5) and a live broadcast."""
    with open_registry(dash_db_url) as db:
        for e, capacity in zip(two_edges, (2, 5), strict=True):
            add_edge(db, Edge(name=f"e{e.index}", api_url=e.url, admin_key_file=str(e.key_file),
                              capacity=capacity, admin_url=e.admin_url))
    home = tmp_path / "home"
    app = create_app(dash_db_url, home, core_factory=functools.partial(MediaCore, tiers=TIERS))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        control = {"Authorization": f"Bearer {tokens.control_token(tokens.load_secret(home))}"}
        r = await client.post("/api/broadcast", json={"title": "Họp trực tuyến"}, headers=control)
        assert r.status == 201, await r.text()
        yield client, home
    finally:
        await client.close()


async def watch_through_edge(client: TestClient, home: Path, db_url: str, site: str) -> tuple[EdgeViewer, str]:
    """The site asks ccctl where to play, plays there with a real viewer, and says so."""
    with open_registry(db_url) as db:
        token = tokens.site_token(tokens.load_secret(home), site, tokens.generation(db, site))
    auth = {"Authorization": f"Bearer {token}"}
    r = await client.get(f"/api/sites/{site}/edge", headers=auth)
    where: dict[str, Any] = await r.json()
    assert r.status == 200 and where["edge"], where
    viewer = await EdgeViewer(where["url"], where["mount"], where["pin"]).start()
    assert len(await frames(viewer, "video", 3)) == 3
    r = await client.post(f"/api/sites/{site}/edge", json={"state": "watching", "edge": where["edge"], **viewer.ids},
                          headers=auth)
    assert r.status == 204, await r.text()
    return viewer, str(where["edge"])


@pytest.mark.asyncio
async def test_header_and_detail_show_the_edges_serving_the_broadcast(
        served: tuple[TestClient, Path], dash_db_url: str, tmp_path: Path) -> None:
    client, home = served
    app = make_app(dash_db_url, home)
    app.listen = f"127.0.0.1:{client.port}"
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded and app.stream_state == "live", "the stream followed", BOUND_S)
        header, panel = app.widget("#header", Header), app.widget("#detail", Detail)
        await until(pilot, lambda: [(e["name"], e["up"]) for e in header.edges] == [("e0", True), ("e1", True)],
                    "both edges shown up", BOUND_S)
        assert header.last is not None and "edges e0 0/2 e1 0/5" in header.last.plain
        await pilot.press("s")
        row = app.rowlist.current()
        assert row is not None
        viewer, edge = await watch_through_edge(client, home, dash_db_url, row["id"])
        try:
            counts = {"e0": 0, "e1": 0} | {edge: 1}
            await until(pilot, lambda: {e["name"]: e["watching"] for e in header.edges} == counts,
                        "the site counted on its edge", BOUND_S)
            assert f"edges e0 {counts['e0']}/2 e1 {counts['e1']}/5" in header.last.plain
            await until(pilot, lambda: panel.shown is not None and f"served by edge {edge}" in panel.shown.plain,
                        "the detail panel naming the edge", BOUND_S)
            assert app.live.sites[row["id"]]["edge"] == edge
        finally:
            await viewer.close()


def test_edges_line_rendering() -> None:
    """Sites watching / capacity per edge; a full edge stands out; a down edge says so; an
    edge without a capacity shows none."""
    text = Text()
    edges_line(text, [{"name": "hn-1", "up": True, "watching": 12, "capacity": 100},
                      {"name": "hcm-1", "up": True, "watching": 50, "capacity": 50},
                      {"name": "dn-1", "up": False, "watching": 0, "capacity": 80},
                      {"name": "ct-1", "up": True, "watching": 1_234, "capacity": None}])
    assert text.plain == "   edges hn-1 12/100 hcm-1 50/50 dn-1 down ct-1 1,234/-"
    styles = {text.plain[s.start:s.end]: str(s.style) for s in text.spans}
    assert styles["12/100"] == "green" and styles["50/50"] == "bold yellow" and styles["down"] == "bold red"


def test_edges_from_the_status_poll() -> None:
    """Without the change stream, the broadcast status's sessions give the edges serving sites."""
    sessions = [{"site_id": "a", "edge": "e1"}, {"site_id": "b", "edge": None}, {"site_id": "c", "edge": "e0"},
                {"site_id": "d", "edge": "e1"}, {"site_id": "e"}]
    assert edges_of(sessions) == [{"name": "e0", "up": True, "watching": 1, "capacity": None},
                                  {"name": "e1", "up": True, "watching": 2, "capacity": None}]
    assert edges_of([]) == []
