"""Floor switch time: from the floor API call to the first frame of the new source at a viewer.

The real path, on loopback: the server (this process: the aiohttp app of ``ccctl serve``,
default tiers, a test-pattern broadcast); a site (a child process: an aiortc peer playing
the join page's part, parked in the floor long-poll, publishing a flat orange camera and a
tone by WHIP when given the floor, deleting it when released); a viewer (another child: a
WHEP subscriber on the ``low`` tier that decodes every frame and reports when the picture
turns orange or back to the test pattern). Each round: ``POST /api/floor`` -> first orange
frame at the viewer (the figure), then ``DELETE /api/floor`` -> first test-pattern frame.
Both children stamp with CLOCK_MONOTONIC, which all processes share.

    .venv/bin/python benchmarks/floor.py [--quick] [--rounds N]

Target (the media issue): under 1 s. Figures are indicative on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ccctl.media.net import pin_ice

pin_ice("127.0.0.1")  # every peer here gathers loopback candidates only

ORANGE = (146, 53, 193)
STEP_TIMEOUT = 30.0  # seconds any one step may take before the run is called failed


def classify(frame: Any) -> str:
    """``orange`` (the site's camera), ``pattern`` (the test pattern) or ``other``."""
    w, h = frame.width, frame.height
    y, u, v = frame.to_ndarray(format="yuv444p")[:, h // 4:3 * h // 4:2, w // 4:3 * w // 4:2].astype(float)
    if y.std() < 8 and all(abs(a - b) < 20 for a, b in zip((y.mean(), u.mean(), v.mean()), ORANGE, strict=True)):
        return "orange"
    return "pattern" if y.std() > 30 else "other"


# -- the viewer (child) ------------------------------------------------------------------------------

async def viewer(base: str, site: str, token: str) -> None:
    """Subscribe by WHEP; print a JSON line each time the picture changes kind."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = pc.addTransceiver("video", direction="recvonly")
    audio = pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/whep/{site}", data=pc.localDescription.sdp, headers={
                "Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}) as response:
            assert response.status == 201, await response.text()
            answer = await response.text()
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def drain_audio() -> None:
        while True:
            await audio.receiver.track.recv()

    drain = asyncio.ensure_future(drain_audio())
    last = None
    try:
        while True:
            frame = await video.receiver.track.recv()
            kind = classify(frame)
            if kind != last:
                print(json.dumps({"kind": kind, "t": time.monotonic()}), flush=True)
                last = kind
    finally:
        drain.cancel()
        await pc.close()


# -- the site (child) ----------------------------------------------------------------------------------

async def site(base: str, site_id: str, token: str) -> None:
    """Wait for the floor in the long-poll; publish a camera and a microphone while holding it."""
    import aiohttp
    import av
    import numpy as np
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

    class Camera(VideoStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self.data = np.empty((540, 640), np.uint8)
            self.data[:360], self.data[360:450], self.data[450:] = ORANGE

        async def recv(self) -> av.VideoFrame:  # type: ignore[override]
            pts, time_base = await self.next_timestamp()
            frame = av.VideoFrame.from_ndarray(self.data, format="yuv420p")
            frame.pts, frame.time_base = pts, time_base
            return frame

    class Microphone(AudioStreamTrack):
        async def recv(self) -> av.AudioFrame:  # type: ignore[override]
            frame = await super().recv()  # paced 20 ms of silence...
            t = (np.arange(frame.samples) + (frame.pts or 0)) / 48_000
            tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)  # ...made a tone
            out = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
            out.sample_rate, out.pts, out.time_base = 48_000, frame.pts, fractions.Fraction(1, 48_000)
            return out

    auth = {"Authorization": f"Bearer {token}"}
    uplink: tuple[RTCPeerConnection, str] | None = None
    async with aiohttp.ClientSession() as http:
        version = None
        while True:  # ends when the parent kills this process
            query = "" if version is None else f"?since={version}&wait=25"
            async with http.get(f"{base}/api/sites/{site_id}/floor{query}", headers=auth) as response:
                state = await response.json()
            version = state["version"]
            if state["holder"] and uplink is None:
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                for track in (Camera(), Microphone()):
                    pc.addTransceiver(track, direction="sendonly")
                await pc.setLocalDescription(await pc.createOffer())
                async with http.post(f"{base}/whip/{site_id}", data=pc.localDescription.sdp,
                                     headers={"Content-Type": "application/sdp", **auth}) as response:
                    assert response.status == 201, await response.text()
                    location, answer = response.headers["Location"], await response.text()
                await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
                uplink = (pc, location)
            elif not state["holder"] and uplink is not None:
                pc, location = uplink
                uplink = None
                async with http.delete(f"{base}{location}", headers=auth):
                    pass
                await pc.close()


# -- the server and the measurement (parent) -----------------------------------------------------------

async def wait_for(what: str, check: Any) -> Any:
    """Poll ``check()`` (a coroutine function) until it returns something true; bounded."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)  # polling the server's status between rounds, not a measured step
    raise SystemExit(f"timed out waiting for {what}")


async def main(rounds: int) -> None:
    import aiohttp
    from aiohttp import web

    from ccctl.media import tokens
    from ccctl.media.server import create_app
    from ccctl.registry import open_registry
    from ccctl.registry.sites import add_site
    from ccctl.registry.units import load_units

    home = Path(tempfile.mkdtemp(prefix="ccctl-floor-"))
    db_url = f"sqlite:///{home / 'registry.db'}"
    with open_registry(db_url) as db:
        load_units(db, "2021")
        add_site(db, {"id": "speaker", "name": "Speaker", "unit_code": "26740", "tier": "low"})
        add_site(db, {"id": "watcher", "name": "Watcher", "unit_code": "00001", "tier": "low"})
        secret = tokens.load_secret(home)
        token = {s: tokens.site_token(secret, s, tokens.generation(db, s)) for s in ("speaker", "watcher")}
    app = create_app(db_url, home, media_network="127.0.0.0/8")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    control = {"Authorization": f"Bearer {tokens.control_token(secret)}"}
    children: list[asyncio.subprocess.Process] = []
    try:
        async with aiohttp.ClientSession(headers=control) as http:
            async with http.post(f"{base}/api/broadcast", json={"source": "testsrc", "title": "floor"}) as r:
                assert r.status == 201, await r.text()

            async def status() -> dict[str, Any]:
                async with http.get(f"{base}/api/broadcast") as r:
                    return dict(await r.json())

            watcher = await asyncio.create_subprocess_exec(sys.executable, __file__, "--viewer", base, "watcher",
                                                           token["watcher"], stdout=asyncio.subprocess.PIPE)
            speaker = await asyncio.create_subprocess_exec(sys.executable, __file__, "--site", base, "speaker",
                                                           token["speaker"])
            children += [watcher, speaker]
            assert watcher.stdout is not None
            stdout = watcher.stdout

            async def seen(kind: str) -> float:
                while True:  # bounded by the caller's wait_for timeout
                    line = await stdout.readline()
                    if not line:
                        raise SystemExit("the viewer exited")
                    event = json.loads(line)
                    if event["kind"] == kind:
                        return float(event["t"])

            await asyncio.wait_for(seen("pattern"), STEP_TIMEOUT)
            switch, back = [], []
            for _ in range(rounds):
                await wait_for("the site parked in its long-poll",
                               lambda: _ready(status))
                t0 = time.monotonic()
                async with http.post(f"{base}/api/floor", json={"site": "speaker"}) as r:
                    assert r.status == 200, await r.text()
                switch.append(await asyncio.wait_for(seen("orange"), STEP_TIMEOUT) - t0)
                t1 = time.monotonic()
                async with http.delete(f"{base}/api/floor") as r:
                    assert r.status == 200, await r.text()
                back.append(await asyncio.wait_for(seen("pattern"), STEP_TIMEOUT) - t1)
            with open_registry(db_url) as db:
                on_air = [json.loads(d)["after_ms"] for (d,) in db.query(
                    "SELECT detail FROM broadcast_events WHERE kind = 'floor' AND detail LIKE '%on_air%' ORDER BY id")]
    finally:
        for child in children:
            child.kill()
            await child.wait()
        await runner.cleanup()
        shutil.rmtree(home, ignore_errors=True)

    def ms(values: list[float]) -> str:
        return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"

    verdict = "OK" if max(switch) < 1.0 else "OVER TARGET"
    print(f"floor switch (API call -> first viewer frame of the site), {rounds} rounds: {ms(switch)} "
          f"(target < 1000 ms: {verdict})")
    print(f"release (API call -> first viewer frame of the test pattern): {ms(back)}")
    if on_air:
        print(f"server side (API call -> the site's first decoded frame on air): median "
              f"{statistics.median(on_air):.0f} ms, max {max(on_air):.0f} ms")
    print("(loopback, one machine shared with other work: figures are indicative)")


async def _ready(status: Any) -> bool:
    """The site is parked in its long-poll and no uplink is left from the last round."""
    now = await status()
    return bool(now["floor_listeners"] >= 1 and not now["publishers"])


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] in ("--viewer", "--site"):
        role = viewer if sys.argv[1] == "--viewer" else site
        asyncio.run(role(sys.argv[2], sys.argv[3], sys.argv[4]))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two rounds (the test suite's smoke run)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(2 if args.quick else max(1, min(args.rounds, 100))))
