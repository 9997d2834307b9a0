"""The footer drawn as one line of text: it shows the keys that work where the focus is, the
actions' keys only when they exist (not in read-only mode), and a click on a key presses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccctl.tui.widgets.footer import KeyFooter
from tests.tui.pilot import SIZE, make_app, until


def footer_line(app: object) -> str:
    footer = app.screen.query_one(KeyFooter)  # type: ignore[attr-defined]
    return str(footer.render())


@pytest.mark.asyncio
@pytest.mark.parametrize("readonly", [False, True])
async def test_footer_follows_the_focus_and_readonly(dash_db_url: str, tmp_path: Path, readonly: bool) -> None:
    app = make_app(dash_db_url, tmp_path / "home", readonly=readonly)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        await pilot.press("s")  # a site under the cursor: the site's actions apply
        await until(pilot, lambda: "Filter" in footer_line(app), "the footer's keys")
        line = footer_line(app)
        assert "WNC Sort" in line and "lpe Log" in line and "^p palette" in line and "q Quit" in line
        assert ("x Revoke" in line) is not readonly and ("c Check" in line) is not readonly
        # In the prompt, letters are typed, not pressed: their keys leave the footer and come back.
        await pilot.press("slash")
        await until(pilot, lambda: "Quit" not in footer_line(app), "the prompt's footer")
        assert "esc Back" in footer_line(app)
        await pilot.press("escape")
        await until(pilot, lambda: footer_line(app) == line, "the list's footer again")


@pytest.mark.asyncio
async def test_a_click_on_a_footer_key_presses_it(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        footer = app.screen.query_one(KeyFooter)
        await until(pilot, lambda: any(k.key == "question_mark" for _, _, k in footer.spans), "the footer's keys")
        start = next(s for s, _, k in footer.spans if k.key == "question_mark")
        await pilot.click(KeyFooter, offset=(start, 0))
        await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen", "the help screen")
