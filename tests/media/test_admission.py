"""Admission: a core given a small budget admits that many, answers the next with 503 and
Retry-After, moves the lowest-priority video sites to audio before refusing, and the admitted
keep the full rate.

The real server app (``create_app``) in this process on a loopback port, with real aiortc
sites (conftest's ``Site``) POSTing WHEP offers with their tokens. Costs on the small tiers
(:func:`ccctl.media.admission.tier_cost` at 25 fps): audio 50, low 93, high 121 packets/s.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from ccctl.media import tokens
from ccctl.media.admission import AdmissionPolicy, tier_cost
from ccctl.media.core import MediaCore
from ccctl.media.server import SERVER_KEY, Server, create_app
from ccctl.media.shard import ShardedCore
from ccctl.registry import open_registry
from ccctl.registry.sites import add_site

from .conftest import SMALL_TIERS, Site, until

AUDIO, LOW, HIGH = (tier_cost(SMALL_TIERS[t], 25) for t in ("audio", "low", "high"))
assert (AUDIO, LOW, HIGH) == (50, 93, 121)


class Bench:
    """The server and its sites; ``join`` POSTs a real peer's offer."""

    def __init__(self, client: TestClient, server: Server, home: Path, db_url: str) -> None:
        self.client, self.db_url = client, db_url
        self.secret = tokens.load_secret(home)
        self.server = server
        self.sites: list[Site] = []

    def auth(self, site_id: str | None = None) -> dict[str, str]:
        if site_id is None:
            return {"Authorization": f"Bearer {tokens.control_token(self.secret)}"}
        with open_registry(self.db_url) as db:
            return {"Authorization": f"Bearer {tokens.site_token(self.secret, site_id, tokens.generation(db, site_id))}"}

    async def join(self, site_id: str, kinds: tuple[str, ...] = ("audio", "video"),
                   strip: bool = False) -> tuple[Site, Any]:
        site = Site(kinds)
        self.sites.append(site)
        offer = await site.offer()
        if strip:  # an offer with no candidates: it can never connect
            offer = "\r\n".join(x for x in offer.splitlines() if not x.startswith("a=candidate:")) + "\r\n"
        response = await self.client.post(f"/whep/{site_id}", data=offer,
                                          headers={"Content-Type": "application/sdp", **self.auth(site_id)})
        if response.status == 201:
            await site.accept(await response.text())
        return site, response

    def connected(self) -> dict[str, str]:
        core = self.server.core
        return {s.site_id: s.tier for s in core.sessions() if getattr(s, "connected_at", True)}

    def events(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        import json

        with open_registry(self.db_url) as db:
            return [(site, json.loads(detail)) for site, detail in db.query(
                "SELECT site_id, detail FROM broadcast_events WHERE kind = ? ORDER BY id", (kind,))]


@pytest_asyncio.fixture
async def bench(request: pytest.FixtureRequest, units_db_url: str, tmp_path: Path) -> AsyncIterator[Bench]:
    """A live testsrc broadcast under the (policy, core factory, sites) the test gives."""
    policy, factory, tiers = request.param
    with open_registry(units_db_url) as db:
        for site_id, tier in tiers.items():
            add_site(db, {"id": site_id, "name": f"Điểm cầu {site_id}", "unit_code": "26740", "tier": tier})
    app = create_app(units_db_url, tmp_path, core_factory=factory or functools.partial(MediaCore, tiers=SMALL_TIERS),
                     media_network="127.0.0.0/8", admission=policy)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    b = Bench(client, app[SERVER_KEY], tmp_path, units_db_url)
    response = await client.post("/api/broadcast", json={"source": "testsrc"}, headers=b.auth())
    assert response.status == 201, await response.text()
    try:
        yield b
    finally:
        for site in b.sites:
            await site.close()
        await client.close()


async def received(site: Site, kind: str = "audio") -> int:
    """RTP packets the site's receiver counted (aiortc's inbound-rtp stats)."""
    stats = await site.pc.getStats()
    return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp" and s.kind == kind)


@pytest.mark.asyncio
@pytest.mark.parametrize("bench", [(AdmissionPolicy(pps_budget=2 * AUDIO), None,
                                    {"a1": "audio", "a2": "audio", "a3": "audio"})], indirect=True)
async def test_a_small_budget_admits_that_many_and_503s_the_next_at_full_rate(bench: Bench) -> None:
    admitted = [(await bench.join(name, ("audio",)))[0] for name in ("a1", "a2")]
    await until(lambda: asyncio.sleep(0, result=len(bench.connected()) == 2))
    _, refused = await bench.join("a3", ("audio",))
    assert refused.status == 503 and refused.headers["Retry-After"] == "5"
    assert "full" in await refused.text()
    _, again = await bench.join("a3", ("audio",))  # retrying at once: refused again, counted, not recorded again
    assert again.status == 503
    assert [(site, d["action"], d["reason"]) for site, d in bench.events("admission")] == [("a3", "refused", "budget")]
    # The admitted keep the full rate: each receives (nearly) every packet the program makes.
    feed = bench.server.core.program.audio_feed
    start = [await received(site) for site in admitted] + [feed.rtp_packets]
    await until(lambda: asyncio.sleep(0, result=feed.rtp_packets - start[-1] >= 250), timeout=30)
    end = [await received(site) for site in admitted] + [feed.rtp_packets]
    made = end[-1] - start[-1]
    for before, after in zip(start[:-1], end[:-1], strict=True):
        assert (after - before) / made >= 0.9, (after - before, made)
    metrics = await (await bench.client.get("/metrics", headers=bench.auth())).text()
    bid = bench.server.broadcast["id"]  # type: ignore[index]
    assert f'ccctl_admission_decisions_total{{broadcast="{bid}",decision="refused_budget"}} 2' in metrics
    assert f'ccctl_admission_capacity_pps{{broadcast="{bid}"}} {2 * AUDIO:g}' in metrics
    status = await (await bench.client.get("/api/broadcast", headers=bench.auth())).json()
    assert status["admission"]["capacity_pps"] == 2 * AUDIO and status["admission"]["refused_budget"] == 2
    # A site that leaves frees its place.
    await admitted[0].close()
    await until(lambda: asyncio.sleep(0, result=len(bench.connected()) == 1))
    _, again = await bench.join("a3", ("audio",))
    assert again.status == 201


# 225: low + high fit (214), low moved + high + one audio (221), four on audio (200), not five (250).
@pytest.mark.asyncio
@pytest.mark.parametrize("bench", [(AdmissionPolicy(pps_budget=4.5 * AUDIO), None, {
    "v-low": "low", "v-high": "high", "a-1": "audio", "a-2": "audio", "a-3": "audio"})], indirect=True)
async def test_video_sites_of_the_lowest_priority_move_to_audio_before_anyone_is_refused(bench: Bench) -> None:
    await bench.join("v-low")
    await until(lambda: asyncio.sleep(0, result=bench.connected() == {"v-low": "low"}))
    _, r = await bench.join("v-high")  # low + high fit
    assert r.status == 201
    await until(lambda: asyncio.sleep(0, result=len(bench.connected()) == 2))
    _, r = await bench.join("a-1", ("audio",))  # does not fit: the low-tier site moves to audio
    assert r.status == 201
    await until(lambda: asyncio.sleep(0, result=len(bench.connected()) == 3))
    assert bench.connected() == {"v-low": "audio", "v-high": "high", "a-1": "audio"}
    _, r = await bench.join("a-2", ("audio",))  # fits again: then the high-tier one moves
    assert r.status == 201
    await until(lambda: asyncio.sleep(0, result=len(bench.connected()) == 4))
    assert bench.connected()["v-high"] == "audio"
    _, r = await bench.join("a-3", ("audio",))  # nothing left to move
    assert r.status == 503 and r.headers["Retry-After"]
    decisions = [(site, d["action"]) for site, d in bench.events("admission")]
    assert decisions == [("v-low", "audio"), ("v-high", "audio"), ("a-3", "refused")]
    tiers = [(site, d["to"], d["reason"]) for site, d in bench.events("tier")]
    assert ("v-low", "audio", "admission") in tiers and ("v-high", "audio", "admission") in tiers
    assert set(bench.connected()) == {"v-low", "v-high", "a-1", "a-2"}  # nobody already in was dropped


@pytest.mark.asyncio
@pytest.mark.parametrize("bench", [(AdmissionPolicy(handshakes=1, queue=0, connect_timeout_s=3.0), None,
                                    {"mute": "audio", "next": "audio"})], indirect=True)
async def test_handshakes_in_flight_are_bounded_and_a_stuck_one_ends(bench: Bench) -> None:
    _, stuck = await bench.join("mute", ("audio",), strip=True)  # answered, never connects
    assert stuck.status == 201
    _, waiting = await bench.join("next", ("audio",))
    assert waiting.status == 503 and waiting.headers["Retry-After"] == "5"
    assert [(s, d["reason"]) for s, d in bench.events("admission")] == [("next", "handshakes")]
    await until(lambda: asyncio.sleep(0, result=not bench.server.core.sessions()), timeout=20)  # connect bound
    assert [d["reason"] for _, d in bench.events("leave")] == ["never_connected"]
    _, later = await bench.join("next", ("audio",))
    assert later.status == 201
    await until(lambda: asyncio.sleep(0, result=bench.connected() == {"next": "audio"}))
    with open_registry(bench.db_url) as db:
        from ccctl.media import state

        rows = {r["site_id"]: r for r in state.attendance(db, bench.server.broadcast["id"])}  # type: ignore[index]
    mute = rows["mute"]  # no media ever flowed to it: no join, no time
    assert (mute["joins"], mute["seconds"], mute["connected"]) == (0, 0.0, False) and rows["next"]["connected"]


@pytest.mark.asyncio
@pytest.mark.parametrize("bench", [(AdmissionPolicy(),
                                     functools.partial(ShardedCore, tiers=SMALL_TIERS, workers=1, call_timeout=2.0),
                                     {"w-1": "audio", "w-2": "audio"})], indirect=True)
async def test_a_worker_that_does_not_answer_is_counted_out_and_the_join_gets_503(bench: Bench) -> None:
    site, r = await bench.join("w-1", ("audio",))
    assert r.status == 201
    await until(lambda: asyncio.sleep(0, result=[x for _, x in bench.events("join")]), timeout=30)
    core = bench.server.core
    proc = core._workers[0].proc
    os.kill(proc.pid, signal.SIGSTOP)  # a real hung worker: it stops answering anything
    try:
        _, r = await bench.join("w-2", ("audio",))
        assert r.status == 503 and r.headers["Retry-After"]
        assert "did not answer" in await r.text()
    finally:
        os.kill(proc.pid, signal.SIGCONT)  # (killed by then; harmless otherwise)
    await until(lambda: asyncio.sleep(0, result=any(d["reason"] == "worker exited" for _, d in bench.events("leave"))),
                timeout=30)
    assert not core.sessions()  # its site is counted out, and rejoins on the restarted worker
    await until(lambda: asyncio.sleep(0, result=core._workers[0].proc not in (None, proc)), timeout=60)
    await until(lambda: asyncio.sleep(0, result=core._workers[0].ready is not None and core._workers[0].ready.done()),
                timeout=60)
    await site.close()
    _, r = await bench.join("w-1", ("audio",))
    assert r.status == 201


def test_a_receivers_retry_honours_retry_after_with_jitter() -> None:
    import random

    from ccctl.sim.receiver import parse_retry_after, retry_delay

    rng = random.Random(1)
    delays = [retry_delay(1, 20.0, rng) for _ in range(200)]
    assert all(20.0 <= d <= 30.0 for d in delays) and max(delays) - min(delays) > 5  # never sooner, spread
    assert all(retry_delay(1, None, rng) <= 0.75 for _ in range(50))  # no Retry-After: the backoff
    assert parse_retry_after("7") == 7.0 and parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("-1") is None


@pytest.mark.asyncio
@pytest.mark.parametrize("bench", [(AdmissionPolicy(pps_budget=AUDIO, retry_after_s=1), None,
                                    {"r-1": "audio", "r-2": "audio"})], indirect=True)
async def test_a_refused_sim_site_comes_back_and_gets_in_when_there_is_room(bench: Bench) -> None:
    import aiohttp

    from ccctl.sim.receiver import CONNECTED, ReceiverSpec, SimReceiver

    base = str(bench.client.make_url("/")).rstrip("/")
    stops = [asyncio.Event(), asyncio.Event()]
    async with aiohttp.ClientSession() as http:
        receivers = [SimReceiver(ReceiverSpec(name, bench.auth(name)["Authorization"].split()[1], "audio",
                                              kinds=("audio",)), base, http) for name in ("r-1", "r-2")]
        first = asyncio.ensure_future(receivers[0].run(stops[0]))
        await until(lambda: asyncio.sleep(0, result=receivers[0].stats.state == CONNECTED))
        second = asyncio.ensure_future(receivers[1].run(stops[1]))
        try:
            await until(lambda: asyncio.sleep(0, result=receivers[1].stats.failures.get("http_503", 0) >= 2))
            assert receivers[1].stats.state != CONNECTED and receivers[0].stats.state == CONNECTED
            stops[0].set()  # the first leaves (DELETE): the second gets its place on a retry
            await first
            await until(lambda: asyncio.sleep(0, result=receivers[1].stats.state == CONNECTED), timeout=30)
            assert receivers[1].stats.failures.keys() == {"http_503"}  # refused, never a 400 or a timeout
        finally:
            for stop in stops:
                stop.set()
            await asyncio.gather(first, second)


@pytest.mark.asyncio
async def test_no_new_site_while_the_program_clock_lags() -> None:
    from ccctl.media.admission import Admission, Overloaded

    events: list[tuple[str, str, dict[str, Any]]] = []
    account = Admission(AdmissionPolicy(pps_budget=10_000), SMALL_TIERS, 25, on_event=lambda *e: events.append(e))
    ticket = await account.admit("in", "audio")
    account.bound(ticket, "s-in", "audio")
    account.on_event("join", "in", {"session_id": "s-in", "tier": "audio"})
    for second in range(4):  # the audio clock makes 20 of its 50 ticks a second
        account.observe_clock(float(second), 20 * second, 50.0, active=True)
    assert account.lagging and account.clock_share == pytest.approx(0.4)
    assert account.handshake_limit() == 8  # a quarter of the 32 handshakes in flight
    with pytest.raises(Overloaded) as refused:
        await account.admit("new", "audio")
    assert refused.value.status == 503 and refused.value.retry_after == 5
    assert events[-1] == ("admission", "new", {"action": "refused", "reason": "lagging",
                                               "detail": "the program's clock (or a fan-out worker's sending loop) "
                                                         "runs at 40 % of its rate"})
    await account.admit("in", "audio")  # a site already in may rejoin (it replaces its own session)
    for second in range(4, 8):  # keeping up again
        account.observe_clock(float(second), 60 + 50 * (second - 3), 50.0, active=True)
    assert not account.lagging and account.handshake_limit() == 32
    await account.admit("new", "audio")
    account.observe_clock(9.0, 0, 50.0, active=False)  # nobody subscribed: the clock idles, no judgement
    assert account.clock_share is None and not account.lagging
    for second in range(10, 14):  # the program keeps up, but a fan-out worker's sending loop does not
        account.observe_clock(float(second), 50 * (second - 10), 50.0, active=True, others=(1.0, 0.6))
    assert account.lagging and account.clock_share == pytest.approx(0.6)


@pytest.mark.asyncio
async def test_the_account_follows_the_cores_events_in_any_order() -> None:
    from ccctl.media.admission import Admission

    account = Admission(AdmissionPolicy(), SMALL_TIERS, 25)
    first = await account.admit("a", "high")
    assert account.in_flight() == 1 and account.load() == HIGH  # reserved while answered
    account.on_event("join", "a", {"session_id": "s1", "tier": "high"})  # connected before subscribe() returned
    account.bound(first, "s1", "high")
    assert account.load() == HIGH and account.in_flight() == 0
    account.on_event("join", "edge-site", {"session_id": "e1", "tier": "low"})  # an edge's session: not ours
    assert account.load() == HIGH
    second = await account.admit("b", "audio")
    account.on_event("leave", "b", {"session_id": "s2", "reason": "never_connected"})  # gone before bound()
    account.bound(second, "s2", "audio")
    assert account.load() == HIGH and account.in_flight() == 0
    third = await account.admit("c", "audio")
    account.release(third)  # the offer failed
    account.on_event("tier", "a", {"session_id": "s1", "from": "high", "to": "low"})
    assert account.load() == LOW
    account.on_event("leave", "a", {"session_id": "s1", "reason": "unsubscribed"})
    assert account.load() == 0 and account.in_flight() == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("bench", [(AdmissionPolicy(), functools.partial(ShardedCore, tiers=SMALL_TIERS, workers=1),
                                     {"l-1": "audio", "l-2": "audio"})], indirect=True)
async def test_a_worker_whose_sending_loop_lags_holds_new_joins(bench: Bench) -> None:
    """The lag check sees each fan-out worker's sending loop, not only the main process's
    clock: a worker kept from running most of the time (a real slow worker) holds new joins
    with 503 ``lagging``; those in stay; once it runs again, joins are admitted."""
    site, r = await bench.join("l-1", ("audio",))
    assert r.status == 201
    await until(lambda: asyncio.sleep(0, result=[x for _, x in bench.events("join")]), timeout=30)
    pool, admission = bench.server.pool, bench.server.admission
    assert pool is not None and admission is not None
    proc = pool.workers[0].proc
    assert proc is not None
    starving = asyncio.Event()

    async def starve() -> None:
        # The fault made real: the worker process is stopped three quarters of the time
        # (SIGSTOP/SIGCONT); these sleeps pace the fault, nothing waits on them.
        while not starving.is_set():
            os.kill(proc.pid, signal.SIGSTOP)
            await asyncio.sleep(0.15)
            os.kill(proc.pid, signal.SIGCONT)
            await asyncio.sleep(0.05)

    task = asyncio.get_running_loop().create_task(starve())
    try:
        slow = admission.policy.min_clock_share
        await until(lambda: asyncio.sleep(0, result=admission.lagging and min(pool.clock_shares(), default=1) < slow),
                    timeout=30)
        _, r = await bench.join("l-2", ("audio",))
        assert r.status == 503 and r.headers["Retry-After"] and "sending loop" in await r.text()
        assert any(d.get("reason") == "lagging" for s, d in bench.events("admission") if s == "l-2")
        assert "l-1" in bench.connected()  # the site already in stays
    finally:
        starving.set()
        await task
        os.kill(proc.pid, signal.SIGCONT)
    await until(lambda: asyncio.sleep(0, result=not admission.lagging), timeout=30)
    _, r = await bench.join("l-2", ("audio",))
    assert r.status == 201, await r.text()
