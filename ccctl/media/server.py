"""``ccctl serve``: the long-running aiohttp server around the media core.

Routes (all media and control routes need a token; only ``/healthz`` is open):
- ``GET /healthz``: liveness and the live broadcast's id.
- ``GET /metrics`` (control token): Prometheus text.
- ``POST|GET|DELETE /api/broadcast`` (control token): start, status, stop.
- ``DELETE /api/sites/{site}/session`` (control token): end that site's live session.
- ``POST /whep/{site}`` (that site's token): WHEP offer -> 201 answer with Location and ETag;
  ``DELETE /whep/{site}/{session}`` leaves; ``OPTIONS`` answers CORS preflight.
- ``GET /join/{site}?t=TOKEN``: the join page a site opens in a browser.
The live broadcast is kept in the registry, so a restarted server resumes it and sites rejoin
on their own (the join page retries).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ccctl.media import state, tokens
from ccctl.media.net import keep_candidates, pin_ice
from ccctl.registry import open_registry
from ccctl.registry.db import Database

JOIN_PAGE = Path(__file__).with_name("join.html")
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
        "Access-Control-Expose-Headers": "Location, ETag, Link"}


class Server:
    """The server's state: registry, secret, media core, the live broadcast."""

    def __init__(self, db_url: str, home: Path, core_factory: Any = None, media_network: str | None = None) -> None:
        self.db: Database = open_registry(db_url)
        self.media_network = media_network
        self.secret = tokens.load_secret(home)
        self.core: Any = None
        self.broadcast: dict[str, Any] | None = None
        self.started_at = time.time()
        self._core_factory = core_factory
        self._lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------
    async def resume(self) -> None:
        """Pick up a broadcast left live by a previous server process."""
        live = state.live_broadcast(self.db)
        if live:
            await self._start_core(live)

    async def _start_core(self, broadcast: dict[str, Any]) -> None:
        factory = self._core_factory
        if factory is None:
            from ccctl.media.core import MediaCore

            factory = MediaCore
        bid = broadcast["id"]
        self.core = factory(source=broadcast["source"],
                            on_event=lambda kind, site, detail: state.record_event(self.db, bid, site, kind, detail))
        await self.core.start()
        self.broadcast = broadcast

    async def close(self) -> None:
        """Close the media core (sites see the server go) and the registry."""
        if self.core is not None:
            await self.core.close()
            self.core = None
        self.db.close()

    # -- helpers ----------------------------------------------------------------------------
    def _bearer(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header[len("Bearer "):].strip()
        return request.query.get("t")

    def _require_control(self, request: web.Request) -> None:
        if not tokens.check_control(self.secret, self._bearer(request)):
            raise web.HTTPUnauthorized(text="control token required\n", headers={"WWW-Authenticate": "Bearer"})

    def _require_site(self, request: web.Request, site_id: str) -> None:
        if not tokens.check_site(self.secret, self.db, site_id, self._bearer(request)):
            raise web.HTTPUnauthorized(text="token not valid for this site\n",
                                       headers={"WWW-Authenticate": "Bearer", **CORS})

    def _site_tier(self, site_id: str) -> str:
        rows = self.db.query("SELECT tier, enabled FROM sites WHERE id = ?", (site_id,))
        if not rows or not rows[0][1]:
            raise web.HTTPNotFound(text=f"no enabled site {site_id}\n", headers=CORS)
        return str(rows[0][0])

    # -- routes -------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "broadcast": self.broadcast["id"] if self.broadcast else None,
                                  "uptime_s": round(time.time() - self.started_at, 1)})

    async def start(self, request: web.Request) -> web.Response:
        self._require_control(request)
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise web.HTTPBadRequest(text="body must be a JSON object\n") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object\n")
        async with self._lock:
            if self.broadcast is not None:
                raise web.HTTPConflict(text=f"broadcast {self.broadcast['id']} is already live\n")
            source = str(body.get("source") or "testsrc")
            if source != "testsrc" and not source.startswith("file:"):
                raise web.HTTPBadRequest(text=f"unknown source {source!r}: use testsrc or file:PATH\n")
            title = str(body.get("title") or "Hội nghị trực tuyến")
            bid = state.start_broadcast(self.db, title, source, {"sites": body.get("sites", [])})
            live = state.live_broadcast(self.db)
            assert live is not None and live["id"] == bid
            try:
                await self._start_core(live)
            except Exception as exc:
                state.end_broadcast(self.db, bid)
                raise web.HTTPInternalServerError(text=f"media core failed to start: {exc}\n") from None
        return web.json_response({"id": bid, "title": title, "source": source}, status=201)

    async def status(self, request: web.Request) -> web.Response:
        self._require_control(request)
        if self.broadcast is None:
            return web.json_response({"live": False, "sessions": []})
        sessions = await self.core.stats()
        return web.json_response({"live": True, "id": self.broadcast["id"], "title": self.broadcast["title"],
                                  "source": self.broadcast["source"], "started_at": self.broadcast["started_at"],
                                  "sessions": sessions})

    async def stop(self, request: web.Request) -> web.Response:
        self._require_control(request)
        async with self._lock:
            if self.broadcast is None:
                raise web.HTTPNotFound(text="no live broadcast\n")
            bid = self.broadcast["id"]
            await self.core.close()
            self.core, self.broadcast = None, None
            state.end_broadcast(self.db, bid)
        return web.json_response({"id": bid, "stopped": True})

    async def whep_offer(self, request: web.Request) -> web.Response:
        site_id = request.match_info["site"]
        self._require_site(request, site_id)
        if request.content_type != "application/sdp":
            raise web.HTTPUnsupportedMediaType(text="offer must be application/sdp\n", headers=CORS)
        tier = self._site_tier(site_id)
        if self.core is None:
            raise web.HTTPServiceUnavailable(text="no live broadcast\n", headers={"Retry-After": "5", **CORS})
        offer = await request.text()
        if self.media_network:
            offer = keep_candidates(offer, self.media_network)
        from ccctl.media.tiers import MediaError

        try:
            session_id, answer = await self.core.subscribe(site_id, offer, tier)
        except MediaError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n", headers=CORS) from None
        location = f"/whep/{site_id}/{session_id}"
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": location, "ETag": f'"{session_id}"', **CORS})

    async def whep_delete(self, request: web.Request) -> web.Response:
        site_id, session_id = request.match_info["site"], request.match_info["session"]
        self._require_site(request, site_id)
        owned = self.core is not None and any(
            s.session_id == session_id and s.site_id == site_id for s in self.core.sessions())
        if not owned or not await self.core.unsubscribe(session_id):
            raise web.HTTPNotFound(text="no such session\n", headers=CORS)
        return web.Response(status=200, headers=CORS)

    async def disconnect_site(self, request: web.Request) -> web.Response:
        """End a site's live session (after its token was revoked, say); control token."""
        self._require_control(request)
        site_id = request.match_info["site"]
        ended = 0
        if self.core is not None:
            for session in [s for s in self.core.sessions() if s.site_id == site_id]:
                ended += int(await self.core.unsubscribe(session.session_id))
        return web.json_response({"site_id": site_id, "sessions_ended": ended})

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**CORS, "Accept-Post": "application/sdp"})

    async def join_page(self, request: web.Request) -> web.Response:
        site_id = request.match_info["site"]
        self._require_site(request, site_id)
        name = self.db.query("SELECT name FROM sites WHERE id = ?", (site_id,))
        page = JOIN_PAGE.read_text("utf-8").replace("{{SITE}}", _script_literal(site_id)).replace(
            "{{NAME}}", _script_literal(name[0][0] if name else site_id))
        return web.Response(text=page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    async def metrics(self, request: web.Request) -> web.Response:
        self._require_control(request)
        sessions = await self.core.stats() if self.core is not None else []
        lines = ["# HELP ccctl_broadcast_live 1 while a broadcast is live.", "# TYPE ccctl_broadcast_live gauge",
                 f"ccctl_broadcast_live {1 if self.broadcast else 0}",
                 "# HELP ccctl_broadcast_sessions Connected sites by tier.", "# TYPE ccctl_broadcast_sessions gauge"]
        by_tier: dict[str, int] = {}
        for s in sessions:
            by_tier[s.get("tier", "?")] = by_tier.get(s.get("tier", "?"), 0) + 1
        lines += [f'ccctl_broadcast_sessions{{tier="{t}"}} {n}' for t, n in sorted(by_tier.items())]
        lines += ["# HELP ccctl_site_bytes_sent Bytes sent to a site.", "# TYPE ccctl_site_bytes_sent counter"]
        lines += [f'ccctl_site_bytes_sent{{site="{s["site_id"]}"}} {s.get("bytes_sent", 0)}' for s in sessions]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def _script_literal(value: str) -> str:
    """A JSON string safe inside <script>: no ``</script>`` or HTML can break out of it."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


SERVER_KEY: web.AppKey[Server] = web.AppKey("server", Server)


def create_app(db_url: str, home: Path, core_factory: Any = None, media_network: str | None = None) -> web.Application:
    """The aiohttp application; ``core_factory`` lets tests choose the media core, and
    ``media_network`` (e.g. ``127.0.0.0/8``) limits the remote candidates media may use."""
    server = Server(db_url, home, core_factory, media_network)
    app = web.Application(client_max_size=256 * 1024)
    app[SERVER_KEY] = server
    app.router.add_get("/healthz", server.healthz)
    app.router.add_get("/metrics", server.metrics)
    app.router.add_post("/api/broadcast", server.start)
    app.router.add_get("/api/broadcast", server.status)
    app.router.add_delete("/api/broadcast", server.stop)
    app.router.add_post("/whep/{site}", server.whep_offer)
    app.router.add_route("OPTIONS", "/whep/{site}", server.preflight)
    app.router.add_delete("/whep/{site}/{session}", server.whep_delete)
    app.router.add_delete("/api/sites/{site}/session", server.disconnect_site)
    app.router.add_route("OPTIONS", "/whep/{site}/{session}", server.preflight)
    app.router.add_get("/join/{site}", server.join_page)

    async def on_startup(app: web.Application) -> None:
        await server.resume()

    async def on_cleanup(app: web.Application) -> None:
        await server.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def serve(db_url: str, home: Path, host: str, port: int, ready: Any = None) -> None:
    """Run the server until cancelled (SIGINT/SIGTERM through the CLI's bridge).

    Bound to a loopback address, media stays on loopback too: ICE offers only that address
    and remote candidates outside 127.0.0.0/8 are ignored.
    """
    network = None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        address = "127.0.0.1" if host == "localhost" else host
        pin_ice(address)
        network = "::1/128" if ":" in address else "127.0.0.0/8"
    app = create_app(db_url, home, media_network=network)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    if ready is not None:
        ready()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
