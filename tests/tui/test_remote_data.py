"""The remote console's data panels (``dashboard --server URL``) through a real server's data
routes (ccctl/media/dataroutes.py): the overview's sparklines, the data feeds and the meeting's
readiness are those a console on the registry itself reads (the same core), shown in Pilot; the
routes refuse a request without the control token; a server without them (an older one) answers
404 and the panels say they are not served."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ccctl.feeds.pull import pull_feed
from ccctl.feeds.spec import FeedSpec
from ccctl.media.changes import add_change_routes
from ccctl.media.tokens import control_token, load_secret
from ccctl.meetings.plan import plan_meeting
from ccctl.registry import feeds as feed_store
from ccctl.registry import meetings as meeting_store
from ccctl.registry import open_registry
from ccctl.registry.overview import latest_run_id
from ccctl.registry.sites import SiteFilter, select_sites
from ccctl.tui import data
from ccctl.tui.feeds import RegistryFeed, meeting_readiness
from ccctl.tui.widgets.datapanel import DataPanel
from ccctl.tui.widgets.eventlog import EventLog
from ccctl.tui.widgets.readiness import ReadinessPanel
from tests.tui.pilot import SIZE, make_app, screen_text, until

FIXTURES = Path(__file__).resolve().parents[2] / "configs" / "feeds"
NOW = 1_800_000_100.0  # the console's frozen clock: the fixture's run is in this hour


def panel(app: Any, selector: str, kind: type[Any]) -> str:
    shown = app.widget(selector, kind).last
    return shown.plain if shown is not None else ""


async def seed(db_url: str) -> int:
    """Two feeds pulled from the shipped fixtures, and a meeting whose pre-check took the
    fixture's roll-call; the meeting's id."""
    with open_registry(db_url) as db:
        feed_store.add_feed(db, FeedSpec("covid", str(FIXTURES / "covid-provinces.json")))
        feed_store.add_feed(db, FeedSpec("risk", str(FIXTURES / "ca-mau-communes.csv"), level="commune"))
        await pull_feed(db, "covid")
        await pull_feed(db, "risk")
        ids = tuple(s.id for s in select_sites(db)[:6])
        planned = plan_meeting(db, title="Giao ban trực tuyến", at="2027-01-15 16:30", tz="Asia/Ho_Chi_Minh",
                               flt=SiteFilter(ids=ids), checks="-60m,-15m", source="testsrc", record=False,
                               now=NOW - 600)
        first = meeting_store.checks(db, planned.meeting_id)[0]
        meeting_store.finish_check(db, first["id"], "done", NOW - 60, latest_run_id(db), {"sites": 6}, None)
        return planned.meeting_id


@pytest.mark.asyncio
async def test_the_remote_console_shows_the_same_data(server: TestServer, dash_db_url: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "FEEDS_S", 0.1)
    meeting_id = await seed(dash_db_url)
    local = RegistryFeed(dash_db_url)  # what a console on the registry itself reads
    try:
        local_trend, local_feeds = local.trend(NOW), local.feeds()
    finally:
        local.close()
    with open_registry(dash_db_url) as db:
        local_meeting = json.loads(json.dumps(meeting_readiness(db, NOW), default=str))
    assert local_feeds is not None and local_trend and local_meeting["summary"]

    base = f"http://127.0.0.1:{server.port}"
    token = control_token(load_secret(tmp_path / "server-home"))
    app = make_app("sqlite:///nowhere-on-this-laptop.db", tmp_path / "laptop", server_url=base, token=token,
                   clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded and app.trend is not None, "the overview and the trend")
        assert app.trend == local_trend
        await until(pilot, lambda: "ready, last 24 h" in screen_text(app), "the sparkline column")
        await until(pilot, lambda: app.feed_data is not None and app.meeting_loaded, "the feeds and the meeting")
        assert app.feed_data == local_feeds.feeds  # risk keyed by tuples, (day, value) pairs: as read locally
        assert app.meeting_read == local_meeting
        assert app.site_risk(next(s for s in app.fleet.order if s["scheme"] == "2021"
                                  and s["province_code"] == "95")) == 2.0  # the map's colouring has it too

        await pilot.press("colon", *"prov 95", "enter", "i", "M")
        await until(pilot, lambda: "Bạc Liêu (2021)" in panel(app, "#data", DataPanel), "the data panel")
        text = panel(app, "#data", DataPanel)
        assert "covid" in text and "risk" in text and "not served" not in text
        assert any(line.strip().startswith("new_cases") for line in text.splitlines())
        await until(pilot, lambda: "Giao ban" in panel(app, "#meeting", ReadinessPanel), "the meeting panel")
        assert f"{meeting_id} Giao ban trực tuyến" in panel(app, "#meeting", ReadinessPanel)
        assert "not served" not in panel(app, "#meeting", ReadinessPanel)

        # A feed event written now (a failed pull) reaches the remote console's log once.
        broken = tmp_path / "broken.json"
        broken.write_text('{"data": [', "utf-8")
        with open_registry(dash_db_url) as db:
            feed_store.add_feed(db, FeedSpec("broken", str(broken)))
            with pytest.raises(Exception, match="broken"):
                await pull_feed(db, "broken")
        log = app.widget("#log", EventLog)
        await until(pilot, lambda: any("feed broken: pull failed" in line for line, _ in log.lines),
                    "the failed pull in the log")


def get(url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.asyncio
async def test_the_data_routes_need_the_token(server: TestServer, tmp_path: Path) -> None:
    import asyncio

    base = f"http://127.0.0.1:{server.port}"
    token = control_token(load_secret(tmp_path / "server-home"))
    for path in ("/api/data/trend", "/api/data/feeds", "/api/data/meeting"):
        status, body = await asyncio.to_thread(get, base + path, None)
        assert status == 401, (path, status, body)
        status, _ = await asyncio.to_thread(get, base + path, "x" * 64)
        assert status == 401
        status, body = await asyncio.to_thread(get, base + path, token)
        assert status == 200 and json.loads(body)
    status, body = await asyncio.to_thread(get, f"{base}/api/data/trend?hours=nan", token)
    assert status == 400 and "hours" in body and "\n" not in body.strip()


@pytest.mark.asyncio
async def test_a_server_without_the_data_routes(dash_db_url: str, tmp_path: Path) -> None:
    """An older server (only the overview and the change stream): 404, shown as not served."""
    app_server = web.Application()
    add_change_routes(app_server, dash_db_url, lambda request: None)
    srv = TestServer(app_server, host="127.0.0.1")
    await srv.start_server()
    try:
        app = make_app("sqlite:///nowhere-on-this-laptop.db", tmp_path / "laptop",
                       server_url=f"http://127.0.0.1:{srv.port}", token="t" * 32)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("i", "M")
            await until(pilot, lambda: "not served" in panel(app, "#data", DataPanel), "the data panel's answer")
            await until(pilot, lambda: "not served" in panel(app, "#meeting", ReadinessPanel), "the meeting's")
            assert app.trend is None and app.trend_for(app.fleet.here) is None  # no sparkline column
            await until(pilot, lambda: not any(w.group in ("meeting", "trend", "feeds") for w in app.workers
                                               if not w.is_finished), "the data workers ended")
    finally:
        await srv.close()
