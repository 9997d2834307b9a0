"""Meeting reports as an Excel workbook, one sheet per table, with no live formula in any cell.

A site name or reason starting with ``=`` (or ``+ - @``) stays the text it was: every string
cell is written as a string, never as a formula (spreadsheet exports never carry formulas).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        import json

        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def write_workbook(path: Path, sheets: Sequence[tuple[str, Sequence[str], Sequence[dict[str, Any]]]]) -> None:
    """Write ``(title, columns, rows)`` sheets to ``path`` (.xlsx), every string as plain text."""
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)  # type: ignore[arg-type]
    for title, columns, rows in sheets:
        sheet = book.create_sheet(title[:31])
        sheet.append(list(columns))
        for row in rows:
            sheet.append([_value(row.get(c)) for c in columns])
        for line in sheet.iter_rows():
            for cell in line:
                if isinstance(cell.value, str):
                    cell.data_type = "s"  # openpyxl would store "=..." as a formula
    tmp = path.with_name(path.name + ".tmp")
    book.save(tmp)
    tmp.replace(path)
