"""The server's change stream: ``GET /api/events``, Server-Sent Events behind the control token;
and what a remote dashboard reads once beside it (``GET /api/overview``, a site's detail).

A feed task reads the registry a few times a second for what was written since its last look
(roll-call results from any process, the broadcast's joins, leaves, tier and floor events)
and keeps the newest ``RING`` events in memory, numbered ``EPOCH-SEQ``. A client that
reconnects with ``Last-Event-ID`` gets every event after that one; when the id is from
another run of the server or too old for the ring, it first gets a ``reset`` event and must
read the registry in full once (the change stream resumes without a gap or says it cannot).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import ssl

    from ccctl.media.tls import ServerTrust

log = logging.getLogger(__name__)

RING = 50_000
POLL_S = 0.25
HEARTBEAT_S = 15.0
MAX_CLIENTS = 64
EVENTS_KEY: web.AppKey[ChangeFeed] = web.AppKey("changes", None)  # type: ignore[arg-type]


class ChangeFeed:
    """Reads the registry for changes and hands them to every stream client."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.epoch = secrets.token_hex(4)
        self.events: deque[tuple[int, str, str]] = deque(maxlen=RING)  # (seq, event, JSON data)
        self.seq = 0
        self.changed = asyncio.Condition()
        self.clients = 0
        self._db: Any = None
        self._cursor: Any = None
        self._event_id = 0
        self._task: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[list[tuple[str, dict[str, Any]]]] | None = None
        self.closing = False

    def start(self) -> None:
        """Start reading the registry."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop reading and close the registry connection."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._reading is not None:
            # Cancelling the task does not stop a read already in its thread: closing the
            # connection under it crashed the process (SQLite, segmentation fault).
            await asyncio.wait([self._reading])
            if not self._reading.cancelled():
                self._reading.exception()  # retrieved: a failed last read is no error at shutdown
        if self._db is not None:
            self._db.close()

    def _read(self) -> list[tuple[str, dict[str, Any]]]:
        from ccctl.registry import open_registry
        from ccctl.registry.overview import (
            ChangeCursor,
            broadcast_events_since,
            last_broadcast_event_id,
            latest_run_id,
            results_since,
        )

        if self._db is None:
            self._db = open_registry(self.db_url, 2000)
            self._cursor = ChangeCursor(latest_run_id(self._db) + 1)
            self._event_id = last_broadcast_event_id(self._db)
        out: list[tuple[str, dict[str, Any]]] = [("rollcall", r) for r in results_since(self._db, self._cursor)]
        for event in broadcast_events_since(self._db, self._event_id):
            self._event_id = event["id"]
            out.append(("broadcast", event))
        return out

    async def _run(self) -> None:
        from ccctl.errors import CcctlError

        while True:
            try:
                self._reading = asyncio.ensure_future(asyncio.to_thread(self._read))
                found = await asyncio.shield(self._reading)
            except CcctlError as exc:  # a locked registry: try again, the stream waits
                log.warning("change feed: %s", exc)
                found = []
            if found:
                async with self.changed:
                    for name, data in found:
                        self.seq += 1
                        self.events.append((self.seq, name, json.dumps(data, ensure_ascii=False)))
                    self.changed.notify_all()
            await asyncio.sleep(POLL_S)  # the registry's read cadence

    def after(self, last_event_id: str | None) -> tuple[bool, int]:
        """(reset needed, the sequence number to continue after) for a client's Last-Event-ID."""
        if not last_event_id:
            return False, self.seq  # a new client: from now on
        epoch, _, seq_text = last_event_id.partition("-")
        try:
            seq = int(seq_text)
        except ValueError:
            return True, self.seq
        oldest = self.events[0][0] if self.events else self.seq + 1
        if epoch != self.epoch or seq > self.seq or seq < oldest - 1:
            return True, self.seq
        return False, seq

    def newer_than(self, seq: int) -> Callable[[], bool]:
        """A predicate for waiting: an event after ``seq`` arrived, or the server is closing."""
        return lambda: self.seq > seq or self.closing

    def pending(self, seq: int) -> list[tuple[int, str, str]]:
        """Events after ``seq``, in order."""
        if not self.events or self.events[-1][0] <= seq:
            return []
        start = max(0, seq - self.events[0][0] + 1)
        return [self.events[i] for i in range(start, len(self.events))]


async def stream(request: web.Request) -> web.StreamResponse:
    """``GET /api/events``: the changes as Server-Sent Events (``id: EPOCH-SEQ``)."""
    feed = request.app[EVENTS_KEY]
    request.app[AUTH_KEY](request)
    if feed.clients >= MAX_CLIENTS:
        raise web.HTTPServiceUnavailable(text="too many change-stream clients\n", headers={"Retry-After": "5"})
    reset, seq = feed.after(request.headers.get("Last-Event-ID") or request.query.get("last_event_id"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    feed.clients += 1
    try:
        await response.write(f"retry: 2000\nevent: hello\ndata: {json.dumps({'epoch': feed.epoch})}\n\n".encode())
        if reset:
            await response.write(f"id: {feed.epoch}-{seq}\nevent: reset\ndata: {{}}\n\n".encode())
        while not feed.closing:
            for number, name, data in feed.pending(seq):
                await response.write(f"id: {feed.epoch}-{number}\nevent: {name}\ndata: {data}\n\n".encode())
                seq = number
            quiet = False
            async with feed.changed:
                try:
                    await asyncio.wait_for(feed.changed.wait_for(feed.newer_than(seq)), HEARTBEAT_S)
                except TimeoutError:
                    quiet = True
            if quiet:  # written outside the lock: a slow client never holds up the feed
                await response.write(f": {time.time():.0f}\n\n".encode())  # keeps proxies from closing it
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.clients -= 1
    return response


AUTH_KEY: web.AppKey[Callable[[web.Request], None]] = web.AppKey("changes_auth", None)  # type: ignore[arg-type]


def _overview(db_url: str) -> dict[str, Any]:
    from ccctl.registry import open_registry
    from ccctl.registry.overview import site_states, sites_per_tier

    with open_registry(db_url, 5000) as db:
        return {"sites": site_states(db), "expected": sites_per_tier(db)}


async def overview(request: web.Request) -> web.Response:
    """``GET /api/overview``: every site with its latest state and the sites per tier (what a
    remote dashboard reads once), with the change-stream id to follow from without a gap."""
    from ccctl.errors import CcctlError

    feed = request.app[EVENTS_KEY]
    request.app[AUTH_KEY](request)
    last = f"{feed.epoch}-{feed.seq}"  # taken before the read: a change made meanwhile comes twice, never not
    try:
        data = await asyncio.to_thread(_overview, feed.db_url)
    except CcctlError as exc:
        raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers={"Retry-After": "2"}) from None
    return web.json_response({**data, "last_event_id": last}, dumps=lambda v: json.dumps(v, ensure_ascii=False))


def _detail(db_url: str, site_id: str) -> dict[str, Any]:
    from ccctl.registry import open_registry
    from ccctl.registry.overview import site_history
    from ccctl.registry.sites import get_site, site_record

    with open_registry(db_url, 5000) as db:
        return {"record": site_record(get_site(db, site_id)), "history": site_history(db, site_id, 12)}


async def site_detail(request: web.Request) -> web.Response:
    """``GET /api/sites/{site}/detail``: a site's registry record and its last checks."""
    from ccctl.errors import CcctlError, NotFound

    request.app[AUTH_KEY](request)
    try:
        data = await asyncio.to_thread(_detail, request.app[EVENTS_KEY].db_url, request.match_info["site"])
    except NotFound as exc:
        raise web.HTTPNotFound(text=f"{exc}\n") from None
    except CcctlError as exc:
        raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers={"Retry-After": "2"}) from None
    return web.json_response(data, dumps=lambda v: json.dumps(v, ensure_ascii=False))


def add_change_routes(app: web.Application, db_url: str, authorize: Callable[[web.Request], None]) -> None:
    """Serve ``GET /api/events`` on ``app``; ``authorize`` raises unless the request holds the
    control token. The feed starts and stops with the application."""
    feed = ChangeFeed(db_url)
    app[EVENTS_KEY] = feed
    app[AUTH_KEY] = authorize
    app.router.add_get("/api/events", stream)
    app.router.add_get("/api/overview", overview)
    app.router.add_get("/api/sites/{site}/detail", site_detail)

    async def on_startup(app: web.Application) -> None:
        feed.start()

    async def on_shutdown(app: web.Application) -> None:
        async with feed.changed:  # open streams end now, not at the shutdown timeout
            feed.closing = True
            feed.changed.notify_all()

    async def on_cleanup(app: web.Application) -> None:
        await feed.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)


async def follow(base_url: str, token: str, last_event_id: str | None = None,
                 connect_timeout: float = 5.0, trust: ServerTrust | None = None,
                 ) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """The change stream of the server at ``base_url`` as (event id, event name, data), from
    after ``last_event_id``; ends when the server closes it, raises ServerDown when it cannot
    connect, CertificateRefused when an https server's certificate is not the one ``trust``
    accepts (the system's store when None). Events without an id (``hello``) come with an
    empty id."""
    import aiohttp

    from ccctl.errors import CcctlError
    from ccctl.media.client import ServerDown
    from ccctl.media.tls import ServerTrust, refused

    trust = trust or ServerTrust()
    check: aiohttp.Fingerprint | ssl.SSLContext = (aiohttp.Fingerprint(bytes.fromhex(trust.fingerprint.replace(":", "")))
                                                   if trust.fingerprint else trust.context())

    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=HEARTBEAT_S * 3)
    try:
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session, \
                session.get(f"{base_url}/api/events", headers=headers, ssl=check) as response:
            if response.status != 200:
                raise CcctlError(f"change stream: server said {response.status}")
            event_id, name, data = "", "message", ""
            async for raw in response.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if data:
                        yield event_id, name, json.loads(data)
                    event_id, name, data = "", "message", ""
                elif line.startswith(":"):
                    continue
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "id":
                        event_id = value
                    elif field == "event":
                        name = value
                    elif field == "data":
                        data = f"{data}\n{value}" if data else value
    except aiohttp.ServerFingerprintMismatch as exc:
        seen = ":".join(f"{b:02X}" for b in exc.got)
        raise trust.mismatch(f"the change stream at {base_url}", seen) from None
    except aiohttp.ClientConnectorCertificateError as exc:
        raise refused(f"the change stream at {base_url}", exc.certificate_error) from None
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise ServerDown(f"change stream at {base_url}: {exc or type(exc).__name__}") from None
