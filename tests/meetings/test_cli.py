"""``ccctl meeting`` through the CLI on a simulated fleet with faults: plan a few minutes
ahead, bad input refused in one line, pre-checks by ``tick --now`` (the injected clock),
readiness in every format, edit and cancel, the report in every format and as xlsx."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from openpyxl import load_workbook

from ccctl.meetings.times import local_text
from tests.conftest import Ccctl
from tests.meetings.conftest import AUDIENCE, CONTACTS, TZ

FAULTY = {"2021-31816", "2021-31822", "2021-31828"}


def _sites(*ids: str) -> list[str]:
    return [arg for i in ids for arg in ("--site", i)]


def _local(ts: float) -> str:
    text = local_text(ts, TZ)
    assert text is not None
    return text


def test_plan_check_report(fleet: Ccctl, tmp_path: Path) -> None:
    start = (int(time.time()) // 60 + 6) * 60  # a few minutes ahead, on the minute
    plan = fleet("meeting", "plan", "--at", _local(start)[:16], "--title", "Giao ban", *_sites(*AUDIENCE),
                 "--checks", "-4m,-2m", "--record", "--json")
    assert plan.exit_code == 0, plan.stderr
    data = json.loads(plan.stdout)
    meeting = str(data["id"])
    assert data["audience"] == 6 and data["tz"] == TZ and data["record"] is True and data["status"] == "planned"
    assert [c["offset"] for c in data["checks"]] == ["-4m", "-2m"]
    assert "6 site(s), 2 pre-check(s)" in plan.stderr
    # Bad input: one line, exit 2, nothing stored.
    for args, words in [(["--at", "tomorrow"], "bad time 'tomorrow'"), (["--at", "2020-01-01 08:00"], "in the past"),
                        (["--at", _local(start)[:16], "--checks", "15m"], "after the start"),
                        (["--at", _local(start)[:16], "--source", "rtsp://x"], "unknown source")]:
        bad = fleet("meeting", "plan", "--title", "x", *args, "--site", AUDIENCE[0])
        assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and words in bad.stderr, (args, bad.stderr)
    nobody = fleet("meeting", "plan", "--title", "x", "--at", _local(start)[:16])
    assert nobody.exit_code == 2 and "choose the audience" in nobody.stderr
    assert [m["id"] for m in fleet.json("meeting", "list")] == [int(meeting)]
    # Edit: the audience is kept, changed only explicitly.
    other = fleet.json("meeting", "plan", "--at", _local(start + 3600)[:16], "--title", "Khác", "--province", "bac lieu")
    assert other["audience"] == 64
    edited = fleet("meeting", "edit", str(other["id"]), "--remove-site", "2021-31813", "--title", "Khác 2")
    assert edited.exit_code == 0 and "63 site(s)" in edited.stderr
    assert fleet("meeting", "edit", str(other["id"]), "--remove-site", "ghost").exit_code == 2
    moved = fleet("meeting", "edit", str(other["id"]), "--at", _local(start + 7200)[:16], "--checks", "-30m")
    assert moved.exit_code == 0, moved.stderr
    assert [(c["offset"], c["status"], c["due_at"]) for c in fleet.json("meeting", "checks", str(other["id"]))] == [
        ("-30m", "due", _local(start + 7200 - 1800))]
    assert [m["id"] for m in fleet.json("meeting", "list", "--since", _local(start + 60)[:16])] == [other["id"]]
    assert fleet("meeting", "cancel", str(other["id"]), "--yes").exit_code == 0
    assert {c["status"] for c in fleet.json("meeting", "checks", str(other["id"]))} == {"cancelled"}
    again = fleet("meeting", "edit", str(other["id"]), "--title", "y")
    assert again.exit_code == 2 and "is cancelled" in again.stderr
    assert fleet("meeting", "show", "999").exit_code == 4
    # The checks, by the injected clock.
    quiet = fleet("meeting", "tick", "--now", _local(start - 300), "--quiet")
    assert quiet.exit_code == 0 and quiet.stdout == ""
    ran = fleet.json("meeting", "tick", "--now", _local(start - 235))
    assert [(a["offset"], a["action"]) for a in ran] == [("-4m", "ran")]
    assert fleet.json("meeting", "tick", "--now", _local(start - 230)) == []
    calls = fleet.json("meeting", "readiness", meeting)
    assert {r["site_id"] for r in calls} == FAULTY
    for r in calls:
        assert (r["contact_name"], r["contact_phone"]) == CONTACTS[r["site_id"]]
    table = fleet("meeting", "readiness", meeting, "--by", "province")
    assert table.exit_code == 0 and "Bạc Liêu" in table.stdout and "3/6 ready, 1 degraded, 2 down" in table.stderr
    rows = list(csv.DictReader(io.StringIO(fleet("meeting", "readiness", meeting, "--by", "site", "--csv").stdout)))
    assert len(rows) == 6 and sum(r["readiness"] == "ready" for r in rows) == 3
    # The -2m check missed by cron; the next tick, a minute later still before the start, runs it late.
    late = fleet.json("meeting", "tick", "--now", _local(start - 15))
    assert [(a["offset"], a["action"]) for a in late] == [("-2m", "ran late")] and "105 s late" in late[0]["note"]
    checks = fleet.json("meeting", "checks", meeting)
    assert [(c["status"], c["late"]) for c in checks] == [("done", False), ("done", True)]
    # The report before the meeting starts: everyone absent, with the pre-check and whom to call.
    report = fleet.json("meeting", "report", meeting)
    assert {r["status"] for r in report} == {"absent"} and len(report) == 6
    assert {r["site_id"] for r in report if r["precheck"] != "ready"} == FAULTY
    provinces = fleet.json("meeting", "report", meeting, "--by", "province")
    assert provinces == [{"province_code": "95", "province_name": "Bạc Liêu", "audience": 6, "present": 0, "late": 0,
                          "absent": 6, "left_early": 0, "audio_only": 0, "attended_pct": 0.0}]
    renamed = fleet("sites", "edit", "2021-31822", "--name", "=HYPERLINK(\"http://x\")")
    assert renamed.exit_code == 0, renamed.stderr
    book = tmp_path / "report.xlsx"
    xlsx = fleet("meeting", "report", meeting, "--format", "xlsx", "-o", str(book))
    assert xlsx.exit_code == 0, xlsx.stderr
    wb = load_workbook(book)
    assert wb.sheetnames == ["Site", "Province", "Checks", "Calls"]
    assert wb["Site"].max_row == 7 and wb["Calls"]["A1"].value == "site_id"
    names = [c for c in wb["Site"]["B"] if str(c.value).startswith("=")]
    assert [(c.value, c.data_type) for c in names] == [('=HYPERLINK("http://x")', "s")]  # text, not a formula
    assert fleet("meeting", "report", meeting, "--format", "xlsx").exit_code == 2
    page = tmp_path / "report.html"
    printed = fleet("meeting", "report", meeting, "--html", str(page))
    assert printed.exit_code == 0 and printed.stdout == "" and f"to {page}" in printed.stderr
    html = page.read_text("utf-8")
    assert '<svg id="chart"' in html and '<svg id="map"' in html and html.count('class="site absent"') == 6
    calls_table = html.split('<table class="calls">')[1].split("</table>")[0]  # before the start: the not-ready
    assert "Kỹ thuật viên 1" in calls_table and "Kỹ thuật viên 0" not in calls_table
