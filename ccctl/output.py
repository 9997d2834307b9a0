"""The only writer of stdout, and of the spreadsheet files ccctl exports.

Rows are dicts with stable snake_case keys; JSON is a list of those objects, CSV has one
header line, tables are for people. Diagnostics never come through here: they go to stderr.

Every cell a spreadsheet may open (CSV on stdout, CSV and xlsx files) passes through
``spreadsheet_cell``: text that a spreadsheet would read as a formula gets a leading ``'``
(OWASP's rule against formula injection), and xlsx cells are always written as text or numbers,
never as formulas. ``spreadsheet_text`` undoes exactly that prefix, so export -> import is
lossless. Tables escape control characters, so stored data cannot drive the operator's terminal.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

FORMATS = ("table", "csv", "json")
EXCEL = (".xlsx", ".xlsm")

# What a spreadsheet reads as the start of a formula (OWASP CSV injection), and our own prefix
# (so that a value which really starts with ' survives the round trip).
_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_PREFIX = "'"
# A plain number carries no formula; "-5" or "+84912345678" stays readable as it is.
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
# What XML 1.0 (so xlsx) cannot hold beyond the controls openpyxl refuses itself.
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")
# C0 (but the newline: tabulate keeps a multi-line cell, e.g. exec's stdout, inside its column),
# DEL and C1 controls, shown as escapes in tables.
_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _needs_prefix(text: str) -> bool:
    if text.startswith(_PREFIX):
        return True
    return text.lstrip(" ").startswith(_TRIGGERS) and not _NUMBER.fullmatch(text)


def spreadsheet_cell(value: Any) -> Any:
    """``value`` made safe for a spreadsheet cell: formula-like text gets a leading ``'``.

    Numbers stay numbers; text starting (after spaces) with ``= + - @``, a tab or a CR, or
    with ``'`` itself, is prefixed with ``'``.
    """
    if isinstance(value, str) and _needs_prefix(value):
        return _PREFIX + value
    return value


def spreadsheet_text(text: str) -> str:
    """The value behind a cell ``spreadsheet_cell`` wrote: exactly its prefix removed."""
    if text.startswith(_PREFIX) and _needs_prefix(text[1:]):
        return text[1:]
    return text


def _cell(value: Any) -> Any:
    """How one value looks in a table or CSV cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def _escape_controls(value: Any) -> Any:
    """Control characters of a table cell as visible escapes (``\\x1b``), never raw; newlines stay."""
    if isinstance(value, str) and _CONTROLS.search(value):
        return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)
    return value


def write_csv(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """CSV with one header line; every cell through ``spreadsheet_cell``."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([spreadsheet_cell(c) for c in columns])
    for row in rows:
        writer.writerow([spreadsheet_cell(v) for v in row])


def emit(
    rows: Iterable[dict[str, Any]],
    fmt: str = "table",
    columns: Sequence[str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Write ``rows`` to ``stream`` (stdout) in ``fmt``; ``columns`` picks and orders keys."""
    out = stream or sys.stdout
    rows = list(rows)
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    if fmt == "json":
        data = [{c: row.get(c) for c in columns} for row in rows]
        # One write: json.dump writes each token separately, ten times slower on big lists.
        out.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
    elif fmt == "csv":
        write_csv(out, columns, ([_cell(row.get(c)) for c in columns] for row in rows))
    elif fmt == "table":
        from tabulate import tabulate

        table = [[_escape_controls(_cell(row.get(c))) for c in columns] for row in rows]
        if table:
            out.write(tabulate(table, headers=list(columns), tablefmt="simple", disable_numparse=True))
            out.write("\n")
    else:
        raise ValueError(f"unknown format {fmt!r}")


def emit_object(data: dict[str, Any], fmt: str = "table", stream: TextIO | None = None) -> None:
    """Write one record: a two-column field/value table, a one-row CSV, or a JSON object."""
    out = stream or sys.stdout
    if fmt == "json":
        out.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
    elif fmt == "csv":
        emit([data], "csv", stream=out)
    else:
        emit([{"field": k, "value": _cell(v)} for k, v in data.items()], "table", ["field", "value"], out)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` only if the block succeeds.

    A failed or interrupted export leaves no half-written file (and keeps an older one whole).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SpreadsheetError(ValueError):
    """A value cannot be stored in a spreadsheet file (e.g. a control character in xlsx)."""


def write_xlsx(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]], sheet: str = "Sheet1") -> None:
    """An xlsx workbook of one sheet: text cells (through ``spreadsheet_cell``) and numbers, no formula.

    Writes ``path`` as given; wrap it in ``atomic_path`` for a file the operator sees.
    """
    from openpyxl import Workbook
    from openpyxl.utils.exceptions import IllegalCharacterError

    book = Workbook()
    ws = book.active
    ws.title = sheet[:31]
    for line, values in enumerate([columns, *rows], start=1):
        for column, value in enumerate(values, start=1):
            if isinstance(value, float) and value != value:
                value = None  # NaN: an empty cell, as pandas writes it
            value = spreadsheet_cell(_cell(value))
            try:
                if isinstance(value, str) and _NOT_XML.search(value):
                    raise IllegalCharacterError(value)
                cell = ws.cell(row=line, column=column, value=value)
            except IllegalCharacterError:
                raise SpreadsheetError(f"row {line}: {str(value)[:40]!r} holds a character xlsx cannot store") from None
            if isinstance(value, str):
                cell.data_type = "s"  # text, whatever it looks like: never a formula
    book.save(path)


def write_file(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]], sheet: str = "Sheet1",
               excel: bool | None = None) -> None:
    """Rows to a CSV or xlsx file (``excel``, else by suffix), all or nothing, every cell spreadsheet-safe."""
    rows = list(rows)
    if excel is None:
        excel = path.suffix.lower() in EXCEL
    with atomic_path(path) as tmp:
        if excel:
            write_xlsx(tmp, columns, rows, sheet)
        else:
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                write_csv(fh, columns, rows)
