"""A broadcast's audience: who may join it, who attended it, what its status says.

The real server app on a loopback port with real aiortc sites posting WHEP offers with their
tokens (a site outside the audience is refused with 403, one inside receives the program);
attendance classes from events on the real registry (SQLite, and PostgreSQL under
scripts/test.sh); and the CLI end to end against a detached server: `broadcast start` with site
filters, `status --format json`, `list`, `--broadcast`, and a meeting's audience.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from ccctl.media import state, tokens
from ccctl.media.core import MediaCore
from ccctl.media.server import create_app
from ccctl.meetings.attendance import Tolerances, broadcast_attendance
from ccctl.registry import Database, open_registry
from ccctl.registry.broadcasts import audience_ids, list_broadcasts
from ccctl.registry.sites import add_site
from tests.conftest import Ccctl, free_port
from tests.media.conftest import SMALL_TIERS, Site

SITES = {"in-1": "26740", "in-2": "26740", "out-1": "00001"}


class Room:
    """The server app in this process and the real peers joining it."""

    def __init__(self, client: TestClient, home: Path, db_url: str) -> None:
        self.client, self.db_url = client, db_url
        self.secret = tokens.load_secret(home)
        self.peers: list[Site] = []

    def auth(self, site_id: str | None = None) -> dict[str, str]:
        if site_id is None:
            return {"Authorization": f"Bearer {tokens.control_token(self.secret)}"}
        with open_registry(self.db_url) as db:
            return {"Authorization": f"Bearer {tokens.site_token(self.secret, site_id, tokens.generation(db, site_id))}"}

    async def join(self, site_id: str) -> tuple[Site, Any]:
        """A sound-only site's WHEP offer; the answer applied when it is a 201."""
        peer = Site(("audio",))
        self.peers.append(peer)
        response = await self.client.post(f"/whep/{site_id}", data=await peer.offer(),
                                          headers={"Content-Type": "application/sdp", **self.auth(site_id)})
        if response.status == 201:
            await peer.accept(await response.text())
        return peer, response

    def events(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        with open_registry(self.db_url) as db:
            return [(site, json.loads(detail)) for site, detail in db.query(
                "SELECT site_id, detail FROM broadcast_events WHERE kind = ? ORDER BY id", (kind,))]


@pytest_asyncio.fixture
async def room(units_db_url: str, tmp_path: Path, loopback_ice: None) -> AsyncIterator[Room]:
    with open_registry(units_db_url) as db:
        for site_id, unit in SITES.items():
            add_site(db, {"id": site_id, "name": f"Điểm cầu {site_id}", "unit_code": unit, "tier": "audio"})
    app = create_app(units_db_url, tmp_path, core_factory=functools.partial(MediaCore, tiers=SMALL_TIERS),
                     media_network="127.0.0.0/8")
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    r = Room(client, tmp_path, units_db_url)
    try:
        yield r
    finally:
        for peer in r.peers:
            await peer.close()
        await client.close()


@pytest.mark.asyncio
async def test_only_the_audience_joins(room: Room) -> None:
    client, ctl = room.client, room.auth()
    empty = await client.post("/api/broadcast", json={"sites": []}, headers=ctl)
    assert empty.status == 400 and "audience is empty" in await empty.text()
    bad = await client.post("/api/broadcast", json={"sites": ["in-1", "a\nb"]}, headers=ctl)
    assert bad.status == 400 and "one line" in await bad.text()
    # Every commune of the country fits in one start (a body beyond the JSON default of 64 KB).
    national = [f"2021-{n:05d}" for n in range(11_000)]
    started = await client.post("/api/broadcast", json={"title": "Toàn quốc", "sites": national}, headers=ctl)
    assert started.status == 201, await started.text()
    assert (await started.json())["audience"] == 11_000
    assert (await client.delete("/api/broadcast", headers=ctl)).status == 200
    started = await client.post("/api/broadcast", json={"title": "Họp tỉnh", "sites": ["in-1", "in-2", "in-1"]},
                                headers=ctl)
    assert started.status == 201, await started.text()
    bid = (await started.json())["id"]
    assert (await started.json())["audience"] == 2
    # Outside the audience: a one-line 403 for the WHEP offer and the join page, one event.
    for _ in range(2):
        _, refused = await room.join("out-1")
        assert refused.status == 403
        assert await refused.text() == f"site out-1 is not in the audience of broadcast {bid}\n"
    token = room.auth("out-1")["Authorization"].split()[1]
    assert (await client.get(f"/join/out-1?t={token}")).status == 403
    edge = await client.get("/api/sites/out-1/edge", headers=room.auth("out-1"))  # nor is it given an edge
    assert edge.status == 403 and "not in the audience" in await edge.text()
    assert room.events("refused") == [("out-1", {"why": "not in the audience"})]
    floor = await client.post("/api/floor", json={"site": "out-1"}, headers=ctl)
    assert floor.status == 409 and "not in the audience" in await floor.text()
    # Inside: its page and its offer are taken, and the program's sound reaches it.
    token = room.auth("in-1")["Authorization"].split()[1]
    assert (await client.get(f"/join/in-1?t={token}")).status == 200
    peer, admitted = await room.join("in-1")
    assert admitted.status == 201
    assert len(await peer.frames(5, "audio")) == 5
    status = await (await client.get(f"/api/broadcast?broadcast={bid}", headers=ctl)).json()
    assert (status["id"], status["audience"], status["audience_all"]) == (bid, 2, False)
    assert [s["site_id"] for s in status["sessions"]] == ["in-1"]
    other = await client.get(f"/api/broadcast?broadcast={bid + 1}", headers=ctl)
    assert other.status == 404 and await other.text() == f"broadcast {bid + 1} is not live\n"
    assert (await client.delete(f"/api/broadcast?broadcast={bid + 1}", headers=ctl)).status == 404
    assert (await client.delete(f"/api/broadcast?broadcast={bid}", headers=ctl)).status == 200
    # No filter: every enabled site is the audience.
    everyone = await client.post("/api/broadcast", json={"title": "Toàn quốc"}, headers=ctl)
    assert everyone.status == 201 and (await everyone.json())["audience"] == "all"
    assert (await client.get(f"/join/out-1?t={room.auth('out-1')['Authorization'].split()[1]}")).status == 200
    status = await (await client.get("/api/broadcast", headers=ctl)).json()
    assert (status["audience"], status["audience_all"]) == (3, True)


def _event(db: Database, bid: int, ts: float, site: str, kind: str, detail: dict[str, Any]) -> None:
    db.execute("INSERT INTO broadcast_events (broadcast_id, ts, site_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
               (bid, ts, site, kind, json.dumps(detail)))


def test_attendance_classes_against_the_audience(units_db: Database) -> None:
    db = units_db
    for site_id in ("a", "b", "c", "d", "e", "x"):
        add_site(db, {"id": site_id, "name": f"Điểm cầu {site_id}", "unit_code": "26740"})
    bid = state.start_broadcast(db, "Họp", "testsrc", {}, ["a", "b", "c", "d", "e"])
    assert audience_ids(db, bid) == {"a", "b", "c", "d", "e"}
    t0 = 1_800_000_000.0
    with db.transaction():
        db.execute("UPDATE broadcasts SET started_at = ?, ended_at = ?, status = 'ended' WHERE id = ?",
                   (t0, t0 + 3600, bid))
        _event(db, bid, t0 + 10, "a", "join", {"tier": "high"})  # present the whole hour
        _event(db, bid, t0 + 900, "b", "join", {"tier": "low"})  # late
        _event(db, bid, t0 + 5, "d", "join", {"tier": "high"})  # left early for good
        _event(db, bid, t0 + 600, "d", "leave", {})
        _event(db, bid, t0 + 20, "e", "join", {"tier": "audio"})  # sound only
        _event(db, bid, t0 + 30, "x", "join", {"tier": "high"})  # not in the audience (c never came)
    rows = {r["site_id"]: r for r in broadcast_attendance(db, bid, t0 + 7200, Tolerances(300, 300))}
    got = {s: (r["status"], r["left_early"], r["audio_only"], r["in_audience"]) for s, r in rows.items()}
    assert got == {"a": ("present", False, False, True), "b": ("late", False, False, True),
                   "c": ("absent", False, False, True), "d": ("present", True, False, True),
                   "e": ("present", False, True, True), "x": ("present", False, False, False)}
    assert rows["a"]["seconds"] == 3590.0 and rows["d"]["seconds"] == 595.0 and rows["c"]["joins"] == 0
    assert rows["a"]["site_name"] == "Điểm cầu a" and rows["x"]["site_name"] is None
    assert next(iter(rows)) == "c"  # absent first
    listed = {r["id"]: r for r in list_broadcasts(db)}
    assert (listed[bid]["audience"], listed[bid]["status"]) == (5, "ended")
    everyone = state.start_broadcast(db, "Toàn quốc", "testsrc", {})
    assert audience_ids(db, everyone) is None
    assert [r["id"] for r in list_broadcasts(db)][0] == everyone  # the live one first
    absent = {r["site_id"]: r["status"] for r in broadcast_attendance(db, everyone, t0 + 7200)}
    assert absent == dict.fromkeys(("a", "b", "c", "d", "e", "x"), "absent")  # every enabled site


def test_several_live_and_none_named_is_a_clear_error(ccctl: Ccctl) -> None:
    with open_registry(ccctl.db_url) as db:
        first = state.start_broadcast(db, "Trung ương", "testsrc", {})
        second = state.start_broadcast(db, "Tỉnh", "testsrc", {}, ["bn-1"])
    for args in (("status",), ("stop",), ("floor", "--release"), ("tier", "bn-1", "audio"), ("attendance",)):
        result = ccctl("broadcast", *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert result.stderr.strip().endswith(
            f"2 broadcasts are live ({first}, {second}): name one with --broadcast ID"), result.stderr
    named = ccctl.json("broadcast", "attendance", "--broadcast", str(first))
    assert named == []  # every enabled site: none in this registry
    assert [r["audience"] for r in ccctl.json("broadcast", "list")] == [1, "all"]


@pytest.fixture
def served(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch, loopback_ice: None) -> Iterator[Ccctl]:
    """A detached server on a free loopback port, with sites in two provinces."""
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", f"127.0.0.1:{free_port()}")
    for site_id, unit in (("bn-1", "26740"), ("bn-2", "26740"), ("px-1", "00001")):
        added = ccctl("sites", "add", site_id, "--name", f"Điểm cầu {site_id}", "--unit", unit, "--tier", "audio")
        assert added.exit_code == 0, added.stderr
    started = ccctl("serve", "--detach")
    assert started.exit_code == 0, started.stderr
    yield ccctl
    ccctl("serve", "--stop")


def _post_offer(url: str, token: str) -> tuple[int, str]:
    """A WHEP POST (the answer is not used: the status and body are what is checked)."""
    request = urllib.request.Request(url, data=b"v=0\r\n", method="POST", headers={
        "Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_cli_audience_status_list_and_meeting(served: Ccctl) -> None:
    from ccctl.meetings.times import local_text
    from tests.test_broadcast_e2e import whep_join

    ccctl = served
    assert ccctl.json("broadcast", "status") == {"live": False, "broadcast": None, "sessions": []}
    nobody = ccctl("broadcast", "start", "--province", "01", "--tag", "nothing-has-this")
    assert nobody.exit_code == 2 and "no enabled site matches" in nobody.stderr
    started = ccctl("broadcast", "start", "--province", "79", "--title", "Họp Thành phố")
    assert started.exit_code == 0 and "audience: 2 site(s)" in started.stderr, started.stderr
    links = {r["site_id"]: r for r in ccctl.json("broadcast", "links")}
    status, text = _post_offer(links["px-1"]["whep_url"], links["px-1"]["token"])
    assert status == 403 and text.startswith("site px-1 is not in the audience of broadcast")

    async def scenario() -> None:
        bn, _, _ = await whep_join(links["bn-1"]["whep_url"], links["bn-1"]["token"], kinds=("audio",))
        data = await asyncio.to_thread(ccctl.json, "broadcast", "status")
        live = data["broadcast"]
        assert data["live"] and (live["title"], live["source"], live["audience"], live["floor"]) == (
            "Họp Thành phố", "testsrc", 2, None)
        assert live["counts"]["sessions"] == 1 and [s["site_id"] for s in data["sessions"]] == ["bn-1"]
        table = await asyncio.to_thread(ccctl, "broadcast", "status")
        assert "Họp Thành phố (testsrc), 1 of 2 site(s) connected" in table.stderr, table.stderr
        seen = {r["site_id"]: r for r in await asyncio.to_thread(ccctl.json, "broadcast", "attendance")}
        assert {s: (r["status"], r["audio_only"]) for s, r in seen.items()} == {
            "bn-1": ("present", True), "bn-2": ("absent", False)}
        await bn.close()

    asyncio.run(scenario())
    bid = ccctl.json("broadcast", "list")[0]["id"]
    assert ccctl.json("broadcast", "list")[0]["status"] == "live"
    wrong = ccctl("broadcast", "stop", "--broadcast", str(bid + 1))
    assert wrong.exit_code != 0 and f"broadcast {bid + 1} is not live" in wrong.stderr
    assert ccctl("broadcast", "stop", "--broadcast", str(bid)).exit_code == 0
    provinces = ccctl.json("broadcast", "attendance", "--broadcast", str(bid), "--by", "province")
    assert [(p["province_code"], p["audience"], p["present"], p["absent"]) for p in provinces] == [("79", 2, 1, 1)]
    listed = ccctl("broadcast", "list", "--format", "csv")
    assert listed.exit_code == 0 and listed.stdout.splitlines()[0].startswith("id,title,source,status")
    # A meeting's broadcast takes the meeting's audience.
    at = local_text(time.time() + 3600, "Asia/Ho_Chi_Minh")
    assert at is not None
    meeting = ccctl.json("meeting", "plan", "--at", at[:16], "--title", "Họp phường", "--site", "px-1",
                         "--checks", "-5m")
    assert ccctl("meeting", "start", str(meeting["id"])).exit_code == 0
    assert _post_offer(links["bn-1"]["whep_url"], links["bn-1"]["token"])[0] == 403
    assert ccctl.json("broadcast", "status")["broadcast"]["audience"] == 1
