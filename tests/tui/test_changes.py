"""The server's change stream (GET /api/events) against the real aiohttp app and registry:
token, roll-call and broadcast events as they are written, resume by Last-Event-ID without a
gap, reset for an id the server cannot continue; and the dashboard following it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from ccctl.media import state
from ccctl.media.changes import follow
from ccctl.media.server import create_app
from ccctl.media.tokens import control_token, load_secret
from ccctl.models import CheckState
from ccctl.registry import open_registry
from ccctl.registry.overview import site_states
from tests.tui.conftest import record_run
from tests.tui.pilot import SIZE, make_app, until

BOUND_S = 30.0  # a bound on each wait, not a synchronisation


@pytest_asyncio.fixture
async def server(dash_db_url: str, tmp_path: Path) -> AsyncIterator[TestServer]:
    srv = TestServer(create_app(dash_db_url, tmp_path / "home"), host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


async def take(stream: AsyncIterator[tuple[str, str, dict[str, Any]]], name: str) -> tuple[str, dict[str, Any]]:
    """The next event called ``name`` (skipping others), within the bound."""
    async def first() -> tuple[str, dict[str, Any]]:
        async for event_id, event, data in stream:
            if event == name:
                return event_id, data
        raise AssertionError(f"the stream ended before a {name} event")

    return await asyncio.wait_for(first(), BOUND_S)


@pytest.mark.asyncio
async def test_stream_carries_changes_and_resumes_without_a_gap(server: TestServer, dash_db_url: str,
                                                                  tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{server.port}"
    token = control_token(load_secret(tmp_path / "home"))
    with pytest.raises(Exception, match="401"):
        await take(follow(base, "not-the-token"), "hello")
    with open_registry(dash_db_url) as db:
        sites = [s["id"] for s in site_states(db)]
    stream = follow(base, token)
    await take(stream, "hello")
    with open_registry(dash_db_url) as db:
        run = record_run(db, {sites[0]: CheckState.TIMEOUT}, started_at=1_900_000_000.0)
    first_id, data = await take(stream, "rollcall")
    assert (data["site_id"], data["state"], data["run_id"]) == (sites[0], "TIMEOUT", run)
    await stream.aclose()
    # Written while nobody listens: a client resuming from its last id gets them, in order.
    with open_registry(dash_db_url) as db:
        record_run(db, {sites[1]: CheckState.OK}, started_at=1_900_000_100.0)
        broadcast = state.start_broadcast(db, "Họp", "testsrc", {})
        state.set_floor(db, broadcast, sites[2])
    resumed = follow(base, token, first_id)
    _, again = await take(resumed, "rollcall")
    assert again["site_id"] == sites[1]
    _, floor = await take(resumed, "broadcast")
    assert (floor["site_id"], floor["kind"], floor["detail"]) == (sites[2], "floor", {"action": "grant"})
    await resumed.aclose()
    # An id from another run of the server: the client is told to read everything once.
    stale = follow(base, token, "deadbeef-3")
    await take(stale, "reset")
    await stale.aclose()


@pytest.mark.asyncio
async def test_dashboard_follows_the_stream(server: TestServer, dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home", poll_s=3600)  # the registry is read once: only the stream
    app.listen = f"127.0.0.1:{server.port}"
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded and app.stream_state == "live", "the stream followed")
        site = app.fleet.order[0]["id"]
        assert app.fleet.sites[site]["state"] != "ERROR"
        with open_registry(dash_db_url) as db:
            record_run(db, {site: CheckState.ERROR}, started_at=1_900_000_000.0)
        await until(pilot, lambda: app.fleet.sites[site]["state"] == "ERROR", "the change through the stream")
        await server.close()
        await until(pilot, lambda: app.stream_state != "live", "the stream shown down")


@pytest.mark.asyncio
async def test_closing_waits_for_a_read_in_its_thread(dash_db_url: str) -> None:
    """The feed's registry connection is closed only after the read running in a thread ends:
    closing it under the read crashed the test process (SQLite, segmentation fault)."""
    import threading

    from ccctl.media.changes import ChangeFeed

    reading, release = threading.Event(), threading.Event()
    still_open: list[bool] = []

    class HeldFeed(ChangeFeed):
        def _read(self) -> list[tuple[str, dict[str, Any]]]:
            found = super()._read()
            reading.set()
            release.wait(BOUND_S)
            try:
                self._db.query("SELECT 1")  # the connection is still ours after the hold
            except Exception:  # noqa: BLE001 - closed under the read: what this test catches
                still_open.append(False)
            else:
                still_open.append(True)
            return found

    feed = HeldFeed(dash_db_url)
    feed.start()
    assert await asyncio.to_thread(reading.wait, BOUND_S)
    closing = asyncio.ensure_future(feed.close())
    done, _ = await asyncio.wait([closing], timeout=0.2)  # it must not finish while the read is held
    assert not done
    release.set()
    await asyncio.wait_for(closing, BOUND_S)
    assert still_open == [True]
