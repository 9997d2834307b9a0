"""Tier adaptation: the governor's hysteresis, and a real lossy receiver moved down by its RTCP."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from ccctl.media.adapt import AdaptPolicy, TierGovernor
from ccctl.media.core import MediaCore

from .conftest import SMALL_TIERS, Site

ORDER = ["high", "low", "audio"]


def test_steps_down_only_after_consecutive_bad_reports() -> None:
    g = TierGovernor(ORDER, "high", AdaptPolicy(down_after=2))
    assert g.observe("high", 0.20, 50, now=1) is None  # one bad report is not a trend
    assert g.observe("high", 0.00, 50, now=2) is None  # and a good one resets it
    assert g.observe("high", 0.20, 50, now=3) is None
    assert g.observe("high", 0.20, 50, now=4) == "low"
    assert g.observe("low", 0.01, 2000, now=5) is None  # high RTT is bad too
    assert g.observe("low", 0.01, 2000, now=6) == "audio"
    assert g.observe("audio", 0.5, 2000, now=7) is None and g.observe("audio", 0.5, 2000, now=8) is None  # floor


def test_steps_up_slowly_and_never_above_the_ceiling() -> None:
    policy = AdaptPolicy(up_after=3, hold_s=10)
    g = TierGovernor(ORDER, "low", policy, now=0)
    assert [g.observe("audio", 0.0, 20, now=t) for t in (11, 12)] == [None, None]
    assert g.observe("audio", 0.0, 20, now=13) == "low"
    # Good from now on, but never above the registry's tier, and not before hold_s.
    assert all(g.observe("low", 0.0, 20, now=t) is None for t in range(14, 40))
    g2 = TierGovernor(ORDER, "high", policy, now=0)
    assert g2.observe("low", 0.0, 20, now=1) is None and g2.observe("low", 0.0, 20, now=2) is None
    assert g2.observe("low", 0.0, 20, now=3) is None  # three good reports, but held (changed at 0)
    assert g2.observe("low", 0.0, 20, now=10) == "high"


def test_an_operators_tier_is_the_new_ceiling_up_or_down() -> None:
    g = TierGovernor(ORDER, "high", AdaptPolicy(up_after=2, hold_s=0), now=0)
    g.cap("audio", now=1)  # the operator put the site on sound only
    assert all(g.observe("audio", 0.0, 20, now=t) is None for t in range(2, 30))  # it stays there
    g.cap("low", now=30)
    assert g.observe("audio", 0.0, 20, now=31) is None and g.observe("audio", 0.0, 20, now=32) == "low"
    assert all(g.observe("low", 0.0, 20, now=t) is None for t in range(33, 60))  # not above low
    g3 = TierGovernor(ORDER, "low", AdaptPolicy(up_after=2, hold_s=0), now=0)
    g3.cap("high", now=1)  # above the registry's tier: the operator's call
    assert g3.observe("low", 0.0, 20, now=2) is None and g3.observe("low", 0.0, 20, now=3) == "high"


def test_middle_band_neither_moves_up_nor_down() -> None:
    g = TierGovernor(ORDER, "high", AdaptPolicy(up_after=2, hold_s=0))
    assert all(g.observe("low", 0.04, 100, now=t) is None for t in range(50))  # between up and down


@pytest.mark.asyncio
async def test_a_lossy_site_is_moved_down_by_its_own_receiver_reports() -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    core = MediaCore("testsrc", lambda kind, site, detail: events.append((kind, site, detail)), tiers=SMALL_TIERS,
                     adapt=AdaptPolicy(down_after=2))
    await core.start()
    site = Site()
    try:
        _, answer = await core.subscribe("s-lossy", await site.offer(), "high")
        await site.accept(answer)
        await site.frames(1)
        # The site's link drops a third of the RTP packets before its receiver sees them (a
        # real receiver, real RTCP: only the loss is injected, at the site's own socket). The
        # drops are random (seeded): audio and video interleave in a fixed pattern, so a
        # periodic drop would hit one stream only.
        connection = site.transceivers["video"].receiver.transport.transport._connection
        rng = random.Random(7)
        for protocol in connection._protocols:
            real = protocol.datagram_received

            def lossy(data: bytes, addr: Any, real: Any = real) -> None:
                if 128 <= data[0] <= 191 and not 192 <= data[1] <= 223 and rng.random() < 0.33:
                    return
                real(data, addr)

            protocol.datagram_received = lossy
        deadline = time.monotonic() + 20
        while not any(e[0] == "tier" for e in events):  # bounded wait for a condition
            assert time.monotonic() < deadline, "no tier change within 20 s"
            await asyncio.sleep(0.1)
        kind, site_id, detail = next(e for e in events if e[0] == "tier")
        assert (site_id, detail["from"], detail["to"]) == ("s-lossy", "high", "low")
        assert detail["reason"].startswith("auto: loss ")
    finally:
        await core.close()
        await site.close()


@pytest.mark.asyncio
async def test_the_configured_adapt_section_reaches_the_broadcasts_core(units_db_url: str, tmp_path: Any) -> None:
    """``[adapt]`` of the server's configuration is the governor's policy in a broadcast's core
    (the default core of ``serve``; a test's factory that sets ``adapt`` keeps its own)."""
    from ccctl.config import load_config
    from ccctl.media.server import SERVER_KEY
    from tests.test_whip import in_process_server

    (tmp_path / "ccctl.toml").write_text("[adapt]\nup_after = 4\nhold_s = 2.5\n")
    adapt = load_config(env={"CCCTL_HOME": str(tmp_path)}).adapt
    assert (adapt.up_after, adapt.hold_s, adapt.down_after) == (4, 2.5, 2)
    async with in_process_server(units_db_url, tmp_path) as api:
        await api.start()
        core = api.client.app[SERVER_KEY].room.core
        assert isinstance(core, MediaCore) and core.adapt == adapt
