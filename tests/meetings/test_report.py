"""Attendance against the audience from a broadcast's join and leave events (present, late,
left early, audio only, absent) per site and province, on SQLite and PostgreSQL, and the
printable page opened in headless Chromium showing its chart and map."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from ccctl.config import load_config
from ccctl.media.state import start_broadcast
from ccctl.meetings.attendance import Tolerances, province_attendance, site_attendance, to_call
from ccctl.meetings.plan import plan_meeting
from ccctl.meetings.printable import write_report
from ccctl.meetings.scheduler import tick
from ccctl.registry import meetings as store
from ccctl.registry.db import Database
from ccctl.registry.sites import SiteFilter, add_site
from ccctl.rollcall.session import options_from_config
from tests.browser import CHROMIUM, PAGE_ARGS
from tests.meetings.conftest import START, TZ, at

EXPECTED = {"s-present": "present", "s-late": "late", "s-early": "present", "s-audio": "present", "s-absent": "absent",
            "s-late-audio": "late"}


def _meeting_with_broadcast(db: Database) -> int:
    """Six sites in three provinces; a broadcast from 08:00 to 09:00 with chosen joins and leaves."""
    communes = [r[0] for p in ("01", "79", "95") for r in db.query(
        "SELECT code FROM units WHERE scheme = '2021' AND level = 'commune' AND province_code = ? ORDER BY code "
        "LIMIT 2", (p,))]
    for (site, _), unit in zip(EXPECTED.items(), communes, strict=True):
        add_site(db, {"id": site, "name": f"Điểm cầu {site}", "unit_code": unit, "contact_name": f"Anh {site}",
                      "contact_phone": "0912 345 678"})
    planned = plan_meeting(db, title="Hội nghị toàn quốc", at=START, tz=TZ, flt=SiteFilter(ids=tuple(EXPECTED)),
                           checks="-15m", source="testsrc", record=False, now=at("2026-12-05 07:00"))
    begin, end = at(START), at("2026-12-05 09:00")
    bid = start_broadcast(db, "Hội nghị toàn quốc", "testsrc", {"sites": list(EXPECTED)})
    db.execute("UPDATE broadcasts SET started_at = ?, ended_at = ?, status = 'ended' WHERE id = ?", (begin, end, bid))
    events: list[tuple[str, float, str, dict[str, Any]]] = [
        ("s-present", begin + 20, "join", {"tier": "high"}), ("s-present", end, "leave", {}),
        ("s-late", begin + 900, "join", {"tier": "high"}), ("s-late", end, "leave", {}),
        ("s-early", begin + 10, "join", {"tier": "low"}), ("s-early", begin + 1800, "leave", {}),
        ("s-audio", begin + 30, "join", {"tier": "high"}), ("s-audio", begin + 60, "tier", {"from": "high", "to": "audio"}),
        ("s-audio", end, "leave", {}),
        ("s-late-audio", begin + 1200, "join", {"tier": "audio"}), ("s-late-audio", end - 60, "leave", {}),
    ]
    db.executemany("INSERT INTO broadcast_events (broadcast_id, ts, site_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
                   [(bid, ts, site, kind, json.dumps(detail)) for site, ts, kind, detail in events])
    store.update_meeting(db, planned.meeting_id, {"status": "live", "broadcast_id": bid}, at("2026-12-05 08:00"))
    # The broadcast has ended: the next tick marks the meeting ended too.
    options = options_from_config(load_config(env={}))
    assert asyncio.run(tick(db, at("2026-12-05 09:01"), options)) == [
        {"meeting_id": planned.meeting_id, "action": "ended", "note": "its broadcast has ended"}]
    assert store.get_meeting(db, planned.meeting_id)["status"] == "ended"
    assert asyncio.run(tick(db, at("2026-12-05 09:02"), options)) == []
    return planned.meeting_id


def test_attendance_against_the_audience(units_db: Database) -> None:
    meeting = _meeting_with_broadcast(units_db)
    rows = {r["site_id"]: r for r in site_attendance(units_db, meeting, at("2026-12-05 10:00"), Tolerances(300, 300))}
    assert {s: r["status"] for s, r in rows.items()} == EXPECTED
    assert [s for s, r in rows.items() if r["left_early"]] == ["s-early"]  # a minute early is within the tolerance
    assert sorted(s for s, r in rows.items() if r["audio_only"]) == ["s-audio", "s-late-audio"]
    assert rows["s-late"]["first_join"] == "2026-12-05 08:15:00" and rows["s-present"]["minutes"] == 59.7
    assert rows["s-early"]["connected_pct"] == 49.7 and rows["s-absent"]["joins"] == 0
    assert rows["s-absent"]["contact_name"] == "Anh s-absent" and rows["s-absent"]["precheck"] is None
    assert {r["site_id"] for r in to_call(list(rows.values()), started=True)} == {"s-absent", "s-early"}
    by_province = {p["province_code"]: p for p in province_attendance(list(rows.values()))}
    assert {c: (p["audience"], p["present"], p["late"], p["absent"]) for c, p in by_province.items()} == {
        "01": (2, 1, 1, 0), "79": (2, 2, 0, 0), "95": (2, 0, 1, 1)}
    assert by_province["95"]["attended_pct"] == 50.0 and by_province["79"]["left_early"] == 1


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/services.sh installs it as root)")
def test_printable_report_opens_in_chromium(units_db: Database, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.async_api", reason="the test extra installs playwright")
    meeting = _meeting_with_broadcast(units_db)
    now = at("2026-12-05 10:00")
    sites = site_attendance(units_db, meeting, now)
    page_file = tmp_path / "report.html"
    write_report(units_db, meeting, page_file, now, sites, province_attendance(sites), [])
    text = page_file.read_text("utf-8")
    assert "http" not in text.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch: no CDN, no font
    assert "<script" not in text

    async def browse() -> dict[str, Any]:
        async with playwright.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=PAGE_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(page_file.as_uri())
                seen: dict[str, Any] = await page.evaluate("""() => {
                    const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
                    return {title: document.title, h1: document.querySelector('h1').textContent,
                            chart: box(document.querySelector('#chart')), map: box(document.querySelector('#map')),
                            bars: [...document.querySelectorAll('#chart rect.bar')].map(
                                b => [b.dataset.province, b.classList[1], +b.dataset.count, b.getBoundingClientRect().width]),
                            dots: [...document.querySelectorAll('#map circle.site')].map(c => c.classList[1]),
                            calls: document.querySelectorAll('table.calls tbody tr').length};
                }""")
                await page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
                await page.pdf(path=str(tmp_path / "report.pdf"))
                return seen
            finally:
                await browser.close()

    seen = asyncio.run(browse())
    assert seen["h1"] == "Hội nghị toàn quốc" and "điểm danh" in seen["title"]
    assert seen["chart"][0] > 300 and seen["chart"][1] > 60 and seen["map"][1] > 300
    bars = {(p, s): (n, w) for p, s, n, w in seen["bars"]}
    assert {k: n for k, (n, _) in bars.items()} == {("01", "present"): 1, ("01", "late"): 1, ("79", "present"): 2,
                                                     ("95", "late"): 1, ("95", "absent"): 1}
    assert all(w > 100 for _, w in bars.values())  # drawn, half or all of a 490 px bar
    assert sorted(seen["dots"]) == sorted(EXPECTED.values()) and seen["calls"] == 2
    assert (tmp_path / "report.pdf").stat().st_size > 5000


def test_scheduler_loop_ticks_until_stopped(units_db: Database) -> None:
    """The loop ticks on its clock and stops when told (here after the third tick); no pause between ticks (interval 0)."""
    from ccctl.meetings.loop import run_scheduler

    meeting = _meeting_with_broadcast(units_db)
    store.update_meeting(units_db, meeting, {"status": "live"}, at("2026-12-05 09:00"))
    clock = iter([at("2026-12-05 09:01"), at("2026-12-05 09:02"), at("2026-12-05 09:03")])
    seen: list[list[dict[str, Any]]] = []

    async def main() -> int:
        stop = asyncio.Event()

        def collect(actions: list[dict[str, Any]]) -> None:
            seen.append(actions)
            if len(seen) == 3:
                stop.set()

        return await run_scheduler(units_db, options_from_config(load_config(env={})), stop, interval_s=0,
                                   clock=lambda: next(clock), on_actions=collect)

    assert asyncio.run(main()) == 3
    assert [len(a) for a in seen] == [1, 0, 0] and seen[0][0]["action"] == "ended"


def test_a_check_held_by_a_dead_tick_is_given_back(units_db: Database) -> None:
    """A tick killed while running a check leaves it ``running``; the next tick sees its owner is
    gone (same host, the process has exited), gives the check back and runs it."""
    import subprocess
    import sys

    meeting = _meeting_with_broadcast(units_db)
    store.update_meeting(units_db, meeting, {"status": "planned", "broadcast_id": None}, at("2026-12-05 07:00"))
    owner = json.loads(subprocess.run(
        [sys.executable, "-c", "import json; from ccctl.rollcall.history import run_owner; print(json.dumps(run_owner()))"],
        check=True, capture_output=True, text=True).stdout)  # that process has exited: a dead owner
    [check] = store.checks(units_db, meeting)
    assert store.claim_check(units_db, check["id"], owner, at("2026-12-05 07:45"), None)
    assert not store.claim_check(units_db, check["id"], owner, at("2026-12-05 07:45"), None)  # taken: no second claim
    actions = asyncio.run(tick(units_db, at("2026-12-05 07:46"), options_from_config(load_config(env={}))))
    assert [a["action"] for a in actions] == ["released", "ran"]
    assert actions[1]["not_ready"] == 6  # these sites have no endpoint
    [check] = store.checks(units_db, meeting)
    assert check["status"] == "done" and check["run_id"] == actions[1]["run_id"]
    assert "check_released" in [e["kind"] for e in store.events(units_db, meeting)]
