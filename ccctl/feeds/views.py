"""A feed's data as tables: long (unit, day, indicator, value) or wide (one column per
indicator), as of a day, per unit or summed up to district or province (risk levels: the
worst), in the feed's scheme or, for a 2021 feed, in the 2025 one through the units map.
The CLI and the dashboard read the same functions."""

from __future__ import annotations

from typing import Any

from ccctl.errors import UnitsMissing, UsageError
from ccctl.feeds.dates import parse_day
from ccctl.feeds.spec import LEVELS
from ccctl.feeds.values import RISK, show_value
from ccctl.registry import feeds as store
from ccctl.registry.db import Database


def _group(rows: list[tuple[str, str, str, float]], target: dict[str, str]) -> list[tuple[str, str, str, float]]:
    """Values moved to the units ``target`` names, summed (risk levels: the worst)."""
    grouped: dict[tuple[str, str, str], float] = {}
    for indicator, unit, d, value in rows:
        key = (indicator, target.get(unit, unit), d)
        if indicator == RISK:
            grouped[key] = max(grouped.get(key, 0.0), value)
        else:
            grouped[key] = grouped.get(key, 0.0) + value
    return [(i, u, d, v) for (i, u, d), v in grouped.items()]


def target_level(spec_level: str, spec_scheme: str, by: str | None, scheme: str | None) -> tuple[str, str]:
    """The (level, scheme) a feed is shown at, or UsageError when it cannot be."""
    scheme = scheme or spec_scheme
    if scheme != spec_scheme and spec_scheme == "2025":
        raise UsageError("a 2025 feed cannot be shown in the 2021 scheme (communes were merged)")
    level = by or (spec_level if not (scheme == "2025" and spec_level == "district") else "province")
    if level not in LEVELS or LEVELS.index(level) > LEVELS.index(spec_level):
        raise UsageError(f"a {spec_level} feed can be shown --by {', '.join(LEVELS[:LEVELS.index(spec_level) + 1])}")
    if level == "district" and scheme == "2025":
        raise UsageError("the 2025 scheme has no districts")
    return level, scheme


def snapshot(db: Database, feed: str, at: str | None = None, by: str | None = None,
             scheme: str | None = None) -> list[tuple[str, str, str, float]]:
    """(indicator, unit, day, value) of each indicator's newest day on or before ``at``,
    grouped up to level ``by`` and, for a 2021 feed, moved to the 2025 units when ``scheme``
    is 2025 (through the units map)."""
    spec, _ = store.get_feed(db, feed)
    level, target_scheme = target_level(spec.level, spec.scheme, by, scheme)
    day = parse_day(at) if at else None
    rows = store.latest_values(db, feed, day)
    if target_scheme != spec.scheme:
        moved = store.successors_2025(db, spec.level)
        if not moved:
            raise UnitsMissing("the 2021 -> 2025 mapping is not loaded; run: ccctl units load --scheme 2025")
        if level == "commune":  # a commune merged before 2025 is shown under its 2021 code
            return _group(rows, {old: new[0] or f"2021:{old}" for old, new in moved.items()})
        return _group(rows, {old: new[1] for old, new in moved.items()})
    if level == spec.level:
        return rows
    places = store.unit_places(db, spec.scheme, spec.level)
    index = 1 if level == "province" else 2
    return _group(rows, {code: place[index] or code for code, place in places.items()})


def _names(db: Database, feed: str, by: str | None, scheme: str | None = None) -> dict[str, str]:
    spec, _ = store.get_feed(db, feed)
    level, target_scheme = target_level(spec.level, spec.scheme, by, scheme)
    return {c: p[0] for c, p in store.unit_places(db, target_scheme, level).items()}


def long_rows(db: Database, feed: str, at: str | None = None, by: str | None = None,
              scheme: str | None = None) -> list[dict[str, Any]]:
    """One row per unit, day and indicator, in unit then indicator order."""
    names = _names(db, feed, by, scheme)
    rows = sorted(snapshot(db, feed, at, by, scheme), key=lambda r: (r[1], r[0]))
    return [{"unit_code": u, "unit_name": names.get(u, ""), "day": d, "indicator": i, "value": show_value(i, v)}
            for i, u, d, v in rows]


def wide_rows(db: Database, feed: str, at: str | None = None, by: str | None = None,
              scheme: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per unit with a column per indicator, and the column order."""
    names = _names(db, feed, by, scheme)
    data = snapshot(db, feed, at, by, scheme)
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


def indicator_table(db: Database, feed: str, by: str = "province", scheme: str | None = None) -> dict[str, dict[str, float]]:
    """unit -> indicator -> value (newest), for joining beside other per-unit reports."""
    out: dict[str, dict[str, float]] = {}
    for i, u, _, v in snapshot(db, feed, None, by, scheme):
        out.setdefault(u, {})[i] = v
    return out


def history(db: Database, feed: str, indicator: str, by: str | None = None, since: str | None = None,
            units: list[str] | None = None) -> dict[str, list[tuple[str, float]]]:
    """unit -> [(day, value), ...] oldest first for one indicator, summed up to ``by`` (risk
    levels: the worst) by the database: what a sparkline draws. ``units`` are codes at the
    feed's level."""
    spec, _ = store.get_feed(db, feed)
    level, _ = target_level(spec.level, spec.scheme, by, None)
    day = parse_day(since) if since else None
    if level == spec.level:
        rows = store.series(db, feed, indicator, day, units)
    else:
        rows = store.series_grouped(db, feed, indicator, spec.scheme, spec.level, level, indicator == RISK, day, units)
    out: dict[str, list[tuple[str, float]]] = {}
    for unit, d, value in rows:  # by unit then day
        out.setdefault(unit, []).append((d, value))
    return out
