"""The server's edge routes: where a site plays from, and the edges' state.

- ``GET /api/sites/{site}/edge`` (that site's token): ``{"edge": NAME, "url": JANUS_API,
  "mount": ID, "pin": PIN, "tier": T}`` to play from an edge (Janus's HTTP protocol:
  ``watch`` that mountpoint with that pin), or ``{"edge": null}`` to play from ccctl itself
  (WHEP), also when nothing is live. A site asks again whenever its edge hangs up or stops
  answering; an edge found dead is never handed out (see :mod:`ccctl.edges.manager`).
- ``POST /api/sites/{site}/edge`` (that site's token) with ``{"state": "watching", "edge":
  NAME, "session": S, "handle": H}`` (its Janus session and handle there) once it plays
  from that edge: a ``join`` event naming the edge, so attendance counts it, once the edge's
  admin API (if registered) shows that handle watching ccctl's mountpoint; 409 if that is
  not the edge it was given, the edge is down, or the edge does not show that handle.
  ``{"state": "left"}`` when it stops (a ``leave``; also recorded when the edge's admin API
  no longer shows its handle). The session and handle also let ccctl ``switch`` it to
  another tier on the same connection.
- ``GET /api/edges`` (control token, ``?broadcast=ID`` when several are live): that broadcast's
  edges (up, viewers, sites given).
- ``PUT /api/sites/{site}/tier`` (the server's route) for a site on an edge: :func:`edge_set_tier`.
- ``GET /edge.js``: the join page's edge player (``ccctl/edges/edge.js``; code only, no token:
  it holds nothing of any site), which the page includes with one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from ccctl.media.webinput import read_json_object

EDGE_JS = Path(__file__).with_name("edge.js")
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type"}


def _ids(body: dict[str, Any]) -> tuple[int, int] | None:
    """The viewer's Janus ``session`` and ``handle`` in a report (both positive integers), or
    None when it gave none; 400 for anything else."""
    session, handle = body.get("session"), body.get("handle")
    if session is None and handle is None:
        return None
    if not all(type(v) is int and 0 < v < 1 << 63 for v in (session, handle)):
        raise web.HTTPBadRequest(text="session and handle must be Janus's ids (positive integers)\n", headers=CORS)
    return int(session), int(handle)  # type: ignore[arg-type]


async def edge_set_tier(manager: Any, site: str, tier: str) -> web.Response:
    """``PUT /api/sites/{site}/tier`` for a site playing from an edge (the server's route
    hands it here): Janus's ``switch`` on the site's own connection (see
    :meth:`ccctl.edges.manager.EdgeManager.set_tier`)."""
    from ccctl.edges import EdgeError
    from ccctl.errors import NotFound, UsageError

    try:
        return web.json_response(await manager.set_tier(site, tier))
    except UsageError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    except NotFound as exc:
        raise web.HTTPNotFound(text=f"{exc}\n") from None
    except EdgeError as exc:
        raise web.HTTPConflict(text=f"{exc}\n") from None


def add_routes(app: web.Application, server: Any) -> None:
    """Add the edge routes to the server's app (``server``: ccctl.media.server.Server)."""

    async def site_edge(request: web.Request) -> web.Response:
        site = request.match_info["site"]
        server._require_site(request, site)
        tier = server._site_tier(site)
        room = server._require_audience(site)  # 403: no live broadcast's site, not on its edges either
        manager = room.edges if room is not None else None
        where = manager.edge_for(site, tier) if manager is not None else None
        return web.json_response(where or {"edge": None}, headers={"Cache-Control": "no-store", **CORS})

    async def site_report(request: web.Request) -> web.Response:
        site = request.match_info["site"]
        server._require_site(request, site)
        tier = server._site_tier(site)
        body = await read_json_object(request)  # bounded, UTF-8, nesting caught: 400 otherwise
        if body.get("state") not in ("watching", "left"):
            raise web.HTTPBadRequest(text='body must be {"state": "watching"|"left", "edge": NAME}\n', headers=CORS)
        room = server.site_room(site)  # the broadcast it belongs to (one that gave it back: its left is moot)
        manager = room.edges if room is not None else None
        if body["state"] == "watching":
            server._require_audience(site)  # 403 first: outside every live broadcast's audience
        if manager is None:
            raise web.HTTPServiceUnavailable(text="no live broadcast\n", headers={"Retry-After": "5", **CORS})
        ids = _ids(body)
        if body["state"] == "left":
            manager.left(site)
        elif not await manager.report_watching(site, str(body.get("edge") or ""), tier, ids):
            raise web.HTTPConflict(text="not the edge this site was given, or it is down, or it does not see this"
                                         " site's handle watching: ask again\n", headers=CORS)
        return web.Response(status=204, headers=CORS)

    async def edges(request: web.Request) -> web.Response:
        server._require_control(request)
        room = server._room_named(request)  # ?broadcast=ID, or the only live one
        manager = room.edges if room is not None else None
        return web.json_response({"live": manager is not None, "edges": manager.status() if manager else []})

    async def edge_script(request: web.Request) -> web.Response:
        # Code only (no site, token or edge in it): what the join page's one include line loads.
        return web.Response(text=EDGE_JS.read_text("utf-8"), content_type="application/javascript",
                            charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def preflight(request: web.Request) -> web.Response:
        return web.Response(status=204, headers=CORS)

    app.router.add_get("/api/sites/{site}/edge", site_edge)
    app.router.add_post("/api/sites/{site}/edge", site_report)
    app.router.add_route("OPTIONS", "/api/sites/{site}/edge", preflight)
    app.router.add_get("/api/edges", edges)
    app.router.add_get("/edge.js", edge_script)
