"""Hostile and broken input to the real server (issue 9): each is a 4xx with a one-line reason,
never a 500 or a traceback, and a bundled-m-line bomb is refused before any parser runs.

The server runs in this process (aiohttp's TestServer on 127.0.0.1) with real aiortc offers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ccctl.media import tokens, webinput
from tests.conftest import Ccctl, free_port
from tests.test_whip import AiortcPublisher, Api, Viewer, in_process_server

SDP = {"Content-Type": "application/sdp"}
TRICKLE = {"Content-Type": "application/trickle-ice-sdpfrag"}


pytestmark = pytest.mark.usefixtures("loopback_ice")  # tests/conftest.py


@pytest_asyncio.fixture
async def api(units_db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Api]:
    """The server in this process, a test-pattern broadcast live; no traceback may be logged."""
    caplog.set_level(logging.INFO)
    async with in_process_server(units_db_url, tmp_path) as server:
        await server.start("testsrc")
        yield server
    tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith(("ccctl", "aiohttp"))]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


async def viewer_offer() -> str:
    viewer = Viewer()
    try:
        await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
        return str(viewer.pc.localDescription.sdp)
    finally:
        await viewer.close()


async def publisher_offer() -> str:
    publisher = AiortcPublisher()
    try:
        return await publisher.offer()
    finally:
        await publisher.close()


async def refused(response: object, status: int, reason: str = "") -> str:
    """Assert a one-line refusal with ``status`` (and ``reason`` in it); its text."""
    text = await response.text()  # type: ignore[attr-defined]
    assert response.status == status, text  # type: ignore[attr-defined]
    assert text.endswith("\n") and text.count("\n") == 1 and "Traceback" not in text, text
    assert reason in text, text
    return text


def bundle_bomb(offer: str, times: int) -> str:
    """The offer with its video m-section repeated ``times`` times, all in the BUNDLE group."""
    head, _, rest = offer.partition("\r\nm=")
    sections = ["m=" + s for s in rest.split("\r\nm=")]
    video = next(s for s in sections if s.startswith("m=video"))
    extra = [re.sub(r"a=mid:\S+", f"a=mid:v{i}", video) for i in range(times)]
    head = re.sub(r"a=group:BUNDLE [^\r\n]*", "a=group:BUNDLE 0 1 " + " ".join(f"v{i}" for i in range(times)), head)
    return "\r\n".join([head, *sections, *extra]) + "\r\n"


@pytest.mark.asyncio
async def test_bundled_m_line_bomb_is_refused_whep_and_whip(api: Api) -> None:
    bomb = bundle_bomb(await viewer_offer(), 1000)
    assert len(bomb) > 100_000 and bomb.count("\r\nm=") == 1002
    response = await api.client.post("/whep/px-1", data=bomb, headers={**SDP, **api.auth("px-1")})
    await refused(response, 413, "over")  # the 161 KB bomb: too big before anything else
    response = await api.client.post("/whep/px-1", data=bundle_bomb(await viewer_offer(), 10),
                                     headers={**SDP, **api.auth("px-1")})
    text = await refused(response, 400, "one audio and one video m-line only (this one has 12: ")
    assert response.headers["Access-Control-Allow-Origin"] == "*" and len(text) < 400
    for extra in (1, 2):  # a second video, or a data channel, is more than we answer
        response = await api.client.post("/whep/px-1", data=bundle_bomb(await viewer_offer(), extra),
                                         headers={**SDP, **api.auth("px-1")})
        await refused(response, 400, "one audio and one video")
    channel = (await viewer_offer()) + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n"
    await refused(await api.client.post("/whep/px-1", data=channel, headers={**SDP, **api.auth("px-1")}), 400)

    assert (await api.client.post("/api/floor", json={"site": "bn-1"}, headers=api.control)).status == 200
    for times, status in ((1000, 413), (10, 400), (1, 400)):
        up = bundle_bomb(await publisher_offer(), times)
        await refused(await api.client.post("/whip/bn-1", data=up, headers={**SDP, **api.auth("bn-1")}), status)
    status = await api.status()
    assert status["sessions"] == [] and status["publishers"] == []
    assert (await api.viewer("px-1")) is not None  # a real offer still gets its answer


@pytest.mark.asyncio
async def test_sdp_is_bounded_before_parsing(api: Api) -> None:
    offer = await viewer_offer()
    site = {**SDP, **api.auth("px-1")}
    many_lines = offer + "a=x-filler\r\n" * webinput.MAX_SDP_LINES
    await refused(await api.client.post("/whep/px-1", data=many_lines, headers=site), 400, "lines")
    long_line = offer + "a=fmtp:96 " + "x" * webinput.MAX_SDP_LINE + "\r\n"
    await refused(await api.client.post("/whep/px-1", data=long_line, headers=site), 400, "characters")
    candidates = offer + "".join(f"a=candidate:{i} 1 udp 1 127.0.0.1 {1000 + i} typ host\r\n"
                                 for i in range(webinput.MAX_CANDIDATES + 1))
    await refused(await api.client.post("/whep/px-1", data=candidates, headers=site), 400, "candidates")
    for bad in ("1 1 udp 1 127.0.0.1 99999 typ host", "1 1 udp 1 127.0.0.1 9", "1 1 udp 1 127.0.0.1 9 typ host rport 70000"):
        await refused(await api.client.post("/whep/px-1", data=f"{offer}a=candidate:{bad}\r\n", headers=site), 400,
                      "not a valid candidate")
    big = offer + ("a=x-filler:" + "y" * 900 + "\r\n") * 40
    await refused(await api.client.post("/whep/px-1", data=big, headers=site), 413)
    await refused(await api.client.post("/whep/px-1", data="v=0\r\n", headers=site), 400, "no m-line")


@pytest.mark.asyncio
async def test_bodies_that_are_not_utf8_or_json_are_4xx(api: Api) -> None:
    offer = (await viewer_offer()).encode()
    site = api.auth("px-1")
    await refused(await api.client.post("/whep/px-1", data=offer + b"a=x:\xff\xfe\r\n", headers={**SDP, **site}),
                  400, "not UTF-8")
    unknown = {"Content-Type": "application/sdp; charset=klingon", **site}
    await refused(await api.client.post("/whep/px-1", data=offer, headers=unknown), 415, "UTF-8")
    latin = {"Content-Type": "application/sdp; charset=latin-1", **site}
    await refused(await api.client.post("/whep/px-1", data=offer, headers=latin), 415)
    # An offer aiortc cannot answer, on which its close() then fails too (a mid outside the BUNDLE group).
    broken = offer.decode().replace("a=mid:0", "a=mid:7", 1)
    await refused(await api.client.post("/whep/px-1", data=broken, headers={**SDP, **site}), 400, "cannot answer")

    json_routes = [("POST", "/api/floor"), ("POST", "/api/broadcast"), ("PUT", "/api/sites/px-1/tier"),
                   ("DELETE", "/api/sites/px-1/session")]
    bodies = [(b'{"site": "\xff"}', 400, "not UTF-8"), (b"[" * 20_000 + b"]" * 20_000, 400, "nested"),
              (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 400, "nested"), (b"{not json", 400, "not JSON"),
              (b"[1]", 400, "JSON object"), (b'"x"', 400, "JSON object")]
    for method, path in json_routes:
        for body, status, reason in bodies:
            response = await api.client.request(method, path, data=body, headers={
                "Content-Type": "application/json", **api.control})
            await refused(response, status, reason)
        response = await api.client.request(method, path, data=b"{}", headers={
            "Content-Type": "application/json; charset=klingon", **api.control})
        await refused(response, 415)
    for body in ({"source": 5}, {"source": "rtsp://x"}, {"title": "a\nb"}, {"title": ["x"]}, {"sites": "bn-1"},
                 {"sites": [1]}, {"record": "relative.ts"}):
        await refused(await api.client.post("/api/broadcast", json=body, headers=api.control), 400)
    assert (await api.client.post("/api/broadcast", json={"source": "testsrc"}, headers=api.control)).status == 409
    assert (await api.client.delete("/api/broadcast", headers=api.control)).status == 200
    for body in ({"source": "file:/nonexistent.mp4"}, {"record": "/nonexistent-dir/x.ts"}):
        await refused(await api.client.post("/api/broadcast", json=body, headers=api.control), 400, "/nonexistent")
        assert (await api.status())["live"] is False  # nothing left half-started
    await api.start("testsrc")
    await refused(await api.client.delete("/api/sites/px-1/session", json={"why": "a\nb"}, headers=api.control), 400)


@pytest.mark.asyncio
async def test_trickle_fragments_are_checked(api: Api) -> None:
    assert (await api.client.post("/api/floor", json={"site": "bn-1"}, headers=api.control)).status == 200
    publisher = await api.publish("bn-1", "bn-1")
    assert publisher.location is not None
    sdp = publisher.pc.localDescription.sdp
    ice = "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n".format(sdp.split("a=ice-ufrag:")[1].split()[0],
                                                      sdp.split("a=ice-pwd:")[1].split()[0])
    headers = {**TRICKLE, **api.auth("bn-1")}
    for candidate in ("1 1 udp 2130706431 127.0.0.1 9", "1 1 udp 2130706431 127.0.0.1 9 typ",
                      "1 1 udp 2130706431 127.0.0.1 9 typ bogus", "1 1 udp x 127.0.0.1 9 typ host",
                      "1 1 udp 1 127.0.0.1 99999 typ host", "1 1 sctp 1 127.0.0.1 9 typ host",
                      "1 1 udp 1 127.0.0.1 9 typ relay raddr 0.0.0.0 rport x"):
        response = await api.client.patch(publisher.location, data=f"{ice}a=candidate:{candidate}\r\n", headers=headers)
        await refused(response, 400, "bad candidate")
    await refused(await api.client.patch(publisher.location, data=b"a=\xff\r\n", headers=headers), 400, "not UTF-8")
    many = ice + "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n" * (webinput.MAX_CANDIDATES + 1)
    await refused(await api.client.patch(publisher.location, data=many, headers=headers), 400, "candidates")
    good = f"{ice}a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
    assert (await api.client.patch(publisher.location, data=good, headers=headers)).status == 204
    fifty = [ice + "".join(f"a=candidate:{n} 1 udp 1 127.0.0.1 {n} typ host\r\n" for n in range(k, k + 50))
             for k in (2000, 3000)]
    assert (await api.client.patch(publisher.location, data=fifty[0], headers=headers)).status == 204
    await refused(await api.client.patch(publisher.location, data=fifty[1], headers=headers), 400,
                  "more than 100 trickled candidates")


@pytest.mark.asyncio
async def test_an_unexpected_error_is_one_line_and_logged_once(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """A bug still answers 500, with one line; the log has one record for it, without the query."""
    app = api.client.server.app
    assert app is not None

    async def broken(request: object) -> None:
        raise KeyError("boom")

    # The router is frozen once the app runs; a route's handler can still be swapped, which
    # is how this test makes a fault the server has no input for (nothing else is mocked).
    route = next(r for r in app.router.routes() if r.method == "GET" and r.resource is not None
                 and r.resource.canonical == "/healthz")
    original = route._handler  # type: ignore[attr-defined]
    route._handler = broken  # type: ignore[attr-defined]
    try:
        response = await api.client.get("/healthz?t=secret-token-value")
    finally:
        route._handler = original  # type: ignore[attr-defined]
    text = await response.text()
    assert response.status == 500 and text == "internal error (KeyError); see the server log\n"
    records = [r for r in caplog.records if r.name == "ccctl.media.webinput"]
    assert len(records) == 1 and "GET /healthz: unexpected KeyError" in records[0].getMessage()
    assert "secret-token-value" not in records[0].getMessage()  # (the test server's own access log has it)
    records[0].exc_info = None  # seen: the fixture's no-traceback check is for everything else
    caplog.records.remove(records[0])


def raw_request(port: int, head: bytes) -> bytes:
    """Send raw bytes as a request, return what the server answered (loopback)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.asyncio
async def test_tokens_go_in_the_authorization_header_in_any_case(api: Api) -> None:
    control = tokens.control_token(api.secret)
    for header in (f"bearer {control}", f"BEARER {control}", f"Bearer  {control} "):
        assert (await api.client.get("/api/broadcast", headers={"Authorization": header})).status == 200
    for header in (f"Basic {control}", control, "Bearer", "Bearer "):
        assert (await api.client.get("/api/broadcast", headers={"Authorization": header})).status == 401
    # A query token opens the join page only: not a control route, not a site's media routes.
    for path in ("/api/broadcast", "/metrics"):
        assert (await api.client.get(f"{path}?t={control}")).status == 401
    assert (await api.client.delete(f"/api/floor?t={control}")).status == 401
    site = api.site_token("px-1")
    assert (await api.client.get(f"/api/sites/px-1/floor?t={site}")).status == 401
    assert (await api.client.post(f"/whep/px-1?t={site}", data=await viewer_offer(), headers=SDP)).status == 401
    assert (await api.client.get(f"/join/px-1?t={site}")).status == 200
    assert (await api.client.get("/api/sites/px-1/floor", headers={"Authorization": f"bearer {site}"})).status == 200


MALFORMED = b"GET /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ctl.secret-token-value\x01\x7f\r\n\r\n"


@pytest.mark.asyncio
async def test_a_malformed_authorization_line_stays_out_of_the_log(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    assert api.client.port is not None
    answer = await asyncio.to_thread(raw_request, api.client.port, MALFORMED)
    assert answer.split(b" ", 2)[1] == b"400"
    (record,) = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert record.getMessage().startswith("unreadable HTTP request from 127.0.0.1: ")
    assert record.exc_info is None and "secret-token-value" not in caplog.text


def test_serve_log_holds_no_token(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real detached server: a malformed header and a join link's token stay out of serve.log."""
    port = free_port()
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", f"127.0.0.1:{port}")
    assert ccctl("sites", "add", "bn-1", "--name", "Bến Nghé", "--unit", "26740").exit_code == 0
    started = ccctl("serve", "--detach")
    assert started.exit_code == 0, started.stderr
    try:
        link = ccctl.json("broadcast", "links")[0]["join_url"]
        token = link.split("?t=")[1]
        assert raw_request(port, MALFORMED).split(b" ", 2)[1] == b"400"
        bad = MALFORMED.replace(b"/api/broadcast", f"/join/bn-1?t={token}".encode())
        assert raw_request(port, bad).split(b" ", 2)[1] == b"400"
        with urllib.request.urlopen(link, timeout=30) as page:
            assert page.status == 200
    finally:
        assert ccctl("serve", "--stop").exit_code == 0
    log = (ccctl.home / "serve.log").read_text()
    assert log.count("unreadable HTTP request from 127.0.0.1") == 2, log
    assert "secret-token-value" not in log and token not in log and "Traceback" not in log, log
