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
