"""The server's change stream: ``GET /api/events``, Server-Sent Events behind the control token;
and what a remote dashboard reads once beside it (``GET /api/overview``, a site's detail).

A feed task reads the registry for what was written since its last look (roll-call results from
any process, the broadcast's joins, leaves, tier and floor events, the feeds' pulls and alerts,
the meetings' pre-checks and starts) and keeps the newest ``RING`` events in memory, numbered
``EPOCH-SEQ``. A client that reconnects with ``Last-Event-ID`` gets every event after that one;
when the id is from another run of the server or too old for the ring, it first gets a
``reset`` event and must read the registry in full once (the change stream resumes without a
gap or says it cannot). A client so slow that the ring moved past it while it was being written
to gets a ``reset`` too, never a silent gap. On SQLite the feed reads a few times a second
(``POLL_S``); on PostgreSQL it reads only when the registry announces a write
(``LISTEN``/``NOTIFY``, ccctl/registry/notify.py), so several servers on one registry each hear
every other's writes, and the CLI's, without polling.

Beside them, while a broadcast is live and a client listens, the connected sites' live figures
(bitrate, loss over a 20 s window and its quality class, RTT, jitter, tier, and the Janus edge
serving the site, if any) are sampled once a second (``STATS_S``); a ``stats`` event then
carries only the sites whose figures moved (``sites``), those gone (``gone``), the connected
count by class (``classes``) and the edges serving the broadcast (``edges``). Stats events
have no id and are not kept in the ring: they hold the latest figures, not history. A client
gets the whole table (``full``: true) when it connects and whenever it fell behind by more
than one sample (a slow client is sent the current table, never a queue of deltas), so the
server keeps one table whatever the number or speed of its clients, and writes to a client
wait for that client's socket to drain (aiohttp's writer) rather than buffer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ccctl.media.quality import CLASSES, LossWindow, quality_class

if TYPE_CHECKING:
    import ssl

    from ccctl.media.tls import ServerTrust
    from ccctl.registry.notify import Listener

log = logging.getLogger(__name__)

RING = 50_000
POLL_S = 0.25
HEARTBEAT_S = 15.0
MAX_CLIENTS = 64
MAX_LINE = 64 * 2**20  # the longest change-stream line a client takes (a stats table of 10,599 sites: ~2 MB)
#: Other event tables carried by the stream, and the event's name: a feed's pulls, failures and
#: alerts (``feed``), a meeting's pre-checks done or failed, start and end (``meeting``).
OTHER_EVENTS = {"feed_events": "feed", "meeting_events": "meeting"}
STATS_S = 1.0  # live figures are sampled, and a stats event sent, at most this often
#: The live figures: (sessions as the media core's ``stats()`` gives them, with the edges'
#: sites among them; each edge's ``status()``).
StatsSource = Callable[[], Awaitable[tuple[list[dict[str, Any]], list[dict[str, Any]]]]]
EVENTS_KEY: web.AppKey[ChangeFeed] = web.AppKey("changes", None)  # type: ignore[arg-type]


class ChangeFeed:
    """Reads the registry for changes and hands them to every stream client."""

    def __init__(self, db_url: str, stats: StatsSource | None = None) -> None:
        self.db_url = db_url
        self.stats_source = stats
        self.figures: dict[str, dict[str, Any]] = {}  # site -> its figures as last sent
        self.edges: list[dict[str, Any]] = []  # the edges as last sent
        self.stats_version = 0
        self._delta: str | None = None  # the JSON of the stats event taking version - 1 to version
        self._full: tuple[int, str] | None = None  # (version, the JSON of the whole table)
        self._window = LossWindow()
        self._sampler: asyncio.Task[None] | None = None
        self.epoch = secrets.token_hex(4)
        self.events: deque[tuple[int, str, str]] = deque(maxlen=RING)  # (seq, event, JSON data)
        self.seq = 0
        self.changed = asyncio.Condition()
        self.clients = 0
        self._db: Any = None
        self._cursor: Any = None
        self._event_id = 0
        self._other_ids: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[list[tuple[str, dict[str, Any]]]] | None = None
        self.closing = False
        self.reads = 0  # registry reads done (on PostgreSQL: one per burst of notifications)
        self.listener: Listener | None = None  # PostgreSQL: what wakes the reader
        self._wake: asyncio.Event | None = None

    def start(self) -> None:
        """Start reading the registry."""
        if self.db_url.startswith(("postgresql://", "postgres://")):
            from ccctl.registry.notify import Listener

            wake = self._wake = asyncio.Event()
            self.listener = Listener(self.db_url, lambda _payload: wake.set())
            self.listener.start()
        self._task = asyncio.get_running_loop().create_task(self._run())
        if self.stats_source is not None:
            self._sampler = asyncio.get_running_loop().create_task(self._sample_stats())

    async def close(self) -> None:
        """Stop reading and close the registry connection."""
        if self.listener is not None:
            await self.listener.close()
        for task in (self._task, self._sampler):
            if task is not None:
                task.cancel()
                try:
                    await task
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
        from ccctl.registry.notify import events_after, last_event_id
        from ccctl.registry.overview import (
            ChangeCursor,
            broadcast_events_since,
            last_broadcast_event_id,
            latest_run_id,
            results_since,
        )

        if self._db is None:
            self._db = open_registry(self.db_url, 2000)
        if self._cursor is None:  # the first read: the stream starts from now
            self._cursor = ChangeCursor(latest_run_id(self._db) + 1)
            self._event_id = last_broadcast_event_id(self._db)
            self._other_ids = {table: last_event_id(self._db, table) for table in OTHER_EVENTS}
        self.reads += 1
        out: list[tuple[str, dict[str, Any]]] = [("rollcall", r) for r in results_since(self._db, self._cursor)]
        for event in broadcast_events_since(self._db, self._event_id):
            self._event_id = event["id"]
            out.append(("broadcast", event))
        for table, name in OTHER_EVENTS.items():
            for event in events_after(self._db, table, self._other_ids[table]):
                self._other_ids[table] = event["id"]
                if name == "meeting":
                    event["detail"] = json.loads(event["detail"]) if event["detail"] else {}
                out.append((name, event))
        return out

    async def _run(self) -> None:
        from ccctl.errors import CcctlError

        while True:
            failed = False
            try:
                self._reading = asyncio.ensure_future(asyncio.to_thread(self._read))
                found = await asyncio.shield(self._reading)
            except CcctlError as exc:  # a locked or lost registry: try again, the stream waits
                log.warning("change feed: %s", exc)
                found, failed = [], True
                if self.listener is not None and self._db is not None:
                    # PostgreSQL: the connection may be the broken part; the next read opens
                    # another and goes on from the same cursor.
                    self._db.close()
                    self._db = None
            if found:
                async with self.changed:
                    for name, data in found:
                        self.seq += 1
                        self.events.append((self.seq, name, json.dumps(data, ensure_ascii=False)))
                    self.changed.notify_all()
            if self._wake is None or self.listener is None or failed:
                await asyncio.sleep(POLL_S)  # SQLite (or a failed read): the registry's read cadence
            else:  # PostgreSQL: until a write is announced (or the listener reconnects) ...
                deaf = not self.listener.listening.is_set()  # ... polling while nobody listens
                try:
                    await asyncio.wait_for(self._wake.wait(), POLL_S if deaf else None)
                except TimeoutError:
                    pass
                self._wake.clear()

    async def _sample_stats(self) -> None:
        """Once a second while a client listens: read the live figures, send what moved."""
        assert self.stats_source is not None
        while True:
            await asyncio.sleep(STATS_S)
            if self.clients == 0:  # nobody listens: keep nothing, read nothing
                if self.figures or self.edges:
                    self.figures, self.edges, self._window = {}, [], LossWindow()
                    self.stats_version += 1
                    self._delta = None
                continue
            try:
                sessions, edges = await self.stats_source()
            except Exception as exc:  # noqa: BLE001 - a broadcast ending under the read: next second
                log.warning("change feed: live figures not read: %s", exc)
                continue
            # Folded and encoded in a thread: 10,599 sites cost tens of milliseconds, which the
            # event loop (media, control, every stream) should not wait for.
            delta = await asyncio.to_thread(self.take_sample, sessions, edges, time.monotonic())
            if delta is not None:
                data = await asyncio.to_thread(json.dumps, delta, ensure_ascii=False)
                async with self.changed:
                    self.stats_version += 1
                    self._delta = data
                    self.changed.notify_all()

    def take_sample(self, sessions: list[dict[str, Any]], edges: list[dict[str, Any]],
                    now: float) -> dict[str, Any] | None:
        """Fold one reading into the table; the stats event's data (None: nothing moved). The
        table is replaced, never changed in place, so a reader (``stats_after``, in the event
        loop while this runs in a thread) always sees a whole one; deltas hold absolute
        figures, so a client that got the new table just before its delta loses nothing."""
        current: dict[str, dict[str, Any]] = {}
        for row in sorted(sessions, key=lambda r: r.get("state") == "connected"):  # a connected session wins
            current[row["site_id"]] = row
        self._window.keep_only(set(current))
        figures = dict(self.figures)
        moved: dict[str, dict[str, Any]] = {}
        for site, row in current.items():
            loss = self._window.observe(site, now, row.get("packets_sent"), row.get("packets_lost"))
            new = site_figures(row, loss)
            if _moved(figures.get(site), new):
                moved[site] = figures[site] = new
        gone = [site for site in figures if site not in current]
        for site in gone:
            del figures[site]
        served = [{k: e.get(k) for k in ("name", "up", "viewers", "sites", "capacity", "error")}
                  | {"watching": len(e.get("watching") or [])} for e in edges]
        if not moved and not gone and served == self.edges:
            return None
        self.figures, self.edges = figures, served
        return {"full": False, "sites": moved, "gone": gone, "classes": self.classes(), "edges": served}

    def classes(self) -> dict[str, int]:
        """Connected sites by quality class (``unknown``: no loss figure yet, e.g. an edge's site)."""
        counts = dict.fromkeys((*CLASSES, "unknown"), 0)
        for f in self.figures.values():
            if f["state"] == "connected":
                counts[f["quality"] or "unknown"] += 1
        return counts

    def stats_after(self, seen: int) -> str | None:
        """The stats event for a client that has version ``seen`` (None: it is up to date):
        the last delta when it missed only that, else the whole table."""
        if seen == self.stats_version:
            return None
        if seen >= 0 and seen == self.stats_version - 1 and self._delta is not None:
            return self._delta
        if self._full is None or self._full[0] != self.stats_version:
            table = {"full": True, "sites": self.figures, "gone": [], "classes": self.classes(), "edges": self.edges}
            self._full = (self.stats_version, json.dumps(table, ensure_ascii=False))
        return self._full[1]

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

    def newer_than(self, seq: int, stats_seen: int | None = None) -> Callable[[], bool]:
        """A predicate for waiting: an event after ``seq`` arrived, live figures newer than
        version ``stats_seen``, or the server is closing."""
        return lambda: self.seq > seq or self.closing or (stats_seen is not None and self.stats_version != stats_seen)

    def pending(self, seq: int) -> list[tuple[int, str, str]] | None:
        """Events after ``seq``, in order; None when some of them have already left the ring
        (the client fell too far behind and must be sent ``reset``, not a stream with a gap)."""
        if not self.events or self.events[-1][0] <= seq:
            return []
        start = seq - self.events[0][0] + 1
        if start < 0:
            return None
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
        seen = -1 if feed.stats_source is not None else feed.stats_version  # -1: the whole table first
        while not feed.closing:
            pending = feed.pending(seq)
            if pending is None:  # the ring moved past this client: it re-reads the whole state
                seq = feed.seq
                await response.write(f"id: {feed.epoch}-{seq}\nevent: reset\ndata: {{}}\n\n".encode())
                pending = []
            for number, name, data in pending:
                await response.write(f"id: {feed.epoch}-{number}\nevent: {name}\ndata: {data}\n\n".encode())
                seq = number
            if feed.stats_version != seen:
                stats = feed.stats_after(seen)
                seen = feed.stats_version
                if stats is not None:  # no id: the latest figures, not an event to resume after
                    await response.write(f"event: stats\ndata: {stats}\n\n".encode())
            quiet = False
            async with feed.changed:
                try:
                    await asyncio.wait_for(feed.changed.wait_for(feed.newer_than(seq, seen)), HEARTBEAT_S)
                except TimeoutError:
                    quiet = True
            if quiet:  # written outside the lock: a slow client never holds up the feed
                await response.write(f": {time.time():.0f}\n\n".encode())  # keeps proxies from closing it
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.clients -= 1
    return response


def site_figures(row: dict[str, Any], loss: float | None) -> dict[str, Any]:
    """What a stats event says of one site: its session's tier and state, kbps, ``loss`` over
    the window and its ``quality`` class, RTT, jitter, and ``edge`` (None: served by ccctl)."""
    return {"tier": row.get("tier"), "state": row.get("state"), "kbps": row.get("kbps"),
            "loss": None if loss is None else round(loss, 4), "quality": quality_class(loss),
            "rtt_ms": row.get("rtt_ms"), "jitter_ms": row.get("jitter_ms"), "edge": row.get("edge")}


def _near(before: float | None, after: float | None, floor: float) -> bool:
    """Within the dead band: 10 % of the value, at least ``floor``."""
    if before is None or after is None:
        return before is after
    return abs(after - before) < max(floor, abs(before) * 0.1)


def _moved(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """Whether a site's figures moved enough to be sent: any change of tier, state, class or
    edge; loss, bitrate, RTT or jitter by 10 % (and at least 0.1 point of loss, 5 kbps, 2 ms):
    a figure that wobbles is not a change."""
    if before is None:
        return True
    if any(before[k] != after[k] for k in ("tier", "state", "quality", "edge")):
        return True
    return not (_near(before["loss"], after["loss"], 0.001) and _near(before["kbps"], after["kbps"], 5.0)
                and _near(before["rtt_ms"], after["rtt_ms"], 2.0)
                and _near(before["jitter_ms"], after["jitter_ms"], 2.0))


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


def add_change_routes(app: web.Application, db_url: str, authorize: Callable[[web.Request], None],
                      stats: StatsSource | None = None) -> None:
    """Serve ``GET /api/events`` on ``app``; ``authorize`` raises unless the request holds the
    control token; ``stats`` reads the live figures (none: no stats events). The feed starts
    and stops with the application."""
    feed = ChangeFeed(db_url, stats)
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


async def _lines(content: Any) -> AsyncIterator[bytes]:
    """The lines of a response body, without their ``\n``, however long (aiohttp's own line
    reader refuses a line over 512 KiB, and a stats event of the whole country is a few MB)
    up to ``MAX_LINE`` bytes."""
    from ccctl.errors import CcctlError

    pending = bytearray()
    async for chunk in content.iter_any():
        scan = len(pending)  # only the new bytes can hold the next newline
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", scan)) >= 0:
            yield bytes(pending[start:end])
            start = scan = end + 1
        del pending[:start]
        if len(pending) > MAX_LINE:
            raise CcctlError(f"change stream: a line longer than {MAX_LINE // 2**20} MiB")
    if pending:
        yield bytes(pending)


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
            async for raw in _lines(response.content):
                line = raw.decode("utf-8").rstrip("\r")
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
