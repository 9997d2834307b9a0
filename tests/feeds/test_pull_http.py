"""A real aiohttp server on loopback serves the fixtures, then each kind of bad data: the last
good data stay, the error and the event say why."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from ccctl.errors import FeedError
from ccctl.feeds import views
from ccctl.feeds.pull import pull_feed
from ccctl.feeds.spec import FeedSpec
from ccctl.registry import Database
from ccctl.registry import feeds as store

ROOT = Path(__file__).resolve().parents[2]
PROVINCES = (ROOT / "configs" / "feeds" / "covid-provinces.json").read_bytes()
TOKEN = "s3cret-token-for-tests"


def _edited(edit: Any) -> bytes:
    data = json.loads(PROVINCES)
    edit(data["data"])
    return json.dumps(data, ensure_ascii=False).encode()


def _negative(items: list[dict[str, Any]]) -> None:
    items[4]["new_cases"] = -5


def _bad_date(items: list[dict[str, Any]]) -> None:
    items[2]["case_by_day"]["31/2/2021"] = 3


def _future(items: list[dict[str, Any]]) -> None:
    items[2]["case_by_day"]["1/1/2099"] = 3


def _unknown(items: list[dict[str, Any]]) -> None:
    items[7]["name"] = "Tỉnh Atlantis"


class Source:
    """The fake national API: a real HTTP server whose answers the test switches."""

    def __init__(self) -> None:
        self.mode = "good"
        self.release = asyncio.Event()
        self.seen_if_none_match: list[str | None] = []
        self.seen_if_modified_since: list[str | None] = []
        self.url = ""

    async def provinces(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="no token")
        self.seen_if_none_match.append(request.headers.get("If-None-Match"))
        mode = self.mode
        if mode == "good":
            if request.headers.get("If-None-Match") == '"v1"':
                return web.Response(status=304)
            return web.Response(body=PROVINCES, content_type="application/json", headers={"ETag": '"v1"'})
        if mode == "html":
            return web.Response(text="<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if mode == "truncated":
            return web.Response(body=PROVINCES[: len(PROVINCES) // 2], content_type="application/json")
        if mode == "500":
            return web.Response(status=500, text="Internal Server Error")
        if mode == "slow":
            await self.release.wait()  # answers only when the test ends: the client's timeout fires first
            return web.Response(body=PROVINCES, content_type="application/json")
        edits = {"negative": _negative, "bad_date": _bad_date, "future": _future, "unknown": _unknown}
        return web.Response(body=_edited(edits[mode]), content_type="application/json")


    async def by_date(self, request: web.Request) -> web.StreamResponse:
        """Validated by Last-Modified only (no ETag)."""
        stamp = "Fri, 15 Oct 2021 11:00:00 GMT"
        self.seen_if_modified_since.append(request.headers.get("If-Modified-Since"))
        if request.headers.get("If-Modified-Since") == stamp:
            return web.Response(status=304)
        return web.Response(body=PROVINCES, content_type="application/json", headers={"Last-Modified": stamp})

    async def moved(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("http://127.0.0.2:9/elsewhere?key=abc")


@pytest_asyncio.fixture
async def source() -> AsyncIterator[Source]:
    src = Source()
    app = web.Application()
    app.router.add_get("/api/v3/covid/provinces", src.provinces)
    app.router.add_get("/by-date/provinces", src.by_date)
    app.router.add_get("/moved", src.moved)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    src.url = f"http://127.0.0.1:{port}/api/v3/covid/provinces"
    try:
        yield src
    finally:
        src.release.set()
        await runner.cleanup()


def _add(db: Database, url: str, tmp: Path, timeout: float = 10.0) -> None:
    header = tmp / "token"
    header.write_text(f"Authorization: Bearer {TOKEN}\n")
    store.add_feed(db, FeedSpec("cases", url, header_file=str(header), timeout_s=timeout,
                                alerts=("new_cases>500",)), replace=True)


BAD = [
    ("html", "sent an HTML page, not data"),
    ("truncated", "invalid or truncated JSON"),
    ("500", "HTTP 500 Internal Server Error"),
    ("slow", "no answer from"),
    ("negative", "new_cases: negative count -5"),
    ("bad_date", "bad date '31/2/2021'"),
    ("future", "date 2099-01-01 is in the future"),
    ("unknown", "no province of scheme 2021 has the name 'Tỉnh Atlantis'"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("mode", "why"), BAD, ids=[m for m, _ in BAD])
async def test_bad_data_keeps_the_last_good_data(units_db: Database, source: Source, tmp_path: Path,
                                                 mode: str, why: str) -> None:
    _add(units_db, source.url, tmp_path)
    first = await pull_feed(units_db, "cases")
    assert first.status == "ok" and first.units == 63 and first.newest_day == "2021-10-15"
    good = views.wide_rows(units_db, "cases")
    before = store.feed_events(units_db, "cases")
    source.mode = mode
    if mode == "slow":
        _add(units_db, source.url, tmp_path, timeout=1.0)
    with pytest.raises(FeedError) as raised:
        await pull_feed(units_db, "cases")
    message = str(raised.value)
    assert message.startswith("feed cases: ") and why in message + " ".join(r for _, r in raised.value.problems)
    assert message.endswith("last good data kept") and "\n" not in message
    assert raised.value.exit_code == 10
    assert views.wide_rows(units_db, "cases") == good
    _, state = store.get_feed(units_db, "cases")
    assert state["last_error"] and why.split(":")[0] in state["last_error"]
    assert state["newest_day"] == "2021-10-15" and state["last_ok_at"] < state["last_error_at"]
    events = store.feed_events(units_db, "cases")
    assert len(events) == len(before) + 1
    assert events[0]["kind"] == "pull_failed" and events[0]["detail"] == state["last_error"]
    assert TOKEN not in json.dumps(events) + json.dumps(state, default=str)


@pytest.mark.asyncio
async def test_conditional_get_and_token(units_db: Database, source: Source, tmp_path: Path) -> None:
    _add(units_db, source.url, tmp_path)
    assert (await pull_feed(units_db, "cases")).status == "ok"
    again = await pull_feed(units_db, "cases")
    assert again.status == "not_modified" and source.seen_if_none_match == [None, '"v1"']
    options = units_db.query("SELECT options FROM feeds WHERE name = 'cases'")[0][0]
    assert TOKEN not in options and str(tmp_path / "token") in options
    store.add_feed(units_db, FeedSpec("cases", source.url), replace=True)  # no token now
    with pytest.raises(FeedError, match="HTTP 401"):
        await pull_feed(units_db, "cases")


@pytest.mark.asyncio
async def test_alerts_fire_once_when_crossed(units_db: Database, source: Source, tmp_path: Path) -> None:
    _add(units_db, source.url, tmp_path)
    result = await pull_feed(units_db, "cases")
    data = json.loads(PROVINCES)["data"]
    over = [p for p in data if p["case_by_day"]["15/10/2021"] > 500 and p["case_by_day"]["14/10/2021"] <= 500]
    assert len(result.alerts) == len(over) > 0
    alerts = [e for e in store.feed_events(units_db, "cases") if e["kind"] == "alert"]
    assert {e["indicator"] for e in alerts} == {"new_cases"} and len(alerts) == len(over)
    store.add_feed(units_db, FeedSpec("cases", source.url, header_file=str(tmp_path / "token"),
                                      alerts=("new_cases>500",)), replace=True)  # forgets the ETag
    assert (await pull_feed(units_db, "cases")).alerts == []


@pytest.mark.asyncio
async def test_last_modified_redirects_and_secrets_in_urls(units_db: Database, source: Source) -> None:
    base = source.url.split("/api/")[0]
    store.add_feed(units_db, FeedSpec("dated", f"{base}/by-date/provinces"))
    assert (await pull_feed(units_db, "dated")).status == "ok"
    assert (await pull_feed(units_db, "dated")).status == "not_modified"
    assert source.seen_if_modified_since == [None, "Fri, 15 Oct 2021 11:00:00 GMT"]
    # A redirect is refused (it would carry the token elsewhere); keys in URLs are never shown.
    store.add_feed(units_db, FeedSpec("moved", f"{base}/moved?key=SECRETKEY"))
    with pytest.raises(FeedError) as raised:
        await pull_feed(units_db, "moved")
    assert "HTTP 302" in str(raised.value) and "redirects are not followed" in str(raised.value)
    store.add_feed(units_db, FeedSpec("refused", "http://user:PASSWORD@127.0.0.1:9/x?key=SECRETKEY"))
    with pytest.raises(FeedError) as refused:
        await pull_feed(units_db, "refused")
    assert "cannot fetch http://127.0.0.1:9/x?…: " in str(refused.value)
    logged = json.dumps(store.feed_events(units_db)) + str(units_db.query("SELECT last_error FROM feeds"))
    assert "SECRETKEY" not in logged and "PASSWORD" not in logged and "key=abc" not in logged
