"""A feed's data as tables: long (unit, day, indicator, value) or wide (one column per
indicator), as of a day, per unit or summed up to district or province (risk levels: the
worst). The CLI and the dashboard read the same functions."""

from __future__ import annotations

from typing import Any

from ccctl.errors import UsageError
from ccctl.feeds.dates import parse_day
from ccctl.feeds.spec import LEVELS
from ccctl.feeds.values import RISK, show_value
from ccctl.registry import feeds as store
from ccctl.registry.db import Database


def snapshot(db: Database, feed: str, at: str | None = None, by: str | None = None) -> list[tuple[str, str, str, float]]:
    """(indicator, unit, day, value) of each indicator's newest day on or before ``at``,
    grouped up to level ``by`` when given."""
    spec, _ = store.get_feed(db, feed)
    day = parse_day(at) if at else None
    rows = store.latest_values(db, feed, day)
    if not by or by == spec.level:
        return rows
    if by not in LEVELS or LEVELS.index(by) > LEVELS.index(spec.level):
        raise UsageError(f"a {spec.level} feed can be shown --by {', '.join(LEVELS[:LEVELS.index(spec.level) + 1])}")
    if by == "district" and spec.scheme == "2025":
        raise UsageError("the 2025 scheme has no districts")
    places = store.unit_places(db, spec.scheme, spec.level)
    grouped: dict[tuple[str, str, str], float] = {}
    for indicator, unit, d, value in rows:
        place = places.get(unit)
        group = (place[1] if by == "province" else place[2] or unit) if place else unit
        key = (indicator, group, d)
        if indicator == RISK:
            grouped[key] = max(grouped.get(key, 0.0), value)
        else:
            grouped[key] = grouped.get(key, 0.0) + value
    return [(i, u, d, v) for (i, u, d), v in grouped.items()]


def _names(db: Database, feed: str, by: str | None) -> dict[str, str]:
    spec, _ = store.get_feed(db, feed)
    return {c: p[0] for c, p in store.unit_places(db, spec.scheme, by or spec.level).items()}


def long_rows(db: Database, feed: str, at: str | None = None, by: str | None = None) -> list[dict[str, Any]]:
    """One row per unit, day and indicator, in unit then indicator order."""
    names = _names(db, feed, by)
    rows = sorted(snapshot(db, feed, at, by), key=lambda r: (r[1], r[0]))
    return [{"unit_code": u, "unit_name": names.get(u, ""), "day": d, "indicator": i, "value": show_value(i, v)}
            for i, u, d, v in rows]


def wide_rows(db: Database, feed: str, at: str | None = None, by: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per unit with a column per indicator, and the column order."""
    names = _names(db, feed, by)
    data = snapshot(db, feed, at, by)
    indicators = sorted({i for i, *_ in data})
    table: dict[str, dict[str, Any]] = {}
    newest: dict[str, str] = {}
    for i, u, d, v in data:
        row = table.setdefault(u, {"unit_code": u, "unit_name": names.get(u, "")})
        row[i] = show_value(i, v)
        newest[u] = max(newest.get(u, d), d)
    for u, row in table.items():
        row["day"] = newest[u]
    columns = ["unit_code", "unit_name", "day", *indicators]
    return [table[u] for u in sorted(table)], columns


def indicator_table(db: Database, feed: str, by: str = "province") -> dict[str, dict[str, float]]:
    """unit -> indicator -> value (newest), for joining beside other per-unit reports."""
    out: dict[str, dict[str, float]] = {}
    for i, u, _, v in snapshot(db, feed, None, by):
        out.setdefault(u, {})[i] = v
    return out
