"""Headless Chromium plays a site's join page through a Janus edge.

The real server (the harness of test_failover: two real edges in their namespaces, admin API
on), Debian's Chromium driven by Playwright: the join page loads ``/edge.js``, learns its edge
from ccctl, plays from it over Janus's HTTP protocol (decoded frames counted by the browser
itself), is confirmed by the edge's admin API, follows an operator's tier change on the same
connection (a larger picture), and leaves.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ccctl.media import tokens
from ccctl.registry import open_registry
from tests.browser import CHROMIUM, PAGE_ARGS
from tests.edges.test_failover import MOVE_S, Harness, harness  # noqa: F401 - the fixture
from tests.edges.test_feed import TIERS, TIMEOUT

ARGS = [*PAGE_ARGS, "--disable-quic", "--autoplay-policy=no-user-gesture-required",
        "--disable-features=WebRtcHideLocalIpsWithMdns"]  # no loopback candidates: the edges are on their veths


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/services.sh installs it as root)")
@pytest.mark.asyncio
async def test_join_page_plays_through_an_edge_in_headless_chromium(harness: Harness) -> None:  # noqa: F811
    playwright = pytest.importorskip("playwright.async_api", reason="the test extra installs playwright")
    h = harness
    with open_registry(h.db_url) as db:
        token = tokens.site_token(h.secret, "s1", tokens.generation(db, "s1"))
    link = str(h.client.make_url(f"/join/s1?t={token}"))
    script = await h.client.get("/edge.js")
    assert script.status == 200 and "janus.plugin.streaming" in await script.text()
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            await page.goto(link)
            # The page's state line is refreshed once a second by the edge's watchdog, its
            # frame counts by the page's own statistics: wait for both, not one and then the other.
            await page.wait_for_function(
                "window.ccctl.edge === 'e0' && window.ccctl.videoFrames > 10 && window.ccctl.audioPackets > 20"
                " && window.ccctl.connected && window.ccctl.joins === 1", timeout=TIMEOUT * 1000)
            # The edge's admin API saw the browser's handle watching ccctl's mountpoint.
            assert [(k, d["edge"], d["by"]) for k, d in h.events("s1")] == [("join", "e0", "edge")]
            assert await page.evaluate("document.getElementById('program').videoWidth") == TIERS["low"].width
            # The operator moves it to high: Janus switches its handle; the same page shows the larger picture.
            r = await h.client.put("/api/sites/s1/tier", json={"tier": "high"}, headers=h.ctl)
            assert r.status == 200, await r.text()
            await page.wait_for_function(
                f"window.ccctl.edgeSwitches === 1 && document.getElementById('program').videoWidth === {TIERS['high'].width}",
                timeout=TIMEOUT * 1000)
            assert (await page.evaluate("window.ccctl.joins")) == 1  # no new session for it
            await page.close()
        finally:
            await browser.close()
    deadline = time.monotonic() + MOVE_S  # its leave: said by the page, or by the edge at the next round
    while len(h.events("s1")) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # bounded poll on the page's last request or the health loop
    assert [k for k, _ in h.events("s1")] == ["join", "leave"]
