"""Several consoles on one PostgreSQL registry: two servers share it, and a write made by another
process (a roll-call result, a feed's pull, a meeting's pre-check) reaches both change streams
through LISTEN/NOTIFY (the polling cadence is set to an hour, so nothing but a notification can
bring it within the bound); the listener comes back after its backend is killed
(pg_terminate_backend, a real fault), and a write made while it was gone still arrives."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from ccctl.media import changes, state
from ccctl.media.changes import EVENTS_KEY, ChangeFeed, follow
from ccctl.media.server import create_app
from ccctl.media.tokens import control_token, load_secret
from ccctl.registry import open_registry
from tests.conftest import NO_PG, PG_URL, _pg_schema_url

pytestmark = [pytest.mark.postgresql, pytest.mark.skipif(not PG_URL, reason=NO_PG)]

BOUND_S = 30.0  # a bound on each wait, not a synchronisation

# Another process writes through the registry's own functions, then exits: argv is the
# registry URL, what to write, and its two values. ``rollcall``: one finished run through the
# real recorder (as `ccctl rollcall` would), site and state; ``feed``: a feed and a failed
# pull's event (as `ccctl feed pull`), name and reason; ``meeting``: a meeting and its
# pre-check's report (as `ccctl meeting tick`), title and count.
WRITER = """
import sys
from ccctl.models import CheckResult, CheckState
from ccctl.registry import open_registry
url, what, first, second = sys.argv[1:5]
with open_registry(url) as db:
    if what == "rollcall":
        from ccctl.rollcall.history import RunRecorder
        rec = RunRecorder(db, {"stages": ["tcp"], "sites": 1})
        rec.add(CheckResult(site_id=first, state=CheckState(second), reason="x", stage="tcp",
                            rtt_ms=1.0, started_at=1_900_000_000.0, duration_ms=2.0))
        rec.finish("finished", {"sites": 1})
    elif what == "feed":
        from ccctl.feeds.spec import FeedSpec
        from ccctl.registry import feeds
        feeds.add_feed(db, FeedSpec(first, "/nowhere/cases.json"))
        feeds.add_events(db, first, [("pull_failed", None, None, second)])
    else:
        from ccctl.registry import meetings
        meeting = meetings.insert_meeting(db, {"title": first, "starts_at": 1_900_000_000.0, "tz": "Asia/Ho_Chi_Minh",
                                               "source": "testsrc", "record": False}, [], [], 1_899_990_000.0)
        meetings.add_event(db, meeting, 1_899_999_000.0, "check_done", {"ready": int(second)})
"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh registry schema on the test server."""
    assert PG_URL
    yield from _pg_schema_url(PG_URL)


@pytest_asyncio.fixture
async def servers(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[TestServer]]:
    monkeypatch.setattr(changes, "POLL_S", 3600.0)  # a feed that polled would miss every bound here
    with open_registry(pg_url):
        pass  # the schema, before two servers race to make it
    started = []
    for name in ("a", "b"):
        srv = TestServer(create_app(pg_url, tmp_path / name), host="127.0.0.1")
        await srv.start_server()
        started.append(srv)
    for srv in started:
        feed = srv.app[EVENTS_KEY]
        assert feed.listener is not None
        await until(lambda f=feed: f.reads >= 1 and f.listener.listening.is_set(), "the feed listens")  # type: ignore[misc]
    yield started
    for srv in started:
        await srv.close()


async def until(check: Callable[[], bool], what: str) -> None:
    """A bounded poll of a condition the test cannot be told of."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND_S
    while not check():
        assert loop.time() < deadline, f"not within {BOUND_S} s: {what}"
        await asyncio.sleep(0.02)


async def take(stream: AsyncIterator[tuple[str, str, dict[str, Any]]], name: str) -> dict[str, Any]:
    """The data of the next event called ``name`` (skipping others), within the bound."""
    async def first() -> dict[str, Any]:
        async for _, event, data in stream:
            if event == name:
                return data
        raise AssertionError(f"the stream ended before a {name} event")

    return await asyncio.wait_for(first(), BOUND_S)


def write_elsewhere(url: str, site: str, check_state: str, what: str = "rollcall") -> None:
    """A roll-call result (or a feed's or a meeting's event) written by another process."""
    subprocess.run([sys.executable, "-c", WRITER, url, what, site, check_state], check=True, timeout=BOUND_S,
                   cwd=Path(__file__).resolve().parents[1])


def token(srv: TestServer, home: Path) -> str:
    return control_token(load_secret(home))


def kill_backend(pid: int) -> None:
    import psycopg

    assert PG_URL
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        killed = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    assert killed == (True,)


@pytest.mark.asyncio
async def test_a_write_elsewhere_reaches_every_console(servers: list[TestServer], pg_url: str,
                                                       tmp_path: Path) -> None:
    streams = [follow(f"http://127.0.0.1:{srv.port}", token(srv, tmp_path / name))
               for srv, name in zip(servers, ("a", "b"), strict=True)]
    for stream in streams:
        await take(stream, "hello")
    await asyncio.to_thread(write_elsewhere, pg_url, "S-1", "TIMEOUT")
    for stream in streams:
        data = await take(stream, "rollcall")
        assert (data["site_id"], data["state"]) == ("S-1", "TIMEOUT")
    # A broadcast event written through this process's own connection reaches both too.
    with open_registry(pg_url) as db:
        broadcast = state.start_broadcast(db, "Họp toàn quốc", "testsrc", {})
        state.set_floor(db, broadcast, "S-2")
    for stream in streams:
        data = await take(stream, "broadcast")
        while data["kind"] != "floor":
            data = await take(stream, "broadcast")
        assert (data["site_id"], data["detail"]) == ("S-2", {"action": "grant"})
    # A feed's failed pull and a meeting's pre-check report, written by other processes.
    await asyncio.to_thread(write_elsewhere, pg_url, "cases", "HTTP 500 from the platform", "feed")
    await asyncio.to_thread(write_elsewhere, pg_url, "Giao ban", "42", "meeting")
    for stream in streams:
        data = await take(stream, "feed")
        assert (data["feed"], data["kind"], data["detail"]) == ("cases", "pull_failed", "HTTP 500 from the platform")
        data = await take(stream, "meeting")
        assert (data["kind"], data["detail"]) == ("check_done", {"ready": 42})
        await stream.aclose()


@pytest.mark.asyncio
async def test_the_listener_comes_back_after_its_backend_is_killed(servers: list[TestServer], pg_url: str,
                                                                    tmp_path: Path) -> None:
    srv = servers[1]
    feed: ChangeFeed = srv.app[EVENTS_KEY]
    assert feed.listener is not None and feed.listener.backend_pid is not None
    before, pid = feed.listener.connections, feed.listener.backend_pid
    stream = follow(f"http://127.0.0.1:{srv.port}", token(srv, tmp_path / "b"))
    await take(stream, "hello")
    kill_backend(pid)
    # Written while the listener may be down: the read after it reconnects brings it.
    await asyncio.to_thread(write_elsewhere, pg_url, "S-3", "UNREACHABLE")
    data = await take(stream, "rollcall")
    assert (data["site_id"], data["state"]) == ("S-3", "UNREACHABLE")
    await until(lambda: feed.listener is not None and feed.listener.connections > before
                and feed.listener.listening.is_set(), "the listener reconnected")
    assert feed.listener.backend_pid != pid
    # And the new connection hears what comes next.
    await asyncio.to_thread(write_elsewhere, pg_url, "S-4", "OK")
    data = await take(stream, "rollcall")
    assert (data["site_id"], data["state"]) == ("S-4", "OK")
    await stream.aclose()
