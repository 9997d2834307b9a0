"""Spreadsheet exports never carry a live formula, and export -> import stays lossless.

Files are read back the way a spreadsheet would: the xlsx's XML (no ``<f>`` element, every
text cell typed as a string) and the CSV's raw first characters.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest

from ccctl.output import emit, spreadsheet_cell, spreadsheet_text, write_file
from tests.conftest import Ccctl

HOSTILE = ["=HYPERLINK(\"http://evil.example\",\"x\")", "=cmd|' /C calc'!A0", "+1+cmd|' /C calc'!A0",
           "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1", "\r=1+1", "  =1+1",
           "'=1+1", "'quoted", "''", "'"]
SAFE = ["Điểm cầu Bến Nghé", "-5", "+84912345678", "3.5", "a=b", "", "1e5"]


@pytest.mark.parametrize("value", HOSTILE + SAFE)
def test_cell_round_trip_is_exact(value: str) -> None:
    cell = spreadsheet_cell(value)
    assert spreadsheet_text(cell) == value
    assert not str(cell).lstrip(" ").startswith(("=", "+", "-", "@", "\t", "\r")) or value in SAFE


def test_hostile_text_is_prefixed_and_numbers_stay() -> None:
    for value in HOSTILE:
        assert spreadsheet_cell(value) == "'" + value
    for value in SAFE:
        assert spreadsheet_cell(value) == value
    assert spreadsheet_cell(-5) == -5 and spreadsheet_cell(-2.5) == -2.5
    assert spreadsheet_text("'hand-written apostrophe") == "'hand-written apostrophe"


def test_csv_output_is_neutralised_json_and_table_raw() -> None:
    rows = [{"name": v, "n": -3} for v in HOSTILE[:3]]
    out = io.StringIO()
    emit(rows, "csv", stream=out)
    parsed = list(csv.reader(io.StringIO(out.getvalue())))
    assert [r[0] for r in parsed[1:]] == ["'" + v for v in HOSTILE[:3]] and {r[1] for r in parsed[1:]} == {"-3"}
    out = io.StringIO()
    emit(rows, "json", stream=out)
    assert HOSTILE[0].replace('"', '\\"') in out.getvalue()
    out = io.StringIO()
    emit([{"name": "=1+1"}], "table", stream=out)
    assert "=1+1" in out.getvalue() and "'=1+1" not in out.getvalue()


def test_table_escapes_control_characters() -> None:
    out = io.StringIO()
    emit([{"name": "a\x1b[2Jb\x07c\x00d\x9be"}], "table", stream=out)
    text = out.getvalue()
    assert not any(ord(ch) < 0x20 and ch != "\n" or 0x7f <= ord(ch) <= 0x9f for ch in text)
    assert "a\\x1b[2Jb\\x07c\\x00d\\x9be" in text
    out = io.StringIO()
    emit([{"id": "s-1", "stdout": "line 1\nline 2\r\tend"}], "table", stream=out)
    assert out.getvalue().splitlines()[2:] == ["s-1   line 1", "      line 2\\r\\tend"]


def _xlsx_cells(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        return z.read("xl/worksheets/sheet1.xml").decode()


def test_xlsx_has_text_cells_numbers_and_no_formula(tmp_path: Path) -> None:
    path = tmp_path / "x.xlsx"
    hostile = [v for v in HOSTILE if "\r" not in v]  # XML reads a CR back as a newline
    write_file(path, ["text", "number"], [[v, -7] for v in hostile] + [["=A1", 2.5]])
    xml = _xlsx_cells(path)
    assert "<f>" not in xml and "<f " not in xml
    from openpyxl import load_workbook

    sheet = load_workbook(path).worksheets[0]
    rows = list(sheet.iter_rows(min_row=2))
    assert all(r[0].data_type == "s" for r in rows) and all(r[1].data_type == "n" for r in rows)
    assert [spreadsheet_text(r[0].value) for r in rows] == [*hostile, "=A1"]
    assert [r[1].value for r in rows] == [-7] * len(hostile) + [2.5]


def test_failed_xlsx_export_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "x.xlsx"
    with pytest.raises(ValueError, match="cannot store"):
        write_file(path, ["text"], [["fine"], ["bell\x07"]])
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"older export")
    with pytest.raises(ValueError):
        write_file(path, ["text"], [["bell\x07"]])
    assert [p.name for p in tmp_path.iterdir()] == ["x.xlsx"] and path.read_bytes() == b"older export"


def test_sites_export_round_trip_with_hostile_fields(ccctl: Ccctl, tmp_path: Path) -> None:
    names = ["=HYPERLINK(\"http://evil.example\",\"Bấm\")", "+Điểm", "-Điểm", "@Điểm", "'Điểm", "''=1"]
    for number, name in enumerate(names):
        result = ccctl("sites", "add", f"s-{number}", "--name", name, "--unit", "26740",
                       "--contact-name", f"=cmd|' /C calc'!A{number}", "--tags", "=x,+y")
        assert result.exit_code == 0, result.stderr
    before = ccctl.json("sites", "list", "--all-columns")
    assert {r["name"] for r in before} == set(names)
    listing = ccctl("sites", "list", "--csv", "--all-columns")
    for row in csv.DictReader(io.StringIO(listing.stdout)):
        assert row["name"].startswith("'") and row["contact_name"].startswith("'")
    for suffix in ("csv", "xlsx"):
        path = tmp_path / f"sites.{suffix}"
        assert ccctl("sites", "export", str(path)).exit_code == 0
        if suffix == "xlsx":
            assert "<f>" not in _xlsx_cells(path)
        else:
            with path.open(encoding="utf-8") as fh:
                assert all(not cell.startswith(("=", "+", "-", "@")) for row in csv.reader(fh) for cell in row)
        assert ccctl("sites", "remove", "--all", "--yes").exit_code == 0
        result = ccctl("sites", "import", str(path))
        assert result.exit_code == 0, result.stderr
        assert ccctl.json("sites", "list", "--all-columns") == before


def _import(ccctl: Ccctl, path: Path, text: str) -> tuple[int, list[str]]:
    path.write_text(text, encoding="utf-8")
    result = ccctl("sites", "import", str(path))
    return result.exit_code, result.stderr.splitlines()


def test_import_rejects_a_row_with_a_field_too_many(ccctl: Ccctl, tmp_path: Path) -> None:
    code, lines = _import(ccctl, tmp_path / "wide.csv", "id,name,unit_code\n"
                                                         "a-1,Một,00001\n"
                                                         "x-9,a-2,Hai,00001\n"
                                                         "a-3,Ba\n")
    assert code == 6
    assert lines == ["line 3: 4 fields, the header has 3", "line 4: 2 fields, the header has 3",
                     "Error: 2 row(s) do not fit the header; nothing imported"]
    assert ccctl.json("sites", "list") == []


def test_import_rejects_duplicate_columns(ccctl: Ccctl, tmp_path: Path) -> None:
    code, lines = _import(ccctl, tmp_path / "dup.csv", "id,name,unit_code,ID\na-1,Một,00001,b-1\n")
    assert code == 6 and lines[0] == "line 1: duplicate column 'id' (columns 1 and 4)"
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["id", "name", "Name", "unit_code"])
    book.active.append(["a-1", "Một", "Hai", "00001"])
    book.active.append(["a-2", "Hai", None, "00001", "extra"])
    book.save(tmp_path / "dup.xlsx")
    result = ccctl("sites", "import", str(tmp_path / "dup.xlsx"))
    assert result.exit_code == 6 and result.stderr.startswith("line 1: duplicate column 'name' (columns 2 and 3)")
    book.active.delete_cols(3)
    book.save(tmp_path / "wide.xlsx")
    result = ccctl("sites", "import", str(tmp_path / "wide.xlsx"))
    assert result.exit_code == 6 and result.stderr.startswith("line 3: 4 fields, the header has 3")
    assert ccctl.json("sites", "list") == []


def test_import_names_the_line_of_broken_quoting_and_skips_blank_lines(ccctl: Ccctl, tmp_path: Path) -> None:
    code, lines = _import(ccctl, tmp_path / "q.csv", 'id,name,unit_code\na-1,"Một"x,00001\n')
    assert code == 6 and lines[0].startswith("line 2: bad CSV") and len(lines) == 2
    code, lines = _import(ccctl, tmp_path / "ok.csv", 'id,name,unit_code\n\n,,\na-1,"Một, hai",00001\r\n\n')
    assert code == 0, lines
    assert [(r["id"], r["name"]) for r in ccctl.json("sites", "list")] == [("a-1", "Một, hai")]
    code, lines = _import(ccctl, tmp_path / "empty.csv", "")
    assert code == 6 and lines == ["Error: empty.csv is empty; nothing imported"]
    code, lines = _import(ccctl, tmp_path / "garbage.xlsx", "not a zip")
    assert code == 6 and len(lines) == 1 and lines[0].startswith("Error: cannot read garbage.xlsx as Excel")


def test_export_of_stored_data_xlsx_cannot_hold_fails_whole(ccctl: Ccctl, tmp_path: Path) -> None:
    for site in ("s-1", "s-2"):
        assert ccctl("sites", "add", site, "--name", "Bến Nghé", "--unit", "26740").exit_code == 0
    from ccctl.registry import open_registry

    with open_registry(ccctl.db_url) as db:  # stored before names were checked
        db.execute("UPDATE sites SET name = ? WHERE id = 's-2'", ("Bến\ufffeNghé",))
    result = ccctl("sites", "export", str(tmp_path / "x.xlsx"))
    assert result.exit_code == 2 and result.stderr.startswith("Error: cannot export to x.xlsx: row 3:")
    assert result.stderr.count("\n") == 1 and list(tmp_path.glob("*.xlsx")) == [] and list(tmp_path.glob(".x*")) == []
