"""The floor: a site's uplink becomes the program and the main source comes back on release.

First against the server in this process with a real aiortc site (its long-poll, its WHIP
uplink, a real WHEP viewer decoding the program); then end to end: ``ccctl serve --detach``,
the ``broadcast floor`` commands, and the join page in a real headless Chromium whose fake
camera and microphone (a flat orange picture, a 440 Hz tone) must reach another site.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import pytest_asyncio

from ccctl.media import state, tokens
from ccctl.media.program import read_counter
from ccctl.registry import open_registry
from tests.browser import CHROMIUM, launch
from tests.conftest import Ccctl, free_port
from tests.test_whip import (
    ORANGE,
    TONE_HZ,
    AiortcPublisher,
    Api,
    Viewer,
    in_process_server,
    is_solid,
    yuv_stats,
)

TIMEOUT = 30.0


pytestmark = pytest.mark.usefixtures("loopback_ice")  # tests/conftest.py


@pytest_asyncio.fixture
async def api(units_db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The server in this process, on small tiers, with sites bn-1 and px-1."""
    async with in_process_server(units_db_url, tmp_path) as server:
        yield server


def is_pattern(frame: av.VideoFrame) -> bool:
    """Whether a decoded picture looks like the test pattern (bars: far from flat)."""
    return yuv_stats(frame)[3] > 30


async def counting(viewer: Viewer, frames: int = 4) -> list[int]:
    """Wait for the test pattern, then read its frame counter off ``frames`` pictures."""
    await viewer.until_picture(is_pattern, what="the test pattern")
    return [read_counter(await viewer.until_picture(is_pattern)) for _ in range(frames)]


def increasing(values: list[int]) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


@pytest.mark.asyncio
async def test_floor_switches_the_program_to_the_site_and_back(api: Api) -> None:
    bid = await api.start("testsrc")
    viewer = await api.viewer("px-1")
    assert increasing(await counting(viewer))

    site = api.auth("bn-1")
    first = await (await api.client.get("/api/sites/bn-1/floor", headers=site)).json()
    assert first["holder"] is False and first["publish_url"] == "/whip/bn-1"
    poll = asyncio.ensure_future(api.client.get(f"/api/sites/bn-1/floor?since={first['version']}&wait=20",
                                                headers=site))
    deadline = time.monotonic() + TIMEOUT
    while (await api.status())["floor_listeners"] < 1:  # until the long-poll is parked in the server
        assert time.monotonic() < deadline and not poll.done()
    # The floor going to another site does not answer bn-1's long-poll...
    assert (await api.client.post("/api/floor", json={"site": "px-1"}, headers=api.control)).status == 200
    await api.status()  # a full round trip through the server meanwhile
    assert not poll.done()
    # ...bn-1 getting it does, at once.
    granted = time.monotonic()
    answer = await api.client.post("/api/floor", json={"site": "bn-1"}, headers=api.control)
    assert (await answer.json()) == {"floor": "bn-1", "previous": "px-1"}
    told = await (await asyncio.wait_for(poll, TIMEOUT)).json()
    assert told["holder"] is True and told["version"] > first["version"]
    assert time.monotonic() - granted < 5

    # Its uplink (camera + microphone) becomes the program; another site may not publish.
    await api.publish("bn-1", "bn-1")
    await viewer.until_picture(lambda f: is_solid(f, ORANGE), what="bn-1's camera")
    await viewer.until_sound(TONE_HZ)  # the program's sound is the floor holder's
    other = await api.client.post("/whip/px-1", data="v=0\r\n", headers={"Content-Type": "application/sdp",
                                                                          **api.auth("px-1")})
    assert other.status == 403
    status = await api.status()
    assert status["floor"] == "bn-1" and status["on_air"] == "bn-1"
    assert [(s["site_id"], s["floor"]) for s in status["sessions"]] == [("px-1", False)]

    # Release: bn-1's uplink is ended by the server and the test pattern comes back.
    released = await api.client.delete("/api/floor", headers=api.control)
    assert (await released.json()) == {"floor": None, "released": "bn-1"}
    assert increasing(await counting(viewer))
    assert (await api.status())["publishers"] == []
    again = await api.client.post("/whip/bn-1", data="v=0\r\n", headers={"Content-Type": "application/sdp", **site})
    assert again.status == 403

    with open_registry(api.db_url) as db:
        history = state.floor_events(db, bid)
        assert state.live_broadcast(db)["floor_site"] is None  # type: ignore[index]
    assert [(e["site_id"], e["action"]) for e in history] == [
        ("px-1", "grant"), ("px-1", "release"), ("bn-1", "grant"), ("bn-1", "on_air"), ("bn-1", "release")]
    assert 0 <= history[3]["after_ms"] < 10_000


@pytest.mark.asyncio
async def test_floor_api_needs_a_broadcast_and_a_real_site(api: Api) -> None:
    assert (await api.client.post("/api/floor", json={"site": "bn-1"})).status == 401
    assert (await api.client.post("/api/floor", json={"site": "bn-1"}, headers=api.control)).status == 409
    await api.start()
    assert (await api.client.post("/api/floor", json={"site": "ghost"}, headers=api.control)).status == 404
    assert (await api.client.post("/api/floor", json={"nope": 1}, headers=api.control)).status == 400
    assert (await api.client.post("/api/floor", data="[1]", headers=api.control)).status == 400
    assert (await api.client.get("/api/sites/bn-1/floor", headers=api.auth("px-1"))).status == 401
    assert (await api.client.get("/api/sites/bn-1/floor?since=x", headers=api.auth("bn-1"))).status == 400
    nobody = await api.client.delete("/api/floor", headers=api.control)
    assert (await nobody.json()) == {"floor": None, "released": None}


@pytest.mark.asyncio
async def test_ending_a_sites_session_answers_its_long_poll_and_no_others(api: Api) -> None:
    """A disconnect answers the site's parked floor long-poll at once with ``ended`` counted up
    (its page joins again now, not after ICE consent fails); another site's poll stays parked."""
    await api.start()
    polls = {}
    for site_id in ("bn-1", "px-1"):
        first = await (await api.client.get(f"/api/sites/{site_id}/floor", headers=api.auth(site_id))).json()
        assert first["ended"] == 0
        polls[site_id] = asyncio.ensure_future(api.client.get(
            f"/api/sites/{site_id}/floor?since={first['version']}&wait=55", headers=api.auth(site_id)))
    await wait_parked(api, 2)
    cut = await api.client.delete("/api/sites/bn-1/session", json={"why": "test"}, headers=api.control)
    assert cut.status == 200
    told = await (await asyncio.wait_for(polls["bn-1"], TIMEOUT)).json()
    assert told["ended"] == 1 and told["holder"] is False and told["broadcast"] is not None
    assert not polls["px-1"].done()  # parked for up to 55 s; it answered nothing yet
    await wait_parked(api, 1)
    polls["px-1"].cancel()


async def wait_parked(api: Api, n: int) -> None:
    """Bounded poll: until ``n`` floor long-polls are parked on the server."""
    deadline = time.monotonic() + TIMEOUT
    while (await api.status())["floor_listeners"] != n:
        assert time.monotonic() < deadline, f"never {n} floor long-polls parked"
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_the_floor_survives_a_server_restart(units_db_url: str, tmp_path: Path) -> None:
    async with in_process_server(units_db_url, tmp_path) as first:
        await first.start()
        assert (await first.client.post("/api/floor", json={"site": "bn-1"}, headers=first.control)).status == 200
        first_server = (await (await first.client.get("/api/sites/bn-1/floor", headers=first.auth("bn-1"))).json())["server"]
    async with in_process_server(units_db_url, tmp_path, add_sites=False) as second:
        assert (await second.status())["floor"] == "bn-1"  # resumed from the registry
        told = await (await second.client.get("/api/sites/bn-1/floor", headers=second.auth("bn-1"))).json()
        assert told["holder"] is True  # so bn-1's page publishes again
        assert told["server"] != first_server  # and, seeing another server, joins again at once
        await second.publish("bn-1", "bn-1")
        viewer = await second.viewer("px-1")
        await viewer.until_picture(lambda f: is_solid(f, ORANGE), what="bn-1's camera after the restart")


@pytest.mark.asyncio
async def test_revoking_the_floor_holder_ends_everything_it_has_live(api: Api) -> None:
    """Revoke cuts what the site watches and what it sends, and takes the floor back."""
    bid = await api.start("testsrc")
    viewer = await api.viewer("px-1")
    await api.viewer("bn-1")  # bn-1 watches the program too
    assert (await api.client.post("/api/floor", json={"site": "bn-1"}, headers=api.control)).status == 200
    old = api.auth("bn-1")
    uplink = await api.publish("bn-1", "bn-1")
    await viewer.until_picture(lambda f: is_solid(f, ORANGE), what="bn-1's camera")
    offer = await AiortcPublisher().offer()

    with open_registry(api.db_url) as db:
        tokens.revoke(db, "bn-1")
    cut = await api.client.delete("/api/sites/bn-1/session", json={"why": "revoked"}, headers=api.control)
    assert cut.status == 200
    assert (await cut.json()) == {"site_id": "bn-1", "sessions_ended": 1, "publishers_ended": 1,
                                  "floor_released": True}
    assert increasing(await counting(viewer, 8))  # the test pattern is back, and stays
    status = await api.status()
    assert status["floor"] is None and status["on_air"] is None and status["publishers"] == []
    assert [s["site_id"] for s in status["sessions"]] == ["px-1"]
    told = await (await api.client.get("/api/sites/bn-1/floor", headers=api.auth("bn-1"))).json()
    assert told["holder"] is False  # its page, with the new token, is told so

    # The old token can do nothing more; the ended uplink is gone for the control room too.
    sdp = {"Content-Type": "application/sdp"}
    assert (await api.client.post("/whip/bn-1", data=offer, headers={**sdp, **old})).status == 401
    assert (await api.client.post("/whep/bn-1", data=offer, headers={**sdp, **old})).status == 401
    assert uplink.location is not None
    assert (await api.client.delete(uplink.location, headers=old)).status == 401
    assert (await api.client.delete(uplink.location, headers=api.control)).status == 404

    with open_registry(api.db_url) as db:
        floor = state.floor_events(db, bid)
        ends = [json.loads(r[0]) for r in db.query(
            "SELECT detail FROM broadcast_events WHERE broadcast_id = ? AND kind = 'publish' ORDER BY id", (bid,))]
    assert (floor[-1]["site_id"], floor[-1]["action"], floor[-1]["why"]) == ("bn-1", "release", "revoked")
    assert ends[-1]["action"] == "end" and ends[-1]["reason"] == "revoked"


@pytest.mark.asyncio
async def test_the_control_token_ends_any_uplink(api: Api) -> None:
    await api.start("testsrc")
    viewer = await api.viewer("px-1")
    assert (await api.client.post("/api/floor", json={"site": "bn-1"}, headers=api.control)).status == 200
    uplink = await api.publish("bn-1", "bn-1")
    await viewer.until_picture(lambda f: is_solid(f, ORANGE), what="bn-1's camera")
    assert uplink.location is not None
    other = uplink.location.replace("/whip/bn-1/", "/whip/px-1/")
    assert (await api.client.delete(other, headers=api.control)).status == 404  # not px-1's
    assert (await api.client.delete(uplink.location, headers=api.control)).status == 200
    assert increasing(await counting(viewer))
    status = await api.status()
    assert status["publishers"] == [] and status["floor"] == "bn-1"  # it keeps the floor; may publish again
    assert (await api.client.delete(uplink.location, headers=api.control)).status == 404
    session = status["sessions"][0]["session_id"]
    assert (await api.client.delete(f"/whep/px-1/{session}", headers=api.control)).status == 200


# -- end to end: the CLI, a detached server, the join page in Chromium -------------------------------

@pytest.fixture
def server(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ccctl]:
    """A detached server on a free loopback port, with two low-tier sites."""
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", f"127.0.0.1:{free_port()}")
    assert ccctl("sites", "add", "bn-1", "--name", "Điểm cầu Bến Nghé", "--unit", "26740", "--tier", "low").exit_code == 0
    assert ccctl("sites", "add", "px-1", "--name", "Điểm cầu Phúc Xá", "--unit", "00001", "--tier", "low").exit_code == 0
    started = ccctl("serve", "--detach")
    assert started.exit_code == 0, started.stderr
    yield ccctl
    ccctl("serve", "--stop")


def test_floor_commands(server: Ccctl) -> None:
    assert server("broadcast", "floor").exit_code == 2  # a SITE or --release
    assert server("broadcast", "floor", "bn-1", "--release").exit_code == 2
    no_broadcast = server("broadcast", "floor", "bn-1")
    assert no_broadcast.exit_code == 1 and "no live broadcast" in no_broadcast.stderr
    assert server("broadcast", "start").exit_code == 0
    assert server("broadcast", "floor", "ghost").exit_code == 4
    given = server("broadcast", "floor", "bn-1")
    assert given.exit_code == 0 and "bn-1 has the floor" in given.stderr
    taken = server("broadcast", "floor", "px-1")
    assert taken.exit_code == 0 and "taken from bn-1" in taken.stderr
    status = server("broadcast", "status", "--json")
    assert status.exit_code == 0 and "floor: px-1" in status.stderr and json.loads(status.stdout)["sessions"] == []
    released = server("broadcast", "floor", "--release")
    assert released.exit_code == 0 and "was px-1" in released.stderr
    assert "nobody held the floor" in server("broadcast", "floor", "--release").stderr
    program = server.json("broadcast", "links", "--program")
    assert program[0]["whip_url"].endswith("/whip/program") and program[0]["token"].startswith("ctl.")
    assert server("broadcast", "stop").exit_code == 0
    whip = server("broadcast", "start", "--source", "whip")
    assert whip.exit_code == 0 and "waiting for the program at" in whip.stderr and "/whip/program" in whip.stderr


def test_revoke_command_takes_the_floor_back(server: Ccctl) -> None:
    assert server("broadcast", "start").exit_code == 0
    assert server("broadcast", "floor", "bn-1").exit_code == 0
    revoked = server("broadcast", "revoke", "bn-1")
    assert revoked.exit_code == 0 and "took the floor back from bn-1" in revoked.stderr, revoked.stderr
    status = server("broadcast", "status", "--json")
    assert status.exit_code == 0 and "floor:" not in status.stderr
    # With no server running, the registry's floor is released, so a restarted server does not
    # give it back to the revoked site.
    assert server("broadcast", "floor", "px-1").exit_code == 0
    assert server("serve", "--stop").exit_code == 0
    offline = server("broadcast", "revoke", "px-1")
    assert offline.exit_code == 0 and "took the floor back from px-1" in offline.stderr, offline.stderr
    with open_registry(server.db_url) as db:
        live = state.live_broadcast(db)
        assert live is not None and live["floor_site"] is None
        assert state.floor_events(db, live["id"])[-1]["why"] == "revoked"


def _fake_camera(directory: Path) -> tuple[Path, Path]:
    """A Y4M clip of a flat orange picture and a WAV of a 440 Hz tone, for Chromium's fake devices."""
    width, height = 640, 360
    video = directory / "camera.y4m"
    y, u, v = ORANGE
    picture = bytes([y]) * (width * height) + bytes([u]) * (width * height // 4) + bytes([v]) * (width * height // 4)
    with video.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(25):
            fh.write(b"FRAME\n" + picture)
    audio = directory / "microphone.wav"
    t = np.arange(48_000) / 48_000
    tone = (np.sin(2 * np.pi * TONE_HZ * t) * 12_000).astype("<i2")
    with wave.open(str(audio), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(48_000)
        fh.writeframes(tone.tobytes())
    return video, audio


def _whep(url: str, token: str) -> Viewer:
    """A site joining by WHEP over plain HTTP (the detached server is another process)."""
    viewer = Viewer()

    async def post(offer: str) -> str:
        def send() -> str:
            request = urllib.request.Request(url, data=offer.encode(), method="POST", headers={
                "Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                assert response.status == 201
                return str(response.read().decode())

        return await asyncio.to_thread(send)

    viewer.post = post  # type: ignore[attr-defined]
    return viewer


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/services.sh installs it as root)")
def test_join_page_takes_the_floor_in_chromium(server: Ccctl, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.async_api", reason="the test extra installs playwright")
    assert server("broadcast", "start").exit_code == 0
    links = {r["site_id"]: r for r in server.json("broadcast", "links")}
    camera, microphone = _fake_camera(tmp_path)

    async def scenario() -> dict[str, float]:
        async with playwright.async_playwright() as p:
            browser = await launch(p, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                                   f"--use-file-for-fake-video-capture={camera}",
                                   f"--use-file-for-fake-audio-capture={microphone}")
            viewer = _whep(links["px-1"]["whep_url"], links["px-1"]["token"])
            try:
                page = await browser.new_page()
                await page.goto(links["bn-1"]["join_url"])
                await page.wait_for_function("window.ccctl.videoFrames > 5", timeout=TIMEOUT * 1000)
                await viewer.join(viewer.post)  # type: ignore[attr-defined]
                assert increasing(await counting(viewer))

                granted = time.monotonic()
                given = await asyncio.to_thread(server, "broadcast", "floor", "bn-1")
                assert given.exit_code == 0, given.stderr
                await viewer.until_picture(lambda f: is_solid(f, ORANGE, tolerance=20), timeout=TIMEOUT,
                                           what="bn-1's fake camera in the program")
                switch = time.monotonic() - granted
                seen: dict[str, float] = await page.evaluate("window.ccctl")
                assert seen["floor"] and seen["uplink"] == "live" and seen["uplinks"] == 1
                await viewer.until_sound(TONE_HZ)  # the control room hears the floor holder
                status = json.loads((await asyncio.to_thread(server, "broadcast", "status", "--json")).stdout)
                assert {s["site_id"]: s["floor"] for s in status["sessions"]} == {"bn-1": True, "px-1": False}

                released = await asyncio.to_thread(server, "broadcast", "floor", "--release")
                assert released.exit_code == 0, released.stderr
                assert increasing(await counting(viewer))  # the test pattern is back
                await page.wait_for_function("window.ccctl.uplink === 'off' && !window.ccctl.floor",
                                             timeout=TIMEOUT * 1000)
                await page.screenshot(path=str(tmp_path / "floor.png"))
                return {"switch_s": switch}
            finally:
                await viewer.close()
                await browser.close()

    seen = asyncio.run(scenario())
    assert seen["switch_s"] < TIMEOUT  # benchmarks/floor.py measures it; here it only has to happen
