"""The dashboard through Textual's Pilot, on a real SQLite registry: overview, drill-down
along each scheme, filter, commands, sort, help, the map, read-only mode and a dead server."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccctl.tui.app import Dashboard
from tests.tui.pilot import SIZE, make_app, screen_text, until


@pytest.mark.asyncio
async def test_overview_drill_down_and_back(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        rows = app.rowlist.rows
        assert [(r["scheme"], r["code"]) for r in rows] and all(r["level"] == "province" for r in rows)
        assert [r["ready_pct"] for r in rows] == sorted(r["ready_pct"] for r in rows)  # worst first
        text = screen_text(app)
        assert "Bạc Liêu" in text and "Cà Mau" in text and "ready %" in text
        # Enter on a 2021 province: its districts; then a district: communes; then a commune: sites.
        index = next(i for i, r in enumerate(rows) if r["scheme"] == "2021")
        app.rowlist.cursor = index
        await pilot.press("enter")
        assert {r["level"] for r in app.rowlist.rows} == {"district"}
        await pilot.press("enter")
        assert {r["level"] for r in app.rowlist.rows} == {"commune"}
        await pilot.press("enter")
        assert app.fleet.showing_sites() and all("level" not in r for r in app.rowlist.rows)
        assert len(app.fleet.path) == 4
        site = app.rowlist.rows[0]["id"]
        await until(pilot, lambda: site in app.details, "the site's detail")
        detail = str(app.query_one("#detail").render())
        assert "no endpoint" in detail and "last checks" in detail
        for depth in (3, 2, 1):
            await pilot.press("escape")
            assert len(app.fleet.path) == depth
        # A 2025 province goes straight to its communes (no district level).
        app.rowlist.cursor = next(i for i, r in enumerate(app.rowlist.rows) if r["scheme"] == "2025")
        await pilot.press("enter")
        assert {r["level"] for r in app.rowlist.rows} == {"commune"}


@pytest.mark.asyncio
async def test_filter_as_you_type_with_folding_and_inversion(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        await pilot.press("s")  # every site of the country
        everything = len(app.rowlist.rows)
        await pilot.press("slash", *"bac lieu")
        bac_lieu = len(app.rowlist.rows)
        assert 0 < bac_lieu < everything
        shown = {r["id"] for r in app.rowlist.rows}
        assert all("bac lieu" in r["fold"] for r in app.rowlist.rows)
        assert {s["id"] for s in app.fleet.order if s["province_name"] == "Bạc Liêu"} <= shown  # Bạc Liêu, 2021
        await pilot.press("enter")  # the filter stays, the prompt closes
        assert app.fleet.query.text == "bac lieu" and app.focused is app.rowlist
        await pilot.press("slash", "home", "!")  # ! inverts
        assert len(app.rowlist.rows) == everything - bac_lieu
        await pilot.press("escape")  # Esc in the prompt clears the filter
        assert len(app.rowlist.rows) == everything and app.fleet.query.text == ""


@pytest.mark.asyncio
async def test_commands_sort_and_help(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        await pilot.press("colon", *"prov 95", "enter")
        assert app.fleet.here.code == "95" and app.fleet.here.name == "Bạc Liêu"
        await pilot.press("colon", *"state UNREACHABLE", "enter")
        rows = app.rowlist.rows
        assert rows and {r["state"] for r in rows} == {"UNREACHABLE"} and {r["province_code"] for r in rows} == {"95"}
        await pilot.press("colon", *"state", "enter", "colon", *"tier audio", "enter")
        assert app.rowlist.rows == []  # every generated site is in the high tier
        await pilot.press("colon", *"tier", "enter", "colon", *"top", "enter")
        assert len(app.fleet.path) == 1
        await pilot.press("colon", *"frobnicate", "enter")
        assert "unknown command" in str(app.query_one("#status").render())
        await pilot.press("N")
        names = [r["name"] for r in app.rowlist.rows]
        await pilot.press("N")
        assert [r["name"] for r in app.rowlist.rows] == list(reversed(names))
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        assert type(app.screen).__name__ == "MainScreen"


@pytest.mark.asyncio
@pytest.mark.parametrize("readonly", [False, True])
async def test_readonly_has_no_actions(dash_db_url: str, tmp_path: Path, readonly: bool) -> None:
    app = make_app(dash_db_url, tmp_path / "home", readonly=readonly)
    actions = {"recheck", "floor", "release", "tier", "revoke"}
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        await pilot.press("s")  # a site under the cursor
        keys = {b.binding.action for b in app.screen.active_bindings.values() if app.check_action(
            b.binding.action.split("(")[0], ())}
        footer = {b.binding.action for b in app.screen.active_bindings.values() if b.enabled}
        palette = {c.title for c in app.get_system_commands(app.screen)}
        if readonly:
            assert not keys & actions and not footer & actions
            assert "Revoke" not in palette and "Re-check" not in palette
            await pilot.press("x", "c")  # nothing happens: no confirmation, no re-check
            assert type(app.screen).__name__ == "MainScreen"
            assert not any(w.group == "recheck" for w in app.workers)
            await pilot.press("colon", *"revoke", "enter")
            assert "unknown command" in str(app.query_one("#status").render())
        else:
            assert actions <= keys and actions <= footer
            assert {"Revoke", "Re-check"} <= palette
            await pilot.press("x")
            assert type(app.screen).__name__ == "ConfirmScreen"
            await pilot.press("n")
            assert "not revoked" in str(app.query_one("#status").render())


@pytest.mark.asyncio
async def test_dead_server_shows_as_such(dash_db_url: str, tmp_path: Path) -> None:
    app: Dashboard = make_app(dash_db_url, tmp_path / "home")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "down" in app.widget("#header", object).server, "the server shown down")
        assert "no ccctl server" in app.widget("#header", object).server


@pytest.mark.asyncio
async def test_wall_is_readonly_and_cycles_through_provinces_with_sites_down(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home", wall=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        assert app.readonly and app.has_class("wall") and not app.check_action("revoke", ())
        seen = []
        for _ in range(4):
            app.wall_cycle()  # what the wall's timer calls every WALL_CYCLE_S
            await pilot.pause()
            assert app.fleet.here.level == "province"
            seen.append((app.fleet.here.scheme, app.fleet.here.code))
        # Three provinces have sites down in the fixture: each in turn, then the first again.
        assert len(set(seen[:3])) == 3 and seen[3] == seen[0]


@pytest.mark.asyncio
async def test_the_site_list_renders_only_visible_lines(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home", poll_s=3600, server_poll_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        await pilot.press("s")
        rows = app.rowlist
        assert len(rows.rows) > 2 * rows.size.height  # far more sites than lines on screen
        await pilot.pause()
        rows.renders = 0
        rows.refresh()
        await pilot.pause()
        assert 0 < rows.renders <= rows.size.height  # one full redraw: the visible lines only
        rows.renders = 0
        changed = {r["id"] for r in rows.rows[:3]}
        assert rows.refresh_keys(changed) == 3  # three changed rows on screen: three lines redrawn
        await pilot.pause()
        assert 0 < rows.renders <= 3
