"""The overview's sparkline of the share ready per province over the last hours: the query on
each backend (hourly buckets, the window's edges), the characters, and the dashboard's rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccctl.models import CheckState
from ccctl.registry import Database, open_registry
from ccctl.registry.overview import ready_trend, site_states
from ccctl.registry.sites import generate_sites, select_sites
from ccctl.reports import level_counts
from ccctl.tui.feeds import RegistryFeed
from ccctl.tui.style import SPARK_BLOCKS, sparkline
from tests.tui.conftest import record_run
from tests.tui.pilot import SIZE, make_app, screen_text, until

HOUR = 3600.0
NOW = 1_800_000_000.0 + 1800  # half past an hour (1_800_000_000 is on the hour)


def test_ready_trend_hourly_on_each_backend(units_db: Database) -> None:
    generate_sites(units_db, "2021", ["95"])
    generate_sites(units_db, "2025", ["96"])
    sites = select_sites(units_db)
    bl = [s.id for s in sites if s.scheme == "2021"][:4]
    cm = [s.id for s in sites if s.scheme == "2025"][:2]
    ok, degraded, down = CheckState.OK, CheckState.DEGRADED, CheckState.UNREACHABLE
    record_run(units_db, dict.fromkeys(bl, down), started_at=NOW - 30 * HOUR)  # before the window
    record_run(units_db, dict.fromkeys(bl, ok), started_at=NOW - 3 * HOUR)
    record_run(units_db, dict(zip(bl, [ok, degraded, down, ok], strict=True)), started_at=NOW - HOUR)
    record_run(units_db, {bl[0]: ok, cm[0]: ok, cm[1]: CheckState.TIMEOUT}, started_at=NOW - 1700)  # this hour
    record_run(units_db, dict.fromkeys(bl, down), started_at=NOW + HOUR)  # after now: not shown

    trend = ready_trend(units_db, NOW, 24)
    assert set(trend) == {("2021", "95"), ("2025", "96")}
    assert trend[("2021", "95")] == [None] * 20 + [100.0, None, 75.0, 100.0]
    assert trend[("2025", "96")] == [None] * 23 + [50.0]
    assert ready_trend(units_db, NOW, 24, last=2)[("2021", "95")] == [None] * 22 + [75.0, 100.0]  # the hours filling
    # Buckets are on the hour: 1 s before the hour, the last run falls in the last bucket.
    assert ready_trend(units_db, NOW - 1801, 2)[("2021", "95")] == [None, 75.0]
    assert ready_trend(units_db, NOW - 40 * HOUR, 24) == {}


def test_sparkline_characters() -> None:
    assert sparkline([None, 0.0, 50.0, 100.0]) == "·▁▅█"
    assert sparkline([60.0, 80.0, 100.0]) == "▅▇█"  # a fixed scale: a share, not stretched
    assert sparkline([]) == ""


@pytest.mark.asyncio
async def test_the_overview_shows_each_province_s_hours(dash_db_url: str, tmp_path: Path) -> None:
    with open_registry(dash_db_url) as db:
        # The fixture's run (this hour) checked every site of Bạc Liêu: its share is the bucket's.
        share = next(p["ready_pct"] for p in level_counts(site_states(db), "province") if p["code"] == "95")
        bac_lieu = [s.id for s in select_sites(db) if s.scheme == "2021" and s.province_code == "95"]
        record_run(db, dict.fromkeys(bac_lieu, CheckState.OK), started_at=1_800_000_000.0 - 2 * HOUR)
    app = make_app(dash_db_url, tmp_path / "home", clock=lambda: 1_800_000_100.0)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded and app.trend is not None, "the registry and the history read")
        await until(pilot, lambda: "ready, last 24 h" in screen_text(app), "the sparkline column")
        now = SPARK_BLOCKS[round(share * 7 / 100)]
        assert now != "█"
        line = next(t for t in screen_text(app).splitlines() if "Bạc Liêu" in t)
        assert line.rstrip().endswith("·" * 21 + "█·" + now), line
        await pilot.press("enter")  # a province's districts: no sparkline
        assert "ready, last 24 h" not in screen_text(app)


def test_the_dashboard_rereads_only_the_hours_still_filling(dash_db_url: str) -> None:
    feed = RegistryFeed(dash_db_url)
    key = ("2021", "95")
    try:
        first = feed.trend(NOW)
        assert first is not None and first[key][-1] is not None and first[key][:-1] == [None] * 23
        kept = list(first[key])
        with open_registry(dash_db_url) as db:
            bac_lieu = [s.id for s in select_sites(db) if s.scheme == "2021" and s.province_code == "95"]
            record_run(db, dict.fromkeys(bac_lieu, CheckState.UNREACHABLE), started_at=NOW - 60)
            record_run(db, dict.fromkeys(bac_lieu, CheckState.OK), started_at=NOW - 5 * HOUR)
            full_now, full_later = ready_trend(db, NOW + 60, 24), ready_trend(db, NOW + HOUR, 24)
        second = feed.trend(NOW + 60)
        assert second is not None and first[key] == kept  # the app's copy is never changed under it
        # The hour still filling is read again (merged, as a full read has it); an hour already
        # complete keeps what the last full read saw until the hour turns.
        assert second[key][-1] == full_now[key][-1] < kept[-1]
        assert second[key][-6] is None and full_now[key][-6] == 100.0
        assert feed.trend(NOW + HOUR) == full_later and full_later[key][-7] == 100.0
    finally:
        feed.close()
