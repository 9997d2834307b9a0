"""Numbered records named on the command line: a number, ``latest`` (or nothing), ``previous``."""

from __future__ import annotations

from ccctl.errors import NotFound
from ccctl.registry.db import Database

TABLES = ("rollcall_runs", "broadcasts")


def resolve_ref(db: Database, table: str, ref: str | int | None, noun: str) -> int:
    """The id ``ref`` names in ``table`` (one of TABLES); NotFound, naming ``noun``, if none."""
    if table not in TABLES:  # table names cannot be parameters: only ours
        raise ValueError(f"not a numbered table: {table}")
    if ref in (None, "latest", "previous"):
        offset = 1 if ref == "previous" else 0
        rows = db.query(f"SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?", (offset,))
        if not rows:
            raise NotFound(f"there is no {'previous ' if offset else ''}{noun} yet")
        return int(rows[0][0])
    try:
        number = int(ref)
    except ValueError:
        raise NotFound(f"no {noun} {ref!r} (give a number, latest or previous)") from None
    if not db.query(f"SELECT 1 FROM {table} WHERE id = ?", (number,)):
        raise NotFound(f"no {noun} {number}")
    return number
