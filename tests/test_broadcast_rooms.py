"""Several broadcasts live at once (the four-level system): one room per broadcast.

The real server app on a loopback port, real aiortc sites (WHEP) and publishers (WHIP), the
pictures decoded and looked at: a province's broadcast publishes a flat orange picture by WHIP
while another shows the test pattern (colour bars), and each site sees its own. A centre
broadcast (every site) takes a province's site (its session there ends, "moved to broadcast N";
its next offer lands in the centre) and gives it back when it ends.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import pytest
import pytest_asyncio

from ccctl.media import state
from ccctl.media.server import SERVER_KEY
from ccctl.registry import open_registry
from ccctl.registry.broadcasts import audience_level
from tests.browser import CHROMIUM, launch
from tests.test_whip import ORANGE, AiortcPublisher, Api, in_process_server, is_solid, yuv_stats

pytestmark = [pytest.mark.usefixtures("loopback_ice"), pytest.mark.asyncio]  # loopback_ice: tests/conftest.py
BOUND_S = 20.0  # the longest a bounded poll below waits


def bars(frame: av.VideoFrame) -> bool:
    """The test pattern: colour bars, far from one flat colour."""
    return yuv_stats(frame)[3] > 30 and not is_solid(frame, ORANGE)


def orange(frame: av.VideoFrame) -> bool:
    return is_solid(frame, ORANGE)


async def start(api: Api, source: str, sites: list[str] | None = None) -> int:
    body: dict[str, Any] = {"source": source, **({"sites": sites} if sites is not None else {})}
    response = await api.client.post("/api/broadcast", json=body, headers=api.control)
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def status(api: Api, bid: int) -> dict[str, Any]:
    response = await api.client.get(f"/api/broadcast?broadcast={bid}", headers=api.control)
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def publish_orange(api: Api, bid: int) -> AiortcPublisher:
    """The control room's WHIP publisher of a flat orange picture, for broadcast ``bid``."""
    publisher = AiortcPublisher()
    api._closers.append(publisher.close)
    response = await api.client.post(f"/whip/program?broadcast={bid}", data=await publisher.offer(),
                                     headers={"Content-Type": "application/sdp", **api.control})
    assert response.status == 201, await response.text()
    await publisher.accept(await response.text())
    return publisher


async def until_sites(api: Api, bid: int, sites: set[str]) -> None:
    """Bounded poll: broadcast ``bid``'s connected sites become ``sites``."""
    deadline = time.monotonic() + BOUND_S
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen = {s["site_id"] for s in (await status(api, bid))["sessions"]}
        if seen == sites:
            return
        await asyncio.sleep(0.1)  # a bounded poll on the server's session table
    raise AssertionError(f"broadcast {bid} has {sorted(seen)}, not {sorted(sites)}")


def leaves(api: Api, bid: int) -> list[tuple[str, str]]:
    with open_registry(api.db_url) as db:
        return [(site, json.loads(detail).get("reason") or json.loads(detail).get("why"))
                for site, detail in db.query("SELECT site_id, detail FROM broadcast_events WHERE broadcast_id = ? "
                                             "AND kind = 'leave' ORDER BY id", (bid,))]


@pytest_asyncio.fixture
async def api(units_db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The server with bn-1 (Hồ Chí Minh) and px-1 (Hà Nội)."""
    async with in_process_server(units_db_url, tmp_path) as server:
        yield server


async def test_two_broadcasts_each_site_sees_its_own(api: Api) -> None:
    hanoi = await start(api, "testsrc", ["px-1"])
    saigon = await start(api, "whip", ["bn-1"])
    await publish_orange(api, saigon)
    px, bn = await api.viewer("px-1"), await api.viewer("bn-1")
    await bn.until_picture(orange, what="the Saigon broadcast's orange picture at bn-1")
    await px.until_picture(bars, what="the Hanoi broadcast's test pattern at px-1")
    for _ in range(10):  # and only its own: the next pictures too
        assert orange(await asyncio.wait_for(bn.video.recv(), BOUND_S))
        assert bars(await asyncio.wait_for(px.video.recv(), BOUND_S))
    await until_sites(api, hanoi, {"px-1"})
    await until_sites(api, saigon, {"bn-1"})
    assert (await status(api, saigon))["on_air"] == "program"
    # One budget for the machine, split over the live broadcasts.
    budget = api.client.app[SERVER_KEY].policy.pps_budget  # type: ignore[union-attr]
    assert [(await status(api, b))["admission"]["capacity_pps"] for b in (hanoi, saigon)] == [budget / 2] * 2
    # Several live, none named: a clear 409; each series of the metrics names its broadcast.
    unnamed = await api.client.get("/api/broadcast", headers=api.control)
    assert unnamed.status == 409 and f"2 broadcasts are live ({hanoi}, {saigon})" in await unnamed.text()
    metrics = await (await api.client.get("/metrics", headers=api.control)).text()
    assert "ccctl_broadcast_live 2" in metrics
    assert f'ccctl_site_info{{broadcast="{hanoi}",site="px-1",tier="low",state="connected"}} 1' in metrics \
        or f'ccctl_site_info{{broadcast="{hanoi}",site="px-1",tier="high",state="connected"}} 1' in metrics
    assert f'ccctl_whip_publishers{{broadcast="{saigon}",role="main"}} 1' in metrics
    health = await (await api.client.get("/healthz")).json()
    assert health["broadcast"] in (hanoi, saigon) and health["broadcasts"] == [hanoi, saigon]
    # A second broadcast for every site next to none: fine; a second "every site" one: 409.
    everyone = await start(api, "testsrc")
    again = await api.client.post("/api/broadcast", json={"source": "testsrc"}, headers=api.control)
    assert again.status == 409 and f"broadcast {everyone} is already live for every site of this audience" in await again.text()
    with open_registry(api.db_url) as db:
        assert [audience_level(db, b) for b in (everyone, hanoi, saigon)] == [0, 3, 3]  # one site: one district
    for bid in (everyone, hanoi, saigon):
        stopped = await api.client.delete(f"/api/broadcast?broadcast={bid}", headers=api.control)
        assert stopped.status == 200, await stopped.text()


async def test_a_centre_broadcast_takes_a_province_site_and_gives_it_back(api: Api) -> None:
    province = await start(api, "whip", ["bn-1"])
    await publish_orange(api, province)
    granted = await api.client.post(f"/api/floor?broadcast={province}", json={"site": "bn-1"}, headers=api.control)
    assert granted.status == 200, await granted.text()
    bn = await api.viewer("bn-1")
    await bn.until_picture(orange, what="the province's picture")
    floor = await api.client.get("/api/sites/bn-1/floor", headers=api.auth("bn-1"))
    version = (await floor.json())["version"]
    assert (await floor.json())["broadcast"] == province
    parked = asyncio.ensure_future(api.client.get(f"/api/sites/bn-1/floor?since={version}&wait=50",
                                                  headers=api.auth("bn-1")))
    centre = await start(api, "testsrc")
    # Its floor long-poll answers now (not after 50 s) and names the centre.
    answer = await asyncio.wait_for(parked, BOUND_S)
    assert (await answer.json())["broadcast"] in (province, centre)
    again = await api.client.get("/api/sites/bn-1/floor", headers=api.auth("bn-1"))
    assert (await again.json())["broadcast"] == centre
    # Its session in the province ended, saying why; it joins again (as its page does) and sees the centre.
    await until_sites(api, province, set())
    assert ("bn-1", f"moved to broadcast {centre}") in leaves(api, province)
    assert (await status(api, province))["floor"] is None  # the province's floor went with it
    with open_registry(api.db_url) as db:
        assert state.floor_events(db, province)[-1]["why"] == f"moved to broadcast {centre}"
    await bn.close()
    bn = await api.viewer("bn-1")
    await bn.until_picture(bars, what="the centre's test pattern after the move")
    await until_sites(api, centre, {"bn-1"})
    # The centre ends: the site's session there ends with it; joining again lands in the province.
    stopped = await api.client.delete(f"/api/broadcast?broadcast={centre}", headers=api.control)
    assert stopped.status == 200
    await bn.close()
    bn = await api.viewer("bn-1")
    await bn.until_picture(orange, what="the province's picture again")
    await until_sites(api, province, {"bn-1"})
    px = await api.client.post("/whep/px-1", data="v=0\r\n", headers={"Content-Type": "application/sdp",
                                                                      **api.auth("px-1")})
    assert px.status == 403  # outside the only live broadcast's audience
    assert (await status(api, province))["level"] == "one district"


async def test_a_restarted_server_resumes_every_live_broadcast(units_db_url: str, tmp_path: Path) -> None:
    from ccctl.registry.sites import add_site

    with open_registry(units_db_url) as db:
        add_site(db, {"id": "bn-1", "name": "Điểm cầu Bến Nghé", "unit_code": "26740", "tier": "high"})
        add_site(db, {"id": "px-1", "name": "Điểm cầu Phúc Xá", "unit_code": "00001", "tier": "high"})
        centre = state.start_broadcast(db, "Trung ương", "testsrc", {})
        hanoi = state.start_broadcast(db, "Hà Nội", "testsrc", {}, ["px-1"])
    async with in_process_server(units_db_url, tmp_path, add_sites=False) as api:
        assert (await status(api, centre))["live"] and (await status(api, hanoi))["live"]
        px = await api.viewer("px-1")  # Hanoi's site: the centre (every site) is higher, it takes it
        await px.until_picture(bars, what="the centre's test pattern")
        await until_sites(api, centre, {"px-1"})
        await until_sites(api, hanoi, set())




@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/services.sh installs it as root)")
async def test_the_join_page_follows_its_site_to_the_centre_and_back(api: Api) -> None:
    playwright = pytest.importorskip("playwright.async_api", reason="the test extra installs playwright")
    province = await start(api, "testsrc", ["bn-1"])
    async with playwright.async_playwright() as p:
        browser = await launch(p)
        try:
            page = await browser.new_page()
            await page.goto(api.url(f"/join/bn-1?t={api.site_token('bn-1')}"))
            await page.wait_for_function("window.ccctl.connected && window.ccctl.videoFrames > 5",
                                         timeout=BOUND_S * 1000)
            await until_sites(api, province, {"bn-1"})
            centre = await start(api, "testsrc")
            # No reload: the page sees its connection end and joins again, now in the centre.
            await page.wait_for_function("window.ccctl.joins >= 2 && window.ccctl.connected",
                                         timeout=5 * BOUND_S * 1000)  # Chromium sees the DTLS close
            await until_sites(api, centre, {"bn-1"})
            await until_sites(api, province, set())
            stopped = await api.client.delete(f"/api/broadcast?broadcast={centre}", headers=api.control)
            assert stopped.status == 200
            await page.wait_for_function("window.ccctl.joins >= 3 && window.ccctl.connected",
                                         timeout=5 * BOUND_S * 1000)  # Chromium sees the DTLS close
            await until_sites(api, province, {"bn-1"})
        finally:
            await browser.close()


async def test_workers_carry_several_broadcasts_each_site_its_own(units_db_url: str, tmp_path: Path) -> None:
    """serve --workers 2: one pool of fan-out workers for every live broadcast. Each site gets
    its own broadcast's picture, spread over the workers by load; a worker killed takes only
    its own sites (counted out, reason "worker exited"), the other room's site on the other
    worker stays; the worker comes back with both rooms and the site rejoins; a room ending
    leaves the other as it was."""
    from ccctl.media.shard import ShardedCore
    from tests.media.conftest import SMALL_TIERS

    factory = functools.partial(ShardedCore, tiers=SMALL_TIERS, workers=2)
    async with in_process_server(units_db_url, tmp_path, core_factory=factory) as api:
        hanoi = await start(api, "testsrc", ["px-1"])
        saigon = await start(api, "whip", ["bn-1"])
        await publish_orange(api, saigon)
        px = await api.viewer("px-1")
        await px.until_picture(bars, what="the Hanoi broadcast's test pattern at px-1")
        bn = await api.viewer("bn-1")
        await bn.until_picture(orange, what="the Saigon broadcast's orange picture at bn-1")
        for _ in range(5):
            assert orange(await asyncio.wait_for(bn.video.recv(), BOUND_S))
            assert bars(await asyncio.wait_for(px.video.recv(), BOUND_S))
        await until_sites(api, hanoi, {"px-1"})
        await until_sites(api, saigon, {"bn-1"})
        worker_of = {row["site_id"]: row["worker"] for b in (hanoi, saigon) for row in (await status(api, b))["sessions"]}
        assert worker_of == {"px-1": 0, "bn-1": 1}  # the second room's site went to the idle worker
        pool = api.client.app[SERVER_KEY].pool  # type: ignore[union-attr]
        assert pool is not None and len(pool.rooms) == 2
        # One budget per worker process, split over the rooms as without workers.
        budget = api.client.app[SERVER_KEY].policy.pps_budget  # type: ignore[union-attr]
        assert [(await status(api, b))["admission"]["capacity_pps"] for b in (hanoi, saigon)] == [budget] * 2
        # Kill bn-1's worker (a crash made real): bn-1 is counted out of Saigon, px-1 stays in Hanoi.
        lost = next(row["session_id"] for row in (await status(api, saigon))["sessions"])
        floor = await (await api.client.get("/api/sites/bn-1/floor", headers=api.auth("bn-1"))).json()
        assert floor["lost_session"] is None and floor["broadcast"] == saigon
        parked = asyncio.ensure_future(api.client.get(f"/api/sites/bn-1/floor?since={floor['version']}&wait=50",
                                                      headers=api.auth("bn-1")))  # the join page's long-poll
        await until_true(lambda: pool.rooms and api.client.app[SERVER_KEY].rooms[saigon].floor_listeners == 1)  # type: ignore[union-attr]
        killed = pool.workers[1].proc
        assert killed is not None
        os.kill(killed.pid, signal.SIGKILL)
        # The site is told at once (its parked long-poll answers, well before its 50 s): its session was lost.
        told = await asyncio.wait_for(parked, BOUND_S)
        assert (await told.json())["lost_session"] == lost
        await until_true(lambda: ("bn-1", "worker exited") in leaves(api, saigon))
        await until_sites(api, saigon, set())
        await until_sites(api, hanoi, {"px-1"})
        assert ("px-1", "worker exited") not in leaves(api, hanoi)
        for _ in range(5):  # and its picture goes on
            assert bars(await asyncio.wait_for(px.video.recv(), BOUND_S))
        await until_true(lambda: pool.workers[1].proc not in (None, killed) and pool.workers[1].running)
        again = await api.viewer("bn-1")  # a site rejoins: the worker restarted with both rooms open
        await again.until_picture(orange, what="the Saigon broadcast's orange picture at bn-1, rejoined")
        await until_sites(api, saigon, {"bn-1"})
        floor = await (await api.client.get("/api/sites/bn-1/floor", headers=api.auth("bn-1"))).json()
        assert floor["lost_session"] is None  # rejoined: nothing to tell any more
        # Saigon ends: Hanoi goes on as it was, on the same worker.
        stopped = await api.client.delete(f"/api/broadcast?broadcast={saigon}", headers=api.control)
        assert stopped.status == 200, await stopped.text()
        assert list(pool.rooms) and len(pool.rooms) == 1
        for _ in range(5):
            assert bars(await asyncio.wait_for(px.video.recv(), BOUND_S))
        await until_sites(api, hanoi, {"px-1"})
        assert ("px-1", "closed") not in leaves(api, hanoi) and ("px-1", "worker exited") not in leaves(api, hanoi)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/services.sh installs it as root)")
async def test_the_join_page_is_told_its_worker_died_and_rejoins(units_db_url: str, tmp_path: Path) -> None:
    """serve --workers 2: a worker killed under a join page; the server tells the page (its
    floor long-poll answers with the lost session) and it joins again onto a live worker, with
    no reload and without waiting for its media's consent timeout (about 30 s in Chromium)."""
    playwright = pytest.importorskip("playwright.async_api", reason="the test extra installs playwright")
    from ccctl.media.shard import ShardedCore
    from tests.media.conftest import SMALL_TIERS

    factory = functools.partial(ShardedCore, tiers=SMALL_TIERS, workers=2)
    async with in_process_server(units_db_url, tmp_path, core_factory=factory) as api:
        bid = await start(api, "testsrc", ["bn-1"])
        server = api.client.app[SERVER_KEY]  # type: ignore[union-attr]
        async with playwright.async_playwright() as p:
            browser = await launch(p)
            try:
                page = await browser.new_page()
                await page.goto(api.url(f"/join/bn-1?t={api.site_token('bn-1')}"))
                await page.wait_for_function("window.ccctl.connected && window.ccctl.videoFrames > 5",
                                             timeout=BOUND_S * 1000)
                (row,) = (await status(api, bid))["sessions"]
                await until_true(lambda: server.rooms[bid].floor_listeners == 1)  # its long-poll is parked
                killed = server.pool.workers[row["worker"]].proc
                os.kill(killed.pid, signal.SIGKILL)  # a crash made real
                await page.wait_for_function("window.ccctl.told >= 1 && window.ccctl.joins >= 2 "
                                             "&& window.ccctl.connected", timeout=BOUND_S * 1000)
                deadline = time.monotonic() + BOUND_S
                while True:  # bounded poll: its new session, on a live worker, is connected and sent to
                    rows = (await status(api, bid))["sessions"]
                    if [(r["session_id"] != row["session_id"], r["state"], r["packets_sent"] > 0) for r in rows] \
                            == [(True, "connected", True)]:
                        break
                    assert time.monotonic() < deadline, rows
                    await asyncio.sleep(0.1)
                assert server.pool.workers[rows[0]["worker"]].running
            finally:
                await browser.close()


async def until_true(check: Any) -> None:
    """Bounded poll: ``check()`` becomes true."""
    deadline = time.monotonic() + BOUND_S
    while not check():
        assert time.monotonic() < deadline, "not within the bound"
        await asyncio.sleep(0.1)  # a bounded poll


async def test_the_dashboard_reads_the_highest_level_broadcast_when_several_are_live(api: Api) -> None:
    from ccctl.commands.dashboard import check_remote
    from ccctl.tui.feeds import broadcast_status

    base, token = api.url("/").rstrip("/"), api.control["Authorization"].split()[1]
    read = functools.partial(broadcast_status, Path(), "", 10.0, base, token)
    assert (await asyncio.to_thread(read))["live"] is False
    province = await start(api, "testsrc", ["bn-1"])
    assert (await asyncio.to_thread(read))["id"] == province
    centre = await start(api, "testsrc")
    # Several live: a plain GET /api/broadcast is a 409; the dashboard shows the centre's.
    plain = await api.client.get("/api/broadcast", headers=api.control)
    assert plain.status == 409
    assert (await asyncio.to_thread(read))["id"] == centre
    await asyncio.to_thread(check_remote, base, token)  # a remote console still starts
