"""Import and export of sites as CSV or Excel, through pandas.

An import is all or nothing: every row is validated first (encoding, columns, unit code,
duplicate id, port, host, ...) and any problem rejects the whole file with each bad row's
line number and reason. ``export`` writes exactly what ``import`` reads.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ccctl.errors import ImportRejected, UnitsMissing, UsageError
from ccctl.registry.db import Database
from ccctl.registry.sites import FIELDS, SiteFilter, UnitIndex, complete, insert_sites, select_sites, site_record
from ccctl.registry.units import loaded_schemes

REQUIRED = ("id", "name", "unit_code")
EXCEL = (".xlsx", ".xlsm", ".xls")


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
        raise ImportRejected(f"{len(bad)} line(s) are not UTF-8; nothing imported", bad) from None


def read_table(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows of a CSV or Excel file as dicts of strings, with each row's line number."""
    import pandas as pd

    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    if path.suffix.lower() in EXCEL:
        try:
            frame = pd.read_excel(path, dtype=str, keep_default_na=False)
        except Exception as exc:  # openpyxl raises many kinds for a damaged workbook
            raise UsageError(f"cannot read {path.name} as Excel: {exc}") from None
    else:
        text = _decode(path.read_bytes())
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
        except pd.errors.ParserError as exc:
            raise UsageError(f"cannot parse {path.name} as CSV: {str(exc).strip()}") from None
        except pd.errors.EmptyDataError:
            raise UsageError(f"{path.name} is empty") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ImportRejected(f"missing column(s): {', '.join(missing)}; nothing imported",
                             [(1, f"missing column {c}") for c in missing])
    unknown = [c for c in frame.columns if c not in FIELDS]
    if unknown:
        raise ImportRejected(f"unknown column(s): {', '.join(unknown)}; nothing imported",
                             [(1, f"unknown column {c}") for c in unknown])
    rows = [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]
    return rows, list(range(2, len(rows) + 2))


def validate_rows(db: Database, rows: list[dict[str, Any]], lines: list[int], scheme: str,
                  replace: bool = False) -> list[dict[str, Any]]:
    """Validated site dicts, or ImportRejected listing every bad row."""
    index = UnitIndex(db)
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
        raise ImportRejected(f"{len(problems)} bad row(s); nothing imported", problems)
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


def export_sites(db: Database, path: Path, flt: SiteFilter | None = None) -> int:
    """Write the selected sites to CSV or Excel in the columns ``import`` reads."""
    import pandas as pd

    records = []
    for site in select_sites(db, flt):
        data = site_record(site)
        row = {k: data[k] for k in FIELDS}
        row["tags"] = ",".join(row["tags"])
        row["enabled"] = "yes" if row["enabled"] else "no"
        row["simulated"] = "yes" if row["simulated"] else "no"
        # Strings only, so that pandas keeps integers with gaps as written (no 300.0).
        records.append({k: "" if v is None else str(v) for k, v in row.items()})
    frame = pd.DataFrame.from_records(records, columns=list(FIELDS), coerce_float=False)
    if path.suffix.lower() in EXCEL:
        frame.to_excel(path, index=False)
    else:
        frame.to_csv(path, index=False, encoding="utf-8")
    return len(records)
