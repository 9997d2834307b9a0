"""The only writer of stdout: rows of data as a table (tabulate), CSV or JSON.

Rows are dicts with stable snake_case keys; JSON is a list of those objects, CSV has one
header line, tables are for people. Diagnostics never come through here: they go to stderr.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

FORMATS = ("table", "csv", "json")


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
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    elif fmt == "table":
        from tabulate import tabulate

        table = [[_cell(row.get(c)) for c in columns] for row in rows]
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
