"""Fuzz the server's inputs with cheap mutations and report how it held.

For each target: the cases sent, how many were answered 2xx, 4xx and 5xx, the tracebacks
the server logged meanwhile (and errors of tasks no request awaited, which it logs as one
line: ``background errors``), its RSS and open file descriptors after a warm-up and at the
end, and the time taken. Targets: ``0 5xx, 0 tracebacks, flat RSS and fds``.

The server is a real ``ccctl serve`` child process on 127.0.0.1 (a SQLite registry, a
test-pattern broadcast live, sites ``fz-1`` .. ``fz-3``); its stderr is its log, scanned for
tracebacks. Cases come from a mutation generator seeded per target (``--seed``): a real
aiortc offer (WHEP recvonly, WHIP sendonly) or trickle fragment or JSON body, with a few
random edits (lines deleted, duplicated, swapped, cut or replaced by hostile ones, m-sections
repeated up to 1,000 times, bytes that are not UTF-8, numbers swapped for extreme ones, charset and
content type changed), sent over one keep-alive HTTP connection.

    .venv/bin/python benchmarks/fuzz.py [--quick] [--cases N] [--seconds S] [--only NAME,...]

What a case costs differs by orders of magnitude: the scan of issue 9 refuses most mutated
offers in microseconds, but the ones that stay valid SDP get a full offer/answer (an aiortc
peer connection each, ~10-30 ms of the server's CPU). So only a share ``--deep``
(default 0.03) of mutated offers may stay valid; the others get one edit more that the scan
must refuse before any parser runs (the point of issue 9's item: refuse them cheaply). The
report says how many cases were answered 201, so the figure is what it claims: 100,000 cases
of which that many full offers/answers (half the trickle fragments are left unbroken: a
PATCH costs little).

Measured on the 2-core machine (shared with other work), default options, 100,000 cases each:
whep-offer 1,131 answered 201 and 98,869 refused with 4xx, 354 s; whip-offer 1,133 and
98,867, 172 s; trickle-patch 29,997 2xx and 70,003 4xx, 57 s; control-json 27,551 and 72,449,
41 s; 0 5xx, 0 tracebacks and 0 background errors on every target; fds flat; RSS within
4 MB except whep-offer, 95 -> 106 MB, and trickle-patch, 111 -> 117 MB (the former tracks the
full answers and levels off: +7 MB after 767 of them in another run, +7 MB after 2,779; the
latter publishes again every 100 candidates, a full offer/answer each).

The same generator, 3,000 cases per target, against the server before issue 9's fixes:
1,724 5xx and 1,789 tracebacks (543, 512, 495 and 174 5xx: bodies not UTF-8
or of an unknown charset, aiortc's close() failing after a failed answer, candidates without
``typ``, deep JSON), 575 m-line bombs answered 201, and RSS 118 -> 145 MB in 3,000 PATCHes.

``sites-import`` (benchmarks/fuzz_imports.py, in this process) writes CSV and xlsx files,
valid, mutated or garbage, and reads them through the real import path: each is accepted whole
(then exported and read back identical) or refused whole with a one-line error. 100,000 cases
on the loaded 2-core machine: 257 s, 0 tracebacks, 0 multi-line errors, 0 round-trip
mismatches; RSS 55.9 -> 58.6 MB over 60,000 cases (levelling off), fds 9 -> 9.

Server targets are a table, :data:`TARGETS` (name -> setup returning a case function), so that
other inputs can be added: a case takes a ``random.Random`` and
returns an HTTP-like status (2xx accepted, 4xx cleanly refused, 5xx failed); an exception
escaping a case counts as a traceback. In-process targets measure this process
(``harness.measure(os.getpid())``), server targets the server.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
Case = Callable[[random.Random], int]
READY_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0


# -- mutations -----------------------------------------------------------------------------------

HOSTILE_LINES = [
    "m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "m=text 9 RTP/AVP 0", "m=", "m=video", "m=video x y z", "a=group:BUNDLE 0 1 2 3 4 5 6 7 8 9", "a=group:BUNDLE",
    "a=mid:", "a=mid:0", "a=mid:" + "x" * 300, "a=candidate:1 1 udp 2130706431 127.0.0.1 9",
    "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ", "a=candidate:1 1 udp x 127.0.0.1 9 typ host",
    "a=candidate:1 1 udp 2130706431 10.0.0.1 9 typ host", "a=candidate:1 1 udp 2130706431 host.local 9 typ host",
    "a=candidate:1 1 tcp 2130706431 127.0.0.1 9 typ host tcptype passive",
    "a=candidate:1 1 udp 2130706431 127.0.0.1 99999 typ relay raddr 0.0.0.0 rport x",
    "a=candidate:", "a=end-of-candidates", "a=ice-ufrag:", "a=ice-pwd:", "a=ice-ufrag:" + "u" * 900,
    "a=fingerprint:sha-256 00", "a=fingerprint:md5 zz", "a=fingerprint:", "a=setup:bogus", "a=setup:",
    "a=rtpmap:96 H264/90000", "a=rtpmap:96", "a=rtpmap:x y", "a=rtpmap:96 VP8/0", "a=rtpmap:111 opus/48000/0",
    "a=fmtp:96 packetization-mode=9", "a=fmtp:", "a=rtcp-fb:96 nack", "a=rtcp-fb:", "a=rtcp-mux", "a=rtcp:x",
    "a=ssrc:x cname:y", "a=ssrc:4294967296 cname:y", "a=ssrc-group:FID 1", "a=ssrc-group:FID x y",
    "a=extmap:1 urn:x", "a=extmap:x", "a=msid:a b", "a=sctp-port:x", "a=max-message-size:-1", "a=sendrecv",
    "a=inactive", "a=recvonly", "a=sendonly", "c=IN IP4 0.0.0.0", "c=IN IP6 ::1", "c=", "b=AS:-1", "t=0 0", "s=-",
    "o=- 0 0 IN IP4 127.0.0.1", "v=1", "v=", "a=" + "A" * 1023, "a=" + "B" * 5000, "\x00", "\ufeff", "a=é" * 40,
]
EXTREME_NUMBERS = ["-1", "0", "65536", "4294967296", "18446744073709551616", "1e309", "NaN", "", "٣", "0x10", "9" * 40]


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").split("\n")


def _sections(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    if not starts:
        return lines, []
    bounds = starts + [len(lines)]
    return lines[:starts[0]], [lines[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def repeat_sections(text: str, times: int) -> str:
    """The offer with its last m-section repeated (new mids, all in the BUNDLE group)."""
    head, sections = _sections(_lines(text))
    if not sections:
        return text
    extra = [[re.sub(r"^a=mid:.*", f"a=mid:x{i}", line) for line in sections[-1]] for i in range(times)]
    mids = " ".join(["0", "1"][:len(sections)] + [f"x{i}" for i in range(times)])
    head = [f"a=group:BUNDLE {mids}" if line.startswith("a=group:BUNDLE") else line for line in head]
    return "\r\n".join(head + [line for s in sections + extra for line in s])


def _edit(rng: random.Random, lines: list[str]) -> list[str]:
    """One random line-level edit (the list may be empty)."""
    n = len(lines)
    pick = rng.randrange(n) if n else 0
    kind = rng.randrange(8)
    if kind == 0 and n:
        del lines[pick]
    elif kind == 1 and n:
        lines[pick:pick] = [lines[pick]] * rng.choice((1, 2, 10, 1200))
    elif kind == 2 and n > 1:
        other = rng.randrange(n)
        lines[pick], lines[other] = lines[other], lines[pick]
    elif kind == 3 and n:
        lines[pick] = lines[pick][:rng.randrange(len(lines[pick]) + 1)]
    elif kind == 4:
        lines.insert(pick, rng.choice(HOSTILE_LINES))
    elif kind == 5 and n:
        lines[pick] = rng.choice(HOSTILE_LINES)
    elif kind == 6 and n:
        numbers = list(re.finditer(r"\d+", lines[pick]))
        if numbers:
            m = rng.choice(numbers)
            lines[pick] = lines[pick][:m.start()] + rng.choice(EXTREME_NUMBERS) + lines[pick][m.end():]
    elif n:
        a, b = sorted(rng.randrange(len(lines[pick]) + 1) for _ in range(2))
        junk = "".join(chr(rng.choice((0, 9, 10, 13, 32, 0x7f, 0xe9, 0x2028, rng.randrange(33, 127)))) for _ in range(4))
        lines[pick] = lines[pick][:a] + junk + lines[pick][b:]
    return lines


def _break(rng: random.Random, lines: list[str], offer: bool) -> bytes:
    """The SDP with one more edit that the server's scan must refuse before any parser runs."""
    kinds = ["lines", "long", "candidates", "bytes", "size"] + (["sections", "kind", "no-media"] if offer else [])
    kind = rng.choice(kinds)
    at = rng.randrange(len(lines) + 1)
    if kind == "sections":
        return repeat_sections("\r\n".join(lines), rng.choice((1, 2, 10, 100, 1000))).encode("utf-8", "replace")
    if kind == "lines":
        lines[at:at] = [rng.choice(HOSTILE_LINES[:20])] * rng.randint(1000, 1500)
    elif kind == "long":
        lines.insert(at, "a=" + rng.choice("xé\x00") * rng.randint(1025, 4000))
    elif kind == "candidates":
        lines[at:at] = [f"a=candidate:{i} 1 udp 1 127.0.0.1 {i + 1} typ host" for i in range(rng.randint(65, 300))]
    elif kind == "kind":
        lines.insert(at, rng.choice(["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "m=text 9 RTP/AVP 0", "m="]))
    elif kind == "no-media":
        lines = [line for line in lines if not line.startswith("m=")]
    elif kind == "size":
        lines.insert(at, "a=x:" + "y" * 1000)
        lines = lines * 40
    data = "\r\n".join(lines).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        cut = rng.randrange(len(data) + 1)
        data = data[:cut] + rng.choice((b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80")) + data[cut:]
    return data


def mutate_sdp(rng: random.Random, base: str, deep_rate: float, offer: bool = True) -> bytes:
    """A mutated SDP's bytes: one to three random line edits (which may leave it valid: a full
    offer/answer); then, except with probability ``deep_rate``, one edit more that the scan
    of issue 9 refuses (size, lines, line length, candidates, m-lines, bytes)."""
    lines = _lines(base)
    for _ in range(rng.randint(1, 3)):
        lines = _edit(rng, lines)
    if rng.random() >= deep_rate:
        return _break(rng, lines, offer)
    return "\r\n".join(lines).encode("utf-8", "surrogatepass")


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, a few levels deep."""
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice([None, True, False, 0, -1, 2**63, 1e308, "", "bn-1", "fz-1", "testsrc", "whip", "file:/dev/null",
                           "file:/nonexistent", "/tmp/x.ts", "high", "low", "audio", "ultra", "é" * 300, "\u0000",
                           "a\nb", "../../etc/passwd", "x" * 5000, [], {}])
    if roll < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["source", "title", "record", "sites", "site", "tier", "why", "", "x" * 100]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def json_body(rng: random.Random, valid: dict[str, Any]) -> bytes:
    """A control route's body: a random or slightly wrong one, deep nesting, or broken bytes."""
    roll = rng.random()
    if roll < 0.3:
        body = dict(valid)
        key = rng.choice(list(body) + ["extra"])
        body[key] = random_json(rng)
        return json.dumps(body).encode()
    if roll < 0.55:
        return json.dumps(random_json(rng)).encode()
    if roll < 0.65:
        n = rng.choice((10, 100, 1000, 20_000, 100_000))
        opener, closer = rng.choice((("[", "]"), ('{"a":', "}")))
        return (opener * n + "1" + closer * rng.choice((n, 0))).encode()
    raw = bytearray(json.dumps(valid).encode())
    for _ in range(rng.randint(1, 4)):
        what = rng.randrange(3)
        at = rng.randrange(len(raw) + 1)
        if what == 0 and raw:
            del raw[min(at, len(raw) - 1)]
        elif what == 1:
            raw[at:at] = bytes([rng.randrange(256)])
        else:
            raw[at:at] = rng.choice([b"\xff\xfe", b"\xc3", b"NaN", b"1e99999", b'"\\ud800"', b"\x00", b"]]]]"])
    return bytes(raw)


CHARSETS = [None] * 12 + ["utf-8", "UTF-8", "latin-1", "klingon", "utf-16", "", '"utf-8"']


def content_type(rng: random.Random, kind: str) -> str:
    """``kind`` (sometimes another type), sometimes with a charset parameter."""
    if rng.random() < 0.03:
        kind = rng.choice(["text/plain", "application/json", "application/sdp", "", "x/y"])
    charset = rng.choice(CHARSETS)
    return kind if charset is None else f"{kind}; charset={charset}"


# -- the server under test --------------------------------------------------------------------------

class Server:
    """``ccctl serve`` in a child process with a registry of three sites and a live broadcast."""

    def __init__(self) -> None:
        from ccctl.media import tokens
        from ccctl.registry import open_registry
        from ccctl.registry.sites import add_site
        from ccctl.registry.units import load_units

        self.home = Path(tempfile.mkdtemp(prefix="ccctl-fuzz-"))
        self.db_url = f"sqlite:///{self.home / 'registry.db'}"
        with open_registry(self.db_url) as db:
            load_units(db, "2021")
            for i, code in enumerate(("26740", "00001", "00004"), 1):
                add_site(db, {"id": f"fz-{i}", "name": f"Fuzz {i}", "unit_code": code, "tier": "low"})
            secret = tokens.load_secret(self.home)
            self.site_tokens = {s: tokens.site_token(secret, s, tokens.generation(db, s)) for s in ("fz-1", "fz-2", "fz-3")}
        self.control = tokens.control_token(secret)
        with socket_free() as port:
            self.port = port
        self.log_path = self.home / "serve.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, "CCCTL_HOME": str(self.home), "CCCTL_DB": self.db_url}
        self.proc = subprocess.Popen([sys.executable, "-m", "ccctl", "serve", "--listen", f"127.0.0.1:{self.port}",
                                      "--workers", "0"], env=env, stdout=self._log, stderr=self._log,
                                     stdin=subprocess.DEVNULL, cwd=ROOT)
        self.conn: http.client.HTTPConnection | None = None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:  # bounded wait for the server to answer
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the server did not answer within 60 s")
        status, text = self.request("POST", "/api/broadcast", json.dumps({"source": "testsrc"}).encode(),
                                    {"Content-Type": "application/json", **self.auth("control")})
        assert status == 201, text

    def auth(self, who: str) -> dict[str, str]:
        token = self.control if who == "control" else self.site_tokens[who]
        return {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        """One request on the keep-alive connection (reopened when the server closed it);
        0 when the server dropped the connection without an answer."""
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                text = response.read().decode("utf-8", "replace")
                if response.will_close:
                    self.conn.close()
                    self.conn = None
                return response.status, text
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    return 0, ""
        return 0, ""

    def tracebacks(self) -> int:
        return self.log_path.read_bytes().count(b"Traceback (most recent call last)")

    def background_errors(self) -> int:
        """Errors of tasks no request awaited (the server logs each as one line)."""
        return self.log_path.read_bytes().count(b"background error: ")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        if self.tracebacks() or self.background_errors():  # keep what shows them
            print(f"the server logged errors: see {self.log_path}", file=sys.stderr)
        else:
            shutil.rmtree(self.home, ignore_errors=True)


class socket_free:  # noqa: N801 - used as a context manager
    """A TCP port free on 127.0.0.1 now."""

    def __enter__(self) -> int:
        import socket

        self._s = socket.socket()
        self._s.bind(("127.0.0.1", 0))
        return int(self._s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._s.close()


def base_offers() -> dict[str, str]:
    """Real aiortc offers: a WHEP viewer's (recvonly) and a WHIP publisher's (sendonly)."""
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

    from ccctl.media.net import pin_ice

    pin_ice("127.0.0.1")

    async def offer(send: bool) -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if send:
            pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
            pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        else:
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = str(pc.localDescription.sdp)
        await pc.close()
        return sdp

    async def both() -> dict[str, str]:
        return {"whep": await offer(False), "whip": await offer(True)}

    return asyncio.run(both())


# -- targets ------------------------------------------------------------------------------------------

@dataclass
class Harness:
    """What targets share: the server (started on first use), the offers, options."""

    deep: float
    pid: int = field(default_factory=os.getpid)
    _server: Server | None = None
    _offers: dict[str, str] | None = None

    def server(self) -> Server:
        if self._server is None:
            self._server = Server()
        self.pid = self._server.proc.pid
        return self._server

    def offers(self) -> dict[str, str]:
        if self._offers is None:
            self._offers = base_offers()
        return self._offers

    def measure(self, pid: int) -> None:
        """Measure RSS and fds of ``pid`` (an in-process target passes ``os.getpid()``)."""
        self.pid = pid

    def tracebacks(self) -> int:
        return self._server.tracebacks() if self._server is not None and self.pid == self._server.proc.pid else 0

    def background_errors(self) -> int:
        return self._server.background_errors() if self._server is not None and self.pid == self._server.proc.pid else 0

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def whep_offers(h: Harness) -> Case:
    server, base = h.server(), h.offers()["whep"]

    def case(rng: random.Random) -> int:
        site = rng.choice(("fz-1", "fz-3"))
        return server.request("POST", f"/whep/{site}", mutate_sdp(rng, base, h.deep), {
            "Content-Type": content_type(rng, "application/sdp"), **server.auth(site)})[0]

    return case


def whip_offers(h: Harness) -> Case:
    server, base = h.server(), h.offers()["whip"]
    status, text = server.request("POST", "/api/floor", b'{"site": "fz-2"}',
                                  {"Content-Type": "application/json", **server.auth("control")})
    assert status == 200, text

    def case(rng: random.Random) -> int:
        return server.request("POST", "/whip/fz-2", mutate_sdp(rng, base, h.deep), {
            "Content-Type": content_type(rng, "application/sdp"), **server.auth("fz-2")})[0]

    return case


def trickle_patches(h: Harness) -> Case:
    """PATCHes to a live WHIP resource of the floor holder (published again when it ends)."""
    server, base = h.server(), h.offers()["whip"]
    ufrag = base.split("a=ice-ufrag:")[1].split()[0]
    pwd = base.split("a=ice-pwd:")[1].split()[0]
    fragment = (f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
                "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n")
    where: dict[str, str] = {}

    def publish() -> None:
        status, text = server.request("POST", "/api/floor", b'{"site": "fz-2"}',
                                      {"Content-Type": "application/json", **server.auth("control")})
        assert status == 200, text
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request("POST", "/whip/fz-2", body=base.encode(), headers={"Content-Type": "application/sdp",
                                                                            **server.auth("fz-2")})
            response = conn.getresponse()
            response.read()
            assert response.status == 201, response.status
            where["location"] = str(response.getheader("Location"))
        finally:
            conn.close()

    publish()

    def case(rng: random.Random) -> int:
        body = mutate_sdp(rng, fragment, 0.5, offer=False)
        headers = {"Content-Type": content_type(rng, "application/trickle-ice-sdpfrag"), **server.auth("fz-2")}
        if rng.random() < 0.1:
            headers["If-Match"] = rng.choice(['"x"', "*", "", "\u00e9".encode().decode("latin-1")])
        status, text = server.request("PATCH", where["location"], body, headers)
        if status == 404 or "trickled candidates" in text:  # the resource ended (ICE failed: nobody
            publish()  # publishes behind it), or had all the candidates it may: a new one
            status = server.request("PATCH", where["location"], body, headers)[0]
        return status

    return case


def control_routes(h: Harness) -> Case:
    """Every JSON control route, with random bodies and site ids (the broadcast stays live)."""
    server = h.server()
    sites = ["fz-1", "fz-2", "fz-3", "ghost", "%00", "%ff", "%2e%2e", "x" * 300, "%C3%A9"]
    routes: list[tuple[str, Callable[[str], str], dict[str, Any]]] = [
        ("POST", lambda s: "/api/broadcast", {"source": "testsrc", "title": "x"}),
        ("POST", lambda s: "/api/floor", {"site": "fz-3"}),
        ("PUT", lambda s: f"/api/sites/{s}/tier", {"tier": "low"}),
        ("DELETE", lambda s: f"/api/sites/{s}/session", {"why": "fuzz"}),
        ("DELETE", lambda s: "/api/floor", {}),
    ]

    def case(rng: random.Random) -> int:
        method, path, valid = rng.choice(routes)
        return server.request(method, path(rng.choice(sites)), json_body(rng, valid), {
            "Content-Type": content_type(rng, "application/json"), **server.auth("control")})[0]

    return case


#: name -> setup(harness) returning the case function. Add targets here.
TARGETS: dict[str, Callable[[Harness], Case]] = {
    "whep-offer": whep_offers,
    "whip-offer": whip_offers,
    "trickle-patch": trickle_patches,
    "control-json": control_routes,
}


# -- running ------------------------------------------------------------------------------------------

def rss_and_fds(pid: int) -> tuple[float, int]:
    """Resident memory (MB) and open file descriptors of a process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Tally:
    cases: int = 0
    by_class: dict[str, int] = field(default_factory=lambda: {"2xx": 0, "4xx": 0, "5xx": 0, "other": 0})
    raised: int = 0
    created: int = 0  # 201: a full offer/answer


def run(name: str, h: Harness, cases: int, seconds: float, seed: int) -> str:
    rng = random.Random(f"{seed}:{name}")
    case = TARGETS[name](h)
    tally = Tally()
    warmup = min(500, max(cases // 10, 1))
    tracebacks0, background0 = h.tracebacks(), h.background_errors()
    before: tuple[float, int] | None = None
    start = time.monotonic()
    deadline = start + seconds
    while tally.cases < cases and time.monotonic() < deadline:  # bounded in count and time
        if tally.cases == warmup:
            before = rss_and_fds(h.pid)
        try:
            status = case(rng)
        except Exception:  # an in-process target's crash
            tally.raised += 1
            status = 500
        tally.cases += 1
        tally.created += status == 201
        key = f"{status // 100}xx" if 2 <= status // 100 <= 5 and status // 100 != 3 else "other"
        tally.by_class[key] += 1
    elapsed = time.monotonic() - start
    after = rss_and_fds(h.pid)
    before = before or after
    stopped = "" if tally.cases >= cases else f" (stopped at the {seconds:.0f} s limit)"
    c = tally.by_class
    return (f"{name:<14} cases {tally.cases:>7}  2xx {c['2xx']:>6} (201: {tally.created})  4xx {c['4xx']:>7}  "
            f"5xx {c['5xx']:>3}  other {c['other']:>3}  tracebacks {h.tracebacks() - tracebacks0 + tally.raised:>3}  "
            f"background errors {h.background_errors() - background0:>3}  "
            f"RSS {before[0]:.0f} -> {after[0]:.0f} MB  fds {before[1]} -> {after[1]}  "
            f"{elapsed:.1f} s ({tally.cases / max(elapsed, 1e-9):.0f}/s){stopped}")


#: Targets in this process with their own loop and tally (benchmarks/fuzz_imports.py): a
#: file written and read by the real ``sites import`` path, accepted whole or refused whole.
IMPORT_TARGET = "sites-import"


def run_imports(cases: int, seconds: float, seed: int) -> str:
    """One report line for the import target, in the server targets' terms."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.fuzz_imports import run as fuzz_imports

    r = fuzz_imports(cases, seed, max_seconds=seconds)
    stopped = "" if r["cases"] >= cases else f" (stopped at the {seconds:.0f} s limit)"
    return (f"{IMPORT_TARGET:<14} cases {r['cases']:>7}  accepted {r['accepted']:>6}  refused {r['rejected']:>7}  "
            f"tracebacks {r['crashes']:>3}  multi-line errors {r['multiline']:>3}  "
            f"round-trip mismatches {r['roundtrip_mismatch']:>3}  "
            f"RSS {r['rss_kb_before'] / 1024:.0f} -> {r['rss_kb_after'] / 1024:.0f} MB  "
            f"fds {r['fds_before']} -> {r['fds_after']}  {r['seconds']:.1f} s{stopped}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="300 cases per target (the suite runs this)")
    parser.add_argument("--cases", type=int, default=100_000, help="cases per target (default 100,000)")
    parser.add_argument("--seconds", type=float, default=600.0, help="time limit per target (default 600)")
    parser.add_argument("--deep", type=float, default=0.03,
                        help="share of offers not broken on purpose (may stay valid: a full offer/answer)")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--only", help="comma-separated targets (default: all): " + ", ".join([*TARGETS, IMPORT_TARGET]))
    args = parser.parse_args()
    cases = 300 if args.quick else args.cases
    names = args.only.split(",") if args.only else [*TARGETS, IMPORT_TARGET]
    unknown = [n for n in names if n not in TARGETS and n != IMPORT_TARGET]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}: use {', '.join([*TARGETS, IMPORT_TARGET])}")
    served = [n for n in names if n in TARGETS]
    if served:
        harness = Harness(deep=args.deep)
        try:
            for name in served:
                print(run(name, harness, cases, args.seconds, args.seed), flush=True)
        finally:
            harness.close()
    if IMPORT_TARGET in names:
        print(run_imports(cases, args.seconds, args.seed), flush=True)


if __name__ == "__main__":
    main()
