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


def _run(ccctl: Ccctl, scheme: str, provinces: list[str]) -> None:
    """Sites of ``provinces`` in ``scheme`` and one roll-call run over them (one site in four down)."""
    with open_registry(ccctl.db_url) as db:
        generate_sites(db, scheme, provinces)
        recorder = RunRecorder(db, {"test": True})
        for n, site in enumerate(select_sites(db)):
            recorder.add(CheckResult(site.id, CheckState.OK if n % 4 else CheckState.TIMEOUT))
        recorder.finish("finished", {})


def test_a_2021_feed_lines_up_with_a_2025_registry(ccctl: Ccctl) -> None:
    _run(ccctl, "2025", ["96"])  # the 2025 Cà Mau: the 2021 Cà Mau (96) and Bạc Liêu (95) together
    assert ccctl("feed", "add", "cases", str(FIXTURES / "covid-provinces.json")).exit_code == 0
    assert ccctl("feed", "pull", "cases").exit_code == 0
    old = {r["unit_code"]: r for r in ccctl.json("feed", "show", "cases")}
    [row] = ccctl.json("report", "rollcall", "--with-feed", "cases")
    assert row["province_code"] == "96" and row["sites"] > 0 and "feed_unit" not in row
    assert row["new_cases"] == old["95"]["new_cases"] + old["96"]["new_cases"]
    assert row["total_cases"] == old["95"]["total_cases"] + old["96"]["total_cases"]
    assert row["risk_level"] == max(old["95"]["risk_level"], old["96"]["risk_level"])  # the worst ("4 very high")
    [moved] = [r for r in ccctl.json("feed", "show", "cases", "--scheme", "2025") if r["unit_code"] == "96"]
    assert row["new_cases"] == moved["new_cases"]


def test_a_2025_feed_lines_up_with_a_2021_registry(ccctl: Ccctl, tmp_path: Path) -> None:
    _run(ccctl, "2021", ["95", "96", "01"])
    source = tmp_path / "cases-2025.csv"  # made-up numbers, by 2025 province
    source.write_text("Tỉnh,Ngày,new_cases,risk_level\nCà Mau,15/10/2021,40,2\nHà Nội,15/10/2021,7,1\n"
                      "An Giang,15/10/2021,3,1\n", "utf-8")
    assert ccctl("feed", "add", "c25", str(source), "--scheme", "2025").exit_code == 0
    pulled = ccctl("feed", "pull", "c25")
    assert pulled.exit_code == 0, pulled.stderr
    report = {r["province_code"]: r for r in ccctl.json("report", "rollcall", "--with-feed", "c25")}
    assert set(report) == {"01", "95", "96"}
    # Bạc Liêu and Cà Mau of 2021 both went to the 2025 Cà Mau: both show its figures, and say so.
    for code in ("95", "96"):
        assert (report[code]["new_cases"], report[code]["risk_level"][0], report[code]["feed_unit"]) == (
            40, "2", "96 Tỉnh Cà Mau (2025)")
    assert (report["01"]["new_cases"], report["01"]["feed_unit"]) == (7, "01 Thành phố Hà Nội (2025)")
    lines = ccctl("report", "rollcall", "--with-feed", "c25", "--format", "csv").stdout.splitlines()
    assert lines[0].endswith("ready_pct,feed_unit,new_cases,risk_level")
    refused = ccctl("report", "rollcall", "--with-feed", "c25", "--by", "district")
    assert refused.exit_code == 2 and refused.stderr.startswith("Error: a province feed can be shown --by province")
