"""Tables (CSV, xlsx, a JSON list of records) to rows: long or wide, unit column by header.

A long table has an indicator column and a value column (one value per row); a wide table
has one column per indicator. The unit column is the one named for the feed's level (xã,
commune, ...), else a generic one (code, mã, unit, tên); columns naming a level above it
(tỉnh, huyện) are kept to tell apart units of the same name.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from ccctl.feeds.spec import Document, RawRow
from ccctl.feeds.values import indicator_name
from ccctl.textfold import fold

LEVEL_HEADERS = {
    "province": {"province", "tinh", "tinh thanh", "tinh thanh pho", "tinh tp", "ten tinh", "ma tinh",
                 "province code", "province name", "tinh thanh pho truc thuoc trung uong"},
    "district": {"district", "huyen", "quan huyen", "ten huyen", "ma huyen", "district code",
                 "district name", "quan", "huyen thi xa"},
    "commune": {"commune", "ward", "xa", "phuong xa", "xa phuong", "ten xa", "ma xa", "commune code",
                "commune name", "xa phuong thi tran"},
}
GENERIC_HEADERS = {"code", "ma", "unit", "unit code", "unit name", "ma dvhc", "ma don vi", "name", "ten",
                   "don vi", "dia phuong", "dia ban", "ten don vi"}
DATE_HEADERS = {"date", "day", "ngay", "ngay bao cao", "report date", "ngay cap nhat"}
INDICATOR_HEADERS = {"indicator", "metric", "chi so", "chi tieu"}
VALUE_HEADERS = {"value", "gia tri", "so lieu"}
_ORDER = ("province", "district", "commune")


class Layout:
    """Which column is what, found once from the header row."""

    def __init__(self, header: Sequence[str], level: str, unit_column: str | None) -> None:
        folded = [fold(str(h)) for h in header]
        self.width = len(header)
        self.unit = self._unit(header, folded, level, unit_column)
        above = _ORDER[:_ORDER.index(level)]
        self.parents = {i: lvl for lvl in above for i, f in enumerate(folded)
                        if f in LEVEL_HEADERS[lvl] and i != self.unit}
        self.date = next((i for i, f in enumerate(folded) if f in DATE_HEADERS), None)
        self.indicator = next((i for i, f in enumerate(folded) if f in INDICATOR_HEADERS), None)
        self.value = next((i for i, f in enumerate(folded) if f in VALUE_HEADERS), None)
        if (self.indicator is None) != (self.value is None):
            raise ValueError("a long table needs both an indicator and a value column")
        used = {self.unit, self.date, self.indicator, self.value, *self.parents}
        # Other columns naming units (a code beside a name) are context, not indicators.
        names = set().union(*LEVEL_HEADERS.values(), GENERIC_HEADERS)
        self.indicators = {i: indicator_name(str(header[i])) for i, f in enumerate(folded)
                           if i not in used and f not in names and f}
        if self.indicator is None and not self.indicators:
            raise ValueError("no indicator columns (a wide table needs one column per indicator)")

    @staticmethod
    def _unit(header: Sequence[str], folded: list[str], level: str, named: str | None) -> int:
        if named:
            for i, h in enumerate(header):
                if str(h).strip() == named or folded[i] == fold(named):
                    return i
            raise ValueError(f"no column {named!r} (columns: {', '.join(str(h) for h in header)})")
        for wanted in (LEVEL_HEADERS[level], GENERIC_HEADERS):
            for i, f in enumerate(folded):
                if f in wanted:
                    return i
        raise ValueError(f"no unit column for level {level} (name one with --unit-column; "
                         f"columns: {', '.join(str(h) for h in header)})")

    def rows(self, records: Iterable[Sequence[Any]], first_line: int, doc: Document) -> list[RawRow]:
        """RawRows of the data records; ValueError for a record cut short (a truncated file)."""
        out: list[RawRow] = []
        unit, date, parents, indicators = self.unit, self.date, self.parents, self.indicators
        for line, rec in enumerate(records, start=first_line):
            if len(rec) < self.width:
                if not any(str(c).strip() for c in rec if c is not None):
                    continue
                raise ValueError(f"line {line}: {len(rec)} of {self.width} fields (truncated file?)")
            cell = rec[unit]
            if cell is None or not str(cell).strip():
                if not any(c is not None and str(c).strip() for c in rec):
                    continue
                raise ValueError(f"line {line}: empty unit")
            row = RawRow(line=line, unit=str(cell).strip(), day=doc.day, where=doc.name)
            if parents:
                row.parents = {lvl: str(rec[i]).strip() for i, lvl in parents.items()
                               if rec[i] is not None and str(rec[i]).strip()}
            if date is not None and rec[date] is not None and str(rec[date]).strip():
                row.day = rec[date]
            if self.indicator is not None and self.value is not None:
                name = indicator_name(str(rec[self.indicator] or ""))
                if not name:
                    raise ValueError(f"line {line}: empty indicator")
                row.values = {name: rec[self.value]}
            else:
                row.values = {name: rec[i] for i, name in indicators.items()}
            out.append(row)
        return out


def parse_csv(doc: Document, level: str, unit_column: str | None) -> list[RawRow]:
    """Rows of a UTF-8 CSV document."""
    text = doc.body.decode("utf-8-sig")
    dialect = ";" if text[:2048].count(";") > text[:2048].count(",") else ","
    records = list(csv.reader(io.StringIO(text, newline=""), delimiter=dialect))
    # Leading "# ..." lines are notes (the shipped fixtures say their numbers are made up).
    skip = 0
    while skip < len(records) and records[skip] and records[skip][0].startswith("#"):
        skip += 1
    if len(records) <= skip:
        raise ValueError("empty file")
    layout = Layout(records[skip], level, unit_column)
    return layout.rows(records[skip + 1:], skip + 2, doc)


def parse_xlsx(doc: Document, level: str, unit_column: str | None) -> list[RawRow]:
    """Rows of the first sheet of a workbook (cached values of formulas, never the formulas)."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(doc.body), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a damaged workbook
        raise ValueError(f"not a readable xlsx workbook ({type(exc).__name__}: {exc})") from None
    try:
        records = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
    finally:
        book.close()
    if not records:
        raise ValueError("empty workbook")
    layout = Layout([("" if h is None else str(h)) for h in records[0]], level, unit_column)
    return layout.rows(records[1:], 2, doc)


def parse_records(data: Any, doc: Document, level: str, unit_column: str | None) -> list[RawRow]:
    """Rows of a JSON list of objects (or an object holding one under data/rows/records)."""
    if isinstance(data, dict):
        data = next((data[k] for k in ("data", "rows", "records", "items") if isinstance(data.get(k), list)), None)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError("JSON is not a list of records")
    if not data:
        raise ValueError("no records")
    header = list(dict.fromkeys(k for r in data for k in r))
    layout = Layout(header, level, unit_column)
    return layout.rows(([r.get(h) for h in header] for r in data), 1, doc)


def load_json(doc: Document) -> Any:
    """The parsed JSON of a document; ValueError that says where it breaks (truncated?)."""
    try:
        return json.loads(doc.body.decode("utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid or truncated JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
