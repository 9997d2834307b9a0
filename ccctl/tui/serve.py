"""``ccctl dashboard --serve``: the dashboard in a browser, for the room's wall screens.

textual-serve runs one dashboard process per browser connection (``command``) and relays its
screen over a WebSocket to xterm.js in the page. This module keeps textual-serve's WebSocket
handler and static files and puts its own aiohttp application around them:

- the control token guards every route: a browser presents it once, as ``/?token=...`` (a
  kiosk's start URL) or in the page's form, and receives a cookie derived from it (HMAC, not
  the token itself: the cookie cannot call the control API); the address bar is cleared by a
  redirect. Anything else without the cookie is refused (401). The access log has no query
  string, so the token never reaches a log, and nothing prints it;
- the page (``serve.html``) starts the dashboard without a Start click and reconnects by
  itself: it pings the socket, closes one that stopped answering, and reloads only once the
  server answers ``/alive`` again;
- at most ``max_sessions`` dashboards run at once; more get 503 with Retry-After (the page
  keeps retrying), so a wall of screens cannot exhaust the machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import textual_serve.server
from aiohttp import web
from textual_serve.server import Server

from ccctl.media.webinput import SafeAccessLogger

COOKIE = "ccctl_dashboard"
COOKIE_DAYS = 30
MAX_SESSIONS = 8
RETRY_AFTER_S = 5
PAGE = Path(__file__).with_name("serve.html")
STATIC = Path(textual_serve.server.__file__).parent / "static"  # its terminal script, style and font

log = logging.getLogger("ccctl.dashboard.serve")

LOGIN = """<!DOCTYPE html><html lang="vi"><head><meta charset="utf-8"><title>ccctl dashboard</title>
<style>body{{background:#000;color:#fff;font:20px monospace;display:flex;height:100vh;margin:0;
align-items:center;justify-content:center}}input,button{{font:inherit;margin:8px}}</style></head>
<body><form method="post" action="/login"><p>{message}</p>
<label>Control token <input type="password" name="token" autocomplete="off" autofocus></label>
<button type="submit">Open</button></form></body></html>"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cookie_value(token: str) -> str:
    """What the browser keeps: derived from the control token, useless as one."""
    return hmac.new(token.encode(), b"ccctl dashboard page", hashlib.sha256).hexdigest()


class DashboardServer(Server):
    """textual-serve's server with the token guard, the self-starting page and a session cap."""

    def __init__(self, command: str, host: str, port: int, token: str, max_sessions: int = MAX_SESSIONS) -> None:
        super().__init__(command, host=host, port=port, title="ccctl dashboard", statics_path=STATIC)
        self.token = token
        self.cookie = cookie_value(token)
        self.max_sessions = max_sessions
        self.tasks: set[asyncio.Task[object]] = set()  # one per open session

    @property
    def sessions(self) -> int:
        """Dashboards running now."""
        return len(self.tasks)

    # --- the guard ------------------------------------------------------------------------

    def _token_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.token.encode(), (presented or "").encode())

    def _admitted(self, request: web.Request) -> web.Response:
        """Set the cookie and send the browser to the page, the token gone from its address."""
        query = {k: v for k, v in request.query.items() if k != "token"}
        response = web.HTTPSeeOther("/" + ("?" + urlencode(query) if query else ""))
        response.set_cookie(COOKIE, self.cookie, max_age=COOKIE_DAYS * 86400, httponly=True, samesite="Strict",
                            path="/", secure=request.secure)
        return response

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request needs the cookie, except the two ways of presenting the token."""
        if request.path == "/" and "token" in request.query:
            if self._token_ok(request.query["token"]):
                return self._admitted(request)
            return self._refused(request, "That token is not the control token.")
        if request.path == "/login" and request.method == "POST":
            form = await request.post()
            token = form.get("token")
            if isinstance(token, str) and self._token_ok(token.strip()):
                return self._admitted(request)
            return self._refused(request, "That token is not the control token.")
        presented = request.cookies.get(COOKIE, "")
        if not (presented and hmac.compare_digest(self.cookie.encode(), presented.encode())):
            return self._refused(request, "This screen needs the control token.")
        origin = request.headers.get("Origin")
        if request.path == "/ws" and origin and origin.split("://", 1)[-1] != request.host:
            raise web.HTTPForbidden(text="cross-site socket refused\n")
        return await handler(request)

    @staticmethod
    def _refused(request: web.Request, message: str) -> web.Response:
        if request.path == "/" or request.path == "/login":
            return web.Response(status=401, text=LOGIN.format(message=html.escape(message)), content_type="text/html")
        return web.Response(status=401, text="control token needed\n")

    # --- routes ---------------------------------------------------------------------------

    async def handle_page(self, request: web.Request) -> web.Response:
        """The page: the terminal, its script, the reconnecting watchdog."""
        try:
            font_size = min(max(int(request.query.get("fontsize", "16")), 8), 64)
        except ValueError:
            font_size = 16
        text = PAGE.read_text(encoding="utf-8").replace("{{ font_size }}", str(font_size))
        return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def handle_alive(self, request: web.Request) -> web.Response:
        """204 when a dashboard can start now; 503 with Retry-After when all are taken."""
        if self.sessions >= self.max_sessions:
            return self._busy()
        return web.Response(status=204)

    def _busy(self) -> web.Response:
        return web.Response(status=503, text="every dashboard session is taken; retry\n",
                            headers={"Retry-After": str(RETRY_AFTER_S)})

    async def handle_session(self, request: web.Request) -> web.StreamResponse:
        """textual-serve's WebSocket handler (one dashboard process), within the cap."""
        if self.sessions >= self.max_sessions:
            return self._busy()
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            return await self.handle_websocket(request)
        finally:
            self.tasks.discard(task)

    async def close_sessions(self, app: web.Application) -> None:
        """Shutting down: end every session now (each dashboard is told to quit), not after
        aiohttp's grace period."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def make_app(self) -> web.Application:
        """The aiohttp application: the guard, the page, the socket, the static files."""
        app = web.Application(middlewares=[self.guard])
        app.add_routes([
            web.get("/", self.handle_page),
            web.post("/login", self.handle_page),  # reached only when the guard did not redirect
            web.get("/alive", self.handle_alive),
            web.get("/ws", self.handle_session),
            web.static("/static", self.statics_path),
        ])
        app.on_shutdown.append(self.close_sessions)
        return app


async def serve_dashboard(command: str, host: str, port: int, token: str, *, max_sessions: int = MAX_SESSIONS,
                          ready: Callable[[str], None] | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or the task is cancelled); ``ready`` gets the page's URL."""
    server = DashboardServer(command, host, port, token, max_sessions)
    runner = web.AppRunner(server.make_app(), handle_signals=False, access_log=logging.getLogger("ccctl.dashboard.access"),
                           access_log_class=SafeAccessLogger, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if ready is not None:
            shown = f"[{host}]" if ":" in host else host
            ready(f"http://{shown}:{port}/")
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
