"""``ccctl serve``: the long-running aiohttp server around the media core.

Routes (all media and control routes need a token; only ``/healthz`` is open):
- ``GET /healthz``: liveness, the highest-level live broadcast's id and every live one's.
- ``GET /metrics`` (control token): Prometheus text.
- ``POST|GET|DELETE /api/broadcast`` (control token): start (``{"sites": [ID...]}`` is its
  audience; none: every enabled site), status, stop. Control calls acting on a live broadcast
  take ``?broadcast=ID`` (404 unless that one is live); none named: the only live one (409
  when several are).
- ``DELETE /api/sites/{site}/session`` (control token, optional ``{"why": REASON}``): end every
  session of that site (WHEP and its WHIP uplink) and take the floor back if it holds it.
- ``PUT /api/sites/{site}/tier`` (control token): move a connected site to ``{"tier": T}`` now;
  its RTCP reports may then move it down and back up to T, not above.
- ``POST /whep/{site}`` (that site's token): WHEP offer -> 201 answer with Location and ETag;
  ``DELETE /whep/{site}/{session}`` leaves; ``OPTIONS`` answers CORS preflight.
- ``POST /whip/program`` (control token, a broadcast started with ``--source whip``) and
  ``POST /whip/{site}`` (that site's token, only while it holds the floor): WHIP (RFC 9725)
  offer -> 201 answer with Location, ETag and Accept-Patch; ``PATCH`` the Location with a
  trickle-ICE fragment (204; a stale If-Match -> 412; an ICE restart -> 422); ``DELETE``
  ends the publisher (its owner, or the control token for any); ``OPTIONS`` answers CORS preflight.
- ``POST|DELETE /api/floor`` (control token): give the floor to ``{"site": ID}``, release it.
- ``GET /api/sites/{site}/floor?since=V&wait=S`` (that site's token): whether the site holds
  the floor; with ``since`` (the version it last saw) a long-poll that answers as soon as
  that changes for this site (or its broadcast, or the server ended its session), or after
  ``wait`` seconds.
- ``GET /join/{site}?t=TOKEN``: the join page a site opens in a browser (the only route that
  takes a token in the query string; the page sends it as ``Authorization: Bearer``).
Several broadcasts may be live, one :class:`~ccctl.media.room.Room` each; a site's routes act
in the room of the highest-level broadcast whose audience holds it (:meth:`Server.site_room`).
A site outside every live broadcast's audience is refused its join page and WHEP offers (403,
and a ``refused`` event in each).
Bodies are read through :mod:`ccctl.media.webinput` (UTF-8, bounded, SDP scanned before
parsing) and every error becomes a one-line answer in its middleware; :data:`ROUTES` is the
route table. The live broadcasts and their floor holders are kept in the registry, so a restarted
server resumes them all and sites rejoin (and the floor holders publish again) on their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import json
import logging
import secrets
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ccctl.edges.routes import add_routes as add_edge_routes
from ccctl.edges.routes import edge_set_tier
from ccctl.errors import CcctlError, NotFound, UsageError
from ccctl.limits import raise_nofile_limit
from ccctl.media import calibrate, state, tokens
from ccctl.media.adapt import AdaptPolicy
from ccctl.media.admission import Admission, AdmissionPolicy
from ccctl.media.admission import metrics_of as admission_metrics
from ccctl.media.changes import add_change_routes
from ccctl.media.dataroutes import add_data_routes
from ccctl.media.fastpath import say_path_once
from ccctl.media.net import keep_candidates, pin_ice
from ccctl.media.room import Room
from ccctl.media.webinput import (
    BadInput,
    SafeAccessLogger,
    error_middleware,
    one_line,
    quiet_protocol_errors,
    read_json_object,
    read_sdp,
)
from ccctl.registry import open_registry
from ccctl.registry.broadcasts import LEVELS, audience_size, broadcast_row, live_ids, sites_level
from ccctl.registry.db import Database

if TYPE_CHECKING:
    import ssl

    from ccctl.config import Config
    from ccctl.media.coreapi import MediaCoreAPI
    from ccctl.media.ingest import FloorBoard, Ingest
    from ccctl.media.shard import WorkerPool

log = logging.getLogger(__name__)
JOIN_PAGE = Path(__file__).with_name("join.html")
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
        "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch"}
#: The WHIP endpoint of the main program (the control token publishes there).
MAIN_PUBLISH = "program"
TRICKLE = "application/trickle-ice-sdpfrag"
#: Longest a floor long-poll is held (the page asks for less).
FLOOR_WAIT_MAX = 55.0
#: A start's body carries its audience: up to the app's whole body size (every commune's id fits).
START_BODY_BYTES = 256 * 1024
#: Most sites a broadcast's audience lists, and the longest id in it.
MAX_AUDIENCE, MAX_SITE_ID = 20_000, 64


class Server:
    """The server's state: registry, secret, and a :class:`~ccctl.media.room.Room` per live broadcast."""

    def __init__(self, db_url: str, home: Path, core_factory: Any = None, media_network: str | None = None,
                 admission: AdmissionPolicy | None = None, adapt: AdaptPolicy | None = None) -> None:
        self.db: Database = open_registry(db_url)
        if admission is None or adapt is None:  # the configuration of home
            configured = _home_config(home)
            admission = admission if admission is not None else configured.admission
            adapt = adapt if adapt is not None else configured.adapt
        #: the start's measurement of the send path when the budget is "auto" (ccctl/media/calibrate.py)
        self.calibration = calibrate.calibration(admission) if calibrate.is_auto(admission) else None
        self.policy: AdmissionPolicy = calibrate.resolve(admission)
        self.adapt: AdaptPolicy = adapt
        self.media_network = media_network
        self.secret = tokens.load_secret(home)
        self.rooms: dict[int, Room] = {}  # live broadcast id -> its room
        self.started_at = time.time()
        self.instance = secrets.token_hex(6)  # this process's life: a page that sees it change rejoins
        self._core_factory = core_factory
        self.pool: WorkerPool | None = None  # --workers: the fan-out workers every room shares (made with the first)
        self._lock = asyncio.Lock()
        from ccctl.media.ingest import FloorBoard

        self.idle_board = FloorBoard()  # what a site's floor long-poll waits on while no room holds it
        self.floor_listeners = 0  # join pages parked in a floor long-poll right now (every room)

    # -- the single-room view (one broadcast live: its parts; else None) -------------------
    @property
    def room(self) -> Room | None:
        """The only live room (None when none, or several, are live)."""
        return next(iter(self.rooms.values())) if len(self.rooms) == 1 else None

    @property
    def core(self) -> MediaCoreAPI | None:
        return self.room.core if self.room is not None else None

    @property
    def ingest(self) -> Ingest | None:
        return self.room.ingest if self.room is not None else None

    @property
    def admission(self) -> Admission | None:
        return self.room.admission if self.room is not None else None

    @property
    def edges(self) -> Any:
        return self.room.edges if self.room is not None else None

    @property
    def broadcast(self) -> dict[str, Any] | None:
        return self.room.broadcast if self.room is not None else None

    @property
    def board(self) -> FloorBoard:
        return self.room.board if self.room is not None else self.idle_board

    # -- lifecycle ------------------------------------------------------------------------
    async def resume(self) -> None:
        """Pick up every broadcast left live by a previous server process."""
        for bid in live_ids(self.db):
            live = broadcast_row(self.db, bid)
            if live is None:
                continue
            try:
                await self._open_room(live)
            except Exception as exc:  # one broken broadcast does not keep the others down
                log.warning("broadcast %s not resumed: %s: %s", bid, type(exc).__name__, one_line(exc))

    def _factory(self) -> Any:
        from ccctl.media.core import MediaCore
        from ccctl.media.shard import ShardedCore, WorkerPool

        factory: Any = self._core_factory or MediaCore
        kind, given = getattr(factory, "func", factory), getattr(factory, "keywords", {})
        settings: dict[str, Any] = {"connect_timeout": self.policy.connect_timeout_s, "adapt": self.adapt}
        if kind is ShardedCore and "pool" not in given:  # one pool of fan-out workers for every room
            if self.pool is None:
                self.pool = WorkerPool(given.get("workers", 2),
                                       call_timeout=given.get("call_timeout", self.policy.worker_timeout_s))
            given = {k: v for k, v in given.items() if k not in ("workers", "call_timeout")}
            factory = functools.partial(ShardedCore, **given, pool=self.pool)
        if kind in (MediaCore, ShardedCore):  # what a test's factory sets itself wins
            factory = functools.partial(factory, **{k: v for k, v in settings.items() if k not in given})
        return factory

    async def _open_room(self, broadcast: dict[str, Any]) -> Room:
        """Start a room for ``broadcast``; the sites it takes from lower rooms are moved to it."""
        room = Room(self.db, broadcast, self.policy)
        try:
            await room.start(self._factory())
        except BaseException:
            await room.close()
            raise
        self.rooms[room.id] = room
        self._split_budget()
        for lower in [r for r in self.rooms.values() if r is not room]:
            for site_id in lower.site_ids():
                if self.site_room(site_id) is room:  # a higher broadcast takes it: its page rejoins here
                    why = f"moved to broadcast {room.id}"
                    await lower.end_site(site_id, why, why)
        self._wake_floor_polls()
        return room

    async def _close_room(self, room: Room) -> None:
        """Close ``room`` (its sites' pages rejoin the room that holds them now, if any)."""
        self.rooms.pop(room.id, None)
        await room.close()
        self._split_budget()
        self._wake_floor_polls()

    def _split_budget(self) -> None:
        """One admission budget for the machine, split evenly across the live rooms."""
        n = max(1, len(self.rooms))
        share = dataclasses.replace(self.policy, pps_budget=calibrate.budget_of(self.policy) / n,
                                    handshakes=self.policy.handshakes and max(1, self.policy.handshakes // n),
                                    queue=self.policy.queue and max(1, self.policy.queue // n),
                                    retry_rate=self.policy.retry_rate / n)
        for room in self.rooms.values():
            room.policy = share
            if room.admission is not None:
                room.admission.policy = share

    def _wake_floor_polls(self) -> None:
        """Answer every parked floor long-poll now (a site's room changed: it asks its new room)."""
        for board in [self.idle_board, *(r.board for r in self.rooms.values())]:
            board.poke()

    def _refuse_covered(self, sites: list[str] | None) -> None:
        """409 when a new broadcast for ``sites`` (None: every site) would reach nobody: every
        site of it already belongs to a live broadcast of the same level or higher (which
        keeps it: the first started wins between two of a level)."""
        if not self.rooms:
            return
        level = sites_level(self.db, sites)
        higher = [r for r in self.rooms.values() if r.level <= level]
        if sites is None:
            holders = {r.id for r in higher if r.audience is None}
        else:
            owners = [next((r.id for r in sorted(higher, key=lambda r: r.rank) if r.holds(s)), None) for s in sites]
            holders = set() if None in owners else {o for o in owners if o is not None}
        if holders:
            named = ", ".join(map(str, sorted(holders)))
            raise web.HTTPConflict(text=f"broadcast {named} is already live for every site of this audience\n")

    def close_boards(self) -> None:
        """Answer every floor long-poll now and for good (the server is going away)."""
        for board in [self.idle_board, *(r.board for r in self.rooms.values())]:
            board.close()

    def site_room(self, site_id: str) -> Room | None:
        """The room ``site_id`` belongs to: of the live broadcasts whose audience holds it, the
        highest level (then the first started); None when none does."""
        return min((r for r in self.rooms.values() if r.holds(site_id)), key=lambda r: r.rank, default=None)

    def _live_core(self, room: Room | None = None) -> MediaCoreAPI:
        """A room's core (503 while none is running)."""
        core = room.core if room is not None else self.core
        if core is None:
            raise web.HTTPServiceUnavailable(text="the media core is not running\n", headers={"Retry-After": "5"})
        return core

    async def close(self) -> None:
        """Close every room (sites see the server go) and the registry."""
        self.close_boards()
        for room in list(self.rooms.values()):
            await self._close_room(room)
        if self.pool is not None:
            await self.pool.close()
        self.db.close()

    # -- helpers ----------------------------------------------------------------------------
    def _bearer(self, request: web.Request, query_ok: bool = False) -> str | None:
        """The token presented: ``Authorization: Bearer`` (the scheme in any case, RFC 9110
        section 11.1), or for the join page only (``query_ok``) the link's ``?t=``."""
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return request.query.get("t") if query_ok else None

    def _require_control(self, request: web.Request) -> None:
        if not tokens.check_control(self.secret, self._bearer(request)):
            raise web.HTTPUnauthorized(text="control token required\n", headers={"WWW-Authenticate": "Bearer"})

    def _require_site(self, request: web.Request, site_id: str, query_ok: bool = False) -> None:
        if not tokens.check_site(self.secret, self.db, site_id, self._bearer(request, query_ok)):
            raise web.HTTPUnauthorized(text="token not valid for this site\n",
                                       headers={"WWW-Authenticate": "Bearer", **CORS})

    def _site_tier(self, site_id: str) -> str:
        rows = self.db.query("SELECT tier, enabled FROM sites WHERE id = ?", (site_id,))
        if not rows or not rows[0][1]:
            raise web.HTTPNotFound(text=f"no enabled site {site_id}\n", headers=CORS)
        return str(rows[0][0])

    def _require_audience(self, site_id: str) -> Room | None:
        """The room ``site_id`` belongs to; None when nothing is live (the site may wait for a
        broadcast); 403 (with one ``refused`` event per site and live broadcast) when
        broadcasts are live and none holds it in its audience."""
        room = self.site_room(site_id)
        if room is not None or not self.rooms:
            return room
        live = sorted(self.rooms)
        named = f"broadcast {live[0]}" if len(live) == 1 else "broadcasts " + ", ".join(map(str, live))
        for other in self.rooms.values():
            if site_id not in other.refused:
                other.refused.add(site_id)
                state.record_event(self.db, other.id, site_id, "refused", {"why": "not in the audience"})
        raise web.HTTPForbidden(text=f"site {site_id} is not in the audience of {named}\n", headers=CORS)

    def _room_named(self, request: web.Request) -> Room | None:
        """The room a control call acts on: ``?broadcast=ID`` must name a live one (404 if
        not); none named: the only live one (None when nothing is live; 409 when several are)."""
        named = request.query.get("broadcast")
        if named is None:
            if len(self.rooms) > 1:
                live = sorted(self.rooms)
                raise web.HTTPConflict(text=f"{len(live)} broadcasts are live ({', '.join(map(str, live))}): "
                                            "name one with ?broadcast=ID\n", headers=CORS)
            return self.room
        if not named.isdigit():
            raise BadInput(f"broadcast must be a number, not {one_line(named, 40)!r}")
        room = self.rooms.get(int(named))
        if room is None:
            raise web.HTTPNotFound(text=f"broadcast {int(named)} is not live\n", headers=CORS)
        return room

    async def _read_offer(self, request: web.Request, live: bool) -> str:
        """A WHIP/WHEP offer's SDP (415 unless application/sdp, 503 with no live broadcast,
        400 for an offer :func:`~ccctl.media.webinput.check_sdp` refuses), without the
        candidates outside the media network."""
        if request.content_type != "application/sdp":
            raise web.HTTPUnsupportedMediaType(text="offer must be application/sdp\n", headers=CORS)
        if not live:
            raise web.HTTPServiceUnavailable(text="no live broadcast\n", headers={"Retry-After": "5", **CORS})
        offer = await read_sdp(request)
        return keep_candidates(offer, self.media_network) if self.media_network else offer

    # -- routes -------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        top = min(self.rooms.values(), key=lambda r: r.rank, default=None)  # truthy while anything is live
        return web.json_response({"ok": True, "broadcast": top.id if top is not None else None,
                                  "broadcasts": sorted(self.rooms), "uptime_s": round(time.time() - self.started_at, 1)})

    async def start(self, request: web.Request) -> web.Response:
        self._require_control(request)
        body = await read_json_object(request, START_BODY_BYTES)
        source = body.get("source") or "testsrc"
        if not isinstance(source, str) or (source not in ("testsrc", "whip") and not source.startswith("file:")):
            raise BadInput(f"unknown source {one_line(source, 80)!r}: use testsrc, file:PATH or whip")
        title = body.get("title") or "Hội nghị trực tuyến"
        if not isinstance(title, str) or len(title) > 200 or not title.isprintable():
            raise BadInput("title must be one line of at most 200 characters")
        record = body.get("record")
        if record is not None and not (isinstance(record, str) and Path(record).is_absolute()):
            raise BadInput("record must be an absolute path on the server")
        sites = body.get("sites")  # the audience: None (absent) is every enabled site
        if sites is not None and (not isinstance(sites, list) or not all(
                isinstance(x, str) and 0 < len(x) <= MAX_SITE_ID and x.isprintable() for x in sites)):
            raise BadInput(f"sites must be a list of site ids (one line, at most {MAX_SITE_ID} characters each)")
        if sites is not None and len(sites) > MAX_AUDIENCE:
            raise BadInput(f"an audience of {len(sites)} sites: at most {MAX_AUDIENCE}")
        if sites == []:
            raise BadInput("the audience is empty: name at least one site, or none for every enabled site")
        async with self._lock:
            self._refuse_covered(sites)
            bid = state.start_broadcast(self.db, title, source, {}, sites)
            live = broadcast_row(self.db, bid)
            assert live is not None
            room: Room | None = None
            try:
                room = await self._open_room(live)
                if record is not None:
                    await self._live_core(room).record(record)
            except CcctlError:  # a media file or recording path that cannot be used: its status
                if room is not None:
                    await self._close_room(room)
                state.end_broadcast(self.db, bid)
                raise
            except Exception as exc:
                if room is not None:
                    await self._close_room(room)
                state.end_broadcast(self.db, bid)
                raise CcctlError(f"media core failed to start: {type(exc).__name__}: {exc}") from None
        return web.json_response({"id": bid, "title": title, "source": source, "record": record,
                                  "audience": "all" if sites is None else len(set(sites))}, status=201)

    async def status(self, request: web.Request) -> web.Response:
        self._require_control(request)
        room = self._room_named(request)
        if room is None:
            return web.json_response({"live": False, "sessions": []})
        live, ingest, admission, board = room.broadcast, room.ingest, room.admission, room.board
        sessions = await self._live_core(room).stats() + (room.edges.stats() if room.edges is not None else [])
        holder = board.holder
        for row in sessions:
            row["floor"] = row.get("site_id") == holder
        on_air = ingest.on_air if ingest is not None else None
        return web.json_response({"live": True, "id": live["id"], "title": live["title"],
                                  "source": live["source"], "started_at": live["started_at"],
                                  "level": LEVELS[room.level], "live_ids": sorted(self.rooms),
                                  "floor": holder, "floor_since": board.since,
                                  "floor_listeners": room.floor_listeners,
                                  "on_air": None if on_air is None else (on_air.site_id or MAIN_PUBLISH),
                                  "publishers": ingest.stats() if ingest is not None else [],
                                  "admission": admission.summary() if admission is not None else None,
                                  "calibration": self.calibration.as_dict() if self.calibration else None,
                                  "audience": audience_size(self.db, live["id"]),
                                  "audience_all": room.audience is None, "sessions": sessions})

    async def live_figures(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The change stream's live figures: every connected site's (the media cores' and the
        edges', of every live broadcast), and each edge serving one (ccctl.media.changes)."""
        figures: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        for room in list(self.rooms.values()):
            if room.core is None:
                continue
            figures += await room.core.stats() + (room.edges.stats() if room.edges is not None else [])
            edges += room.edges.status() if room.edges is not None else []
        return figures, edges

    async def stop(self, request: web.Request) -> web.Response:
        self._require_control(request)
        async with self._lock:
            room = self._room_named(request)
            if room is None:
                raise web.HTTPNotFound(text="no live broadcast\n")
            await self._close_room(room)
            state.end_broadcast(self.db, room.id)
        return web.json_response({"id": room.id, "stopped": True})

    # -- the floor ------------------------------------------------------------------------------
    async def floor_grant(self, request: web.Request) -> web.Response:
        """Give the floor to a site: its join page publishes its camera, which becomes the program."""
        self._require_control(request)
        body = await read_json_object(request)
        site_id = body.get("site")
        if not isinstance(site_id, str) or not site_id:
            raise web.HTTPBadRequest(text='body must name the site: {"site": ID}\n')
        self._site_tier(site_id)  # 404 unless an enabled site
        room = self._room_named(request)
        if room is not None and not room.holds(site_id):
            raise web.HTTPConflict(text=f"site {site_id} is not in the audience of broadcast {room.id}\n")
        if room is not None and self.site_room(site_id) is not room:
            raise web.HTTPConflict(text=f"site {site_id} is in broadcast {self.site_room(site_id).id} "  # type: ignore[union-attr]
                                        f"now, not {room.id}\n")
        return web.json_response({"floor": site_id, "previous": await self._set_floor(room, site_id)})

    async def floor_release(self, request: web.Request) -> web.Response:
        """Take the floor back: the program returns to the main source."""
        self._require_control(request)
        room = self._room_named(request)
        return web.json_response({"floor": None, "released": await self._set_floor(room, None)})

    async def _set_floor(self, room: Room | None, site_id: str | None) -> str | None:
        """Record the new holder (None: released) and tell the ingest; the previous holder."""
        async with self._lock:
            if room is None or room.ingest is None or self.rooms.get(room.id) is not room:
                raise web.HTTPConflict(text="no live broadcast\n")
            previous = state.set_floor(self.db, room.id, site_id)
            room.ingest.set_floor(site_id)
        return previous

    async def end_site(self, site_id: str, why: str) -> dict[str, Any]:
        """End everything ``site_id`` has live in every room: the floor if it holds it (the
        program goes back to the main source, the release event says ``why``), its WHIP
        uplink, its WHEP sessions (:meth:`Room.end_site`)."""
        total = {"site_id": site_id, "sessions_ended": 0, "publishers_ended": 0, "floor_released": False}
        async with self._lock:
            rooms = list(self.rooms.values())
        for room in rooms:
            ended = await room.end_site(site_id, why)
            total["sessions_ended"] += ended["sessions_ended"]
            total["publishers_ended"] += ended["publishers_ended"]
            total["floor_released"] = total["floor_released"] or ended["floor_released"]
        home = self.site_room(site_id)  # its page learns at once (its floor long-poll answers)
        (home.board if home is not None else self.idle_board).kick(site_id)
        return total

    async def site_floor(self, request: web.Request) -> web.Response:
        """Whether this site holds the floor of its room; a long-poll when the page says what it
        last saw.

        Only a change for this site answers early (the floor passing between two other sites
        does not wake every page); so does its room changing (a higher broadcast took it, or
        gave it back), and the server ending its session (disconnect, revoke): ``ended`` counts
        those, and ``server`` names this server's life (it changes when it restarts), so that
        the page joins again at once instead of waiting for ICE consent to fail.
        """
        site_id = request.match_info["site"]
        self._require_site(request, site_id)
        try:
            since = int(request.query["since"]) if "since" in request.query else None
            wait = min(max(float(request.query.get("wait", "25")), 0.0), FLOOR_WAIT_MAX)
        except ValueError:
            raise web.HTTPBadRequest(text="since must be an integer and wait a number of seconds\n") from None
        room = self.site_room(site_id)
        board = room.board if room is not None else self.idle_board
        if since is not None and since == board.version:
            was, pokes, kicks = board.holder == site_id, board.pokes, board.kicks.get(site_id, 0)
            deadline = time.monotonic() + wait
            self.floor_listeners += 1
            if room is not None:
                room.floor_listeners += 1
            try:
                while (remaining := deadline - time.monotonic()) > 0:  # bounded by the deadline
                    version = board.version
                    await board.wait(version, remaining)
                    if board.closed or board.pokes != pokes or board.kicks.get(site_id, 0) != kicks:
                        break  # shutdown, a room change, or the server ended this site's session
                    if board.version != version and (board.holder == site_id) != was:
                        break  # this site's answer changed
                    # else the floor moved between others, another site's session ended, or the
                    # wait timed out (then the loop ends)
            finally:
                self.floor_listeners -= 1
                if room is not None:
                    room.floor_listeners -= 1
        return web.json_response({"site_id": site_id, "holder": board.holder == site_id, "version": board.version,
                                  "live": room is not None and room.id in self.rooms,
                                  # its session that a dead fan-out worker took: the page holding it rejoins
                                  "lost_session": room.lost.get(site_id) if room is not None else None,
                                  "broadcast": room.id if room is not None else None,
                                  "ended": board.kicks.get(site_id, 0), "server": self.instance,
                                  "publish_url": f"/whip/{site_id}"}, headers={"Cache-Control": "no-store"})

    # -- WHIP ingest ----------------------------------------------------------------------------
    def _whip_owner(self, request: web.Request, name: str) -> str | None:
        """Who publishes at ``/whip/{name}``: None for the control room's main program, else the site."""
        presented = self._bearer(request)
        if tokens.check_control(self.secret, presented):
            if name != MAIN_PUBLISH:
                raise web.HTTPForbidden(text=f"the control token publishes /whip/{MAIN_PUBLISH} only\n", headers=CORS)
            return None
        self._require_site(request, name)
        return name

    def _whip_resource(self, request: web.Request, control_ends_any: bool = False) -> tuple[Ingest, Any]:
        """The publisher at ``/whip/{name}/{resource}`` if the caller may act on it: its owner,
        or (``control_ends_any``: to end it) the control room, whoever owns it; with the ingest
        of the room it publishes in."""
        name, resource_id = request.match_info["name"], request.match_info["resource"]
        if control_ends_any and tokens.check_control(self.secret, self._bearer(request)):
            owner = None if name == MAIN_PUBLISH else name
        else:
            owner = self._whip_owner(request, name)
        for room in list(self.rooms.values()):  # resource ids are unique over every room
            ingest = room.ingest
            publisher = ingest.publisher(resource_id) if ingest is not None else None
            if ingest is not None and publisher is not None and publisher.site_id == owner:
                return ingest, publisher
        raise web.HTTPNotFound(text="no such WHIP session\n", headers=CORS)

    async def whip_offer(self, request: web.Request) -> web.Response:
        """A publisher's WHIP offer -> 201 with the answer (every candidate in it)."""
        name = request.match_info["name"]
        owner = self._whip_owner(request, name)
        if owner is not None:
            self._site_tier(owner)  # 404 unless an enabled site
            if request.content_type != "application/sdp":
                raise web.HTTPUnsupportedMediaType(text="offer must be application/sdp\n", headers=CORS)
            room = self.site_room(owner)  # the room it belongs to: its floor only
            if room is not None and room.board.holder != owner:  # before reading its offer
                from ccctl.media.ingest import FloorRefused

                raise FloorRefused(f"site {owner} does not hold the floor")
        else:
            room = self._room_named(request)  # /whip/program?broadcast=ID
        offer = await self._read_offer(request, room is not None and room.ingest is not None)
        ingest = room.ingest if room is not None else None
        if ingest is None:  # the broadcast ended while the offer was read
            raise web.HTTPServiceUnavailable(text="no live broadcast\n", headers={"Retry-After": "5", **CORS})
        publisher, answer = await ingest.publish(offer, owner)  # FloorRefused 403, SourceRefused 409
        return web.Response(status=201, text=answer, content_type="application/sdp", headers={
            "Location": f"/whip/{name}/{publisher.resource_id}", "ETag": f'"{publisher.etag}"',
            "Accept-Patch": TRICKLE, **CORS})

    async def whip_patch(self, request: web.Request) -> web.Response:
        """Trickle ICE for a publisher (RFC 9725 section 4.3)."""
        ingest, publisher = self._whip_resource(request)
        if request.content_type != TRICKLE:
            raise web.HTTPUnsupportedMediaType(text=f"a PATCH must be {TRICKLE}\n", headers=CORS)
        match = request.headers.get("If-Match")
        if match is not None and match.strip() not in ("*", f'"{publisher.etag}"'):
            raise web.HTTPPreconditionFailed(text="If-Match does not match this ICE session's ETag\n", headers=CORS)
        fragment = await read_sdp(request, offer=False)
        if self.media_network:
            fragment = keep_candidates(fragment, self.media_network)
        await ingest.trickle(publisher, fragment)  # IceRestartRefused 422, a bad candidate 400
        return web.Response(status=204, headers=CORS)

    async def whip_delete(self, request: web.Request) -> web.Response:
        """The publisher is done: end its session (the program goes back to what it showed)."""
        ingest, publisher = self._whip_resource(request, control_ends_any=True)
        by_control = publisher.site_id is not None and tokens.check_control(self.secret, self._bearer(request))
        await ingest.unpublish(publisher, "ended by the control room" if by_control else "deleted")
        return web.Response(status=200, headers=CORS)

    async def whip_preflight(self, request: web.Request) -> web.Response:
        accept = {"Accept-Patch": TRICKLE} if "resource" in request.match_info else {"Accept-Post": "application/sdp"}
        return web.Response(status=204, headers={**CORS, **accept})

    async def whep_offer(self, request: web.Request) -> web.Response:
        site_id = request.match_info["site"]
        self._require_site(request, site_id)
        tier = self._site_tier(site_id)
        room = self._require_audience(site_id)  # 403: no live broadcast's site; else the room holding it
        offer = await self._read_offer(request, room is not None)
        room = self._require_audience(site_id)  # the broadcasts may have changed while the offer was read
        core, admission = (room.core, room.admission) if room is not None else (None, None)
        if room is None or core is None or admission is None:  # the broadcast ended while the offer was read
            raise web.HTTPServiceUnavailable(text="no live broadcast\n", headers={"Retry-After": "5", **CORS})
        ticket = await admission.admit(site_id, tier, room.board.holder)  # Overloaded: 503 + Retry-After
        with admission.holding(ticket):
            for moved in ticket.moves:
                await self._to_audio(core, moved)
            if room.core is not core or self.site_room(site_id) is not room:  # ended, or moved, while it waited
                raise web.HTTPServiceUnavailable(text=f"broadcast {room.id} ended or gave this site to another while "
                                                 "the offer waited: offer again\n", headers={"Retry-After": "1", **CORS})
            session_id, answer = await core.subscribe(site_id, offer, ticket.tier)
            held = core.session(session_id)
            admission.bound(ticket, session_id, held.tier if held is not None else ticket.tier)
            room.lost.pop(site_id, None)  # rejoined
        if not tokens.check_site(self.secret, self.db, site_id, self._bearer(request)):  # revoked meanwhile
            await core.unsubscribe(session_id)
            raise web.HTTPUnauthorized(text="token not valid for this site\n",
                                       headers={"WWW-Authenticate": "Bearer", **CORS})
        location = f"/whep/{site_id}/{session_id}"
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": location, "ETag": f'"{session_id}"', **CORS})

    async def _to_audio(self, core: MediaCoreAPI, site_id: str) -> None:
        """Move a connected site to the audio tier to make room (admission); it may have left."""
        audio = next((name for name, spec in core.tiers.items() if not spec.has_video), None)
        if audio is None:
            return
        try:
            await core.set_tier(site_id, audio, "admission")
        except CcctlError as exc:  # it left meanwhile, or its worker did not answer: its budget is freed anyway
            log.info("admission: %s not moved to audio: %s", site_id, exc)

    async def whep_delete(self, request: web.Request) -> web.Response:
        site_id, session_id = request.match_info["site"], request.match_info["session"]
        if not tokens.check_control(self.secret, self._bearer(request)):  # the control room may end any
            self._require_site(request, site_id)
        for core in [r.core for r in list(self.rooms.values()) if r.core is not None]:
            if any(s.session_id == session_id and s.site_id == site_id for s in core.sessions()):
                if await core.unsubscribe(session_id):
                    return web.Response(status=200, headers=CORS)
        raise web.HTTPNotFound(text="no such session\n", headers=CORS)

    async def disconnect_site(self, request: web.Request) -> web.Response:
        """End every session of a site and take the floor back from it (see :meth:`end_site`);
        control token. ``{"why": "revoked"}`` names the reason in the events."""
        self._require_control(request)
        site_id = request.match_info["site"]
        why = (await read_json_object(request)).get("why", "disconnected")
        if not isinstance(why, str) or not why.isprintable() or not 0 < len(why) <= 64:
            raise web.HTTPBadRequest(text="why must be a short one-line reason\n")
        return web.json_response(await self.end_site(site_id, why))

    async def set_site_tier(self, request: web.Request) -> web.Response:
        """Move a connected site to another tier now (and cap its automatic moves there)."""
        from ccctl.media.tiers import MediaError

        self._require_control(request)
        site_id = request.match_info["site"]
        body = await read_json_object(request)
        tier = body.get("tier")
        if not isinstance(tier, str) or not tier:
            raise web.HTTPBadRequest(text='body must name the tier: {"tier": "high"|"low"|"audio"}\n')
        self._site_tier(site_id)  # 404 unless an enabled site
        room = self._room_named(request)
        core, edges = (room.core, room.edges) if room is not None else (None, None)
        session = next((s for s in core.sessions() if s.site_id == site_id), None) if core is not None else None
        if session is None and edges is not None and site_id in edges.watching:
            return await edge_set_tier(edges, site_id, tier)  # a Janus switch: ccctl/edges/routes.py
        if core is None or session is None:
            raise web.HTTPNotFound(text=f"site {site_id} is not connected to a live broadcast\n")
        previous = session.tier
        try:
            await core.set_tier(site_id, tier, "operator")  # the sharded core asks the site's worker
        except UsageError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        except NotFound as exc:  # it left meanwhile
            raise web.HTTPNotFound(text=f"{exc}\n") from None
        except MediaError as exc:
            raise web.HTTPConflict(text=f"{exc}\n") from None
        return web.json_response({"site_id": site_id, "tier": tier, "previous": previous})

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**CORS, "Accept-Post": "application/sdp"})

    async def join_page(self, request: web.Request) -> web.Response:
        site_id = request.match_info["site"]
        self._require_site(request, site_id, query_ok=True)  # the link a site opens carries its token
        self._require_audience(site_id)
        name = self.db.query("SELECT name FROM sites WHERE id = ?", (site_id,))
        page = JOIN_PAGE.read_text("utf-8").replace("{{SITE}}", _script_literal(site_id)).replace(
            "{{NAME}}", _script_literal(name[0][0] if name else site_id))
        return web.Response(text=page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text: every live broadcast's series carry its ``broadcast`` label."""
        self._require_control(request)
        rooms = sorted(self.rooms.values(), key=lambda r: r.id)
        sessions: list[tuple[int, dict[str, Any]]] = []
        for room in rooms:
            rows = await room.core.stats() if room.core is not None else []
            rows += room.edges.stats() if room.edges is not None else []  # sites on edges: ccctl/edges/manager.py
            sessions += [(room.id, row) for row in rows]
        lines = ["# HELP ccctl_broadcast_live Broadcasts live now.", "# TYPE ccctl_broadcast_live gauge",
                 f"ccctl_broadcast_live {len(rooms)}",
                 "# HELP ccctl_broadcast_sessions Connected sites by tier.", "# TYPE ccctl_broadcast_sessions gauge"]
        by_tier: dict[tuple[int, str], int] = {}
        for bid, row in sessions:
            by_tier[bid, row.get("tier", "?")] = by_tier.get((bid, row.get("tier", "?")), 0) + 1
        lines += [f'ccctl_broadcast_sessions{{broadcast="{b}",tier="{t}"}} {n}' for (b, t), n in sorted(by_tier.items())]
        lines += ["# HELP ccctl_whip_publishers WHIP publishers connected, by role.", "# TYPE ccctl_whip_publishers gauge"]
        for room in rooms:
            publishers = room.ingest.stats() if room.ingest is not None else []
            lines += [f'ccctl_whip_publishers{{broadcast="{room.id}",role="{role}"}} '
                      f'{sum(1 for p in publishers if p["role"] == role)}' for role in ("main", "floor")]
        lines += ["# HELP ccctl_floor_held 1 while a site holds the floor.", "# TYPE ccctl_floor_held gauge"]
        lines += [f'ccctl_floor_held{{broadcast="{r.id}"}} {1 if r.board.holder else 0}' for r in rooms]
        lines += ["# HELP ccctl_floor_listeners Join pages waiting to be given the floor.",
                  "# TYPE ccctl_floor_listeners gauge", f"ccctl_floor_listeners {self.floor_listeners}"]
        lines += calibrate.metrics_lines(calibrate.budget_of(self.policy), self.calibration)  # per process
        accounts = [(r.id, r.admission) for r in rooms if r.admission is not None]
        if accounts:
            lines += admission_metrics(accounts)
        lines += _site_metrics(sessions)
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


SITE_METRICS = (  # name, type, help, the stats key, scale (None: the value is a label set's presence)
    ("ccctl_site_info", "gauge", "A connected site, with its tier and connection state.", None, None),
    ("ccctl_site_bytes_sent", "counter", "RTP payload bytes sent to a site.", "bytes_sent", 1),
    ("ccctl_site_packets_sent", "counter", "RTP packets sent to a site.", "packets_sent", 1),
    ("ccctl_site_bitrate_bps", "gauge", "Bits per second sent to a site, since the previous scrape.", "kbps", 1000),
    ("ccctl_site_frames_delivered", "counter", "Encoded units sent to a site.", "frames_delivered", 1),
    ("ccctl_site_frames_dropped", "counter", "Encoded units a site skipped (behind, or waiting for a keyframe).",
     "frames_dropped", 1),
    ("ccctl_site_fraction_lost", "gauge", "Fraction of packets lost, from the site's last receiver report.",
     "fraction_lost", 1),
    ("ccctl_site_rtt_seconds", "gauge", "Round-trip time from the site's receiver reports.", "rtt_ms", 0.001),
    ("ccctl_site_jitter_seconds", "gauge", "Interarrival jitter from the site's receiver reports.", "jitter_ms", 0.001),
)


def _label(value: Any) -> str:
    """A Prometheus label value, escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _site_metrics(sessions: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """Per-site series of the live broadcasts, ``(broadcast id, stats)`` (absent figures, e.g.
    no report yet, are left out)."""
    lines: list[str] = []
    for name, kind, text, key, scale in SITE_METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for bid, s in sessions:
            site = f'broadcast="{bid}",site="{_label(s["site_id"])}"'
            if key is None:
                lines.append(f'{name}{{{site},tier="{_label(s["tier"])}",state="{_label(s["state"])}"}} 1')
            elif s.get(key) is not None:
                value = s[key] * scale
                lines.append(f'{name}{{{site}}} {value if isinstance(value, int) else round(value, 6)}')
    return lines


def _home_config(home: Path) -> Config:
    """The configuration resolved for ``home`` (no ``--config`` file)."""
    import os

    from ccctl.config import load_config

    return load_config(env={**os.environ, "CCCTL_HOME": str(home)})


def _script_literal(value: str) -> str:
    """A JSON string safe inside <script>: no ``</script>`` or HTML can break out of it."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


#: Every route: (method, path, the :class:`Server` method answering it). Errors raised by
#: any of them are answered by the middleware of :mod:`ccctl.media.webinput`.
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/healthz", "healthz"),
    ("GET", "/metrics", "metrics"),
    ("POST", "/api/broadcast", "start"),
    ("GET", "/api/broadcast", "status"),
    ("DELETE", "/api/broadcast", "stop"),
    ("POST", "/api/floor", "floor_grant"),
    ("DELETE", "/api/floor", "floor_release"),
    ("DELETE", "/api/sites/{site}/session", "disconnect_site"),
    ("PUT", "/api/sites/{site}/tier", "set_site_tier"),
    ("GET", "/api/sites/{site}/floor", "site_floor"),
    ("POST", "/whep/{site}", "whep_offer"),
    ("OPTIONS", "/whep/{site}", "preflight"),
    ("DELETE", "/whep/{site}/{session}", "whep_delete"),
    ("OPTIONS", "/whep/{site}/{session}", "preflight"),
    ("POST", "/whip/{name}", "whip_offer"),
    ("OPTIONS", "/whip/{name}", "whip_preflight"),
    ("PATCH", "/whip/{name}/{resource}", "whip_patch"),
    ("DELETE", "/whip/{name}/{resource}", "whip_delete"),
    ("OPTIONS", "/whip/{name}/{resource}", "whip_preflight"),
    ("GET", "/join/{site}", "join_page"),
)


def _error_headers(request: web.Request) -> dict[str, str]:
    """Headers every error answer carries: CORS on the routes a browser's page calls."""
    return dict(CORS) if request.path.startswith(("/whep/", "/whip/")) else {}


SERVER_KEY: web.AppKey[Server] = web.AppKey("server", Server)


def create_app(db_url: str, home: Path, core_factory: Any = None, media_network: str | None = None,
               admission: AdmissionPolicy | None = None, adapt: AdaptPolicy | None = None) -> web.Application:
    """The aiohttp application; ``core_factory`` lets tests choose the media core,
    ``media_network`` (e.g. ``127.0.0.0/8``) limits the remote candidates media may use,
    ``admission`` the joins it takes and ``adapt`` how sites move between tiers (default: the
    ``[admission]`` and ``[adapt]`` configuration of ``home``)."""
    server = Server(db_url, home, core_factory, media_network, admission, adapt)
    quiet_protocol_errors()
    app = web.Application(client_max_size=256 * 1024, middlewares=[error_middleware(_error_headers)])
    app[SERVER_KEY] = server
    for method, path, name in ROUTES:
        handler = getattr(server, name)
        if method == "GET":
            app.router.add_get(path, handler)  # and HEAD
        else:
            app.router.add_route(method, path, handler)
    add_change_routes(app, db_url, server._require_control, server.live_figures)  # GET /api/events: changes.py
    add_data_routes(app)  # GET /api/data/{trend,feeds,meeting}: a remote console's panels, dataroutes.py
    add_edge_routes(app, server)  # where a site plays from: ccctl/edges/routes.py

    async def on_startup(app: web.Application) -> None:
        await server.resume()

    async def on_shutdown(app: web.Application) -> None:
        server.close_boards()  # answer the floor long-polls now, not after the shutdown timeout

    async def on_cleanup(app: web.Application) -> None:
        await server.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def _background_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An error in a task nobody awaits (aiortc's, mostly: a connection closed while it was
    still connecting): one WARNING line; the traceback at DEBUG only."""
    exc = context.get("exception")
    what = f": {type(exc).__name__}: {one_line(exc)}" if exc is not None else ""
    log.warning("background error: %s%s", one_line(context.get("message", "")), what)
    if exc is not None:
        log.debug("background error details", exc_info=exc)


async def serve(db_url: str, home: Path, host: str, port: int, ready: Any = None, workers: int = 0,
                ssl_context: ssl.SSLContext | None = None, config: Config | None = None) -> None:
    """Run the server until SIGTERM (``serve --stop``) or cancelled (Ctrl-C).

    SIGTERM ends the wait below instead of raising out of the event loop: the server then
    closes every peer connection itself before the loop ends. (Raised out of the loop, as
    the CLI bridge does for other commands, asyncio cancels every aiortc task at once, and
    one of them never finishes: the process hung until ``--stop`` killed it 30 s later.)

    Bound to a loopback address, media stays on loopback too: ICE offers only that address
    and remote candidates outside 127.0.0.0/8 are ignored.

    ``workers`` > 0 spreads the sites' connections over that many fan-out worker processes
    (:mod:`ccctl.media.shard`); 0 keeps them in this process.

    With ``ssl_context`` (:mod:`ccctl.media.tls`) every route is served over https only.

    ``config`` is the configuration the command resolved (its ``--config`` file included):
    admission, the fan-out workers and the meeting scheduler all take it; without it, the
    configuration of ``home``.
    """
    from ccctl.media import seam

    seam.check()  # aiortc/aioice/pylibsrtp still shaped as the media paths need: else one line, exit 13
    raise_nofile_limit()  # a UDP socket per site's connection
    network = None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        address = "127.0.0.1" if host == "localhost" else host
        pin_ice(address)
        network = "::1/128" if ":" in address else "127.0.0.0/8"
    factory = None
    if workers > 0:
        from ccctl.media.shard import ShardedCore

        factory = functools.partial(ShardedCore, workers=workers)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    say_path_once()  # a warning when the fan-out sends with its Python path (native sender not built)
    if config is None:
        config = _home_config(home)
    app = create_app(db_url, home, factory, media_network=network, admission=config.admission, adapt=config.adapt)
    from ccctl.feeds.poller import feed_poller
    from ccctl.meetings.service import meeting_scheduler

    app.cleanup_ctx.append(feed_poller(db_url))  # pulls the feeds on their intervals
    app.cleanup_ctx.append(meeting_scheduler(db_url, home, f"{host}:{port}", config=config))  # checks and starts
    # The access log (logger ccctl.media.access, INFO: off unless turned on) has method, path
    # without the query, status, size and time: never a header or a join link's token.
    runner = web.AppRunner(app, handle_signals=False, access_log=logging.getLogger("ccctl.media.access"),
                           access_log_class=SafeAccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    if ready is not None:
        ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_background_error)
    try:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    except (NotImplementedError, RuntimeError, ValueError):  # no signals here (not the main thread)
        pass
    try:
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await runner.cleanup()
