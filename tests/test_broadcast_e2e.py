"""A broadcast end to end: `ccctl serve --detach`, `broadcast start`, a real aiortc site
joining by WHEP with its token, status, attendance, a server restart that resumes the live
broadcast, and a real headless Chromium playing the join page."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from tests.browser import CHROMIUM, launch
from tests.conftest import Ccctl, free_port

TIMEOUT = 30.0



@pytest.fixture
def server(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ccctl]:
    """A detached server on a free loopback port, with two sites to invite."""
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", f"127.0.0.1:{free_port()}")
    # This process plays the sites: its ICE stays on loopback like the server's.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    assert ccctl("sites", "add", "bn-1", "--name", "Điểm cầu Bến Nghé", "--unit", "26740", "--tier", "low").exit_code == 0
    assert ccctl("sites", "add", "px-1", "--name", "Điểm cầu Phúc Xá", "--unit", "00001", "--tier", "audio").exit_code == 0
    started = ccctl("serve", "--detach")
    assert started.exit_code == 0, started.stderr
    yield ccctl
    ccctl("serve", "--stop")


async def whep_join(whep_url: str, token: str, kinds: tuple[str, ...] = ("audio", "video"),
                    context: ssl.SSLContext | None = None) -> tuple[RTCPeerConnection, dict[str, int], str]:
    """A site joining: recvonly offer to the WHEP URL (https checked with ``context``); counts
    decoded frames per kind and returns once each kind has five."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    frames = {"audio": 0, "video": 0}
    got = {"audio": asyncio.Event(), "video": asyncio.Event()}

    @pc.on("track")
    def on_track(track: object) -> None:
        async def pull() -> None:
            while True:
                try:
                    await track.recv()  # type: ignore[attr-defined]
                except Exception:
                    return
                frames[track.kind] += 1  # type: ignore[attr-defined]
                if frames[track.kind] >= 5:  # type: ignore[attr-defined]
                    got[track.kind].set()  # type: ignore[attr-defined]

        asyncio.ensure_future(pull())

    await pc.setLocalDescription(await pc.createOffer())

    def post() -> tuple[int, str, str]:
        request = urllib.request.Request(whep_url, data=pc.localDescription.sdp.encode(), method="POST",
                                         headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
            return response.status, response.read().decode(), response.headers["Location"]

    status, answer, location = await asyncio.to_thread(post)
    assert status == 201 and location.startswith("/whep/")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(asyncio.gather(*(got[k].wait() for k in kinds)), TIMEOUT)
    return pc, frames, location


def test_broadcast_to_a_site_end_to_end(server: Ccctl) -> None:
    assert server("broadcast", "start", "--title", "Họp khẩn").exit_code == 0
    again = server("broadcast", "start")
    assert again.exit_code == 1 and "already live" in again.stderr
    links = {r["site_id"]: r for r in server.json("broadcast", "links")}
    assert links["bn-1"]["join_url"].endswith(links["bn-1"]["token"])

    async def scenario() -> None:
        pc, frames, _ = await whep_join(links["bn-1"]["whep_url"], links["bn-1"]["token"])
        assert frames["video"] >= 5 and frames["audio"] >= 5
        status = server.json("broadcast", "status")["sessions"]
        assert [(s["site_id"], s["tier"]) for s in status] == [("bn-1", "low")]
        with pytest.raises(urllib.error.HTTPError) as refused:  # px-1's token cannot join as bn-1
            await whep_join(links["bn-1"]["whep_url"], links["px-1"]["token"])
        assert refused.value.code == 401
        revoked = await asyncio.to_thread(server, "broadcast", "revoke", "bn-1")
        assert revoked.exit_code == 0 and "ended bn-1's live session" in revoked.stderr
        assert server.json("broadcast", "status")["sessions"] == []
        with pytest.raises(urllib.error.HTTPError) as stale:  # the old token no longer joins
            await whep_join(links["bn-1"]["whep_url"], links["bn-1"]["token"])
        assert stale.value.code == 401
        await pc.close()

    asyncio.run(scenario())
    assert server("broadcast", "stop").exit_code == 0
    seen = {r["site_id"]: r for r in server.json("broadcast", "attendance")}
    assert seen["bn-1"]["tier"] == "low" and seen["bn-1"]["joins"] == 1 and not seen["bn-1"]["connected"]


def test_operator_moves_a_site_between_tiers_live(server: Ccctl) -> None:
    assert server("broadcast", "start").exit_code == 0
    links = {r["site_id"]: r for r in server.json("broadcast", "links")}

    async def scenario() -> None:
        pc, frames, _ = await whep_join(links["bn-1"]["whep_url"], links["bn-1"]["token"])
        moved = await asyncio.to_thread(server, "broadcast", "tier", "bn-1", "high")
        assert moved.exit_code == 0 and "bn-1 moved to high (was low)" in moved.stderr, moved.stderr
        assert [(s["site_id"], s["tier"]) for s in server.json("broadcast", "status")["sessions"]] == [("bn-1", "high")]
        saved = await asyncio.to_thread(server, "broadcast", "tier", "bn-1", "audio", "--save")
        assert saved.exit_code == 0 and "registry tier is now audio" in saved.stderr
        assert [s["tier"] for s in server.json("broadcast", "status")["sessions"]] == ["audio"]
        assert server.json("sites", "show", "bn-1")["tier"] == "audio"  # where its next joins start
        heard = frames["audio"]
        await asyncio.wait_for(until_more(frames, "audio", heard + 25), TIMEOUT)  # sound goes on
        absent = await asyncio.to_thread(server, "broadcast", "tier", "px-1", "low")
        assert absent.exit_code == 4 and "px-1 is not connected" in absent.stderr
        unknown = await asyncio.to_thread(server, "broadcast", "tier", "bn-1", "4k")
        assert unknown.exit_code == 2
        await pc.close()

    asyncio.run(scenario())
    events = [e for e in server.json("broadcast", "attendance") if e["site_id"] == "bn-1"]
    assert events and events[0]["joins"] == 1


async def until_more(frames: dict[str, int], kind: str, count: int) -> None:
    """Until ``frames[kind]`` reaches ``count`` (the caller bounds the wait)."""
    while frames[kind] < count:
        await asyncio.sleep(0.05)


def test_restarted_server_resumes_the_live_broadcast(server: Ccctl) -> None:
    assert server("broadcast", "start").exit_code == 0
    base = "http://" + os.environ["CCCTL_SERVE_LISTEN"]
    first = json.loads(urllib.request.urlopen(base + "/healthz", timeout=10).read())
    assert server("serve", "--stop").exit_code == 0
    assert server("serve", "--detach").exit_code == 0
    second = json.loads(urllib.request.urlopen(base + "/healthz", timeout=10).read())
    assert second["broadcast"] == first["broadcast"] is not None
    links = {r["site_id"]: r for r in server.json("broadcast", "links")}

    async def rejoin() -> None:
        pc, frames, _ = await whep_join(links["px-1"]["whep_url"], links["px-1"]["token"], ("audio",))
        assert frames["audio"] >= 5
        await pc.close()

    asyncio.run(rejoin())




@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/services.sh installs it as root)")
def test_join_page_plays_in_headless_chromium(server: Ccctl, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.async_api", reason="the test extra installs playwright")
    assert server("broadcast", "start").exit_code == 0
    link = {r["site_id"]: r for r in server.json("broadcast", "links")}["bn-1"]["join_url"]

    async def browse() -> dict[str, int]:
        async with playwright.async_playwright() as p:
            browser = await launch(p)
            try:
                page = await browser.new_page()
                await page.goto(link)
                await page.wait_for_function("window.ccctl.videoFrames > 10 && window.ccctl.audioPackets > 20",
                                             timeout=TIMEOUT * 1000)
                result: dict[str, int] = await page.evaluate("window.ccctl")
                await page.screenshot(path=str(tmp_path / "join.png"))
                # The server restarts under the page: its floor answers name a new server, so the
                # page joins again on its own (not only once ICE consent fails).
                assert (await asyncio.to_thread(server, "serve", "--stop")).exit_code == 0
                assert (await asyncio.to_thread(server, "serve", "--detach")).exit_code == 0
                await page.wait_for_function("window.ccctl.joins === 2 && window.ccctl.connected", timeout=90_000)
                assert await page.evaluate("window.ccctl.moves") >= 1
                return result
            finally:
                await browser.close()

    seen = asyncio.run(browse())
    assert seen["connected"] and seen["videoFrames"] > 10 and seen["audioPackets"] > 20


def test_fanout_workers_and_recording_end_to_end(server: Ccctl, tmp_path: Path) -> None:
    import av

    assert server("serve", "--stop").exit_code == 0
    started = server("serve", "--detach", "--workers", "2")
    assert started.exit_code == 0, started.stderr
    bad = server("broadcast", "start", "--record", str(tmp_path / "missing" / "p.ts"))
    assert bad.exit_code == 11 and "no such directory" in bad.stderr  # a MediaError in the server: exit 11 here
    recording = tmp_path / "program.ts"
    result = server("broadcast", "start", "--record", str(recording))
    assert result.exit_code == 0 and f"recording the program to {recording}" in result.stderr, result.stderr
    links = {r["site_id"]: r for r in server.json("broadcast", "links")}

    async def scenario() -> None:
        pc, frames, _ = await whep_join(links["bn-1"]["whep_url"], links["bn-1"]["token"])
        assert frames["video"] >= 5 and frames["audio"] >= 5
        live = server.json("broadcast", "status")
        (row,), bid = live["sessions"], live["broadcast"]["id"]
        assert row["site_id"] == "bn-1" and row["worker"] in (0, 1) and row["packets_sent"] > 0
        from ccctl.media.tokens import control_token, load_secret

        scrape = urllib.request.Request("http://" + os.environ["CCCTL_SERVE_LISTEN"] + "/metrics",
                                        headers={"Authorization": f"Bearer {control_token(load_secret(server.home))}"})
        metrics = (await asyncio.to_thread(lambda: urllib.request.urlopen(scrape, timeout=10).read())).decode()
        assert f'ccctl_site_info{{broadcast="{bid}",site="bn-1",tier="low",state="connected"}} 1' in metrics
        sent = next(line for line in metrics.splitlines()
                    if line.startswith(f'ccctl_site_packets_sent{{broadcast="{bid}",site="bn-1"}}'))
        assert int(sent.split()[-1]) > 0
        moved = await asyncio.to_thread(server, "broadcast", "tier", "bn-1", "audio")  # in its worker
        assert moved.exit_code == 0 and "bn-1 moved to audio (was low)" in moved.stderr, moved.stderr
        assert [s["tier"] for s in server.json("broadcast", "status")["sessions"]] == ["audio"]
        await pc.close()

    asyncio.run(scenario())
    assert server("broadcast", "stop").exit_code == 0
    with av.open(str(recording)) as f:
        assert {s.type for s in f.streams} == {"video", "audio"}
        assert sum(1 for _ in f.decode(video=0)) >= 5


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/services.sh installs it as root)")
def test_a_full_server_tells_the_join_page_to_come_back_later(server: Ccctl, monkeypatch: pytest.MonkeyPatch) -> None:
    playwright = pytest.importorskip("playwright.async_api", reason="the test extra installs playwright")
    monkeypatch.setenv("CCCTL_ADMISSION_PPS_BUDGET", "1")  # nothing fits: every join is refused
    monkeypatch.setenv("CCCTL_ADMISSION_RETRY_AFTER_S", "2")
    assert server("serve", "--stop").exit_code == 0
    assert server("serve", "--detach").exit_code == 0
    assert server("broadcast", "start").exit_code == 0
    link = {r["site_id"]: r for r in server.json("broadcast", "links")}["bn-1"]["join_url"]

    def room() -> None:  # the server comes back with room (the live broadcast resumes)
        monkeypatch.setenv("CCCTL_ADMISSION_PPS_BUDGET", "30000")
        assert server("serve", "--stop").exit_code == 0
        assert server("serve", "--detach").exit_code == 0

    async def browse() -> tuple[dict[str, Any], str, dict[str, Any]]:
        async with playwright.async_playwright() as p:
            browser = await launch(p)
            try:
                page = await browser.new_page()
                await page.goto(link)
                await page.wait_for_function("window.ccctl.retryAfter === 2 && /WHEP 503/.test(window.ccctl.lastError)",
                                             timeout=TIMEOUT * 1000)
                refused: dict[str, Any] = await page.evaluate("window.ccctl")
                said = await page.text_content("#state") or ""
                await asyncio.to_thread(room)
                await page.wait_for_function("window.ccctl.connected && window.ccctl.audioPackets > 20",
                                             timeout=TIMEOUT * 2 * 1000)
                joined: dict[str, Any] = await page.evaluate("window.ccctl")
                return refused, said, joined
            finally:
                await browser.close()

    refused, said, joined = asyncio.run(browse())
    assert not refused["connected"] and refused["joins"] == 0 and "máy chủ đang đầy" in said
    assert joined["connected"] and joined["joins"] == 1
