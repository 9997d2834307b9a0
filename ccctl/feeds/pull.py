"""One pull of a feed, all or nothing: fetch, parse, validate, join, then store or keep.

Any failure (the source, its shape, one bad row) stores nothing: the feed keeps its last
good data, records the error and an event, and ``FeedError`` says why in one line (with the
bad rows by line). A good pull stores every value, applies retention and raises alerts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ccctl.errors import FeedError
from ccctl.feeds.alerts import Alert, crossings, parse_alert
from ccctl.feeds.dates import parse_day, today_vn
from ccctl.feeds.fetch import fetch
from ccctl.feeds.join import Unit, UnitJoiner
from ccctl.feeds.parse import parse_document
from ccctl.feeds.spec import LEVELS, FeedSpec, RawRow
from ccctl.feeds.values import RISK, parse_value
from ccctl.registry import feeds as store
from ccctl.registry.db import Database
from ccctl.registry.units import require_scheme

MAX_PROBLEMS = 50
Key = tuple[str, str, str]  # indicator, unit, day
Event = tuple[str, str | None, str | None, str]  # kind, unit, indicator, detail


@dataclass
class PullResult:
    """What a pull did."""

    feed: str
    status: str  # "ok" or "not_modified"
    values: int = 0
    units: int = 0
    newest_day: str | None = None
    alerts: list[str] = field(default_factory=list)


@dataclass
class Checked:
    """Rows validated and joined: the values by key, and each key's first line."""

    values: dict[Key, float] = field(default_factory=dict)
    units: dict[str, Unit] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)


def check_rows(rows: list[RawRow], joiner: UnitJoiner, today: dt.date, several: bool) -> Checked:
    """Validate and join every row; collect each problem with its line (none stored yet)."""
    out = Checked()
    seen: dict[Key, int] = {}
    days: dict[object, str | ValueError] = {}
    default_day = today.isoformat()
    for row in rows:
        where = f"{row.where}: " if several else ""
        unit = joiner.join(row.unit, row.parents)
        if isinstance(unit, str):
            out.problems.append((row.line, where + unit))
            continue
        out.units[unit.code] = unit
        raw_day = row.day if row.day is not None else default_day
        day = days.get(raw_day)
        if day is None:
            try:
                day = parse_day(raw_day, today)
            except ValueError as exc:
                day = exc
            days[raw_day] = day
        if isinstance(day, ValueError):
            out.problems.append((row.line, f"{where}{day}"))
            continue
        for indicator, cell in row.values.items():
            try:
                value = parse_value(indicator, cell)
            except ValueError as exc:
                out.problems.append((row.line, f"{where}{unit.full_name}: {exc}"))
                continue
            if value is None:
                continue
            key = (indicator, unit.code, day)
            if key in out.values and out.values[key] != value:
                out.problems.append((row.line, f"{where}{unit.full_name}: {indicator} on {day} is "
                                               f"{cell} here but {out.values[key]:g} on line {seen[key]}"))
                continue
            out.values[key] = value
            seen.setdefault(key, row.line)
    return out


def _joiner(db: Database, spec: FeedSpec) -> UnitJoiner:
    require_scheme(db, spec.scheme)
    above = [lvl for lvl in LEVELS[:LEVELS.index(spec.level)] if not (spec.scheme == "2025" and lvl == "district")]
    units = store.join_units(db, spec.scheme, [spec.level, *above])
    return UnitJoiner(spec.level, spec.scheme, [u for u in units if u.level == spec.level],
                      [u for u in units if u.level != spec.level])


def _up(unit: Unit, level: str | None) -> str:
    if level == "province":
        return unit.province_code
    if level == "district" and unit.district_code:
        return unit.district_code
    return unit.code


def alert_events(db: Database, spec: FeedSpec, checked: Checked, units: dict[str, Unit]) -> list[Event]:
    """Alerts crossed by the new data on their newest day, not raised before."""
    done = store.alerted(db, spec.name)
    events: list[Event] = []
    for text in spec.alerts:
        alert: Alert = parse_alert(text, spec.level)
        new = [(u, d, v) for (i, u, d), v in checked.values.items() if i == alert.indicator]
        if not new:
            continue
        newest = max(d for _, d, _ in new)
        earlier = [d for _, d, _ in new if d < newest]
        stored_before = store.day_before(db, spec.name, alert.indicator, newest)
        previous = max([*earlier, *([stored_before] if stored_before else [])], default=None)
        series: dict[str, dict[str, float]] = {}
        for day in [d for d in (previous, newest) if d]:
            merged = store.values_on(db, spec.name, alert.indicator, day)
            merged.update({u: v for u, d, v in new if d == day})
            for code, value in merged.items():
                unit = units.get(code)
                group = _up(unit, alert.level) if unit else code
                bucket = series.setdefault(group, {})
                if alert.indicator == RISK:
                    bucket[day] = max(bucket.get(day, 0.0), value)
                else:
                    bucket[day] = bucket.get(day, 0.0) + value
        for group, day, value in crossings(alert, series):
            if day != newest:
                continue
            unit = units.get(group)
            place = unit.full_name if unit and not alert.level else group
            detail = f"{place}: {alert.text()}: {value:g} on {day}"
            if (group, alert.indicator, detail) not in done:
                events.append(("alert", group, alert.indicator, detail))
    return events


async def pull_feed(db: Database, name: str, today: dt.date | None = None,
                    during: Callable[[Path], None] | None = None) -> PullResult:
    """Pull a feed once; FeedError (after recording it) when nothing could be stored."""
    spec, state = store.get_feed(db, name)
    day0 = today or today_vn()

    def fail(reason: str, problems: list[tuple[int, str]] | None = None) -> FeedError:
        store.record_failure(db, name, reason)
        shown = (problems or [])[:MAX_PROBLEMS]
        more = f" (first {MAX_PROBLEMS} listed)" if problems and len(problems) > MAX_PROBLEMS else ""
        return FeedError(f"feed {name}: {reason}{more}; last good data kept", shown)

    joiner = _joiner(db, spec)
    try:
        fetched = await fetch(spec, state["etag"], state["last_modified"], during, state["cursor"])
    except ValueError as exc:
        raise fail(str(exc)) from None
    if fetched.not_modified:
        store.record_not_modified(db, name)
        return PullResult(name, "not_modified", newest_day=state["newest_day"])
    rows: list[RawRow] = []
    for doc in fetched.documents:
        try:
            rows += parse_document(doc, spec)
        except ValueError as exc:
            raise fail(f"{doc.name}: {exc}") from None
    if not rows:
        raise fail("no data rows")
    from_folder = len(fetched.documents) > 1 or fetched.cursor is not None  # name the file in problems
    checked = check_rows(rows, joiner, day0, from_folder)
    if checked.problems:
        first = checked.problems[0]
        raise fail(f"{len(checked.problems)} bad row(s), first on line {first[0]}: {first[1]}", checked.problems)
    units = {u.code: u for u in joiner.by_code.values()}
    events = alert_events(db, spec, checked, units)
    newest = max(d for _, _, d in checked.values)
    cutoff = (dt.date.fromisoformat(newest) - dt.timedelta(days=spec.keep_days)).isoformat()
    values = [(i, u, d, v) for (i, u, d), v in checked.values.items()]
    summary = f"{len(values)} values for {len(checked.units)} units, newest day {newest}"
    store.store_pull(db, name, values, newest, spec.keep_days, cutoff, fetched.etag, fetched.last_modified,
                     [("pull_ok", None, None, summary), *events], len(values), fetched.cursor)
    return PullResult(name, "ok", len(values), len(checked.units), newest, [e[3] for e in events])
