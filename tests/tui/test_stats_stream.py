"""Live media figures in the change stream (``stats`` events) and on the dashboard, against the
real server with a live broadcast and a real aiortc receiver joined by WHEP: the stream sends
what moved once a second, the whole table to a client that connects or falls behind, the
sites that left; the dashboard's detail panel and header show them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ccctl.media import tokens
from ccctl.media.changes import ChangeFeed, follow
from ccctl.media.core import MediaCore
from ccctl.media.quality import LossWindow, quality_class
from ccctl.media.server import create_app
from ccctl.media.tiers import TierSpec
from ccctl.registry import open_registry
from ccctl.registry.overview import site_states
from ccctl.tui.widgets.detail import Detail
from ccctl.tui.widgets.header import Header
from tests.tui.conftest import stalled_client
from tests.tui.pilot import SIZE, make_app, until

BOUND_S = 60.0  # a bound on each wait, not a synchronisation
SMALL_TIERS = {"high": TierSpec("high", 320, 180, 300_000), "low": TierSpec("low", 160, 90, 120_000),
               "audio": TierSpec("audio")}

pytestmark = pytest.mark.usefixtures("loopback_ice")  # tests/conftest.py


class Live:
    """The server in this process with a live broadcast, and WHEP receivers joined to it."""

    def __init__(self, server: TestServer, home: Path, db_url: str) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{server.port}"
        self.secret = tokens.load_secret(home)
        self.token = tokens.control_token(self.secret)
        self.db_url = db_url
        self.peers: list[RTCPeerConnection] = []
        self.drains: list[asyncio.Task[None]] = []

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with ClientSession() as http, http.request(
                method, f"{self.base}{path}", headers={"Authorization": f"Bearer {self.token}"}, **kwargs) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    async def join(self, site_id: str) -> RTCPeerConnection:
        """A real aiortc receiver joining as ``site_id`` (it keeps decoding what it gets)."""
        with open_registry(self.db_url) as db:
            token = tokens.site_token(self.secret, site_id, tokens.generation(db, site_id))
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.peers.append(pc)

        @pc.on("track")
        def on_track(track: Any) -> None:
            async def drain() -> None:
                with contextlib.suppress(MediaStreamError):
                    while True:
                        await track.recv()
            self.drains.append(asyncio.ensure_future(drain()))

        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with ClientSession() as http, http.post(
                f"{self.base}/whep/{site_id}", data=pc.localDescription.sdp,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}) as r:
            assert r.status == 201, await r.text()
            answer = await r.text()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return pc

    async def close(self) -> None:
        for pc in self.peers:
            await pc.close()
        for task in self.drains:
            task.cancel()
        await asyncio.gather(*self.drains, return_exceptions=True)


@pytest_asyncio.fixture
async def live(dash_db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    home = tmp_path / "home"
    app = create_app(dash_db_url, home, core_factory=functools.partial(MediaCore, tiers=SMALL_TIERS),
                     media_network="127.0.0.0/8")
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state = Live(server, home, dash_db_url)
    await state.call("POST", "/api/broadcast", json={"source": "testsrc", "title": "Giao ban"})
    try:
        yield state
    finally:
        await state.close()
        await server.close()


def a_site(db_url: str) -> str:
    with open_registry(db_url) as db:
        return str(site_states(db)[0]["id"])


async def stats_until(stream: AsyncIterator[tuple[str, str, dict[str, Any]]], table: dict[str, dict[str, Any]],
                      check: Any, what: str) -> dict[str, Any]:
    """Apply the stream's stats events to ``table`` until ``check(table, event)`` holds."""
    async def run() -> dict[str, Any]:
        async for event_id, name, data in stream:
            if name != "stats":
                continue
            assert event_id == ""  # figures are not events to resume after
            if data["full"]:
                table.clear()
            table.update(data["sites"])
            for site in data["gone"]:
                table.pop(site, None)
            if check(table, data):
                return data
        raise AssertionError(f"the stream ended before {what}")

    return await asyncio.wait_for(run(), BOUND_S)


@pytest.mark.asyncio
async def test_stats_events_follow_a_real_receiver(live: Live) -> None:
    site = a_site(live.db_url)
    stream = follow(live.base, live.token)
    table: dict[str, dict[str, Any]] = {}
    pc = await live.join(site)
    await stats_until(stream, table, lambda t, d: t.get(site, {}).get("state") == "connected"
                      and (t[site]["kbps"] or 0) > 0, "the site connected with a bitrate")
    assert table[site]["edge"] is None and table[site]["tier"] in SMALL_TIERS  # admission may start it lower
    # Its receiver reports give a loss over the window (on loopback, under 1 %: good) and an
    # RTT (once a report answers one of the server's sender reports).
    event = await stats_until(stream, table, lambda t, d: t[site]["quality"] is not None
                              and t[site]["rtt_ms"] is not None, "a quality class and an RTT")
    assert table[site]["quality"] == "good" and 0.0 <= table[site]["loss"] < 0.01
    assert table[site]["jitter_ms"] is not None
    assert event["classes"]["good"] == 1 and event["edges"] == []
    # A second client gets the whole table at once, without waiting for a change.
    other: dict[str, dict[str, Any]] = {}
    first = await stats_until(follow(live.base, live.token), other, lambda t, d: True, "the table")
    assert first["full"] and other[site]["quality"] == "good"
    await pc.close()
    await stats_until(stream, table, lambda t, d: site in d["gone"], "the site gone")
    assert site not in table


@pytest.mark.asyncio
async def test_dashboard_shows_a_real_receivers_live_figures(live: Live, tmp_path: Path) -> None:
    """The dashboard follows the real server's stream: the detail panel of a joined site shows
    its bitrate, loss, class, RTT, jitter and that ccctl serves it; the header counts the
    connected sites by class; when it leaves, both say so."""
    app = make_app(live.db_url, tmp_path / "home")
    app.listen = f"127.0.0.1:{live.server.port}"
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded and app.stream_state == "live", "the stream followed", BOUND_S)
        await pilot.press("s")
        row = app.rowlist.current()
        assert row is not None
        site = row["id"]
        header, panel = app.widget("#header", Header), app.widget("#detail", Detail)

        def shown() -> str:
            return panel.shown.plain if panel.shown is not None else ""

        pc = await live.join(site)
        await until(pilot, lambda: header.quality.get("good") == 1, "the header's count of good links", BOUND_S)
        assert header.last is not None and "   connected good 1\n" in header.last.plain
        assert "on air: Giao ban (testsrc)" in header.last.plain and "edges" not in header.last.plain
        await until(pilot, lambda: "good" in shown(), "the site's figures in the detail panel", BOUND_S)
        text = shown()
        assert re.search(r"broadcast connected tier (high|low|audio)  served by ccctl\n"
                         r"  \d+ kbps  loss 0\.\d % good  rtt (\d+ ms|-)  jitter \d+ ms\n", text), text
        figures = app.live.sites[site]
        assert figures["kbps"] > 0 and f"{figures['kbps']:.0f} kbps" in text
        await pc.close()
        await until(pilot, lambda: site not in app.live.sites and "broadcast" not in shown(), "the site gone",
                    BOUND_S)
        assert sum(header.quality.values()) == 0 and "connected good" not in header.last.plain


def test_only_moved_sites_are_sent_and_a_late_client_gets_the_table() -> None:
    """The feed's table with thousands of sessions: one delta with only the sites that moved;
    a client behind by more than one sample gets the whole table, not a queue of deltas."""
    feed = ChangeFeed("sqlite:///unused.db")  # not started: no registry is read
    rows: list[dict[str, Any]] = [{"site_id": f"s{i}", "tier": "high", "state": "connected", "kbps": 300.0, "packets_sent": 1000,
             "packets_lost": 0, "rtt_ms": 10.0, "jitter_ms": 3.0} for i in range(5000)]
    first = feed.take_sample(rows, [], 0.0)
    assert first is not None and len(first["sites"]) == 5000 and first["classes"]["unknown"] == 5000
    feed.stats_version += 1
    for row in rows:
        row["packets_sent"] += 500
        row["kbps"] = 301.0  # a wobble: not a change
    rows[7]["packets_lost"] = 100  # 20 % of what was sent since: terrible
    rows[8]["rtt_ms"] = 80.0
    second = feed.take_sample(rows, [{"name": "hn-1", "up": True, "viewers": 2, "sites": 3, "capacity": 100,
                                      "error": "", "watching": ["a", "b"]}], 1.0)
    assert second is not None
    moved = set(second["sites"])
    assert moved == {f"s{i}" for i in range(5000)}  # each one's first loss figure: its class is known now
    assert second["sites"]["s7"]["quality"] == "terrible" and second["classes"]["terrible"] == 1
    assert second["edges"] == [{"name": "hn-1", "up": True, "viewers": 2, "sites": 3, "capacity": 100,
                                "error": "", "watching": 2}]
    feed.stats_version += 1
    feed._delta = "delta"
    for row in rows:
        row["packets_sent"] += 500
    rows[8]["rtt_ms"] = 200.0
    third = feed.take_sample(rows, [{"name": "hn-1", "up": True, "viewers": 2, "sites": 3, "capacity": 100,
                                     "error": "", "watching": ["b", "a"]}], 2.0)
    # s8's RTT moved; s7's loss over the window halved (no new loss): the others stayed.
    assert third is not None and set(third["sites"]) == {"s7", "s8"} and third["gone"] == []
    assert third["sites"]["s7"]["loss"] == 0.1
    rows.pop()
    fourth = feed.take_sample(rows, [], 3.0)
    assert fourth is not None and fourth["sites"] == {} and fourth["gone"] == ["s4999"] and fourth["edges"] == []
    assert feed.take_sample(rows, [], 4.0) is None  # nothing moved: no event
    assert feed.stats_after(feed.stats_version) is None
    assert feed.stats_after(feed.stats_version - 1) == "delta"
    table = feed.stats_after(feed.stats_version - 2)
    assert table is not None and '"full": true' in table and table.count('"tier"') == 4999


def test_loss_window_and_classes() -> None:
    assert [quality_class(x) for x in (None, 0.0, 0.0099, 0.01, 0.0299, 0.03, 0.0999, 0.1, 1.0)] == [
        None, "good", "good", "ok", "ok", "bad", "bad", "terrible", "terrible"]
    window = LossWindow(20.0)
    assert window.observe("a", 0.0, None, None) is None  # no receiver report yet
    assert window.observe("a", 0.0, 0, 0) is None  # nothing sent since the base
    assert window.observe("a", 10.0, 1000, 50) == 0.05
    assert window.observe("a", 20.0, 2000, 50) == 0.025
    assert window.observe("a", 30.0, 3000, 50) == 0.0  # the loss of 0-10 s is out of the window
    assert window.observe("a", 31.0, 10, 0) is None  # counters went back: a new session
    window.keep_only(set())
    assert window.samples == {}


@pytest.mark.asyncio
async def test_a_long_header_line_is_cut_not_wrapped() -> None:
    """With every state, big counts and every quality class the first line is longer than a
    narrow screen: it is cut, and the second line (registry, server, stream) stays in view."""
    from textual.app import App, ComposeResult

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield Header(id="header")

    app = One()
    async with app.run_test(size=(100, 4)) as pilot:
        header = app.query_one(Header)
        header.styles.height = 2
        header.show(counts={s: 1_000 for s in ("OK", "DEGRADED", "UNREACHABLE", "AUTH_FAILED", "TIMEOUT", "ERROR")},
                    newest=0.0, now=10.0, registry="ok", server="up", broadcast=["on air: Giao ban (testsrc)"],
                    quality={"good": 9_000, "ok": 500, "bad": 90, "terrible": 9, "unknown": 3},
                    edges=[{"name": "hn-1", "up": True, "watching": 12, "capacity": 100}])
        await pilot.pause()
        lines = [header.render_line(y).text for y in range(2)]
        assert lines[0].startswith("6,000 sites  OK 1,000") and lines[0].rstrip().endswith("…")
        assert lines[1].lstrip().startswith("registry ok   server up")


@pytest.mark.asyncio
async def test_a_client_that_stops_reading_is_sent_the_table_not_a_queue(dash_db_url: str) -> None:
    """A change-stream client that stops reading (a tiny receive buffer, nothing read) while
    the figures of 10,599 sites move every second: the server's writes to it wait for its
    socket, the others' figures keep coming, and when it reads again it gets the current
    table (``full``), not every delta it missed. The figures come from a plain function
    standing in for the media core (10,599 real peers are a benchmark's work, not a test's)."""

    from aiohttp import web

    from ccctl.media.changes import EVENTS_KEY, add_change_routes

    tick = 0

    async def figures() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        nonlocal tick
        tick += 1  # every site's bitrate moves by a third each second: each delta names them all
        return [{"site_id": f"s{i}", "state": "connected", "tier": "high", "kbps": 300.0 if tick % 2 else 200.0,
                 "packets_sent": 1000 * tick, "packets_lost": 0, "rtt_ms": 10.0, "jitter_ms": 2.0}
                for i in range(10_599)], []

    app = web.Application()
    add_change_routes(app, dash_db_url, lambda request: None, figures)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    feed = app[EVENTS_KEY]
    reader, writer = await stalled_client(server.port, BOUND_S)  # a client that reads nothing for now
    try:
        # A second client reading all along keeps getting the figures while the first one waits.
        table: dict[str, dict[str, Any]] = {}
        other = follow(f"http://127.0.0.1:{server.port}", "unused")
        await stats_until(other, table, lambda t, d: len(t) == 10_599, "the other client's table")
        paused_at = feed.stats_version
        await stats_until(other, table, lambda t, d: feed.stats_version >= paused_at + 5, "five more samples")
        versions = feed.stats_version - paused_at
        # Read again: the events after the pause, up to the first whole table sent after the first.
        fulls, events, buffer = 0, 0, b""

        async def read_on() -> None:
            nonlocal fulls, events, buffer
            while fulls < 2:
                buffer += await reader.read(1 << 20)
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    if b"event: stats" in block:
                        events += 1
                        fulls += b'"full": true' in block

        await asyncio.wait_for(read_on(), BOUND_S)
        assert fulls == 2 and events < versions + 1, (events, versions)
    finally:
        writer.close()
        await server.close()
