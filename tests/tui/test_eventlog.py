"""The event log's follow / pause and its severity filter, driven by keys and ``:`` commands
through Pilot on the dashboard over a real registry (its own lines arrive as they do live:
results written by another writer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccctl.models import CheckState
from ccctl.registry import open_registry
from ccctl.registry.overview import site_states
from ccctl.tui.widgets.eventlog import EventLog
from tests.tui.conftest import record_run
from tests.tui.pilot import SIZE, make_app, until


def drawn(log: EventLog) -> list[str]:
    """The log's lines as drawn now (Line API), blank lines left out."""
    return [text for y in range(log.size.height) if (text := log.render_line(y).text.strip())]


def status(app: object) -> str:
    return str(app.query_one("#status").render())  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_pause_counts_new_lines_and_follow_catches_up(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        log = app.widget("#log", EventLog)
        await pilot.press("p")  # opens the log, paused
        assert app.get_screen_main().has_class("log-open") and log.paused
        assert "PAUSED, 0 new" in str(log.border_title) and "paused" in status(app)
        log.add_lines([(f"filler {i}", "info") for i in range(40)])  # more than the log's height
        await pilot.pause()
        before = drawn(log)
        assert not any("filler 39" in line for line in before)  # not scrolled to
        # Lines arriving the live way: another writer records results, the poll merges them.
        with open_registry(dash_db_url) as db:
            ids = [s["id"] for s in site_states(db) if s["state"] != "OK"][:3]
            record_run(db, {i: CheckState.OK for i in ids}, started_at=1_900_000_000.0)
        await until(pilot, lambda: all(app.fleet.sites[i]["state"] == "OK" for i in ids), "the results merged")
        await until(pilot, lambda: any(f"{ids[0]}" in t and "-> OK" in t for t, _ in log.lines), "their lines")
        assert log.unseen >= 43 and f"PAUSED, {log.unseen:,} new" in str(log.border_title)
        await pilot.pause()
        assert drawn(log) == before  # still where it was
        await pilot.press("p")  # follow: to the newest line, the count gone
        await pilot.pause()
        assert not log.paused and log.unseen == 0 and "following" in str(log.border_title)
        assert drawn(log)[-1] == log.lines[-1][0].strip()
        # The same by command.
        await pilot.press("colon", *"log pause", "enter")
        assert log.paused and "pause" in status(app)
        await pilot.press("colon", *"log follow", "enter")
        assert not log.paused


@pytest.mark.asyncio
async def test_severity_filter_cycles_and_takes_a_command(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home", readonly=True)  # watching: allowed read-only too
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        log = app.widget("#log", EventLog)
        log.add_lines([("a plain note", "info"), ("a stream gap", "warn"), ("a site down", "alert"),
                       ("a feed warning", "warning"), ("a feed error", "error")])
        await pilot.press("l")
        await pilot.pause()
        every = drawn(log)
        assert any("a plain note" in line for line in every) and any("a site down" in line for line in every)
        await pilot.press("e")  # warnings and errors
        await pilot.pause()
        shown = "\n".join(drawn(log))
        assert log.level == "warning" and "a plain note" not in shown and "dashboard started" not in shown
        assert all(t in shown for t in ("a stream gap", "a site down", "a feed warning", "a feed error"))
        assert "warning and worse" in str(log.border_title)
        await pilot.press("e")  # errors only
        await pilot.pause()
        shown = "\n".join(drawn(log))
        assert log.level == "error" and "a stream gap" not in shown and "a feed warning" not in shown
        assert "a site down" in shown and "a feed error" in shown
        # New lines are filtered as they come; a hidden one is still kept for later.
        log.add_lines([("another note", "info"), ("another error", "alert")])
        await pilot.pause()
        shown = "\n".join(drawn(log))
        assert "another error" in shown and "another note" not in shown
        await pilot.press("e")  # back to every line: nothing was lost
        await pilot.pause()
        assert log.level == "info" and "another note" in "\n".join(drawn(log))
        await pilot.press("colon", *"log error", "enter")
        assert log.level == "error" and "error" in status(app)
        await pilot.press("colon", *"log loud", "enter")
        assert log.level == "error" and "log pause|follow|info|warning|error" in status(app)


@pytest.mark.asyncio
async def test_filtered_view_follows_the_ring_buffer(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        log = app.widget("#log", EventLog)
        log.set_level("error")
        log.add_lines([(f"error {i}", "alert") if i % 100 == 0 else (f"note {i}", "info") for i in range(12_000)])
        # 10,000 lines kept; of the errors only those still in the buffer are shown.
        assert len(log.lines) == 10_000
        assert [t.split()[-1] for _, t, _ in log.shown] == [str(i) for i in range(2_000, 12_000, 100)]
        log.set_level("info")
        assert len(log.shown) == 10_000 and log.shown[0][1].endswith("error 2000") and log.shown[1][1].endswith("note 2001")
