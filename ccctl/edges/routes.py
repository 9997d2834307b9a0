"""The server's edge routes: where a site plays from, and the edges' state.

- ``GET /api/sites/{site}/edge`` (that site's token): ``{"edge": NAME, "url": JANUS_API,
  "mount": ID, "pin": PIN, "tier": T}`` to play from an edge (Janus's HTTP protocol:
  ``watch`` that mountpoint with that pin), or ``{"edge": null}`` to play from ccctl itself
  (WHEP), also when nothing is live. A site asks again whenever its edge hangs up or stops
  answering; an edge found dead is never handed out (see :mod:`ccctl.edges.manager`).
- ``POST /api/sites/{site}/edge`` (that site's token) with ``{"state": "watching", "edge":
  NAME}`` once it plays from that edge (a ``join`` event naming the edge: attendance counts
  it; 409 if that is not the edge it was given or the edge is down), ``{"state": "left"}``
  when it stops (a ``leave``).
- ``GET /api/edges`` (control token): the live broadcast's edges (up, viewers, sites given).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ccctl.media.webinput import read_json_object

CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type"}


def add_routes(app: web.Application, server: Any) -> None:
    """Add the edge routes to the server's app (``server``: ccctl.media.server.Server)."""

    async def site_edge(request: web.Request) -> web.Response:
        site = request.match_info["site"]
        server._require_site(request, site)
        tier = server._site_tier(site)
        manager = server.edges
        where = manager.edge_for(site, tier) if manager is not None else None
        return web.json_response(where or {"edge": None}, headers={"Cache-Control": "no-store", **CORS})

    async def site_report(request: web.Request) -> web.Response:
        site = request.match_info["site"]
        server._require_site(request, site)
        tier = server._site_tier(site)
        body = await read_json_object(request)  # bounded, UTF-8, nesting caught: 400 otherwise
        if body.get("state") not in ("watching", "left"):
            raise web.HTTPBadRequest(text='body must be {"state": "watching"|"left", "edge": NAME}\n', headers=CORS)
        manager = server.edges
        if manager is None:
            raise web.HTTPServiceUnavailable(text="no live broadcast\n", headers={"Retry-After": "5", **CORS})
        if body["state"] == "left":
            manager.left(site)
        elif not manager.watching_from(site, str(body.get("edge") or ""), tier):
            raise web.HTTPConflict(text="not the edge this site was given, or it is down: ask again\n", headers=CORS)
        return web.Response(status=204, headers=CORS)

    async def edges(request: web.Request) -> web.Response:
        server._require_control(request)
        manager = server.edges
        return web.json_response({"live": manager is not None, "edges": manager.status() if manager else []})

    async def preflight(request: web.Request) -> web.Response:
        return web.Response(status=204, headers=CORS)

    app.router.add_get("/api/sites/{site}/edge", site_edge)
    app.router.add_post("/api/sites/{site}/edge", site_report)
    app.router.add_route("OPTIONS", "/api/sites/{site}/edge", preflight)
    app.router.add_get("/api/edges", edges)
