"""``meeting start`` end to end: a detached server, the meeting's broadcast started with its
title, audience and recording, real aiortc sites joining by WHEP (one on sound only), one
site never joining; the report says who was present, on sound only, and absent."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import aioice.ice
import pytest

from ccctl.meetings.times import local_text
from tests.conftest import Ccctl, free_port
from tests.meetings.conftest import TZ
from tests.test_broadcast_e2e import whep_join


@pytest.fixture
def server(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ccctl]:
    """A detached server on a free loopback port and three sites to invite."""
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", f"127.0.0.1:{free_port()}")
    # This process plays the sites: its ICE stays on loopback like the server's.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    for site, unit, tier in (("bn-1", "26740", "high"), ("px-1", "00001", "audio"), ("bl-1", "31813", "high")):
        added = ccctl("sites", "add", site, "--name", f"Điểm cầu {site}", "--unit", unit, "--tier", tier,
                      "--contact-name", f"Chị {site}", "--contact-phone", "0987 654 321")
        assert added.exit_code == 0, added.stderr
    started = ccctl("serve", "--detach")
    assert started.exit_code == 0, started.stderr
    yield ccctl
    ccctl("serve", "--stop")


def test_meeting_start_and_attendance(server: Ccctl) -> None:
    start = (int(time.time()) // 60 + 10) * 60
    at = local_text(start, TZ)
    assert at is not None
    planned = server.json("meeting", "plan", "--at", at[:16], "--title", "Họp trực tuyến", "--site", "bn-1",
                          "--site", "px-1", "--site", "bl-1", "--checks", "-5m", "--record")
    meeting = str(planned["id"])
    other = str(server.json("meeting", "plan", "--at", at[:16], "--title", "Họp khác", "--site", "bl-1")["id"])
    early = server.json("meeting", "tick", "--start", "--now", local_text(start - 60, TZ) or "")
    assert [(str(a["meeting_id"]), a["action"], a["ready"]) for a in early] == [(meeting, "ran late", 0)]
    calls = server.json("meeting", "readiness", meeting)  # these sites have no SSH endpoint registered
    assert {(c["site_id"], c["reason"], c["contact_phone"]) for c in calls} == {
        (s, "no endpoint configured", "0987 654 321") for s in ("bn-1", "px-1", "bl-1")}
    # At the time, one tick starts the first meeting; the second finds the broadcast taken and stays planned.
    started = server("meeting", "tick", "--start", "--now", local_text(start + 5, TZ) or "", "--json")
    assert started.exit_code == 0, started.stderr
    actions = {str(a["meeting_id"]): a for a in json.loads(started.stdout)}
    assert actions[meeting]["action"] == "started" and "to 3 site(s)" in actions[meeting]["note"]
    assert actions[other]["action"] == "start failed" and "already live" in actions[other]["note"]
    assert server.json("meeting", "show", other)["status"] == "planned"
    refused = server("meeting", "start", other)
    assert refused.exit_code == 1 and "already live" in refused.stderr
    shown = server.json("meeting", "show", meeting)
    assert shown["status"] == "live" and shown["recording"].startswith(str(server.home / "recordings"))
    assert [c["status"] for c in shown["checks"]] == ["done"]
    again = server("meeting", "start", meeting)
    assert again.exit_code == 2 and "is live" in again.stderr
    links = {r["site_id"]: r for r in server.json("broadcast", "links")}

    async def scenario() -> None:
        bn, _, _ = await whep_join(links["bn-1"]["whep_url"], links["bn-1"]["token"])
        px, _, _ = await whep_join(links["px-1"]["whep_url"], links["px-1"]["token"], kinds=("audio",))
        live = {r["site_id"]: r for r in await asyncio.to_thread(server.json, "meeting", "report", meeting)}
        assert (live["bn-1"]["status"], live["bn-1"]["audio_only"], live["bn-1"]["tier"]) == ("present", False, "high")
        assert (live["px-1"]["status"], live["px-1"]["audio_only"]) == ("present", True)
        assert (live["bl-1"]["status"], live["bl-1"]["contact_name"]) == ("absent", "Chị bl-1")
        await bn.close()
        await px.close()

    asyncio.run(scenario())
    stopped = server("meeting", "stop", meeting)
    assert stopped.exit_code == 0 and f"meeting {meeting} ended" in stopped.stderr, stopped.stderr
    assert server.json("broadcast", "status")["live"] is False  # no live broadcast left
    final = {r["site_id"]: r for r in server.json("meeting", "report", meeting)}
    assert {s: r["status"] for s, r in final.items()} == {"bn-1": "present", "px-1": "present", "bl-1": "absent"}
    assert final["bn-1"]["first_join"] is not None and final["bn-1"]["joins"] == 1
    calls = server.json("meeting", "report", meeting, "--by", "calls")
    assert [c["site_id"] for c in calls] == ["bl-1"]
    with open(shown["recording"], "rb") as fh:
        assert len(fh.read(4096)) == 4096  # the program was recorded
    kinds = [e["kind"] for e in server.json("meeting", "events", meeting)]
    # (the ticks ran on the injected clock, ten minutes ahead: compare the kinds, not their order)
    assert sorted(kinds) == ["check_done", "check_late", "ended", "planned", "started"]
    assert server.json("meeting", "show", meeting)["status"] == "ended"


def test_rehearsal_says_who_received(server: Ccctl) -> None:
    """Two sites join the test broadcast (one on sound only); the rehearsal ends as soon as both
    have reported back, and says so."""
    from ccctl.media.client import ControlClient

    at = local_text(time.time() + 3600, TZ)
    assert at is not None
    meeting = str(server.json("meeting", "plan", "--at", at[:16], "--title", "Tổng duyệt", "--site", "bn-1",
                              "--site", "px-1")["id"])

    async def scenario() -> Any:
        run = asyncio.ensure_future(asyncio.to_thread(server, "meeting", "rehearse", meeting, "--seconds", "300",
                                                      "--json"))
        client = ControlClient(server.home, os.environ["CCCTL_SERVE_LISTEN"])
        for _ in range(2400):  # bounded: the rehearsal's broadcast goes live within the command's first call
            if (await asyncio.to_thread(client.call, "GET", "/api/broadcast"))["live"] or run.done():
                break
            await asyncio.sleep(0.05)
        links = {r["site_id"]: r for r in await asyncio.to_thread(server.json, "broadcast", "links")}
        bn, _, _ = await whep_join(links["bn-1"]["whep_url"], links["bn-1"]["token"])
        px, _, _ = await whep_join(links["px-1"]["whep_url"], links["px-1"]["token"], kinds=("audio",))
        result = await asyncio.wait_for(run, 300)
        await bn.close()
        await px.close()
        return result

    result = asyncio.run(scenario())
    assert result.exit_code == 0, result.stderr
    rows = {r["site_id"]: r for r in json.loads(result.stdout)}
    assert (rows["bn-1"]["verdict"], rows["bn-1"]["sent"]) == ("received", "picture and sound")
    assert (rows["px-1"]["verdict"], rows["px-1"]["sent"]) == ("received", "sound only")
    assert "2/2 site(s) received the test broadcast" in result.stderr
    assert server.json("broadcast", "status")["live"] is False  # the test broadcast was stopped
    assert server.json("meeting", "show", meeting)["status"] == "planned"
    [event] = [e for e in server.json("meeting", "events", meeting) if e["kind"] == "rehearsal"]
    assert event["detail"]["received"] == 2 and event["detail"]["missing"] == []


def test_rehearsal_verdicts() -> None:
    from ccctl.meetings.rehearsal import Observed, judge

    seen = Observed()
    seen.add([{"site_id": "a", "tier": "high", "packets_sent": 0, "rtt_ms": None, "fraction_lost": None},
              {"site_id": "b", "tier": "low", "packets_sent": 40, "rtt_ms": None, "fraction_lost": None}])
    seen.add([{"site_id": "a", "tier": "high", "packets_sent": 90, "rtt_ms": 3.5, "fraction_lost": 0.0}])
    members = [{"site_id": s, "site_name": s, "province_code": "01"} for s in ("a", "b", "c")]
    rows = {r["site_id"]: r["verdict"] for r in judge(members, {}, seen)}
    assert rows == {"a": "received", "b": "joined, nothing reported back", "c": "absent"}
