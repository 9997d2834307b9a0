"""Property tests (Hypothesis) of the server's inputs, against the real server in this process.

Whatever the offer to WHEP or WHIP, trickle fragment or JSON body of a control route, the
server answers: 2xx, or a 4xx with one line; never a 5xx, never a logged traceback; the
broadcast stays live and an answer never has more m-lines than one audio and one video.
Inputs are real aiortc offers edited by Hypothesis (lines dropped, repeated, cut, replaced
by hostile ones, bytes broken) and arbitrary JSON. ``benchmarks/fuzz.py`` sends 100,000
cheap mutations per target to a ``ccctl serve`` process; these tests shrink a failure to
the smallest input that shows it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_server_input import publisher_offer, viewer_offer
from tests.test_whip import Api, in_process_server

# One server for all the examples of a test (that is the point: state carried across them).
FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HOSTILE = ["m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111",
           "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "m=", "a=group:BUNDLE 0 1 2", "a=mid:", "a=mid:7",
           "a=candidate:1 1 udp 2130706431 127.0.0.1 9", "a=candidate:1 1 udp x 127.0.0.1 9 typ host",
           "a=candidate:1 1 udp 1 127.0.0.1 70000 typ host", "a=end-of-candidates", "a=ice-ufrag:", "a=ice-pwd:",
           "a=fingerprint:sha-256 00", "a=setup:bogus", "a=rtpmap:96", "a=rtpmap:96 VP8/0", "a=fmtp:96 x=\x00",
           "a=ssrc:x cname:y", "a=ssrc-group:FID 1", "a=extmap:x", "a=rtcp:x", "c=IN IP6 ::1", "v=", "a=" + "x" * 1100]


pytestmark = pytest.mark.usefixtures("loopback_ice")  # tests/conftest.py


@pytest_asyncio.fixture
async def api(units_db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Api]:
    """The server in this process with a test-pattern broadcast; bn-1 holds the floor."""
    caplog.set_level(logging.INFO)
    async with in_process_server(units_db_url, tmp_path) as server:
        await server.start("testsrc")
        assert (await server.client.post("/api/floor", json={"site": "bn-1"}, headers=server.control)).status == 200
        yield server
        assert (await server.status())["live"]
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info and r.name.startswith(("ccctl", "aiohttp"))]
    assert not tracebacks, tracebacks


def edited(base: str) -> st.SearchStrategy[bytes]:
    """``base`` (an SDP) with a few line edits, sometimes broken bytes."""
    lines = base.replace("\r\n", "\n").split("\n")
    edit = st.tuples(st.sampled_from(["drop", "repeat", "cut", "insert", "replace"]),
                     st.integers(0, len(lines)), st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40)),
                     st.sampled_from([1, 2, 3, 50, 1100]))

    def apply(edits: list[tuple[str, int, str, int]], junk: bytes) -> bytes:
        out = list(lines)
        for op, at, text, times in edits:
            at = min(at, len(out) - 1) if out else 0
            if op == "drop" and out:
                del out[at]
            elif op == "repeat" and out:
                out[at:at] = [out[at]] * times
            elif op == "cut" and out:
                out[at] = out[at][:len(text)]
            elif op == "insert":
                out.insert(at, text)
            elif out:
                out[at] = text
        data = "\r\n".join(out).encode("utf-8", "surrogatepass")
        return data + junk

    return st.builds(apply, st.lists(edit, max_size=4), st.sampled_from([b"", b"", b"", b"\xff", b"\xc3(", b"\x00"]))


async def answered(response: Any) -> tuple[int, str]:
    """The status and text; a 5xx, or a 4xx not on one line, fails."""
    body = await response.read()
    assert response.status < 500, body[:300]
    text = body.decode("utf-8", "replace")
    if response.status >= 400:
        assert text.count("\n") == 1 and text.endswith("\n"), text[:300]
    return response.status, text


@pytest_asyncio.fixture
async def bases(api: Api) -> dict[str, Any]:
    """Real offers to edit, and bn-1's live uplink with a trickle fragment for it."""
    publisher = await api.publish("bn-1", "bn-1")
    sdp = publisher.pc.localDescription.sdp
    ufrag, pwd = sdp.split("a=ice-ufrag:")[1].split()[0], sdp.split("a=ice-pwd:")[1].split()[0]
    return {"whep": await viewer_offer(), "whip": await publisher_offer(), "publisher": publisher,
            "trickle": (f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
                        "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n")}


def from_base(name: str) -> st.SearchStrategy[bytes]:
    """An edited copy of one of the :func:`bases` (drawn lazily: they exist once the server does)."""
    return st.shared(st.just(name), key=name).flatmap(lambda n: edited(_BASES[n]))


_BASES: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _remember(bases: dict[str, Any]) -> None:
    _BASES.update({k: v for k, v in bases.items() if isinstance(v, str)})


@pytest.mark.asyncio
@FUZZ
@given(body=from_base("whep"))
async def test_any_whep_offer_is_answered_or_refused_in_one_line(api: Api, body: bytes) -> None:
    headers = {"Content-Type": "application/sdp", **api.auth("px-1")}
    status, text = await answered(await api.client.post("/whep/px-1", data=body, headers=headers))
    assert status in (201, 400, 413, 415), text
    if status == 201:
        assert text.count("\nm=") <= 2


@pytest.mark.asyncio
@FUZZ
@given(body=from_base("whip"))
async def test_any_whip_offer_is_answered_or_refused_in_one_line(api: Api, body: bytes) -> None:
    headers = {"Content-Type": "application/sdp", **api.auth("bn-1")}
    status, text = await answered(await api.client.post("/whip/bn-1", data=body, headers=headers))
    assert status in (201, 400, 413, 415), text
    if status == 201:
        assert text.count("\nm=") <= 2


@pytest.mark.asyncio
@FUZZ
@given(body=from_base("trickle"), if_match=st.sampled_from([None, "*", '"stale"']))
async def test_any_trickle_fragment_is_applied_or_refused_in_one_line(api: Api, bases: dict[str, Any], body: bytes,
                                                                     if_match: str | None) -> None:
    location = bases["publisher"].location
    headers = {"Content-Type": "application/trickle-ice-sdpfrag", **api.auth("bn-1")}
    if if_match is not None:
        headers["If-Match"] = if_match
    status, text = await answered(await api.client.patch(location, data=body, headers=headers))
    assert status in (204, 400, 404, 412, 413, 415, 422), text  # 404: ICE gave up on the uplink meanwhile


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
                    | st.sampled_from(["testsrc", "whip", "file:/nonexistent", "bn-1", "px-1", "low", "audio", "/tmp/x.ts"]),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["source", "title", "record", "sites", "site", "tier", "why", "x"]), inner,
                        max_size=4), max_leaves=12)
ROUTES = [("POST", "/api/broadcast"), ("POST", "/api/floor"), ("PUT", "/api/sites/{site}/tier"),
          ("DELETE", "/api/sites/{site}/session"), ("DELETE", "/api/floor")]


@pytest.mark.asyncio
@FUZZ
@given(route=st.sampled_from(ROUTES),
       body=st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64),
                      st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n)),
       site=st.sampled_from(["bn-1", "px-1", "ghost", "%C3%A9", "%00"]))
async def test_any_json_body_on_a_control_route_is_4xx_or_done(api: Api, route: tuple[str, str], body: bytes,
                                                              site: str) -> None:
    method, path = route
    response = await api.client.request(method, path.format(site=site), data=body, headers={
        "Content-Type": "application/json", **api.control})
    await answered(response)
