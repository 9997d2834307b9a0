"""What the dashboard's data panels show, computed once for a console that reads the registry
itself (``ccctl.tui.feeds.RegistryFeed``) and for the server that serves a remote one
(``ccctl.media.dataroutes``): the share ready per province and hour (``ready_trend``, kept
and topped up), the data feeds' newest values, history and events (``ccctl.feeds.views``),
and the meeting on now or next with its latest pre-check's readiness
(``ccctl.meetings.readiness``). Blocking calls on an open registry; plain data out. The
``encode_``/``decode_`` pairs carry the feeds' and the trend's tuple keys through JSON.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ccctl.registry.db import Database

TREND_HOURS = 24  # the overview's sparkline: share ready per hour over the last day
TREND_FILLING = 2  # hours re-read between full reads: a run that started in the last hour still writes
FEED_DAYS = 14  # the data panel's sparklines: each indicator's last two weeks per province
EVENTS_PER_READ = 200  # feed events taken per read: more in one poll interval are summed up by the pulls


MEETING_LOOKBACK_S = 12 * 3600.0  # a live meeting that started longer ago than this is not looked for
MISSED_S = 3600.0  # a planned meeting this long past its time (never started) is no longer "next"
CALLS_SHOWN = 200  # sites to call listed on screen (the total is shown)


def meeting_readiness(db: Database, now: float) -> dict[str, Any] | None:
    """The meeting on now (live or starting), else the next planned one, with the readiness of
    its latest pre-check that ran, as ``ccctl meeting readiness`` computes it
    (``ccctl.meetings.readiness``): ``meeting``, ``check`` (None before the first),
    ``next_check``, ``summary`` (counts), ``calls`` (the sites not ready with whom to call, at
    most ``CALLS_SHOWN``) and ``calls_total``; None when no meeting is on or ahead."""
    from ccctl.meetings import readiness as core
    from ccctl.registry.meetings import checks, list_meetings

    meetings = list_meetings(db, since=now - MEETING_LOOKBACK_S)
    on = [m for m in meetings if m["status"] in ("live", "starting")]
    ahead = [m for m in meetings if m["status"] == "planned" and m["starts_at"] >= now - MISSED_S]
    if not (on or ahead):
        return None
    meeting = (on or ahead)[0]
    history = checks(db, meeting["id"])
    ran = [c for c in history if c["run_id"] is not None]
    pending = [c for c in history if c["status"] in ("due", "running")]
    out: dict[str, Any] = {"meeting": meeting, "check": ran[-1] if ran else None,
                           "next_check": pending[0] if pending else None, "summary": None, "calls": [],
                           "calls_total": 0}
    if ran:
        rows = core.site_readiness(db, meeting["id"], ran[-1]["run_id"])
        calls = core.not_ready(rows)
        out.update(summary=core.summary(rows), calls=calls[:CALLS_SHOWN], calls_total=len(calls))
    return out


def feed_values(db: Database, spec: Any, state: dict[str, Any]) -> dict[str, Any]:
    """One feed's state and newest values for the dashboard, through the core's views.

    ``provinces``: scheme -> province code -> indicator -> (day, value), in each scheme the feed
    can be shown in (a 2021 feed in the 2025 one too, through the units map); ``risk``:
    (scheme, level, code) -> risk level 1-4 at the province and at the feed's own level (the map);
    ``days`` (the last ``FEED_DAYS`` days to the newest) and ``history``: province code ->
    indicator -> one value or None per day, in the feed's own scheme (the sparklines);
    ``names``: scheme -> province code -> name (the panel's chart).
    """
    import datetime as dt

    from ccctl.errors import UnitsMissing, UsageError
    from ccctl.feeds.values import RISK
    from ccctl.feeds.views import history, snapshot
    from ccctl.registry.feeds import unit_names

    provinces: dict[str, dict[str, dict[str, tuple[str, float]]]] = {}
    risk: dict[tuple[str, str, str], float] = {}
    for scheme in ("2021", "2025"):
        for level in dict.fromkeys(("province", spec.level)):
            try:
                rows = snapshot(db, spec.name, by=level, scheme=scheme)
            except (UsageError, UnitsMissing):  # a 2025 feed has no 2021 view; no map loaded
                continue
            for indicator, unit, day, value in rows:
                if level == "province":
                    provinces.setdefault(scheme, {}).setdefault(unit, {})[indicator] = (day, value)
                if indicator == RISK:
                    risk[(scheme, level, unit)] = value
    days: list[str] = []
    series: dict[str, dict[str, list[float | None]]] = {}
    if state["newest_day"]:
        newest = dt.date.fromisoformat(state["newest_day"])
        days = [(newest - dt.timedelta(days=n)).isoformat() for n in range(FEED_DAYS - 1, -1, -1)]
        for indicator in sorted({i for units in provinces.get(spec.scheme, {}).values() for i in units}):
            for unit, points in history(db, spec.name, indicator, by="province", since=days[0]).items():
                by_day = dict(points)
                series.setdefault(unit, {})[indicator] = [by_day.get(d) for d in days]
    names = {scheme: unit_names(db, scheme, "province") for scheme in provinces}
    return {"name": spec.name, "level": spec.level, "scheme": spec.scheme, "provinces": provinces, "risk": risk,
            "days": days, "history": series, "names": names,
            **{k: state[k] for k in ("last_ok_at", "last_error", "last_error_at", "newest_day", "last_pull_at")}}


Trend = dict[tuple[str, str], list[float | None]]


class TrendKeeper:
    """The share ready per province and hour over the last ``hours``, kept between reads: the
    whole window is read when the hour changes; in between only the last ``TREND_FILLING``
    hours are (a country's day of results is a million rows, the last two hours a tenth of
    it), merged into the hours kept from the last full read."""

    def __init__(self) -> None:
        self._kept: tuple[float, int, Trend] | None = None

    def update(self, now: float, hours: int, read: Callable[[int | None], Trend]) -> Trend:
        """``read(last)`` gives ``ready_trend`` of the newest ``last`` hours (None: all of
        them); returns a copy of the merged series (the caller's: ours changes)."""
        end = (now // 3600 + 1) * 3600
        kept = self._kept
        if kept is None or kept[:2] != (end, hours):
            merged = read(None)
        else:
            fresh = read(TREND_FILLING)
            merged = kept[2]
            for key in set(merged) | set(fresh):
                series = merged.setdefault(key, [None] * hours)
                series[-TREND_FILLING:] = fresh.get(key, [None] * hours)[-TREND_FILLING:]
        self._kept = (end, hours, merged)
        return {key: list(series) for key, series in merged.items()}


def encode_trend(trend: Trend) -> list[list[Any]]:
    """The trend as JSON can carry it: [scheme, province, series] rows."""
    return [[scheme, province, series] for (scheme, province), series in sorted(trend.items())]


def decode_trend(rows: list[list[Any]]) -> Trend:
    """The inverse of :func:`encode_trend`."""
    return {(str(scheme), str(province)): list(series) for scheme, province, series in rows}


@dataclass
class FeedsRead:
    """One read of the data feeds: each feed's newest values, and the feed events since the last read."""

    feeds: list[dict[str, Any]]
    events: list[dict[str, Any]]


class FeedValues:
    """Every feed's values (:func:`feed_values`), re-read only when a feed pulled since the last
    read (one small query otherwise); safe to share between threads."""

    def __init__(self) -> None:
        self._cache: tuple[list[tuple[str, Any, Any, Any]], list[dict[str, Any]]] | None = None
        self._lock = threading.Lock()

    def read(self, db: Database) -> list[dict[str, Any]]:
        """The feeds' values now."""
        from ccctl.registry.feeds import list_feeds

        listed = list_feeds(db)
        signature = [(spec.name, state["last_pull_at"], state["last_ok_at"], state["row_count"])
                     for spec, state in listed]
        with self._lock:
            cache = self._cache
        if cache is None or cache[0] != signature:
            cache = (signature, [feed_values(db, spec, state) for spec, state in listed])
            with self._lock:
                self._cache = cache
        return cache[1]


def feed_events_after(db: Database, after: int | None) -> tuple[list[dict[str, Any]], int]:
    """The feed events with an id above ``after``, oldest first, and the id to ask after next
    time; at the first read (``after`` None) the recent alerts and failures, not every past pull."""
    from ccctl.registry.feeds import feed_events

    events = [e for e in reversed(feed_events(db, None, EVENTS_PER_READ)) if after is None or e["id"] > after]
    newest = max((int(e["id"]) for e in events), default=after or 0)
    if after is None:
        events = [e for e in events if e["kind"] != "pull_ok"]
    return events, newest


def encode_feeds(feeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feed values as JSON can carry them (``risk`` keyed by tuples becomes rows)."""
    return [{**feed, "risk": [[*key, level] for key, level in feed["risk"].items()]} for feed in feeds]


def decode_feeds(feeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inverse of :func:`encode_feeds` (and (day, value) pairs back to tuples)."""
    out = []
    for feed in feeds:
        provinces = {scheme: {code: {ind: (pair[0], pair[1]) for ind, pair in values.items()}
                              for code, values in units.items()}
                     for scheme, units in feed["provinces"].items()}
        risk = {(str(scheme), str(level), str(code)): value for scheme, level, code, value in feed["risk"]}
        out.append({**feed, "provinces": provinces, "risk": risk})
    return out
