"""Import and export of sites as CSV or Excel (.xlsx).

An import is all or nothing: the file's shape is checked first (UTF-8, one header with no
duplicate column, every row as many fields as the header, quoting), then every row is
validated (unit code, duplicate id, port, host, ...), and any problem rejects the whole file
with each bad line's number and reason. ``export`` writes exactly what ``import`` reads, through
``ccctl.output``'s spreadsheet-safe writers (no live formula; ``spreadsheet_text`` strips the
one ``'`` they add).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from ccctl.errors import ImportRejected, UnitsMissing, UsageError
from ccctl.output import EXCEL, SpreadsheetError, spreadsheet_text, write_file
from ccctl.registry.db import Database
from ccctl.registry.sites import FIELDS, SiteFilter, UnitIndex, complete, insert_sites, select_sites, site_record
from ccctl.registry.units import loaded_schemes

REQUIRED = ("id", "name", "unit_code")
MAX_BYTES = 32 * 1024 * 1024  # the whole country is ~11,000 sites, a few MB
MAX_UNZIPPED = 256 * 1024 * 1024  # an xlsx that inflates beyond this is refused unread
MAX_ROWS = 100_000
MAX_FIELD = 64 * 1024  # longer than any valid field; the row validation bounds each one

Rows = list[tuple[int, list[str]]]


def _decode(raw: bytes) -> str:
    """UTF-8 text of a CSV file, or ImportRejected naming every line that is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        bad = []
        for number, line in enumerate(raw.split(b"\n"), start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad.append((number, f"not UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); "
                                    "save the file as UTF-8"))
        raise ImportRejected(f"{len(bad)} line(s) are not UTF-8; nothing imported", bad[:100]) from None


def _csv_records(text: str) -> Rows:
    """(first line, fields) of every non-blank CSV record; strict quoting, bounded fields."""
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    records: Rows = []
    previous = 0
    limit = csv.field_size_limit(MAX_FIELD)
    try:
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise ImportRejected(f"not a valid CSV file: {exc}; nothing imported",
                                     [(previous + 1, f"bad CSV: {exc}")]) from None
            if fields and any(f.strip() for f in fields):
                records.append((previous + 1, fields))
                if len(records) > MAX_ROWS + 1:
                    raise ImportRejected(f"more than {MAX_ROWS} rows; split the file", [])
            previous = reader.line_num
    finally:
        csv.field_size_limit(limit)
    return records


def _excel_text(value: Any) -> str:
    """A cell of an Excel sheet as the text an operator sees in it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return str(value)


def _excel_records(path: Path) -> Rows:
    """(row number, cells as text) of every non-blank row of the workbook's first sheet."""
    from openpyxl import load_workbook

    if path.suffix.lower() not in EXCEL:
        raise UsageError(f"cannot read {path.name}: old .xls workbooks are not supported; save it as .xlsx")
    # The file is ours to close: openpyxl leaves its archive open when a damaged one fails.
    with path.open("rb") as fh:
        try:
            with zipfile.ZipFile(fh) as archive:
                if sum(i.file_size for i in archive.infolist()) > MAX_UNZIPPED:
                    raise ImportRejected(f"{path.name} inflates beyond {MAX_UNZIPPED // 2**20} MB; "
                                         "nothing imported", [])
            fh.seek(0)
            book = load_workbook(fh, read_only=True, data_only=True)
        except ImportRejected:
            raise
        except Exception as exc:  # zipfile and openpyxl raise many kinds for a damaged workbook
            raise ImportRejected(f"cannot read {path.name} as Excel ({_reason(exc)}); nothing imported", []) from None
        try:
            return _sheet_records(book.worksheets[0])
        except ImportRejected:
            raise
        except Exception as exc:  # a damaged sheet shows only while it is read
            raise ImportRejected(f"cannot read {path.name} as Excel ({_reason(exc)}); nothing imported", []) from None
        finally:
            book.close()


def _sheet_records(sheet: Any) -> Rows:
    """(row number, cells as text) of the non-blank rows of a read-only sheet."""
    sheet.reset_dimensions()  # read every row there is, not the count the file claims
    records: Rows = []
    for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
        cells = [_excel_text(v) for v in row]
        while cells and not cells[-1].strip():
            cells.pop()
        if cells:
            records.append((number, cells))
            if len(records) > MAX_ROWS + 1:
                raise ImportRejected(f"more than {MAX_ROWS} rows; split the file", [])
    return records


def _reason(exc: Exception) -> str:
    """The first line of a library's error, cut short, its control characters (from the file) masked."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return re.sub("[\x00-\x1f\x7f-\x9f]", "?", line)


def read_records(path: Path) -> tuple[tuple[int, list[str]], Rows]:
    """The header (its line, its names) and the data records of a CSV or Excel file, as text."""
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    if path.stat().st_size > MAX_BYTES:
        raise ImportRejected(f"{path.name} is larger than {MAX_BYTES // 2**20} MB; split the file", [])
    if path.suffix.lower() in (*EXCEL, ".xls"):
        records = _excel_records(path)
    else:
        records = _csv_records(_decode(path.read_bytes()))
    if not records:
        raise ImportRejected(f"{path.name} is empty; nothing imported", [])
    return records[0], records[1:]


def shape_rows(heading: tuple[int, list[str]], data: Rows,
               excel: bool = False) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows as dicts keyed by column, or ImportRejected for a bad header or a row of the wrong width.

    Every cell loses the ``'`` an export put before formula-like text (``spreadsheet_text``).
    """
    head, header = heading
    names = [spreadsheet_text(h).strip().lower() for h in header]
    # A trailing column without a header is accepted only while it stays empty in every row.
    width = len(names)
    while width and not names[width - 1]:
        width -= 1
    problems: list[tuple[int, str]] = []
    first: dict[str, int] = {}
    for position, name in enumerate(names[:width], start=1):
        if not name:
            problems.append((head, f"column {position} has no header"))
        elif name in first:
            problems.append((head, f"duplicate column {name!r} (columns {first[name]} and {position})"))
        else:
            first[name] = position
    missing = [c for c in REQUIRED if c not in first]
    unknown = [c for c in first if c not in FIELDS]
    problems += [(head, f"missing column {c}") for c in missing]
    problems += [(head, f"unknown column {c[:40]!r}") for c in unknown]
    if problems:
        raise ImportRejected(f"bad header ({problems[0][1]}); nothing imported", problems)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    for line, fields in data:
        extra = fields[width:]
        if any(f.strip() for f in extra) or (not excel and len(fields) > len(names)):
            problems.append((line, f"{len(fields)} fields, the header has {len(names)}"))
            continue
        if not excel and len(fields) < len(names):
            problems.append((line, f"{len(fields)} fields, the header has {len(names)}"))
            continue
        fields = fields[:width] + [""] * (width - len(fields))
        rows.append({n: spreadsheet_text(v) for n, v in zip(names[:width], fields, strict=True)})
        lines.append(line)
    if problems:
        raise ImportRejected(f"{len(problems)} row(s) do not fit the header; nothing imported", problems[:100])
    return rows, lines


def read_table(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows of a CSV or Excel file as dicts of strings, with each row's line number."""
    header, data = read_records(path)
    return shape_rows(header, data, excel=path.suffix.lower() in (*EXCEL, ".xls"))


def validate_rows(db: Database, rows: list[dict[str, Any]], lines: list[int], scheme: str,
                  replace: bool = False, index: UnitIndex | None = None,
                  existing: set[str] | None = None) -> list[dict[str, Any]]:
    """Validated site dicts, or ImportRejected listing every bad row.

    ``index`` and ``existing`` (the registered ids) are read from ``db`` unless given.
    """
    index = index or UnitIndex(db)
    if existing is None:
        existing = {r[0] for r in db.query("SELECT id FROM sites")}
    seen: dict[str, int] = {}
    problems: list[tuple[int, str]] = []
    good: list[dict[str, Any]] = []
    for line, row in zip(lines, rows, strict=True):
        values = {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
        values.setdefault("scheme", scheme)
        if not values.get("scheme"):
            values["scheme"] = scheme
        try:
            site = complete(values)
            index.locate(site["scheme"], site["unit_code"])
        except ValueError as exc:
            problems.append((line, str(exc)))
            continue
        if site["id"] in seen:
            problems.append((line, f"duplicate id {site['id']!r} (first on line {seen[site['id']]})"))
            continue
        seen[site["id"]] = line
        if site["id"] in existing and not replace:
            problems.append((line, f"id {site['id']!r} is already registered (use --replace to overwrite)"))
            continue
        good.append(site)
    if problems:
        raise ImportRejected(f"{len(problems)} bad row(s); nothing imported", problems[:100])
    return good


def import_sites(db: Database, path: Path, scheme: str = "2021", dry_run: bool = False,
                 replace: bool = False) -> int:
    """Validate a whole file, then (unless ``dry_run``) insert it in one transaction."""
    if not loaded_schemes(db):
        raise UnitsMissing("no administrative units loaded; run: ccctl units load --scheme 2021")
    rows, lines = read_table(path)
    sites = validate_rows(db, rows, lines, scheme, replace)
    if not dry_run:
        insert_sites(db, sites, replace=replace)
    return len(sites)


def export_rows(sites: list[dict[str, Any]]) -> list[list[str]]:
    """Site records as the text cells of an export file, in the order of ``FIELDS``."""
    rows = []
    for data in sites:
        row = {k: data[k] for k in FIELDS}
        row["tags"] = ",".join(row["tags"])
        row["enabled"] = "yes" if row["enabled"] else "no"
        row["simulated"] = "yes" if row["simulated"] else "no"
        rows.append(["" if row[k] is None else str(row[k]) for k in FIELDS])
    return rows


def export_sites(db: Database, path: Path, flt: SiteFilter | None = None) -> int:
    """Write the selected sites to CSV or Excel in the columns ``import`` reads (all or nothing)."""
    rows = export_rows([site_record(s) for s in select_sites(db, flt)])
    try:
        write_file(path, FIELDS, rows, sheet="sites")
    except SpreadsheetError as exc:
        raise UsageError(f"cannot export to {path.name}: {exc}; nothing written") from None
    return len(rows)
