"""Fan-out workers (``serve --workers``): real worker processes, real subscriber peers."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from ccctl.media.fastpath import RtpUnit
from ccctl.media.shard import ShardedCore, decode_unit, encode_unit

from .conftest import SMALL_TIERS, Site, counters, until

pytestmark = pytest.mark.asyncio
Events = list[tuple[str, str, dict[str, Any]]]


async def test_unit_wire_form_round_trips() -> None:
    unit = RtpUnit((b"\x7c\x85" + b"x" * 1200, b"", b"\x01\x02"), 0xFFFF_FFF0, True, 1204, 1 << 63)
    assert decode_unit(encode_unit("high", unit)) == ("high", unit)


async def join(core: ShardedCore, site_id: str, tier: str, sites: list[Site]) -> tuple[Site, str]:
    site = Site()
    sites.append(site)
    session_id, answer = await core.subscribe(site_id, await site.offer(), tier)
    await site.accept(answer)
    return site, session_id


async def test_sites_spread_over_workers_get_one_encode_per_tier() -> None:
    events: Events = []
    core = ShardedCore("testsrc", lambda k, s, d: events.append((k, s, d)), tiers=SMALL_TIERS, workers=2)
    await core.start()
    sites: list[Site] = []
    try:
        a, sid_a = await join(core, "s-a", "low", sites)
        b, _ = await join(core, "s-b", "low", sites)
        c, _ = await join(core, "s-c", "high", sites)
        for site, width in ((a, 160), (b, 160), (c, 320)):
            frames = await site.frames(6)
            assert {f.width for f in frames} == {width}
            assert counters(frames) == sorted(counters(frames))
            assert len(await site.frames(2, "audio")) == 2
        rows = await core.stats()
        assert {r["worker"] for r in rows} == {0, 1} and {r["site_id"] for r in rows} == {"s-a", "s-b", "s-c"}
        assert all(r["packets_sent"] > 0 and r["state"] == "connected" for r in rows)
        stats = core.program_stats()
        assert stats["low"]["frames_encoded"] <= stats["_program"]["video_ticks"]  # one encode, two workers
        await core.set_tier("s-a", "high")
        assert (await a.frame_sized(320)).height == 180
        assert core.tier_counts() == {"high": 2, "low": 1, "audio": 0}
        assert await core.unsubscribe(sid_a) and not await core.unsubscribe(sid_a)
        await until(lambda: asyncio.sleep(0, result=("leave", "s-a") in [(e[0], e[1]) for e in events]))
        kinds = [(e[0], e[1]) for e in events]
        assert kinds.count(("join", "s-a")) == 1 and ("tier", "s-a") in kinds
    finally:
        await core.close()
        for site in sites:
            await site.close()


async def test_a_dead_worker_is_restarted_and_its_sites_counted_as_gone() -> None:
    events: Events = []
    core = ShardedCore("testsrc", lambda k, s, d: events.append((k, s, d)), tiers=SMALL_TIERS, workers=1)
    await core.start()
    sites: list[Site] = []
    try:
        site, _ = await join(core, "s-x", "low", sites)
        await site.frames(2)
        worker = core._workers[0]
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGKILL)  # a crash we can make real
        await until(lambda: asyncio.sleep(0, result=any(e[0] == "leave" and e[2]["reason"] == "worker exited"
                                                         for e in events)))
        assert core.sessions() == []
        await until(lambda: asyncio.sleep(0, result=worker.proc is not None and worker.ready is not None
                                          and worker.ready.done()))
        again, _ = await join(core, "s-x", "low", sites)  # sites rejoin as after a server restart
        assert len(await again.frames(3)) == 3
    finally:
        await core.close()
        for s in sites:
            await s.close()
