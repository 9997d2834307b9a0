"""WHIP ingest against the real server: RFC 9725 semantics, a ``--source whip`` program fed by
a real aiortc publisher, and FFmpeg's own WHIP muxer (the one bundled in PyAV's wheel).

The server runs in this process (aiohttp's TestServer on 127.0.0.1) on small tiers; viewers
are real aiortc WHEP subscribers that decode what they receive. FFmpeg's muxer runs in a
child process: its ``avformat_write_header`` does the whole WHIP handshake (HTTP, ICE, DTLS)
without releasing the GIL, so in this process it would starve the server it talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fractions
import functools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aioice.ice
import av
import numpy as np
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack, VideoStreamTrack

from ccctl.media import state, tokens
from ccctl.media.core import MediaCore
from ccctl.media.program import Program, silence
from ccctl.media.server import SERVER_KEY, create_app
from ccctl.media.tiers import MediaError, TierSpec
from ccctl.registry import open_registry
from ccctl.registry.sites import add_site

TIMEOUT = 20.0
SMALL_TIERS = {"high": TierSpec("high", 320, 180, 400_000), "low": TierSpec("low", 160, 90, 150_000),
               "audio": TierSpec("audio")}
ORANGE = (146, 53, 193)  # Y, U, V of the publishers' picture: in none of the test pattern's bars
BLACK = (16, 128, 128)
TONE_HZ = 440  # the publishers' sound (the test pattern's is 1 kHz)


pytestmark = pytest.mark.usefixtures("loopback_ice")  # tests/conftest.py


# -- helpers shared with tests/test_floor.py --------------------------------------------------------

def yuv_stats(frame: av.VideoFrame) -> tuple[float, float, float, float]:
    """Mean Y, U, V and the spread of Y of a decoded picture (its middle, away from edges)."""
    w, h = frame.width, frame.height
    y, u, v = frame.to_ndarray(format="yuv444p")[:, h // 4:3 * h // 4, w // 4:3 * w // 4].astype(float)
    return float(y.mean()), float(u.mean()), float(v.mean()), float(y.std())


def is_solid(frame: av.VideoFrame, colour: tuple[int, int, int], tolerance: float = 14.0) -> bool:
    """Whether a decoded picture is (about) one flat colour."""
    y, u, v, spread = yuv_stats(frame)
    return spread < 8 and all(abs(a - b) < tolerance for a, b in zip((y, u, v), colour, strict=True))


def dominant_hz(frames: list[av.AudioFrame]) -> float:
    """The strongest frequency of some decoded sound (0 when it is silent)."""
    samples = np.concatenate([f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0] for f in frames]).astype(float)
    if np.abs(samples).max() < 50:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / frames[0].sample_rate)[int(spectrum.argmax())])


def solid_frame(colour: tuple[int, int, int], width: int, height: int) -> av.VideoFrame:
    """A flat picture of one YUV colour."""
    data = np.empty((height * 3 // 2, width), np.uint8)
    data[:height], data[height:height + height // 4], data[height + height // 4:] = colour
    return av.VideoFrame.from_ndarray(data, format="yuv420p")


class ColourTrack(VideoStreamTrack):
    """A camera that sees one flat colour (paced at aiortc's 30 fps)."""

    def __init__(self, colour: tuple[int, int, int] = ORANGE, size: tuple[int, int] = (320, 180)) -> None:
        super().__init__()
        self.frame = solid_frame(colour, *size)

    async def recv(self) -> av.VideoFrame:  # type: ignore[override]
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.frame.to_ndarray(), format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneTrack(AudioStreamTrack):
    """A microphone hearing a steady tone, 20 ms frames paced in real time."""

    def __init__(self, hz: float = TONE_HZ) -> None:
        super().__init__()
        self.hz = hz
        self._start: float | None = None
        self._sent = 0

    async def recv(self) -> av.AudioFrame:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        else:
            await asyncio.sleep(max(0.0, self._start + self._sent / 48_000 - time.time()))
        t = (np.arange(960) + self._sent) / 48_000
        tone = (np.sin(2 * np.pi * self.hz * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48_000, self._sent, fractions.Fraction(1, 48_000)
        self._sent += 960
        return frame


class Viewer:
    """A site watching the program: a real WHEP subscriber that keeps decoding."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._video = self.pc.addTransceiver("video", direction="recvonly")
        self._audio = self.pc.addTransceiver("audio", direction="recvonly")

    @property
    def video(self) -> MediaStreamTrack:
        return self._video.receiver.track

    @property
    def audio(self) -> MediaStreamTrack:
        return self._audio.receiver.track

    async def join(self, post: Callable[[str], Any]) -> None:
        """Offer, hand the offer to ``post`` (which returns the answer), apply the answer."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await post(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def until_picture(self, test: Callable[[av.VideoFrame], bool], timeout: float = TIMEOUT,
                            what: str = "picture") -> av.VideoFrame:
        """The first decoded picture passing ``test``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = await asyncio.wait_for(self.video.recv(), left)
            except TimeoutError:
                break
            if test(frame):
                return frame
        raise AssertionError(f"no {what} within {timeout} s")

    async def sound(self, seconds: float = 0.4) -> list[av.AudioFrame]:
        """The next ``seconds`` of decoded program sound (after what is already queued)."""
        frames = []
        while sum(f.samples for f in frames) < seconds * 48_000:
            frames.append(await asyncio.wait_for(self.audio.recv(), TIMEOUT))
        return frames

    async def until_sound(self, hz: float, timeout: float = TIMEOUT) -> None:
        """Wait until the program sound's strongest frequency is ``hz`` (0: silence)."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            seen = dominant_hz(await self.sound(0.2))
            if abs(seen - hz) < 30:
                return
        raise AssertionError(f"program sound never became {hz} Hz (last {seen} Hz)")

    async def close(self) -> None:
        await self.pc.close()


class AiortcPublisher:
    """A WHIP client made of a real aiortc peer: a flat colour and a tone, sendonly."""

    def __init__(self, colour: tuple[int, int, int] = ORANGE, hz: float = TONE_HZ) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tracks: list[MediaStreamTrack] = [ColourTrack(colour), ToneTrack(hz)]
        for track in self.tracks:
            self.pc.addTransceiver(track, direction="sendonly")
        self.location: str | None = None
        self.etag: str | None = None

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def close(self) -> None:
        await self.pc.close()


def make_p256_identity(directory: Path) -> tuple[Path, Path]:
    """A P-256 key and self-signed certificate (PEM) for FFmpeg's DTLS (see the FFmpeg test)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whip-publisher")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_path, cert_path = directory / "whip-key.pem", directory / "whip-cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


# A publisher made of FFmpeg's WHIP muxer, driven through PyAV: orange + 440 Hz for N frames.
FFMPEG_PUBLISHER = r"""
import json, sys, time
import numpy as np, av, av.logging
av.logging.set_level(av.logging.ERROR)  # FFmpeg's own error lines to stderr
p = json.loads(sys.argv[1])
options = {"authorization": p["token"], "strict": "experimental", "handshake_timeout": "8000", **p["identity"]}
out = av.open(p["url"], "w", format="whip", options=options)
video = out.add_stream("libx264", rate=25)
video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
video.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "g": "25"}
audio = out.add_stream("libopus", rate=48000)
audio.layout, audio.bit_rate = "stereo", 64000
picture = np.empty((270, 320), np.uint8)
picture[:180], picture[180:225], picture[225:] = p["colour"]
t0 = time.time()
for i in range(p["frames"]):
    frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
    frame.pts = i
    out.mux(video.encode(frame))
    for j in range(2):
        n = (2 * i + j) * 960
        tone = (np.sin(2 * np.pi * p["hz"] * (np.arange(960) + n) / 48000) * 8000).astype(np.int16)
        sound = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        sound.sample_rate, sound.pts = 48000, n
        out.mux(audio.encode(sound))
    if i == 0:
        print("publishing", flush=True)
    time.sleep(max(0.0, t0 + (i + 1) / 25 - time.time()))
out.close()  # the muxer DELETEs its WHIP resource
print("done", flush=True)
"""


# -- fixtures ---------------------------------------------------------------------------------------

class Api:
    """The server in this process, with helpers for its control API, WHEP and WHIP."""

    def __init__(self, client: TestClient, secret: bytes, db_url: str) -> None:
        self.client = client
        self.secret = secret
        self.db_url = db_url
        self.control = {"Authorization": f"Bearer {tokens.control_token(secret)}"}
        self._closers: list[Callable[[], Any]] = []

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    def site_token(self, site_id: str) -> str:
        with open_registry(self.db_url) as db:
            return tokens.site_token(self.secret, site_id, tokens.generation(db, site_id))

    def auth(self, who: str) -> dict[str, str]:
        """Authorization for the control room (``control``) or a site."""
        return self.control if who == "control" else {"Authorization": f"Bearer {self.site_token(who)}"}

    async def start(self, source: str = "testsrc") -> int:
        response = await self.client.post("/api/broadcast", json={"source": source}, headers=self.control)
        assert response.status == 201, await response.text()
        return int((await response.json())["id"])

    async def status(self) -> dict[str, Any]:
        response = await self.client.get("/api/broadcast", headers=self.control)
        assert response.status == 200
        return dict(await response.json())

    async def viewer(self, site_id: str) -> Viewer:
        """A site joining the program by WHEP."""
        viewer = Viewer()
        self._closers.append(viewer.close)

        async def post(offer: str) -> str:
            response = await self.client.post(f"/whep/{site_id}", data=offer, headers={
                "Content-Type": "application/sdp", **self.auth(site_id)})
            assert response.status == 201, await response.text()
            return await response.text()

        await viewer.join(post)
        return viewer

    async def publish(self, name: str, who: str, publisher: AiortcPublisher | None = None) -> AiortcPublisher:
        """A WHIP publisher at ``/whip/{name}`` with ``who``'s token; 201 expected."""
        publisher = publisher or AiortcPublisher()
        self._closers.append(publisher.close)
        response = await self.client.post(f"/whip/{name}", data=await publisher.offer(), headers={
            "Content-Type": "application/sdp", **self.auth(who)})
        assert response.status == 201, await response.text()
        publisher.location, publisher.etag = response.headers["Location"], response.headers["ETag"]
        assert response.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
        await publisher.accept(await response.text())
        return publisher

    async def close(self) -> None:
        for close in reversed(self._closers):
            await close()
        await self.client.close()


@contextlib.asynccontextmanager
async def in_process_server(db_url: str, home: Path, add_sites: bool = True, core_factory: Any = None) -> AsyncIterator[Api]:
    """The server on small tiers (or ``core_factory``'s cores), with two sites (bn-1, px-1) and loopback-only media."""
    if add_sites:
        with open_registry(db_url) as db:
            add_site(db, {"id": "bn-1", "name": "Điểm cầu Bến Nghé", "unit_code": "26740", "tier": "high"})
            add_site(db, {"id": "px-1", "name": "Điểm cầu Phúc Xá", "unit_code": "00001", "tier": "high"})
    app = create_app(db_url, home, core_factory=core_factory or functools.partial(MediaCore, tiers=SMALL_TIERS),
                     media_network="127.0.0.0/8")
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    server = Api(client, tokens.load_secret(home), db_url)
    try:
        yield server
    finally:
        await server.close()


@pytest_asyncio.fixture
async def api(units_db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The server in this process (see :func:`in_process_server`)."""
    async with in_process_server(units_db_url, tmp_path) as server:
        yield server


# -- tests --------------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_whip_program_waits_black_then_shows_the_publisher(api: Api) -> None:
    bid = await api.start("whip")
    viewer = await api.viewer("px-1")
    await viewer.until_picture(lambda f: is_solid(f, BLACK), what="black placeholder")
    assert dominant_hz(await viewer.sound()) == 0.0  # silence

    publisher = await api.publish("program", "control")
    assert publisher.location is not None and publisher.location.startswith("/whip/program/")
    await viewer.until_picture(lambda f: is_solid(f, ORANGE), what="the publisher's picture")
    await viewer.until_sound(TONE_HZ)
    status = await api.status()
    (row,) = status["publishers"]
    assert row["role"] == "main" and row["on_air"] and row["frames_in"] > 0 and status["on_air"] == "program"

    # Trickle ICE: a stale ETag is refused, a matching one accepted, an ICE restart refused.
    frag = "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n{}"
    ice = publisher.pc.localDescription.sdp
    ufrag = ice.split("a=ice-ufrag:")[1].split()[0]
    pwd = ice.split("a=ice-pwd:")[1].split()[0]
    candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
    trickle = {"Content-Type": "application/trickle-ice-sdpfrag", **api.control}
    stale = await api.client.patch(publisher.location, data=frag.format(ufrag, pwd, candidate),
                                   headers={**trickle, "If-Match": '"not-the-etag"'})
    assert stale.status == 412
    ok = await api.client.patch(publisher.location, data=frag.format(ufrag, pwd, candidate),
                                headers={**trickle, "If-Match": publisher.etag})
    assert ok.status == 204, await ok.text()
    restart = await api.client.patch(publisher.location, data=frag.format("newufrag", "newpassword0123456789ab", ""),
                                     headers={**trickle, "If-Match": "*"})
    assert restart.status == 422
    wrong_type = await api.client.patch(publisher.location, data="x", headers={**api.control, "If-Match": publisher.etag,
                                                                              "Content-Type": "text/plain"})
    assert wrong_type.status == 415
    preflight = await api.client.options(publisher.location)
    assert preflight.status == 204 and "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
    assert (await api.client.options("/whip/program")).headers["Accept-Post"] == "application/sdp"

    # The publisher leaves: black again, and the registry saw it come and go.
    assert (await api.client.delete(publisher.location, headers=api.control)).status == 200
    await viewer.until_picture(lambda f: is_solid(f, BLACK), what="the placeholder again")
    assert (await api.client.delete(publisher.location, headers=api.control)).status == 404
    assert (await api.status())["publishers"] == []
    with open_registry(api.db_url) as db:
        kinds = [(r[0], r[1]) for r in db.query(
            "SELECT kind, detail FROM broadcast_events WHERE broadcast_id = ? AND kind = 'publish' ORDER BY id", (bid,))]
    assert [k for k, _ in kinds] == ["publish", "publish"] and '"start"' in kinds[0][1] and '"deleted"' in kinds[1][1]


@pytest.mark.asyncio
async def test_whip_refuses_the_wrong_publishers(api: Api) -> None:
    offer = await AiortcPublisher().offer()
    sdp = {"Content-Type": "application/sdp"}

    async def post(name: str, who: str, data: str = offer, headers: dict[str, str] = sdp) -> int:
        response = await api.client.post(f"/whip/{name}", data=data, headers={**headers, **api.auth(who)})
        return response.status

    assert await post("program", "control") == 503  # no broadcast yet
    await api.start("testsrc")
    assert await post("program", "control") == 409  # the program is the test pattern, not WHIP
    assert await post("bn-1", "control") == 403  # the control token publishes the program only
    assert await post("program", "bn-1") == 401  # a site token is no control token
    assert await post("bn-1", "px-1") == 401  # nor another site's
    assert await post("bn-1", "bn-1") == 403  # bn-1 does not hold the floor
    assert await post("bn-1", "bn-1", "v=0", {"Content-Type": "text/plain"}) == 415
    status = (await api.client.post("/whip/bn-1", data=offer, headers={**sdp, "Authorization": "Bearer nope"})).status
    assert status == 401


def _run_ffmpeg(api: Api, tmp_path: Path, frames: int, identity: dict[str, str]) -> subprocess.Popen[str]:
    params = {"url": api.url("/whip/program"), "token": tokens.control_token(api.secret), "frames": frames,
              "identity": identity, "colour": ORANGE, "hz": TONE_HZ}
    return subprocess.Popen([sys.executable, "-c", FFMPEG_PUBLISHER, json.dumps(params)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    try:
        out, err = await asyncio.wait_for(asyncio.to_thread(proc.communicate), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await asyncio.to_thread(proc.communicate)
    return proc.returncode, out, err


@pytest.mark.asyncio
async def test_ffmpeg_whip_muxer_publishes_the_program(api: Api, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """FFmpeg 8's WHIP muxer, as bundled in PyAV, publishing to our server.

    It needs one thing from its user: a P-256 DTLS identity (``cert_file``/``key_file``).
    Left to itself it makes a P-224 key (see the test below), which aiortc's OpenSSL refuses.
    And one thing from us: it stops answering STUN after its handshake, so consent checks
    (RFC 7675) must not end it. Here checks go every 0.2 s and two missed ones end a peer, so
    without that it would drop within 1.5 s instead of 30 s.
    """
    assert "whip" in av.formats_available
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 2)
    await api.start("whip")
    viewer = await api.viewer("px-1")
    key, cert = make_p256_identity(tmp_path)
    proc = _run_ffmpeg(api, tmp_path, frames=25 * 30, identity={"key_file": str(key), "cert_file": str(cert)})
    try:
        await viewer.until_picture(lambda f: is_solid(f, ORANGE), timeout=30, what="FFmpeg's picture")
        await viewer.until_sound(TONE_HZ)
        for _ in range(75):  # three more seconds of program: FFmpeg still on air
            await viewer.until_picture(lambda f: is_solid(f, ORANGE), what="FFmpeg's picture, still")
        (row,) = (await api.status())["publishers"]
        assert row["role"] == "main" and row["on_air"] and row["state"] == "connected"
    finally:
        proc.terminate()  # it would publish for 30 s
        await _finish(proc, TIMEOUT)


@pytest.mark.asyncio
async def test_ffmpeg_whip_muxer_deletes_its_resource(api: Api, tmp_path: Path) -> None:
    await api.start("whip")
    viewer = await api.viewer("px-1")
    key, cert = make_p256_identity(tmp_path)
    proc = _run_ffmpeg(api, tmp_path, frames=50, identity={"key_file": str(key), "cert_file": str(cert)})
    code, out, err = await _finish(proc, 60)
    assert code == 0 and "done" in out, err[-2000:]
    assert (await api.status())["publishers"] == []  # the muxer's DELETE ended its session
    await viewer.until_picture(lambda f: is_solid(f, BLACK), what="the placeholder after FFmpeg left")


@pytest.mark.asyncio
async def test_ffmpeg_default_dtls_identity_is_refused(api: Api, tmp_path: Path) -> None:
    """Why the test above passes a certificate: left to itself, the GnuTLS build of FFmpeg in
    PyAV's wheel signs its DTLS handshake with a secp224r1 key, and aiortc's OpenSSL (which
    offers x25519, P-256, x448, P-384, P-521 only) rejects its ServerKeyExchange with a fatal
    illegal_parameter alert. If this starts passing, the workaround can go."""
    await api.start("whip")
    proc = _run_ffmpeg(api, tmp_path, frames=25, identity={})
    code, out, err = await _finish(proc, 60)
    assert code != 0 and "publishing" not in out
    assert "A TLS fatal alert has been received" in err and "DTLS session failed" in err, err[-2000:]


@pytest.mark.asyncio
async def test_a_silent_publisher_is_ended(api: Api) -> None:
    """A publisher that vanishes without DELETE (consent checks are off for ingest) is ended
    by the silence watchdog, and the program falls back."""
    await api.start("whip")
    app = api.client.server.app
    assert app is not None
    server = app[SERVER_KEY]
    assert server.ingest is not None
    server.ingest.silence_timeout = 1.0
    publisher = await api.publish("program", "control")
    viewer = await api.viewer("px-1")
    await viewer.until_picture(lambda f: is_solid(f, ORANGE), what="the publisher")
    for track in publisher.tracks:
        track.stop()  # the camera and microphone go quiet; the connection stays up
    await viewer.until_picture(lambda f: is_solid(f, BLACK), what="the placeholder after silence")
    assert (await api.status())["publishers"] == []
    with open_registry(api.db_url) as db:
        (detail,) = db.query("SELECT detail FROM broadcast_events WHERE kind = 'publish' AND detail LIKE ?", ("%end%",))[0]
    assert json.loads(detail)["reason"] == "silent"


def test_floor_events_in_the_registry(units_db_url: str) -> None:
    with open_registry(units_db_url) as db:
        bid = state.start_broadcast(db, "Họp", "testsrc", {})
        assert state.set_floor(db, bid, "a") is None
        assert state.set_floor(db, bid, "a") == "a"  # no change, no event
        assert state.set_floor(db, bid, "b") == "a"
        assert state.live_broadcast(db)["floor_site"] == "b"  # type: ignore[index]
        state.end_broadcast(db, bid)
        history = [(e["site_id"], e["action"]) for e in state.floor_events(db, bid)]
        assert history == [("a", "grant"), ("a", "release"), ("b", "grant"), ("b", "release")]
        assert state.attendance(db, bid) == []  # floor events are not attendance


class FlatSource:
    """A :class:`~ccctl.media.program.Source` of one flat colour and silence."""

    blocking = False

    def __init__(self, colour: tuple[int, int, int], width: int, height: int) -> None:
        self.colour, self.width, self.height = colour, width, height

    def video(self, index: int) -> av.VideoFrame:
        return solid_frame(self.colour, self.width, self.height)

    def audio(self, index: int) -> av.AudioFrame:
        return silence()

    def close(self) -> None:
        """Nothing to release."""


@pytest.mark.asyncio
async def test_set_source_keeps_the_program_clock_and_forces_keyframes() -> None:
    program = Program("testsrc", SMALL_TIERS)
    await program.start()
    try:
        low, high, sound = program.open_track("low", "video"), program.open_track("high", "video"), \
            program.open_track("low", "audio")

        async def packets(track: MediaStreamTrack, n: int) -> list[av.Packet]:
            return [await asyncio.wait_for(track.recv(), TIMEOUT) for _ in range(n)]

        async def until_keyframe(track: MediaStreamTrack, limit: int = 75) -> list[av.Packet]:
            got: list[av.Packet] = []
            while not (got and got[-1].is_keyframe):
                assert len(got) < limit, "no keyframe after the switch"
                got += await packets(track, 1)
            return got

        before, sound_before = await packets(low, 5), await packets(sound, 5)
        await packets(high, 3)
        forced = {tier: program.stats()[tier]["keyframes_forced"] for tier in ("low", "high")}
        program.set_source(FlatSource(ORANGE, program.width, program.height))
        program.set_source(program.source)  # the same one again: no switch
        after = await until_keyframe(low)
        await until_keyframe(high)
        sound_after = await packets(sound, 10)
        stats = program.stats()
        assert stats["_program"]["source_switches"] == 1
        assert all(stats[tier]["keyframes_forced"] == forced[tier] + 1 for tier in ("low", "high"))

        # One RTP clock across the cut: timestamps only move forward, in whole frames.
        stamps = [p.pts for p in before + after]
        assert all(b > a and (b - a) % 3600 == 0 for a, b in zip(stamps, stamps[1:], strict=False)), stamps
        audio_stamps = [p.pts for p in sound_before + sound_after]
        assert all(b > a and (b - a) % 960 == 0 for a, b in zip(audio_stamps, audio_stamps[1:], strict=False))
        decoder = av.CodecContext.create("h264", "r")
        pictures = [f for p in before + after for f in decoder.decode(p)]
        assert is_solid(pictures[-1], ORANGE) and not is_solid(pictures[0], ORANGE)

        program.set_source(None)  # back to the main source
        assert program.source is not None and not isinstance(program.source, FlatSource)
    finally:
        await program.close()
    with pytest.raises(MediaError):
        program.set_source(None)  # closed
