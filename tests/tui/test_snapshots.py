"""Snapshots (pytest-textual-snapshot) of the screens that matter, on the fixed registry of
tests/tui/conftest.py with a frozen clock and a server address nothing answers on (port 9).

Update after a deliberate change of the screens: ``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from ccctl.tui.app import Dashboard
from tests.tui.pilot import SIZE, until

FROZEN = 1_800_000_100.0  # 100 s after the fixture's roll-call


def fixed_app(db_url: str, home: Path) -> Dashboard:
    """The dashboard with nothing left to chance: frozen clock, a dead server at a fixed address."""
    return Dashboard(db_url, home, "127.0.0.1:9", poll_s=3600, server_poll_s=3600, clock=lambda: FROZEN)


def settled(then: Callable[[Dashboard, Pilot[Any]], Any] | None = None) -> Callable[[Pilot[Any]], Any]:
    """Wait for the registry's first reads (sites, the hours' history) and the server's first answer, then do ``then``."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, Dashboard)
        await until(pilot, lambda: app.loaded and app.widget("#header", object).server.startswith("down")
                    and app.trend is not None, "the first polls")
        if then is not None:
            await then(app, pilot)
        await pilot.pause()

    return run_before


def test_overview(snap_compare: Any, dash_db_url: str, tmp_path: Path) -> None:
    assert snap_compare(fixed_app(dash_db_url, tmp_path / "home"), terminal_size=SIZE, run_before=settled())


def test_a_2025_province_goes_straight_to_its_communes(snap_compare: Any, dash_db_url: str, tmp_path: Path) -> None:
    async def go(app: Dashboard, pilot: Pilot[Any]) -> None:
        app.rowlist.cursor = next(i for i, r in enumerate(app.rowlist.rows) if r["scheme"] == "2025")
        await pilot.press("enter")

    assert snap_compare(fixed_app(dash_db_url, tmp_path / "home"), terminal_size=SIZE, run_before=settled(go))


def test_a_site_with_its_detail(snap_compare: Any, dash_db_url: str, tmp_path: Path) -> None:
    async def go(app: Dashboard, pilot: Pilot[Any]) -> None:
        await pilot.press("colon", *"prov 95", "enter", "s", "colon", *"state UNREACHABLE", "enter")
        site = app.rowlist.rows[0]["id"]
        await until(pilot, lambda: site in app.details, "the site's detail")

    assert snap_compare(fixed_app(dash_db_url, tmp_path / "home"), terminal_size=SIZE, run_before=settled(go))


def test_the_map(snap_compare: Any, dash_db_url: str, tmp_path: Path) -> None:
    async def go(app: Dashboard, pilot: Pilot[Any]) -> None:
        await pilot.press("colon", *"prov 96", "enter", "m")
        screen = app.screen
        await until(pilot, lambda: len(screen.points()) == len(app.fleet.order), "the map drawn")  # type: ignore[attr-defined]

    assert snap_compare(fixed_app(dash_db_url, tmp_path / "home"), terminal_size=SIZE, run_before=settled(go))


def test_the_data_panel(snap_compare: Any, dash_db_url: str, tmp_path: Path) -> None:
    import asyncio

    from ccctl.feeds.pull import pull_feed
    from ccctl.feeds.spec import FeedSpec
    from ccctl.registry import feeds as store
    from ccctl.registry import open_registry

    fixtures = Path(__file__).resolve().parents[2] / "configs" / "feeds"
    with open_registry(dash_db_url) as db:
        store.add_feed(db, FeedSpec("covid", str(fixtures / "covid-provinces.json")))
        store.add_feed(db, FeedSpec("risk", str(fixtures / "ca-mau-communes.csv"), level="commune"))
        for name in ("covid", "risk"):
            asyncio.run(pull_feed(db, name))
        db.execute("UPDATE feeds SET last_pull_at = ?, last_ok_at = ?", (FROZEN - 180, FROZEN - 180))  # 3 min old

    async def go(app: Dashboard, pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: app.feed_data is not None, "the feeds read")
        await pilot.press("colon", *"prov 96", "enter", "i")

    assert snap_compare(fixed_app(dash_db_url, tmp_path / "home"), terminal_size=SIZE, run_before=settled(go))


def test_the_meeting_panel(snap_compare: Any, dash_db_url: str, tmp_path: Path) -> None:
    from ccctl.meetings.plan import plan_meeting
    from ccctl.registry import meetings as store
    from ccctl.registry import open_registry
    from ccctl.registry.overview import latest_run_id
    from ccctl.registry.sites import SiteFilter, edit_site

    with open_registry(dash_db_url) as db:
        # A meeting of Bạc Liêu at 15:30 local (the frozen clock is 15:01:40), planned an hour
        # before; its -30m check done at 15:00 on the fixture's run, through the same registry
        # calls the scheduler makes; the -10m check still due.
        planned = plan_meeting(db, title="Giao ban Bạc Liêu", at="2027-01-15 15:30", tz="Asia/Ho_Chi_Minh",
                               flt=SiteFilter(province="95"), checks="-30m,-10m", source="testsrc", record=False,
                               now=FROZEN - 3600)
        check = next(c for c in store.checks(db, planned.meeting_id) if c["offset_s"] == -1800)
        assert store.claim_check(db, check["id"], {"host": "test"}, 1_800_000_000.0, None)
        store.finish_check(db, check["id"], "done", 1_800_000_060.0, latest_run_id(db), None, None)
        for site in [r["site_id"] for r in store.audience(db, planned.meeting_id)][:4]:
            edit_site(db, site, {"contact_name": "Nguyễn Văn An", "contact_phone": "+84 91 000 0001"})

    async def go(app: Dashboard, pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: app.meeting_loaded, "the meeting read")
        await pilot.press("M")

    assert snap_compare(fixed_app(dash_db_url, tmp_path / "home"), terminal_size=SIZE, run_before=settled(go))
