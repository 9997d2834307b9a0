"""The feeds' SQL: definitions, history per indicator, unit and day, state and events.

A good pull is stored in one transaction (values, retention, state, events); a failed one
only touches the feed's state and adds its event, so the last good data stay as they were.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ccctl.errors import NotFound, UsageError
from ccctl.feeds.join import Unit
from ccctl.feeds.spec import FeedSpec
from ccctl.registry.db import Database

_STATE = ("created_at", "last_pull_at", "last_ok_at", "last_error", "last_error_at", "etag",
          "last_modified", "cursor", "newest_day", "row_count")


def _spec(row: dict[str, Any]) -> FeedSpec:
    options = json.loads(row["options"])
    return FeedSpec(name=row["name"], source=row["source"], every_s=row["every_s"], format=row["format"],
                    level=row["level"], scheme=row["scheme"], unit_column=row["unit_column"],
                    alerts=tuple(json.loads(row["alerts"])), header_file=options.get("header_file"),
                    timeout_s=options.get("timeout_s", 10.0), keep_days=options.get("keep_days", 400))


def add_feed(db: Database, spec: FeedSpec, replace: bool = False) -> None:
    """Register a feed (``replace``: redefine one, keeping its history)."""
    with db.transaction():
        db.lock("ccctl-feeds")
        exists = db.query("SELECT 1 FROM feeds WHERE name = ?", (spec.name,))
        if exists and not replace:
            raise UsageError(f"feed {spec.name!r} exists (remove it first, or pass --replace)")
        values = (spec.source, spec.every_s, spec.format, spec.level, spec.scheme, spec.unit_column,
                  json.dumps(list(spec.alerts)), spec.options_json())
        if exists:
            db.execute("UPDATE feeds SET source = ?, every_s = ?, format = ?, level = ?, scheme = ?, "
                       "unit_column = ?, alerts = ?, options = ?, etag = NULL, last_modified = NULL, cursor = NULL "
                       "WHERE name = ?", (*values, spec.name))
        else:
            db.execute("INSERT INTO feeds (name, source, every_s, format, level, scheme, unit_column, alerts, "
                       "options, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (spec.name, *values, time.time()))


def get_feed(db: Database, name: str) -> tuple[FeedSpec, dict[str, Any]]:
    """A feed's definition and its state (last pull, last error, cache validators, ...)."""
    rows = db.query_dicts("SELECT * FROM feeds WHERE name = ?", (name,))
    if not rows:
        raise NotFound(f"no feed named {name!r} (ccctl feed list shows them)")
    return _spec(rows[0]), {k: rows[0][k] for k in _STATE}


def list_feeds(db: Database) -> list[tuple[FeedSpec, dict[str, Any]]]:
    """Every feed with its state, by name."""
    return [(_spec(r), {k: r[k] for k in _STATE}) for r in db.query_dicts("SELECT * FROM feeds ORDER BY name")]


def remove_feed(db: Database, name: str) -> int:
    """Remove a feed and its history (its events stay); the number of values dropped."""
    get_feed(db, name)
    with db.transaction():
        db.lock("ccctl-feeds")
        count = db.query("SELECT COUNT(*) FROM feed_values WHERE feed = ?", (name,))[0][0]
        db.execute("DELETE FROM feed_values WHERE feed = ?", (name,))
        db.execute("DELETE FROM feeds WHERE name = ?", (name,))
        db.execute("INSERT INTO feed_events (feed, ts, kind, unit_code, indicator, detail) VALUES (?, ?, ?, ?, ?, ?)",
                   (name, time.time(), "removed", None, None, f"{count} values dropped"))
    return int(count)


def join_units(db: Database, scheme: str, levels: Sequence[str]) -> list[Unit]:
    """The units of ``levels`` in ``scheme``, as the joiner reads them."""
    marks = ", ".join("?" for _ in levels)
    rows = db.query(f"SELECT code, name, full_name, level, province_code, district_code FROM units "
                    f"WHERE scheme = ? AND level IN ({marks})", (scheme, *levels))
    return [Unit._make(r) for r in rows]


def values_on(db: Database, feed: str, indicator: str, day: str) -> dict[str, float]:
    """unit -> value of one indicator on one day."""
    return {u: v for u, v in db.query("SELECT unit_code, value FROM feed_values WHERE feed = ? AND indicator = ? "
                                      "AND day = ?", (feed, indicator, day))}


def day_before(db: Database, feed: str, indicator: str, day: str) -> str | None:
    """The newest stored day of an indicator before ``day``."""
    rows = db.query("SELECT MAX(day) FROM feed_values WHERE feed = ? AND indicator = ? AND day < ?",
                    (feed, indicator, day))
    return rows[0][0] if rows and rows[0][0] else None


def alerted(db: Database, feed: str) -> set[tuple[str, str, str]]:
    """(unit, indicator, detail) of the alerts already raised, so a re-pull raises none twice."""
    return {(u or "", i or "", d) for u, i, d in db.query(
        "SELECT unit_code, indicator, detail FROM feed_events WHERE feed = ? AND kind = 'alert'", (feed,))}


def store_pull(db: Database, feed: str, values: Iterable[tuple[str, str, str, float]], newest_day: str | None,
               keep_days: int, cutoff: str | None, etag: str | None, last_modified: str | None,
               events: Sequence[tuple[str, str | None, str | None, str]], count: int,
               cursor: str | None = None) -> None:
    """Store a good pull in one transaction: values (indicator, unit, day, value), retention,
    the feed's state (cache validators; for a folder, the files read) and its events
    (kind, unit, indicator, detail)."""
    now = time.time()
    with db.transaction():
        db.lock(f"ccctl-feed-{feed}")
        _upsert_values(db, feed, values)
        if cutoff:
            db.execute("DELETE FROM feed_values WHERE feed = ? AND day < ?", (feed, cutoff))
        db.execute("UPDATE feeds SET last_pull_at = ?, last_ok_at = ?, etag = ?, last_modified = ?, cursor = ?, "
                   "newest_day = CASE WHEN newest_day IS NULL OR newest_day < ? THEN ? ELSE newest_day END, "
                   "row_count = ? WHERE name = ?",
                   (now, now, etag, last_modified, cursor, newest_day, newest_day, count, feed))
        add_events(db, feed, events, now)


# A value stored again unchanged is left as it is: a re-pull of the same figures (the usual
# case) rewrites no row and no index entry.
_CONFLICT = ("ON CONFLICT (feed, indicator, unit_code, day) DO UPDATE SET value = excluded.value "
             "WHERE feed_values.value <> excluded.value")


def _upsert_values(db: Database, feed: str, values: Iterable[tuple[str, str, str, float]]) -> None:
    """Insert or update values, inside the pull's transaction. SQLite: one prepared statement
    (fast in process). PostgreSQL: the rows are streamed with COPY (binary) into a temporary
    table dropped at commit, then merged, split at each indicator's newest stored day (one
    index lookup per indicator). Values after it cannot be stored yet: a plain INSERT, no
    lookup and no speculative insertion per row (a new day, the daily case). Values up to it:
    one upsert that leaves unchanged values alone. Writers of a feed hold its lock
    (``store_pull``), so nothing stores a day meanwhile. A failure anywhere rolls the whole
    pull back."""
    if db.dialect != "postgresql":
        db.executemany("INSERT INTO feed_values (feed, indicator, unit_code, day, value) VALUES (?, ?, ?, ?, ?) "
                       + _CONFLICT, [(feed, *row) for row in values])
        return
    with db.transaction():
        db.execute("CREATE TEMPORARY TABLE feed_values_in (indicator TEXT NOT NULL, unit_code TEXT NOT NULL, "
                   "day TEXT NOT NULL, value DOUBLE PRECISION NOT NULL) ON COMMIT DROP")
        db.copy_rows("feed_values_in", ("indicator", "unit_code", "day", "value"), ("text", "text", "text", "float8"),
                     values)
        # Per indicator: the pull's first and last day against the newest stored (one index lookup).
        newest: dict[str, str | None] = {}
        after: list[bool] = []  # per indicator: every day of the pull after the stored ones
        within: list[bool] = []  # per indicator: none after
        for indicator, first, last, stored in db.query(
                "SELECT n.indicator, MIN(n.day), MAX(n.day), (SELECT MAX(f.day) FROM feed_values AS f "
                "WHERE f.feed = ? AND f.indicator = n.indicator) FROM feed_values_in AS n GROUP BY n.indicator",
                (feed,)):
            newest[indicator] = stored
            after.append(stored is None or first > stored)
            within.append(stored is not None and last <= stored)
        insert = ("INSERT INTO feed_values (feed, indicator, unit_code, day, value) "
                  "SELECT ?, n.indicator, n.unit_code, n.day, n.value FROM feed_values_in AS n ")
        if all(after):
            db.execute(insert, (feed,))
        elif all(within):
            db.execute(insert + _CONFLICT, (feed,))
        else:  # some indicators' days on both sides: split row by row at their newest day
            split = "JOIN unnest(?::text[], ?::text[]) AS s (indicator, day) ON s.indicator = n.indicator "
            params = (feed, list(newest), list(newest.values()))
            db.execute(insert + split + "WHERE s.day IS NULL OR n.day > s.day", params)
            db.execute(insert + split + "WHERE n.day <= s.day " + _CONFLICT, params)


def add_events(db: Database, feed: str, events: Sequence[tuple[str, str | None, str | None, str]],
               ts: float | None = None) -> None:
    """Append events (kind, unit, indicator, detail) to the feed's history."""
    when = time.time() if ts is None else ts
    db.executemany("INSERT INTO feed_events (feed, ts, kind, unit_code, indicator, detail) VALUES (?, ?, ?, ?, ?, ?)",
                   [(feed, when, k, u, i, d) for k, u, i, d in events])


def record_failure(db: Database, feed: str, message: str) -> None:
    """A failed pull: the feed's last error and an event; its data are not touched."""
    now = time.time()
    with db.transaction():
        db.execute("UPDATE feeds SET last_pull_at = ?, last_error = ?, last_error_at = ? WHERE name = ?",
                   (now, message, now, feed))
        add_events(db, feed, [("pull_failed", None, None, message)], now)


def record_not_modified(db: Database, feed: str) -> None:
    """A conditional GET answered 304: the data are current as of now."""
    now = time.time()
    db.execute("UPDATE feeds SET last_pull_at = ?, last_ok_at = ? WHERE name = ?", (now, now, feed))


def indicators(db: Database, feed: str) -> list[str]:
    """The indicators a feed has history for. A skip scan (each next indicator by one index
    descent) rather than DISTINCT, which reads every value of the feed: a handful of
    lookups, however long the history."""
    return [r[0] for r in db.query(
        "WITH RECURSIVE found (indicator) AS ("
        "SELECT MIN(indicator) FROM feed_values WHERE feed = ? "
        "UNION ALL SELECT (SELECT MIN(indicator) FROM feed_values WHERE feed = ? AND indicator > found.indicator) "
        "FROM found WHERE found.indicator IS NOT NULL) "
        "SELECT indicator FROM found WHERE indicator IS NOT NULL ORDER BY indicator", (feed, feed))]


def latest_values(db: Database, feed: str, at: str | None = None) -> list[tuple[str, str, str, float]]:
    """(indicator, unit, day, value) of each indicator's newest day on or before ``at``."""
    out: list[tuple[str, str, str, float]] = []
    for indicator in indicators(db, feed):
        sql = "SELECT MAX(day) FROM feed_values WHERE feed = ? AND indicator = ?"
        params: list[Any] = [feed, indicator]
        if at:
            sql += " AND day <= ?"
            params.append(at)
        day = db.query(sql, params)[0][0]
        if day:
            out += [(indicator, u, day, v) for u, v in db.query(
                "SELECT unit_code, value FROM feed_values WHERE feed = ? AND indicator = ? AND day = ?",
                (feed, indicator, day))]
    return out


def series(db: Database, feed: str, indicator: str, since: str | None = None,
           units: Sequence[str] | None = None) -> list[tuple[str, str, float]]:
    """(unit, day, value) of one indicator over time, by unit then day, for sparklines and history."""
    where, params = _series_where(feed, indicator, since, units)
    return [(u, d, v) for u, d, v in db.query(
        f"SELECT unit_code, day, value FROM feed_values AS v WHERE {where} ORDER BY unit_code, day", params)]


# The column of ``units`` naming a unit's place at each level above the commune.
_PLACE = {"province": "province_code", "district": "district_code"}


def series_grouped(db: Database, feed: str, indicator: str, scheme: str, level: str, by: str, worst: bool,
                   since: str | None = None, units: Sequence[str] | None = None) -> list[tuple[str, str, float]]:
    """(place, day, value) of one indicator over time, the feed's ``level`` units summed up to
    their place at level ``by`` (``worst``: the highest value, for risk levels), by place then
    day, grouped by the database. A unit with no such place (unknown to the registry, or a
    2025 commune with no district) stands for itself."""
    where, params = _series_where(feed, indicator, since, units)
    # A lookup of each value's unit by its key rather than a join: the planner cannot pick a
    # scan of every unit per value on a registry whose statistics are not gathered yet.
    place = (f"COALESCE((SELECT u.{_PLACE[by]} FROM units AS u WHERE u.scheme = ? AND u.level = ? "
             "AND u.code = v.unit_code), v.unit_code)")
    return [(g, d, v) for g, d, v in db.query(
        f"SELECT place, day, {'MAX' if worst else 'SUM'}(value) FROM (SELECT {place} AS place, v.day, v.value "
        f"FROM feed_values AS v WHERE {where}) AS placed GROUP BY place, day ORDER BY place, day",
        [scheme, level, *params])]


def _series_where(feed: str, indicator: str, since: str | None, units: Sequence[str] | None) -> tuple[str, list[Any]]:
    where, params = "v.feed = ? AND v.indicator = ?", [feed, indicator]
    if since:
        where += " AND v.day >= ?"
        params.append(since)
    if units:
        where += f" AND v.unit_code IN ({', '.join('?' for _ in units)})"
        params += list(units)
    return where, params


def feed_events(db: Database, feed: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest events, of one feed or all."""
    where, params = ("WHERE feed = ? ", [feed]) if feed else ("", [])
    return db.query_dicts(f"SELECT id, feed, ts, kind, unit_code, indicator, detail FROM feed_events {where}"
                          f"ORDER BY id DESC LIMIT {int(limit)}", params)


def unit_places(db: Database, scheme: str, level: str) -> dict[str, tuple[str, str, str | None]]:
    """code -> (full name, province code, district code) of one level's units."""
    return {c: (n, p, d) for c, n, p, d in db.query(
        "SELECT code, full_name, province_code, district_code FROM units WHERE scheme = ? AND level = ?",
        (scheme, level))}


def unit_names(db: Database, scheme: str, level: str) -> dict[str, str]:
    """code -> short name (``Cà Mau``, without ``Tỉnh``) of one level's units."""
    return {code: name for code, name in db.query(
        "SELECT code, name FROM units WHERE scheme = ? AND level = ?", (scheme, level))}


def site_schemes(db: Database, level: str) -> dict[str, set[str]]:
    """Province (or district) code -> the schemes of the registry's sites placed there."""
    column = {"province": "province_code", "district": "district_code"}[level]
    out: dict[str, set[str]] = {}
    for code, scheme in db.query(f"SELECT DISTINCT {column}, scheme FROM sites WHERE {column} IS NOT NULL"):
        out.setdefault(code, set()).add(scheme)
    return out


def successors_2025(db: Database, level: str) -> dict[str, tuple[str | None, str]]:
    """2021 unit code -> (2025 commune code or None, 2025 province code) through the units map.

    A commune goes to its default successor (else its first); a district or province to the
    2025 province most of its communes went to (the 2025 scheme has no districts). A 2021
    commune the map does not know (merged before 2025) keeps its province's 2025 province,
    with no commune.
    """
    old = {c: (d, p) for c, d, p in db.query(
        "SELECT code, district_code, province_code FROM units WHERE scheme = '2021' AND level = 'commune'")}
    new = {c: p for c, p in db.query("SELECT code, province_code FROM units WHERE scheme = '2025' AND level = 'commune'")}
    first: dict[str, str] = {}
    for code, successor, _ in sorted(db.query("SELECT old_code, new_code, is_default FROM unit_map"),
                                     key=lambda r: (r[0], -r[2], r[1])):
        if code in old and successor in new:
            first.setdefault(code, successor)  # the default successor, else the first
    votes: dict[str, dict[str, dict[str, int]]] = {"district": {}, "province": {}}
    for code, successor in first.items():
        district, province = old[code]
        for lvl, key in (("district", district), ("province", province)):
            if key:
                tally = votes[lvl].setdefault(key, {})
                tally[new[successor]] = tally.get(new[successor], 0) + 1
    moved = {lvl: {k: max(sorted(t), key=lambda c: t[c]) for k, t in v.items()} for lvl, v in votes.items()}
    if level != "commune":
        return {k: (None, p) for k, p in moved[level].items()}
    out: dict[str, tuple[str | None, str]] = {}
    for code, (_, province) in old.items():
        if code in first:
            out[code] = (first[code], new[first[code]])
        elif province in moved["province"]:
            out[code] = (None, moved["province"][province])
    return out
