"""Feeds from files and folders: shapes, the all-or-nothing rule, retention, and the CLI."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import openpyxl
import pytest

from ccctl.errors import FeedError, UsageError
from ccctl.feeds import views
from ccctl.feeds.pull import pull_feed
from ccctl.feeds.spec import FeedSpec
from ccctl.registry import Database
from ccctl.registry import feeds as store
from tests.conftest import Ccctl

FIXTURES = Path(__file__).resolve().parents[2] / "configs" / "feeds"


def pull(db: Database, name: str, **kw: object) -> object:
    return asyncio.run(pull_feed(db, name, **kw))  # type: ignore[arg-type]


def test_shipped_fixtures_say_they_are_made_up() -> None:
    for path in FIXTURES.iterdir():
        assert "made-up numbers" in path.read_text("utf-8")[:300].lower(), path


def test_wide_commune_csv_with_risk_levels(units_db: Database) -> None:
    store.add_feed(units_db, FeedSpec("risk", str(FIXTURES / "ca-mau-communes.csv"), level="commune"))
    result = pull(units_db, "risk")
    assert result.units == 101  # type: ignore[attr-defined]
    rows, columns = views.wide_rows(units_db, "risk", by="province")
    assert columns == ["unit_code", "unit_name", "day", "new_cases", "risk_level"]
    assert [r["unit_code"] for r in rows] == ["96"] and rows[0]["risk_level"].startswith("4 ")


def test_long_table_and_at(units_db: Database) -> None:
    store.add_feed(units_db, FeedSpec("long", str(FIXTURES / "cases-long.csv")))
    pull(units_db, "long")
    rows = views.long_rows(units_db, "long", at="14/10/2021")
    assert {r["day"] for r in rows} == {"2021-10-14"} and {r["indicator"] for r in rows} == {"new_cases", "tested"}
    assert len(rows) == 10


def test_xlsx_and_folder_of_dated_files(units_db: Database, tmp_path: Path) -> None:
    folder = tmp_path / "daily"
    folder.mkdir()
    for day, cases in (("2021-10-14", 7), ("2021-10-15", 9)):
        book = openpyxl.Workbook()
        sheet = book.active
        sheet.append(["Tỉnh/Thành phố", "Số ca mới", "Cấp độ"])
        sheet.append(["Thành phố Cần Thơ", cases, "cao"])
        sheet.append(["Hậu Giang", cases + 1, "Cấp 2"])
        book.save(folder / f"risk-{day}.xlsx")
    store.add_feed(units_db, FeedSpec("daily", str(folder), unit_column="Tỉnh/Thành phố"))
    pull(units_db, "daily")
    series = store.series(units_db, "daily", "new_cases")
    assert series == [("92", "2021-10-14", 7.0), ("92", "2021-10-15", 9.0),
                      ("93", "2021-10-14", 8.0), ("93", "2021-10-15", 10.0)]
    assert store.series(units_db, "daily", "risk_level", units=["92"])[-1] == ("92", "2021-10-15", 3.0)


def test_file_changed_while_being_read_keeps_the_data(units_db: Database, tmp_path: Path) -> None:
    path = tmp_path / "cases.csv"
    shutil.copy(FIXTURES / "cases-long.csv", path)
    store.add_feed(units_db, FeedSpec("long", str(path)))
    pull(units_db, "long")
    good = views.long_rows(units_db, "long")

    def writer_appends(p: Path) -> None:  # a real write to the real file, between our two fstats
        with p.open("a") as fh:
            fh.write("79,2021-10-16,new_cases,5\n")

    with pytest.raises(FeedError, match="cases.csv changed while being read"):
        pull(units_db, "long", during=writer_appends)
    assert views.long_rows(units_db, "long") == good


def test_truncated_csv_conflicts_and_all_or_nothing(units_db: Database, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("code,date,new_cases\n79,2021-10-15,5\n01,2021-10-15,3\n", "utf-8")
    store.add_feed(units_db, FeedSpec("c", str(path)))
    pull(units_db, "c")
    path.write_text("code,date,new_cases\n79,2021-10-15,6\n01,2021-10", "utf-8")
    with pytest.raises(FeedError, match="line 3: 2 of 3 fields"):
        pull(units_db, "c")
    path.write_text("code,date,new_cases\n79,2021-10-15,6\n79,2021-10-15,7\n01,2021-10-15,4\n", "utf-8")
    with pytest.raises(FeedError) as raised:
        pull(units_db, "c")
    assert raised.value.problems == [(3, "Thành phố Hồ Chí Minh: new_cases on 2021-10-15 is 7 here but 6 on line 2")]
    assert {r["unit_code"]: r["new_cases"] for r in views.wide_rows(units_db, "c")[0]} == {"01": 3, "79": 5}


def test_retention_keeps_days_behind_the_newest(units_db: Database) -> None:
    store.add_feed(units_db, FeedSpec("cases", str(FIXTURES / "covid-provinces.json"), keep_days=2))
    pull(units_db, "cases")
    days = {d for _, d, _ in store.series(units_db, "cases", "new_cases")}
    assert days == {"2021-10-13", "2021-10-14", "2021-10-15"}


def test_vaccine_shape(units_db: Database) -> None:
    store.add_feed(units_db, FeedSpec("vac", str(FIXTURES / "vaccine-province-1.json")))
    pull(units_db, "vac")
    doses = json.loads((FIXTURES / "vaccine-province-1.json").read_text("utf-8"))["doses_by_day"]
    rows = {(r["day"], r["indicator"]): r["value"] for r in views.long_rows(units_db, "vac", at="2021-10-12")}
    assert rows[("2021-10-12", "doses")] == doses["12/10/2021"]["total_doses"]


def test_cli_pull_show_and_error_line(ccctl: Ccctl, tmp_path: Path) -> None:
    good = ccctl("feed", "add", "cases", str(FIXTURES / "covid-provinces.json"), "--alert", "province:new_cases>500")
    assert good.exit_code == 0, good.stderr
    done = ccctl.json("feed", "pull", "cases")
    assert done[0]["status"] == "ok" and done[0]["units"] == 63
    quiet = ccctl("feed", "pull", "cases", "--quiet")
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""
    shown = ccctl.json("feed", "show", "cases", "--at", "2021-10-14")
    hcm = next(r for r in shown if r["unit_code"] == "79")
    assert hcm["day"] == "2021-10-14" and set(hcm) == {"unit_code", "unit_name", "day", "new_cases", "new_deaths"}
    listed = ccctl.json("feed", "list")
    assert listed[0]["status"] == "ok" and listed[0]["newest_day"] == "2021-10-15"
    before = ccctl.json("feed", "show", "cases")
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"name": "Hà Nội", "case_by_day": {"1/10/2021": 3', "utf-8")
    assert ccctl("feed", "add", "cases", str(bad), "--replace").exit_code == 0
    failed = ccctl("feed", "pull", "cases")
    assert failed.exit_code == 10
    assert failed.stderr.strip().splitlines() == [
        "Error: feed cases: bad.json: invalid or truncated JSON (Expecting ',' delimiter at line 1 column 60); "
        "last good data kept"]
    listed = ccctl.json("feed", "list")
    assert listed[0]["status"] == "failing" and "truncated JSON" in listed[0]["last_error"]
    assert ccctl.json("feed", "show", "cases") == before and len(before) == 63
    events = ccctl.json("feed", "events", "cases")
    assert events[0]["kind"] == "pull_failed" and {e["kind"] for e in events[1:]} == {"pull_ok", "alert"}
    assert ccctl("feed", "pull", "nope").exit_code == 4
    assert ccctl("feed", "show", "cases", "--at", "31/2/2021").exit_code == 2


def test_2021_feeds_in_2025_units_through_the_map(units_db: Database) -> None:
    store.add_feed(units_db, FeedSpec("cases", str(FIXTURES / "covid-provinces.json")))
    store.add_feed(units_db, FeedSpec("risk", str(FIXTURES / "ca-mau-communes.csv"), level="commune"))
    pull(units_db, "cases")
    pull(units_db, "risk")
    old = views.wide_rows(units_db, "cases")[0]
    new = views.wide_rows(units_db, "cases", scheme="2025")[0]
    assert len(old) == 63 and len(new) == 34
    assert sum(r["new_cases"] for r in new) == sum(r["new_cases"] for r in old)
    hcm = next(r for r in new if r["unit_name"] == "Thành phố Hồ Chí Minh")  # with Bình Dương, Bà Rịa - Vũng Tàu
    assert hcm["new_cases"] == sum(r["new_cases"] for r in old if r["unit_code"] in ("79", "74", "77"))
    communes = views.wide_rows(units_db, "risk")[0]
    merged = views.wide_rows(units_db, "risk", scheme="2025")[0]
    assert 0 < len(merged) < len(communes)
    assert sum(r["new_cases"] for r in merged) == sum(r["new_cases"] for r in communes)
    province = views.wide_rows(units_db, "risk", by="province", scheme="2025")[0]
    assert [r["unit_name"] for r in province] == ["Tỉnh Cà Mau"]
    store.add_feed(units_db, FeedSpec("new", str(FIXTURES / "cases-long.csv"), scheme="2025"))
    with pytest.raises(UsageError, match="cannot be shown in the 2021 scheme"):
        views.wide_rows(units_db, "new", scheme="2021")
    with pytest.raises(UsageError, match="no districts"):
        views.wide_rows(units_db, "risk", by="district", scheme="2025")


def test_saved_html_page_and_empty_indicator(units_db: Database, tmp_path: Path) -> None:
    page = tmp_path / "cases.csv"
    page.write_text("<!DOCTYPE html>\n<html><body>Phiên đăng nhập đã hết hạn</body></html>\n", "utf-8")
    store.add_feed(units_db, FeedSpec("page", str(page)))
    with pytest.raises(FeedError, match="cases.csv: an HTML page, not data"):
        pull(units_db, "page")
    long = tmp_path / "long.csv"
    long.write_text("code,date,indicator,value\n79,2021-10-15,new_cases,5\n79,2021-10-15,,6\n", "utf-8")
    store.add_feed(units_db, FeedSpec("long", str(long)))
    with pytest.raises(FeedError, match="line 3: empty indicator"):
        pull(units_db, "long")


def test_history_for_sparklines(ccctl: Ccctl) -> None:
    assert ccctl("feed", "add", "risk", str(FIXTURES / "ca-mau-communes.csv"), "--level", "commune").exit_code == 0
    assert ccctl("feed", "add", "cases", str(FIXTURES / "covid-provinces.json")).exit_code == 0
    assert ccctl("feed", "pull", "cases").exit_code == 0 and ccctl("feed", "pull", "risk").exit_code == 0
    data = json.loads((FIXTURES / "covid-provinces.json").read_text("utf-8"))["data"]
    hanoi = next(p for p in data if p["name"] == "Hà Nội")
    rows = ccctl.json("feed", "history", "cases", "new_cases", "--unit", "01", "--since", "10/10/2021")
    assert [r["day"] for r in rows] == [f"2021-10-{d}" for d in range(10, 16)]
    assert [r["value"] for r in rows] == [hanoi["case_by_day"][f"{d}/10/2021"] for d in range(10, 16)]
    communes = ccctl.json("feed", "show", "risk")
    by_province = ccctl.json("feed", "history", "risk", "new_cases", "--by", "province")
    assert by_province == [{"unit_code": "96", "day": "2021-10-15", "value": sum(r["new_cases"] for r in communes)}]
    assert ccctl("feed", "history", "cases", "new_cases", "--since", "yesterday").exit_code == 2


def test_a_folder_is_read_incrementally(units_db: Database, tmp_path: Path) -> None:
    folder = tmp_path / "daily"
    folder.mkdir()

    def day_file(day: int, cases: str) -> None:
        (folder / f"cases-2021-10-{day}.csv").write_text(f"tỉnh,ca mới\nCần Thơ,{cases}\nHậu Giang,1\n", "utf-8")

    day_file(13, "4")
    day_file(14, "5")
    store.add_feed(units_db, FeedSpec("daily", str(folder)))
    assert pull(units_db, "daily").values == 4  # type: ignore[attr-defined]
    assert pull(units_db, "daily").status == "not_modified"  # type: ignore[attr-defined]
    day_file(15, "-2")  # a bad new file: nothing stored, and it is read again next time
    with pytest.raises(FeedError, match="cases-2021-10-15.csv: Thành phố Cần Thơ: new_cases: negative count"):
        pull(units_db, "daily")
    day_file(15, "6")
    done = pull(units_db, "daily")
    assert done.values == 2 and done.newest_day == "2021-10-15"  # type: ignore[attr-defined]
    assert [v for u, _, v in store.series(units_db, "daily", "new_cases") if u == "92"] == [4.0, 5.0, 6.0]


def test_json_records_unit_column_and_csv_dialects(ccctl: Ccctl, tmp_path: Path) -> None:
    records = tmp_path / "records.json"
    records.write_text(json.dumps({"rows": [
        {"province": "Hà Nội", "date": "2021-10-15", "new_cases": 7, "Cấp độ": "vàng"},
        {"province": 79, "date": "2021-10-15", "new_cases": "1.234", "Cấp độ": "Rất cao"},
    ]}, ensure_ascii=False), "utf-8")
    assert ccctl("feed", "add", "rec", str(records)).exit_code == 0
    assert ccctl("feed", "pull", "rec").exit_code == 0
    shown = {r["unit_code"]: r for r in ccctl.json("feed", "show", "rec")}
    assert shown["01"]["new_cases"] == 7 and shown["01"]["risk_level"] == "2 medium (yellow)"
    assert shown["79"]["new_cases"] == 1234 and shown["79"]["risk_level"] == "4 very high (red)"
    # A header no rule knows, named with --unit-column; ';' separated, with a byte-order mark.
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes("\ufeffĐịa bàn báo cáo;Ngày;Ca mới\nTP. Cần Thơ;15/10/2021;3\n".encode())
    assert ccctl("feed", "add", "sheet", str(sheet)).exit_code == 0
    refused = ccctl("feed", "pull", "sheet")
    assert refused.exit_code == 10 and "no unit column for level province" in refused.stderr
    assert ccctl("feed", "add", "sheet", str(sheet), "--unit-column", "Địa bàn báo cáo", "--replace").exit_code == 0
    assert ccctl("feed", "pull", "sheet").exit_code == 0
    assert ccctl.json("feed", "show", "sheet") == [
        {"unit_code": "92", "unit_name": "Thành phố Cần Thơ", "day": "2021-10-15", "new_cases": 3}]
