"""``ccctl dashboard --serve``: the real command serves the dashboard on loopback; headless
Chromium opens the page once with the control token and the overview appears without a click;
the server is restarted under it and the page comes back by itself; requests without the token
(or with a wrong one) are refused and the token is never printed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from ccctl.media.tokens import control_token, load_secret
from tests.browser import CHROMIUM, PAGE_ARGS
from tests.conftest import free_port

TIMEOUT = 90.0  # a bound on each wait (a loaded machine starts a dashboard process slowly), not a pause
ANSI = re.compile(r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


class Served:
    """One ``ccctl dashboard --serve`` process and what it printed."""

    def __init__(self, home: Path, db_url: str, port: int, *extra: str) -> None:
        self.home, self.db_url, self.port, self.extra = home, db_url, port, extra
        self.proc: asyncio.subprocess.Process | None = None
        self.printed = ""

    async def start(self) -> str:
        env = {**os.environ, "CCCTL_HOME": str(self.home), "CCCTL_DB": self.db_url}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ccctl", "dashboard", "--serve", "--poll", "0.5", "--listen", f"127.0.0.1:{self.port}",
            *self.extra, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert self.proc.stderr is not None
        line = (await asyncio.wait_for(self.proc.stderr.readline(), TIMEOUT)).decode()
        self.printed += line
        assert "served on" in line, line
        return line

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        self.printed += out.decode(errors="replace") + err.decode(errors="replace")


@pytest_asyncio.fixture
async def served(dash_db_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    server = Served(tmp_path / "home", dash_db_url, free_port(), "--sessions", "1")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def token_of(server: Served) -> str:
    return control_token(load_secret(server.home))


@pytest.mark.asyncio
async def test_requests_without_the_token_are_refused(served: Served) -> None:
    base = f"http://127.0.0.1:{served.port}"
    token = token_of(served)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # unsafe: an IP host
        for path in ("/", "/ws", "/alive", "/static/js/textual.js", "/?token=ctl.wrong"):
            async with http.get(base + path, allow_redirects=False) as response:
                assert response.status == 401, path
        async with http.post(base + "/login", data={"token": "ctl.wrong"}, allow_redirects=False) as response:
            assert response.status == 401
            assert "not the control token" in await response.text()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(base + "/ws")
        assert refused.value.status == 401
        # A cookie made up by hand is refused too.
        async with http.get(base + "/alive", cookies={"ccctl_dashboard": "0" * 64}) as response:
            assert response.status == 401
        # The token, typed into the page's form: the cookie it sets is not the token.
        async with http.post(base + "/login", data={"token": token}, allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/"
            cookie = response.cookies["ccctl_dashboard"]
            assert token not in cookie.value and token not in str(response.headers)
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with http.get(base + "/alive") as response:  # the session's cookie jar carries it now
            assert response.status == 204
        # A socket opened from another site's page is refused even with the cookie.
        with pytest.raises(aiohttp.WSServerHandshakeError) as cross:
            await http.ws_connect(base + "/ws", origin="http://evil.example")
        assert cross.value.status == 403
        # --sessions 1: one dashboard runs; a second screen waits (503, Retry-After), then gets its turn.
        first = await http.ws_connect(base + "/ws?width=120&height=40")
        seen = ""
        while "Bạc Liêu" not in seen:  # the first dashboard draws the overview
            frame = await asyncio.wait_for(first.receive(), TIMEOUT)
            assert frame.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), frame
            seen += ANSI.sub("", frame.data.decode("utf-8", "replace") if isinstance(frame.data, bytes) else frame.data)
        with pytest.raises(aiohttp.WSServerHandshakeError) as busy:
            await http.ws_connect(base + "/ws")
        assert busy.value.status == 503 and busy.value.headers is not None and busy.value.headers["Retry-After"]
        async with http.get(base + "/alive") as response:
            assert response.status == 503 and response.headers["Retry-After"]
        await first.close()
        deadline = time.monotonic() + TIMEOUT
        while True:  # bounded: the server notices the closed socket and ends that dashboard
            async with http.get(base + "/alive") as response:
                if response.status == 204:
                    break
            assert time.monotonic() < deadline, "the session never ended"
            await asyncio.sleep(0.1)
    await served.stop()
    assert token not in served.printed


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/services.sh installs it as root)")
@pytest.mark.asyncio
async def test_wall_page_starts_by_itself_and_comes_back_after_a_restart(served: Served) -> None:
    playwright = pytest.importorskip("playwright.async_api", reason="the test extra installs playwright")
    token = token_of(served)
    # What each WebSocket brought to the page, as text (escape sequences removed): the
    # dashboard's screen as xterm.js received it (xterm draws on a canvas, not in the DOM).
    screens: list[list[str]] = []
    arrived = asyncio.Event()  # set on every frame: the waits below re-check their condition then

    def on_socket(ws: object) -> None:
        frames: list[str] = []
        screens.append(frames)

        def on_frame(payload: str | bytes) -> None:
            frames.append(ANSI.sub("", payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload))
            arrived.set()

        ws.on("framereceived", on_frame)  # type: ignore[attr-defined]

    def shows_overview(frames: list[str]) -> bool:
        text = "".join(frames)
        return "Bạc Liêu" in text and "Cà Mau" in text

    async def wait_for(condition: object, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():  # type: ignore[operator]
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}") from None

    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=PAGE_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 900})
            page.on("websocket", on_socket)
            await page.goto(f"http://127.0.0.1:{served.port}/?token={token}")
            assert "token" not in page.url  # the redirect took it out of the address bar
            await wait_for(lambda: screens and shows_overview(screens[0]), "the overview in the browser")
            await page.wait_for_function("document.body.classList.contains('-first-byte')", timeout=TIMEOUT * 1000)
            text = "".join(screens[0])
            # The footer drawn with every key (a blurred app's is empty: the web driver starts it
            # blurred); no action key among them: the wall is read-only.
            await wait_for(lambda: "Quit" in "".join(screens[0]), "the footer drawn in full")
            text = "".join(screens[0])
            assert "Việt Nam" in text and "Re-check" not in text and "Revoke" not in text  # the wall: read-only
            await page.screenshot(path=str(served.home.parent / "wall.png"))
            # The server goes away under the page, then comes back on the same address.
            await served.stop()
            await page.wait_for_function("document.body.classList.contains('-lost')", timeout=TIMEOUT * 1000)
            await served.start()
            await wait_for(lambda: len(screens) >= 2 and shows_overview(screens[-1]), "the page to come back")
            assert "token" not in page.url
        finally:
            await browser.close()
    await served.stop()
    assert token not in served.printed


def test_serve_options_are_checked(ccctl: object) -> None:
    for args, error in ((["--listen", "127.0.0.1:1"], "go with --serve"), (["--serve-actions"], "go with --serve"),
                        (["--serve", "--serve-actions", "--wall"], "cannot go with")):
        result = ccctl("dashboard", *args)  # type: ignore[operator]
        assert result.exit_code == 2 and error in result.stderr, (args, result.stderr)
