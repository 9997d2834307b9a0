"""What a remote console's data panels read (read-only GETs behind the control token):

- ``GET /api/data/trend?now=T&hours=H[&last=N]``: the share ready per province and hour
  (``ready_trend``; ``last``: only the newest N hours, for a console topping up its copy);
- ``GET /api/data/feeds[?after=ID]``: every feed's newest values, history and risk levels, and
  the feed events after ``after`` (the recent alerts and failures when absent), with the id to
  ask after next time;
- ``GET /api/data/meeting?now=T``: the meeting on now or next and its latest pre-check's readiness.

Each is the same core read the local console makes (``ccctl.media.paneldata``), run in a thread
on a registry connection of its own. At most ``MAX_READS`` run at once; more are answered 503
with Retry-After (a read of a country's commune feed takes seconds). Registered after the change
routes, whose token check and registry URL it uses.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ccctl.media.changes import AUTH_KEY, EVENTS_KEY
from ccctl.media.paneldata import (
    TREND_HOURS,
    FeedValues,
    encode_feeds,
    encode_trend,
    feed_events_after,
    meeting_readiness,
)
from ccctl.registry.db import Database

MAX_READS = 4
MAX_HOURS = 24 * 31
DATA_KEY: web.AppKey[DataReads] = web.AppKey("data_reads", None)  # type: ignore[arg-type]


class DataReads:
    """The data routes' shared state: the registry URL, the feeds' values cache, reads in flight."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.feeds = FeedValues()
        self.running = 0


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    """A query parameter as a finite number within [low, high]; 400 otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name}: a number from {low:g} to {high:g}\n")
    return value


async def _answer(request: web.Request, read: Callable[[Database], Any]) -> web.Response:
    """Check the token, run ``read`` on the registry in a thread, answer its JSON."""
    from ccctl.errors import CcctlError
    from ccctl.registry import open_registry

    request.app[AUTH_KEY](request)
    reads = request.app[DATA_KEY]
    if reads.running >= MAX_READS:
        raise web.HTTPServiceUnavailable(text="busy reading the registry\n", headers={"Retry-After": "2"})

    def run() -> Any:
        with open_registry(reads.db_url, 5000) as db:
            return read(db)

    reads.running += 1
    try:
        data = await asyncio.to_thread(run)
    except CcctlError as exc:  # a locked or unreachable registry: the console retries
        raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers={"Retry-After": "2"}) from None
    finally:
        reads.running -= 1
    return web.json_response(data, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str))


async def trend(request: web.Request) -> web.Response:
    """``GET /api/data/trend``: share ready per province and hour."""
    from ccctl.registry.overview import ready_trend

    now = _number(request, "now", time.time(), 0, 1e11)
    hours = int(_number(request, "hours", TREND_HOURS, 1, MAX_HOURS))
    last = int(_number(request, "last", 0, 0, MAX_HOURS)) or None
    return await _answer(request, lambda db: {"trend": encode_trend(ready_trend(db, now, hours, last=last))})


async def feeds(request: web.Request) -> web.Response:
    """``GET /api/data/feeds``: the feeds' values and the feed events after ``after``."""
    after = int(_number(request, "after", -1, 0, 2**62)) if "after" in request.query else None
    cache = request.app[DATA_KEY].feeds

    def read(db: Database) -> dict[str, Any]:
        events, newest = feed_events_after(db, after)
        return {"feeds": encode_feeds(cache.read(db)), "events": events, "after": newest}

    return await _answer(request, read)


async def meeting(request: web.Request) -> web.Response:
    """``GET /api/data/meeting``: the meeting on now or next and its latest pre-check."""
    now = _number(request, "now", time.time(), 0, 1e11)
    return await _answer(request, lambda db: {"meeting": meeting_readiness(db, now)})


def add_data_routes(app: web.Application) -> None:
    """Serve the data routes on ``app`` (after ``add_change_routes``: its token check and registry)."""
    app[DATA_KEY] = DataReads(app[EVENTS_KEY].db_url)
    app.router.add_get("/api/data/trend", trend)
    app.router.add_get("/api/data/feeds", feeds)
    app.router.add_get("/api/data/meeting", meeting)
