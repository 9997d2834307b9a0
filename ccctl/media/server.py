"""``ccctl serve``: the long-running aiohttp server around the media core.

Routes (all media and control routes need a token; only ``/healthz`` is open):
- ``GET /healthz``: liveness and the live broadcast's id.
- ``GET /metrics`` (control token): Prometheus text.
- ``POST|GET|DELETE /api/broadcast`` (control token): start (``{"sites": [ID...]}`` is its
  audience; none: every enabled site), status, stop. Control calls acting on the live broadcast
  take ``?broadcast=ID`` (404 unless that one is live).
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
  that changes for this site, or after ``wait`` seconds.
- ``GET /join/{site}?t=TOKEN``: the join page a site opens in a browser (the only route that
  takes a token in the query string; the page sends it as ``Authorization: Bearer``).
A site outside the live broadcast's audience is refused its join page and WHEP offers (403,
and a ``refused`` event).
Bodies are read through :mod:`ccctl.media.webinput` (UTF-8, bounded, SDP scanned before
parsing) and every error becomes a one-line answer in its middleware; :data:`ROUTES` is the
route table. The live broadcast and its floor holder are kept in the registry, so a restarted server
resumes them and sites rejoin (and the floor holder publishes again) on their own.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ccctl.edges.routes import add_routes as add_edge_routes
from ccctl.edges.routes import edge_set_tier
from ccctl.errors import CcctlError, NotFound, UsageError
from ccctl.limits import raise_nofile_limit
from ccctl.media import state, tokens
from ccctl.media.admission import Admission, AdmissionPolicy
from ccctl.media.changes import add_change_routes
from ccctl.media.dataroutes import add_data_routes
from ccctl.media.fastpath import say_path_once
from ccctl.media.net import keep_candidates, pin_ice
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
from ccctl.registry.broadcasts import audience_ids, audience_size
from ccctl.registry.db import Database

if TYPE_CHECKING:
    import ssl

    from ccctl.media.coreapi import MediaCoreAPI
    from ccctl.media.ingest import Ingest

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
    """The server's state: registry, secret, media core, the live broadcast."""

    def __init__(self, db_url: str, home: Path, core_factory: Any = None, media_network: str | None = None,
                 admission: AdmissionPolicy | None = None) -> None:
        self.db: Database = open_registry(db_url)
        self.policy = admission if admission is not None else _configured_admission(home)
        self.admission: Admission | None = None  # the live broadcast's account (ccctl.media.admission)
        self._clock_watch: asyncio.Task[None] | None = None
        self.media_network = media_network
        self.secret = tokens.load_secret(home)
        self.core: MediaCoreAPI | None = None
        self.ingest: Ingest | None = None
        self.edges: Any = None  # the live broadcast's EdgeManager (ccctl.edges.manager)
        self.broadcast: dict[str, Any] | None = None
        self.audience: frozenset[str] | None = None  # the live broadcast's listed sites (None: every enabled one)
        self._refused: set[str] = set()  # sites outside the audience refused (one event each per broadcast)
        self.started_at = time.time()
        self._core_factory = core_factory
        self._lock = asyncio.Lock()
        from ccctl.media.ingest import FloorBoard

        self.board = FloorBoard()
        self.floor_listeners = 0  # join pages parked in a floor long-poll right now

    # -- lifecycle ------------------------------------------------------------------------
    async def resume(self) -> None:
        """Pick up a broadcast left live by a previous server process."""
        live = state.live_broadcast(self.db)
        if live:
            await self._start_core(live)

    def _live_core(self) -> MediaCoreAPI:
        """The live broadcast's core (503 while none is running)."""
        if self.core is None:
            raise web.HTTPServiceUnavailable(text="the media core is not running\n", headers={"Retry-After": "5"})
        return self.core

    async def _start_core(self, broadcast: dict[str, Any]) -> None:
        from ccctl.media.core import MediaCore
        from ccctl.media.shard import ShardedCore

        factory: Any = self._core_factory or MediaCore
        kind, given = getattr(factory, "func", factory), getattr(factory, "keywords", {})
        timeouts = {"connect_timeout": self.policy.connect_timeout_s}
        if kind is ShardedCore:
            timeouts["call_timeout"] = self.policy.worker_timeout_s
        if kind in (MediaCore, ShardedCore):  # what a test's factory sets itself wins
            factory = functools.partial(factory, **{k: v for k, v in timeouts.items() if k not in given})
        from ccctl.media.ingest import Ingest

        bid = broadcast["id"]

        def record(kind: str, site: str, detail: dict[str, Any]) -> None:
            if self.admission is not None:
                self.admission.on_event(kind, site, detail)
            state.record_event(self.db, bid, site, kind, detail)

        self.core = factory(source=broadcast["source"], on_event=record)
        await self.core.start()
        self.admission = Admission(self.policy, self.core.tiers, self.core.program.fps,
                                   getattr(self.core, "processes", 1), on_event=record)
        self._clock_watch = asyncio.get_running_loop().create_task(self._watch_clock(), name="admission-clock")
        self.ingest = Ingest(self.core.program, self.board, record, main_is_whip=broadcast["source"] == "whip")
        await self.ingest.start()
        self.ingest.set_floor(broadcast.get("floor_site"))  # a restarted server gives it back
        from ccctl.edges.manager import start_edges  # edges: fed while the broadcast is live

        self.edges = await start_edges(self.db, self.core.program, bid, record)
        self.audience, self._refused = audience_ids(self.db, bid), set()
        self.broadcast = broadcast

    async def _watch_clock(self) -> None:
        """Every second, tell admission how the program's audio clock keeps up."""
        from ccctl.media.program import AUDIO_RATE, AUDIO_SAMPLES

        loop = asyncio.get_running_loop()
        while self.core is not None and self.admission is not None:  # ends with the broadcast (cancelled)
            program = self.core.program
            self.admission.observe_clock(loop.time(), program.audio_ticks, AUDIO_RATE / AUDIO_SAMPLES,
                                         bool(program.audio_feed.subscribers))
            await asyncio.sleep(1.0)

    async def _stop_core(self) -> None:
        """End the publishers, release the floor (pages stop publishing), close the core."""
        if self._clock_watch is not None:
            self._clock_watch.cancel()
            await asyncio.gather(self._clock_watch, return_exceptions=True)
            self._clock_watch = None
        if self.edges is not None:  # edges: stop feeding, remove the mountpoints
            await self.edges.close()
            self.edges = None
        if self.ingest is not None:
            await self.ingest.close()
            self.ingest = None
        self.board.set(None)
        if self.core is not None:
            await self.core.close()
            self.core = None
        self.admission = None

    async def close(self) -> None:
        """Close the media core (sites see the server go) and the registry."""
        self.board.close()
        await self._stop_core()
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

    def _require_audience(self, site_id: str) -> None:
        """403 (with one ``refused`` event per site and broadcast) when a broadcast is live and
        ``site_id`` is not in its audience; nothing live: the site may wait for one."""
        broadcast, audience = self.broadcast, self.audience
        if broadcast is None or audience is None or site_id in audience:
            return
        why = f"site {site_id} is not in the audience of broadcast {broadcast['id']}"
        if site_id not in self._refused:
            self._refused.add(site_id)
            state.record_event(self.db, broadcast["id"], site_id, "refused", {"why": "not in the audience"})
        raise web.HTTPForbidden(text=why + "\n", headers=CORS)

    def _live_named(self, request: web.Request) -> dict[str, Any] | None:
        """The live broadcast a control call acts on: ``?broadcast=ID`` must name it (404 if
        that one is not live); none named: the only live one (None when nothing is live)."""
        named = request.query.get("broadcast")
        if named is None:
            return self.broadcast
        if not named.isdigit():
            raise BadInput(f"broadcast must be a number, not {one_line(named, 40)!r}")
        if self.broadcast is None or self.broadcast["id"] != int(named):
            raise web.HTTPNotFound(text=f"broadcast {int(named)} is not live\n")
        return self.broadcast

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
        return web.json_response({"ok": True, "broadcast": self.broadcast["id"] if self.broadcast else None,
                                  "uptime_s": round(time.time() - self.started_at, 1)})

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
            if self.broadcast is not None:
                raise web.HTTPConflict(text=f"broadcast {self.broadcast['id']} is already live\n")
            bid = state.start_broadcast(self.db, title, source, {}, sites)
            live = state.live_broadcast(self.db)
            assert live is not None and live["id"] == bid
            try:
                await self._start_core(live)
                if record is not None:
                    await self._live_core().record(record)
            except CcctlError:  # a media file or recording path that cannot be used: its status
                await self._stop_core()
                self.broadcast = None
                state.end_broadcast(self.db, bid)
                raise
            except Exception as exc:
                await self._stop_core()
                self.broadcast = None
                state.end_broadcast(self.db, bid)
                raise CcctlError(f"media core failed to start: {type(exc).__name__}: {exc}") from None
        return web.json_response({"id": bid, "title": title, "source": source, "record": record,
                                  "audience": "all" if sites is None else len(set(sites))}, status=201)

    async def status(self, request: web.Request) -> web.Response:
        self._require_control(request)
        live = self._live_named(request)
        if live is None:
            return web.json_response({"live": False, "sessions": []})
        sessions = await self._live_core().stats() + (self.edges.stats() if self.edges is not None else [])  # edges' sites
        holder = self.board.holder
        for row in sessions:
            row["floor"] = row.get("site_id") == holder
        on_air = self.ingest.on_air if self.ingest is not None else None
        return web.json_response({"live": True, "id": live["id"], "title": live["title"],
                                  "source": live["source"], "started_at": live["started_at"],
                                  "floor": holder, "floor_since": self.board.since,
                                  "floor_listeners": self.floor_listeners,
                                  "on_air": None if on_air is None else (on_air.site_id or MAIN_PUBLISH),
                                  "publishers": self.ingest.stats() if self.ingest is not None else [],
                                  "admission": self.admission.summary() if self.admission is not None else None,
                                  "audience": audience_size(self.db, live["id"]),
                                  "audience_all": self.audience is None, "sessions": sessions})

    async def live_figures(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The change stream's live figures: every connected site's (the media core's and the
        edges'), and each edge serving the broadcast (ccctl.media.changes)."""
        core, edges = self.core, self.edges
        if core is None:
            return [], []
        return await core.stats() + (edges.stats() if edges is not None else []), edges.status() if edges else []

    async def stop(self, request: web.Request) -> web.Response:
        self._require_control(request)
        async with self._lock:
            live = self._live_named(request)
            if live is None:
                raise web.HTTPNotFound(text="no live broadcast\n")
            bid = live["id"]
            await self._stop_core()
            self.broadcast = None
            state.end_broadcast(self.db, bid)
        return web.json_response({"id": bid, "stopped": True})

    # -- the floor ------------------------------------------------------------------------------
    async def floor_grant(self, request: web.Request) -> web.Response:
        """Give the floor to a site: its join page publishes its camera, which becomes the program."""
        self._require_control(request)
        body = await read_json_object(request)
        site_id = body.get("site")
        if not isinstance(site_id, str) or not site_id:
            raise web.HTTPBadRequest(text='body must name the site: {"site": ID}\n')
        self._site_tier(site_id)  # 404 unless an enabled site
        self._live_named(request)
        if self.broadcast is not None and self.audience is not None and site_id not in self.audience:
            raise web.HTTPConflict(text=f"site {site_id} is not in the audience of broadcast {self.broadcast['id']}\n")
        return web.json_response({"floor": site_id, "previous": await self._set_floor(site_id)})

    async def floor_release(self, request: web.Request) -> web.Response:
        """Take the floor back: the program returns to the main source."""
        self._require_control(request)
        self._live_named(request)
        return web.json_response({"floor": None, "released": await self._set_floor(None)})

    async def _set_floor(self, site_id: str | None) -> str | None:
        """Record the new holder (None: released) and tell the ingest; the previous holder."""
        async with self._lock:
            if self.broadcast is None or self.ingest is None:
                raise web.HTTPConflict(text="no live broadcast\n")
            previous = state.set_floor(self.db, self.broadcast["id"], site_id)
            self.ingest.set_floor(site_id)
        return previous

    async def end_site(self, site_id: str, why: str) -> dict[str, Any]:
        """End everything ``site_id`` has live: the floor if it holds it (the program goes back
        to the main source, the release event says ``why``), its WHIP uplink, its WHEP sessions.

        The floor goes first, so an uplink still negotiating is refused when it finishes.
        """
        released, publishers, ended = False, 0, 0
        async with self._lock:
            if self.broadcast is not None and self.ingest is not None:
                if self.board.holder == site_id:
                    state.set_floor(self.db, self.broadcast["id"], None, why)
                    self.ingest.set_floor(None, why)
                    released = True
                publishers = await self.ingest.end_site(site_id, why)
        if self.core is not None:
            for session in [s for s in self.core.sessions() if s.site_id == site_id]:
                ended += int(await self.core.unsubscribe(session.session_id))
        return {"site_id": site_id, "sessions_ended": ended, "publishers_ended": publishers,
                "floor_released": released}

    async def site_floor(self, request: web.Request) -> web.Response:
        """Whether this site holds the floor; a long-poll when the page says what it last saw.

        Only a change for this site answers early (the floor passing between two other sites
        does not wake every page).
        """
        site_id = request.match_info["site"]
        self._require_site(request, site_id)
        try:
            since = int(request.query["since"]) if "since" in request.query else None
            wait = min(max(float(request.query.get("wait", "25")), 0.0), FLOOR_WAIT_MAX)
        except ValueError:
            raise web.HTTPBadRequest(text="since must be an integer and wait a number of seconds\n") from None
        board = self.board
        if since is not None and since == board.version:
            was = board.holder == site_id
            deadline = time.monotonic() + wait
            self.floor_listeners += 1
            try:
                while (remaining := deadline - time.monotonic()) > 0:  # bounded by the deadline
                    version = board.version
                    await board.wait(version, remaining)
                    if (board.holder == site_id) != was or board.version == version:
                        break  # this site's answer changed, or the wait ended (timeout, shutdown)
            finally:
                self.floor_listeners -= 1
        return web.json_response({"site_id": site_id, "holder": board.holder == site_id, "version": board.version,
                                  "live": self.broadcast is not None, "publish_url": f"/whip/{site_id}"},
                                 headers={"Cache-Control": "no-store"})

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

    def _whip_resource(self, request: web.Request, control_ends_any: bool = False) -> Any:
        """The publisher at ``/whip/{name}/{resource}`` if the caller may act on it: its owner,
        or (``control_ends_any``: to end it) the control room, whoever owns it."""
        name, resource_id = request.match_info["name"], request.match_info["resource"]
        if control_ends_any and tokens.check_control(self.secret, self._bearer(request)):
            owner = None if name == MAIN_PUBLISH else name
        else:
            owner = self._whip_owner(request, name)
        publisher = self.ingest.publisher(resource_id) if self.ingest is not None else None
        if publisher is None or publisher.site_id != owner:
            raise web.HTTPNotFound(text="no such WHIP session\n", headers=CORS)
        return publisher

    async def whip_offer(self, request: web.Request) -> web.Response:
        """A publisher's WHIP offer -> 201 with the answer (every candidate in it)."""
        name = request.match_info["name"]
        owner = self._whip_owner(request, name)
        if owner is not None:
            self._site_tier(owner)  # 404 unless an enabled site
            if request.content_type != "application/sdp":
                raise web.HTTPUnsupportedMediaType(text="offer must be application/sdp\n", headers=CORS)
            if self.ingest is not None and self.board.holder != owner:  # before reading its offer
                from ccctl.media.ingest import FloorRefused

                raise FloorRefused(f"site {owner} does not hold the floor")
        offer = await self._read_offer(request, self.ingest is not None)
        if self.ingest is None:  # the broadcast ended while the offer was read
            raise web.HTTPServiceUnavailable(text="no live broadcast\n", headers={"Retry-After": "5", **CORS})
        publisher, answer = await self.ingest.publish(offer, owner)  # FloorRefused 403, SourceRefused 409
        return web.Response(status=201, text=answer, content_type="application/sdp", headers={
            "Location": f"/whip/{name}/{publisher.resource_id}", "ETag": f'"{publisher.etag}"',
            "Accept-Patch": TRICKLE, **CORS})

    async def whip_patch(self, request: web.Request) -> web.Response:
        """Trickle ICE for a publisher (RFC 9725 section 4.3)."""
        publisher = self._whip_resource(request)
        if request.content_type != TRICKLE:
            raise web.HTTPUnsupportedMediaType(text=f"a PATCH must be {TRICKLE}\n", headers=CORS)
        match = request.headers.get("If-Match")
        if match is not None and match.strip() not in ("*", f'"{publisher.etag}"'):
            raise web.HTTPPreconditionFailed(text="If-Match does not match this ICE session's ETag\n", headers=CORS)
        fragment = await read_sdp(request, offer=False)
        if self.media_network:
            fragment = keep_candidates(fragment, self.media_network)
        assert self.ingest is not None
        await self.ingest.trickle(publisher, fragment)  # IceRestartRefused 422, a bad candidate 400
        return web.Response(status=204, headers=CORS)

    async def whip_delete(self, request: web.Request) -> web.Response:
        """The publisher is done: end its session (the program goes back to what it showed)."""
        publisher = self._whip_resource(request, control_ends_any=True)
        assert self.ingest is not None
        by_control = publisher.site_id is not None and tokens.check_control(self.secret, self._bearer(request))
        await self.ingest.unpublish(publisher, "ended by the control room" if by_control else "deleted")
        return web.Response(status=200, headers=CORS)

    async def whip_preflight(self, request: web.Request) -> web.Response:
        accept = {"Accept-Patch": TRICKLE} if "resource" in request.match_info else {"Accept-Post": "application/sdp"}
        return web.Response(status=204, headers={**CORS, **accept})

    async def whep_offer(self, request: web.Request) -> web.Response:
        site_id = request.match_info["site"]
        self._require_site(request, site_id)
        tier = self._site_tier(site_id)
        self._require_audience(site_id)  # 403: another broadcast's site
        offer = await self._read_offer(request, self.core is not None)
        if self.core is None:  # the broadcast ended while the offer was read
            raise web.HTTPServiceUnavailable(text="no live broadcast\n", headers={"Retry-After": "5", **CORS})
        core, admission = self.core, self.admission
        assert admission is not None
        self._require_audience(site_id)  # the broadcast may have changed while the offer was read
        ticket = await admission.admit(site_id, tier, self.board.holder)  # Overloaded: 503 + Retry-After
        with admission.holding(ticket):
            for moved in ticket.moves:
                await self._to_audio(core, moved)
            if self.core is not core:  # the broadcast ended while the offer waited
                raise web.HTTPServiceUnavailable(text="no live broadcast\n", headers={"Retry-After": "5", **CORS})
            session_id, answer = await core.subscribe(site_id, offer, ticket.tier)
            held = core.session(session_id)
            admission.bound(ticket, session_id, held.tier if held is not None else ticket.tier)
        if not tokens.check_site(self.secret, self.db, site_id, self._bearer(request)):  # revoked meanwhile
            await self.core.unsubscribe(session_id)
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
        core = self.core
        owned = core is not None and any(s.session_id == session_id and s.site_id == site_id for s in core.sessions())
        if core is None or not owned or not await core.unsubscribe(session_id):
            raise web.HTTPNotFound(text="no such session\n", headers=CORS)
        return web.Response(status=200, headers=CORS)

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
        self._live_named(request)
        core = self.core
        session = next((s for s in core.sessions() if s.site_id == site_id), None) if core is not None else None
        if session is None and self.edges is not None and site_id in self.edges.watching:
            return await edge_set_tier(self.edges, site_id, tier)  # a Janus switch: ccctl/edges/routes.py
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
        self._require_control(request)
        sessions = await self.core.stats() if self.core is not None else []
        sessions += self.edges.stats() if self.edges is not None else []  # sites on edges: ccctl/edges/manager.py
        lines = ["# HELP ccctl_broadcast_live 1 while a broadcast is live.", "# TYPE ccctl_broadcast_live gauge",
                 f"ccctl_broadcast_live {1 if self.broadcast else 0}",
                 "# HELP ccctl_broadcast_sessions Connected sites by tier.", "# TYPE ccctl_broadcast_sessions gauge"]
        by_tier: dict[str, int] = {}
        for s in sessions:
            by_tier[s.get("tier", "?")] = by_tier.get(s.get("tier", "?"), 0) + 1
        lines += [f'ccctl_broadcast_sessions{{tier="{t}"}} {n}' for t, n in sorted(by_tier.items())]
        publishers = self.ingest.stats() if self.ingest is not None else []
        lines += ["# HELP ccctl_whip_publishers WHIP publishers connected, by role.", "# TYPE ccctl_whip_publishers gauge"]
        lines += [f'ccctl_whip_publishers{{role="{role}"}} {sum(1 for p in publishers if p["role"] == role)}'
                  for role in ("main", "floor")]
        lines += ["# HELP ccctl_floor_held 1 while a site holds the floor.", "# TYPE ccctl_floor_held gauge",
                  f"ccctl_floor_held {1 if self.board.holder else 0}",
                  "# HELP ccctl_floor_listeners Join pages waiting to be given the floor.",
                  "# TYPE ccctl_floor_listeners gauge", f"ccctl_floor_listeners {self.floor_listeners}"]
        if self.admission is not None:
            lines += self.admission.metrics()
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


def _site_metrics(sessions: list[dict[str, Any]]) -> list[str]:
    """Per-site series of the live broadcast (absent figures, e.g. no report yet, are left out)."""
    lines: list[str] = []
    for name, kind, text, key, scale in SITE_METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for s in sessions:
            site = _label(s["site_id"])
            if key is None:
                lines.append(f'{name}{{site="{site}",tier="{_label(s["tier"])}",state="{_label(s["state"])}"}} 1')
            elif s.get(key) is not None:
                value = s[key] * scale
                lines.append(f'{name}{{site="{site}"}} {value if isinstance(value, int) else round(value, 6)}')
    return lines


def _configured_admission(home: Path) -> AdmissionPolicy:
    """The ``[admission]`` settings of the configuration resolved for ``home``."""
    import os

    from ccctl.config import load_config

    return AdmissionPolicy.from_config(load_config(env={**os.environ, "CCCTL_HOME": str(home)}).admission)


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
               admission: AdmissionPolicy | None = None) -> web.Application:
    """The aiohttp application; ``core_factory`` lets tests choose the media core,
    ``media_network`` (e.g. ``127.0.0.0/8``) limits the remote candidates media may use, and
    ``admission`` the joins it takes (default: the ``[admission]`` configuration of ``home``)."""
    server = Server(db_url, home, core_factory, media_network, admission)
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
        server.board.close()  # answer the floor long-polls now, not after the shutdown timeout

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
                ssl_context: ssl.SSLContext | None = None) -> None:
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
    app = create_app(db_url, home, factory, media_network=network)
    from ccctl.feeds.poller import feed_poller
    from ccctl.meetings.service import meeting_scheduler

    app.cleanup_ctx.append(feed_poller(db_url))  # pulls the feeds on their intervals
    app.cleanup_ctx.append(meeting_scheduler(db_url, home, f"{host}:{port}"))  # meetings' checks and starts
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
