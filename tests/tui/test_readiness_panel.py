"""The meeting panel (``M``): a meeting planned on a real registry, its pre-check run by the
real scheduler against the simulated fleet with faults (tests/meetings/conftest.py), and the
dashboard showing its time, audience, counts and whom to call; which meeting is shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccctl.meetings.plan import plan_meeting
from ccctl.meetings.scheduler import tick
from ccctl.registry import meetings as store
from ccctl.registry import open_registry
from ccctl.registry.sites import SiteFilter, select_sites
from ccctl.tui.feeds import meeting_readiness
from ccctl.tui.widgets.readiness import ReadinessPanel, readiness_text
from tests.conftest import Ccctl
from tests.meetings.conftest import AUDIENCE, CONTACTS, START, TZ, at, fleet, fleet_options  # noqa: F401 - fleet: fixture
from tests.tui.pilot import SIZE, make_app, until


@pytest.mark.asyncio
async def test_the_panel_shows_the_latest_check_and_whom_to_call(fleet: Ccctl, tmp_path: Path) -> None:  # noqa: F811
    options = fleet_options(fleet)
    with open_registry(fleet.db_url) as db:
        planned = plan_meeting(db, title="Giao ban trực tuyến", at=START, tz=TZ, flt=SiteFilter(ids=tuple(AUDIENCE)),
                               checks="-60m,-15m", source="testsrc", record=False, now=at("2026-12-05 06:00"))
        [done] = await tick(db, at("2026-12-05 07:00:30"), options)
    assert done["action"] == "ran" and (done["ready"], done["degraded"], done["down"]) == (3, 1, 2)

    app = make_app(fleet.db_url, tmp_path / "dash-home", clock=lambda: at("2026-12-05 07:10"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.meeting_loaded, "the meeting read")
        panel = app.widget("#meeting", ReadinessPanel)
        assert not panel.display
        await pilot.press("M")
        assert panel.display and panel.last is not None
        text = panel.last.plain
        assert f"{planned.meeting_id} Giao ban trực tuyến · 2026-12-05 08:00 ({TZ}) · in 50 min · planned" in text
        assert "audience 6" in text and "next check -15m at 07:45" in text
        assert f"check -1h (run {done['run_id']}, 07:00): 3 ready  1 degraded  2 down  0 not checked" in text
        assert "not ready, whom to call (3):" in text
        lines = text.splitlines()
        for site in ("2021-31816", "2021-31822", "2021-31828"):
            line = next(t for t in lines if t.startswith(site))
            name, phone = CONTACTS[site]
            assert name in line and phone in line
        assert "down" in next(t for t in lines if t.startswith("2021-31822"))
        assert "degraded" in next(t for t in lines if t.startswith("2021-31828"))
        assert not any(t.startswith(("2021-31813", "2021-31819", "2021-31825")) for t in lines)  # ready: no call
        down_at = text.index("2021-31822")
        assert any("red" in str(s.style) for s in panel.last.spans if s.start <= down_at < s.end)
        await pilot.press("M")
        assert not panel.display


def test_which_meeting_is_shown(dash_db_url: str) -> None:
    with open_registry(dash_db_url) as db:
        now = at("2026-12-05 06:00")
        assert meeting_readiness(db, now) is None
        assert "none on now or planned" in readiness_text(None, now).plain
        ids = tuple(s.id for s in select_sites(db)[:3])

        def plan(when: str) -> int:
            return plan_meeting(db, title=f"Họp {when}", at=when, tz=TZ, flt=SiteFilter(ids=ids), checks="-15m",
                                source="testsrc", record=False, now=now).meeting_id

        later, sooner, live = plan("2026-12-05 10:00"), plan("2026-12-05 08:00"), plan("2026-12-05 06:30")
        read = meeting_readiness(db, now)
        assert read is not None and read["meeting"]["id"] == live and read["check"] is None
        assert read["next_check"]["offset_s"] == -900
        assert "no pre-check has run yet" in readiness_text(read, now).plain
        # Past its time and never started: the next planned one shows; a live one comes first.
        assert meeting_readiness(db, at("2026-12-05 07:45"))["meeting"]["id"] == sooner  # type: ignore[index]
        store.update_meeting(db, later, {"status": "live"}, now)
        assert meeting_readiness(db, at("2026-12-05 07:45"))["meeting"]["id"] == later  # type: ignore[index]
