"""``ccctl report rollcall --with-feed``: indicators beside readiness per province."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ccctl.models import CheckResult, CheckState
from ccctl.registry import open_registry
from ccctl.registry.sites import generate_sites, select_sites
from ccctl.rollcall.history import RunRecorder
from tests.conftest import Ccctl

FIXTURES = Path(__file__).resolve().parents[2] / "configs" / "feeds"


def test_rollcall_report_with_feed(ccctl: Ccctl, tmp_path: Path) -> None:
    with open_registry(ccctl.db_url) as db:
        generate_sites(db, "2021", ["95", "96"])
        recorder = RunRecorder(db, {"test": True})
        for n, site in enumerate(select_sites(db)):  # a run written as a roll-call writes it
            recorder.add(CheckResult(site.id, CheckState.OK if n % 4 else CheckState.TIMEOUT))
        recorder.finish("finished", {})
    assert ccctl("feed", "add", "cases", str(FIXTURES / "covid-provinces.json")).exit_code == 0
    assert ccctl("feed", "pull", "cases").exit_code == 0
    assert ccctl("feed", "add", "risk", str(FIXTURES / "ca-mau-communes.csv"), "--level", "commune").exit_code == 0
    assert ccctl("feed", "pull", "risk").exit_code == 0
    shown = {r["unit_code"]: r for r in ccctl.json("feed", "show", "cases")}
    report = ccctl.json("report", "rollcall", "--with-feed", "cases")
    assert {r["province_code"] for r in report} == {"95", "96"}
    for row in report:
        assert 0 < row["ready_pct"] < 100 and row["new_cases"] == shown[row["province_code"]]["new_cases"]
        assert row["risk_level"] == shown[row["province_code"]]["risk_level"]
    # A commune feed is summed up to the provinces (its risk level: the worst commune's).
    camau = {r["province_code"]: r for r in ccctl.json("report", "rollcall", "--with-feed", "risk")}
    communes = ccctl.json("feed", "show", "risk")
    assert camau["96"]["new_cases"] == sum(r["new_cases"] for r in communes)
    assert camau["96"]["risk_level"].startswith(str(max(int(r["risk_level"][0]) for r in communes)))
    assert camau["95"]["new_cases"] is None
    xlsx = tmp_path / "r.xlsx"
    assert ccctl("report", "rollcall", "--with-feed", "cases", "--format", "xlsx", "-o", str(xlsx)).exit_code == 0
    sheet = pd.read_excel(xlsx)
    assert {"ready_pct", "new_cases", "avg7_cases"} <= set(sheet.columns) and len(sheet) == 2
    csv_out = ccctl("report", "rollcall", "--with-feed", "cases", "--format", "csv")
    assert csv_out.stdout.splitlines()[0].endswith("risk_level,total_cases")
    assert ccctl("report", "rollcall", "--with-feed", "nope").exit_code == 4
