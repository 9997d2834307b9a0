"""The join page told "not in this broadcast's audience" (403) or "revoked" (401), in headless
Chromium against a real detached server.

A site whose broadcast is replaced by one without it sees a Vietnamese message naming that, and
offers nothing more (no WHEP retry) while the server keeps refusing it; it asks, slowly, whether
the broadcast changed, and joins by itself when a broadcast includes it again. A revoked site
says so and stops everything. The windows are bounded by what happened, never by time: the
page's own probes answered 403 by the server, and both of its loops having ended.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ccctl.registry import open_registry
from tests.browser import CHROMIUM, launch
from tests.conftest import Ccctl
from tests.test_floor import server  # noqa: F401  # the detached server fixture (bn-1, px-1)

TIMEOUT_MS = 90_000  # Chromium notices a session the server ended by ICE consent at worst (~30 s)
PROBE_MS = 300  # the page's pause between questions while refused (15 s in use), for a short test

pytestmark = [pytest.mark.usefixtures("loopback_ice"),
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/services.sh)")]


def refused_events(ccctl: Ccctl, site_id: str) -> list[tuple[int, dict[str, Any]]]:
    """The server's ``refused`` events of a site: (broadcast, detail)."""
    with open_registry(ccctl.db_url) as db:
        return [(int(b), json.loads(d)) for b, d in db.query(
            "SELECT broadcast_id, detail FROM broadcast_events WHERE kind = 'refused' AND site_id = ? ORDER BY id",
            (site_id,))]


def test_a_site_outside_the_audience_waits_quietly_and_joins_when_included_then_revoked_stops(
        server: Ccctl) -> None:  # noqa: F811
    playwright = pytest.importorskip("playwright.async_api", reason="the test extra installs playwright")
    assert server("broadcast", "start").exit_code == 0
    join_url = {r["site_id"]: r for r in server.json("broadcast", "links")}["bn-1"]["join_url"]

    async def scenario() -> None:
        async with playwright.async_playwright() as p:
            browser = await launch(p)
            try:
                page = await browser.new_page()
                await page.add_init_script(f"window.ccctlProbeMs = {PROBE_MS};")
                offers: list[str] = []  # every WHEP offer the page makes
                page.on("request", lambda r: offers.append(r.url) if r.method == "POST" and "/whep/" in r.url else None)
                await page.goto(join_url)
                await page.wait_for_function("window.ccctl.connected && window.ccctl.joins === 1", timeout=TIMEOUT_MS)

                # Another broadcast, without bn-1: the page is cut, offers again, is refused.
                assert (await asyncio.to_thread(server, "broadcast", "stop")).exit_code == 0
                assert (await asyncio.to_thread(server, "broadcast", "start", "--site", "px-1")).exit_code == 0
                await page.wait_for_function("window.ccctl.refused !== null", timeout=TIMEOUT_MS)
                state = await page.inner_text("#state")
                assert state.startswith("Điểm cầu không thuộc phiên họp này"), state
                assert "not in the audience of broadcast" in await page.get_attribute("#state", "title")
                offered = len(offers)
                # The window: three questions of the page that the server answered 403.
                probes = await page.evaluate("window.ccctl.probes")
                await page.wait_for_function(f"window.ccctl.probes >= {probes + 3}", timeout=TIMEOUT_MS)
                assert len(offers) == offered, offers  # no WHEP retry while refused
                assert await page.inner_text("#state") == state
                status = await asyncio.to_thread(server, "broadcast", "status", "--format", "json")
                second = json.loads(status.stdout)["broadcast"]["id"]
                assert [b for b, _ in refused_events(server, "bn-1")] == [second]

                # A broadcast that includes bn-1 again: the page learns it and joins by itself.
                assert (await asyncio.to_thread(server, "broadcast", "stop")).exit_code == 0
                assert (await asyncio.to_thread(server, "broadcast", "start")).exit_code == 0
                await page.wait_for_function("window.ccctl.connected && window.ccctl.joins === 2", timeout=TIMEOUT_MS)
                assert await page.evaluate("window.ccctl.refused") is None

                # Revoked: the message, and both loops (offers, floor) end for good.
                assert (await asyncio.to_thread(server, "broadcast", "revoke", "bn-1")).exit_code == 0
                await page.wait_for_function(
                    "window.ccctl.revoked && !window.ccctl.retrying && window.ccctl.floorWatch === 'ended'",
                    timeout=TIMEOUT_MS)
                assert "đã bị thu hồi" in await page.inner_text("#state")
                assert not await page.evaluate("window.ccctl.connected")
            finally:
                await browser.close()

    asyncio.run(scenario())
