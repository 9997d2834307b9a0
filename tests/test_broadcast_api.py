"""The server's control API and token checks, against the real aiohttp app and registry."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from ccctl.media import state, tokens
from ccctl.media.server import create_app
from ccctl.registry import Database, open_registry
from ccctl.registry.sites import add_site


@pytest_asyncio.fixture
async def api(units_db_url: str, tmp_path: Path) -> AsyncIterator[tuple[TestClient, bytes, str]]:
    with open_registry(units_db_url) as db:
        add_site(db, {"id": "bn-1", "name": "Điểm cầu Bến Nghé", "unit_code": "26740", "tier": "low"})
        add_site(db, {"id": "evil", "name": "</script><script>alert(1)</script>", "unit_code": "26740"})
    client = TestClient(TestServer(create_app(units_db_url, tmp_path)))
    await client.start_server()
    yield client, tokens.load_secret(tmp_path), units_db_url
    await client.close()


@pytest.mark.asyncio
async def test_tokens_are_required_and_site_bound(api: tuple[TestClient, bytes, str], tmp_path: Path) -> None:
    client, secret, url = api
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/api/broadcast")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer nope"})).status == 401
    ctl = {"Authorization": f"Bearer {tokens.control_token(secret)}"}
    status = await client.get("/api/broadcast", headers=ctl)
    assert status.status == 200 and (await status.json()) == {"live": False, "sessions": []}
    with open_registry(url) as db:
        good = tokens.site_token(secret, "bn-1", tokens.generation(db, "bn-1"))
        other = tokens.site_token(secret, "bn-2", 1)
    offer = {"Content-Type": "application/sdp"}
    assert (await client.post("/whep/bn-1", data="v=0", headers={**offer, "Authorization": f"Bearer {other}"})).status == 401
    no_broadcast = await client.post("/whep/bn-1", data="v=0", headers={**offer, "Authorization": f"Bearer {good}"})
    assert no_broadcast.status == 503 and no_broadcast.headers["Retry-After"] == "5"
    page = await client.get(f"/join/bn-1?t={good}")
    assert page.status == 200 and "Điểm cầu Bến Nghé" in await page.text()
    assert (await client.get("/join/bn-1?t=bad")).status == 401
    assert (await client.get("/join/bn-1?t=é")).status == 401
    with open_registry(url) as db:
        evil = tokens.site_token(secret, "evil", tokens.generation(db, "evil"))
    text = await (await client.get(f"/join/evil?t={evil}")).text()
    assert "</script><script>alert" not in text and "\\u003c/script\\u003e" in text
    bad_json = await client.post("/api/broadcast", data="{not json", headers=ctl)
    assert bad_json.status == 400
    with open_registry(url) as db:
        tokens.revoke(db, "bn-1")
    assert (await client.get(f"/join/bn-1?t={good}")).status == 401
    mode = stat.S_IMODE(os.stat(tmp_path / tokens.SECRET_FILE).st_mode)
    assert mode == 0o600


@pytest.mark.asyncio
async def test_cors_preflight(api: tuple[TestClient, bytes, str]) -> None:
    client, _, _ = api
    response = await client.options("/whep/bn-1")
    assert response.status == 204 and "POST" in response.headers["Access-Control-Allow-Methods"]


def test_secret_must_be_private_and_whole(tmp_path: Path) -> None:
    from ccctl.errors import CcctlError

    secret = tokens.load_secret(tmp_path)
    assert len(secret) == 32 and tokens.load_secret(tmp_path) == secret
    path = tmp_path / tokens.SECRET_FILE
    os.chmod(path, 0o644)
    with pytest.raises(CcctlError, match="readable by others"):
        tokens.load_secret(tmp_path)
    os.chmod(path, 0o600)
    path.write_text("")
    with pytest.raises(CcctlError, match="32-byte"):
        tokens.load_secret(tmp_path)


def test_attendance_from_events(units_db: Database) -> None:
    db = units_db
    bid = state.start_broadcast(db, "Họp", "testsrc", {})
    state.record_event(db, bid, "a", "join", {"tier": "high"})
    state.record_event(db, bid, "b", "join", {"tier": "audio"})
    state.record_event(db, bid, "a", "leave", {})
    state.record_event(db, bid, "a", "join", {"tier": "low"})
    live = state.live_broadcast(db)
    assert live is not None and live["id"] == bid
    state.end_broadcast(db, bid)
    rows = {r["site_id"]: r for r in state.attendance(db, bid)}
    assert rows["a"]["joins"] == 2 and rows["a"]["tier"] == "low" and not rows["a"]["connected"]
    assert rows["b"]["tier"] == "audio" and rows["b"]["last_leave"] is not None
    assert state.live_broadcast(db) is None


def test_remote_candidates_outside_the_media_network_are_dropped() -> None:
    from ccctl.media.net import keep_candidates

    offer = ("v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
             "a=candidate:2 1 udp 2130706431 192.168.1.5 5001 typ host\r\n"
             "a=candidate:3 1 udp 2130706431 0f1e2d3c.local 5002 typ host\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n")
    kept = keep_candidates(offer, "127.0.0.0/8")
    assert "127.0.0.1 5000" in kept and "192.168.1.5" not in kept and ".local" not in kept
    assert kept.endswith("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n")


def test_numbered_references(units_db: Database) -> None:
    from ccctl.errors import NotFound
    from ccctl.rollcall.history import resolve_run

    with pytest.raises(NotFound, match="there is no roll-call yet"):
        resolve_run(units_db, None)
    with pytest.raises(NotFound, match="there is no broadcast yet"):
        state.resolve_broadcast(units_db, "latest")
    first = state.start_broadcast(units_db, "A", "testsrc", {})
    state.end_broadcast(units_db, first)
    second = state.start_broadcast(units_db, "B", "testsrc", {})
    assert state.resolve_broadcast(units_db, None) == second
    assert state.resolve_broadcast(units_db, "previous") == first
    assert state.resolve_broadcast(units_db, str(first)) == first
    with pytest.raises(NotFound, match="no broadcast 'x'"):
        state.resolve_broadcast(units_db, "x")
