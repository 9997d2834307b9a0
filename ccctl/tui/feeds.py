"""Where the dashboard's data comes from: the registry (a full read, then results since a
cursor; the share ready per hour; the data feeds' newest indicators; the next meeting's
readiness) and the server's broadcast status. Blocking calls, run by the app's thread workers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ccctl.registry.db import Database

BUSY_TIMEOUT_MS = 2000  # a locked registry shows as such within two seconds, then is retried
TREND_HOURS = 24  # the overview's sparkline: share ready per hour over the last day
TREND_FILLING = 2  # hours re-read between full reads: a run that started in the last hour still writes
T = TypeVar("T")
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


@dataclass
class FeedsRead:
    """One read of the data feeds: each feed's newest values, and the feed events since the last read."""

    feeds: list[dict[str, Any]]
    events: list[dict[str, Any]]


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
    from ccctl.registry.feeds import unit_names

    names = {scheme: unit_names(db, scheme, "province") for scheme in provinces}
    return {"name": spec.name, "level": spec.level, "scheme": spec.scheme, "provinces": provinces, "risk": risk,
            "days": days, "history": series, "names": names,
            **{k: state[k] for k in ("last_ok_at", "last_error", "last_error_at", "newest_day", "last_pull_at")}}


class RegistryFeed:
    """One registry connection for the dashboard's reads; every call holds its lock, so the
    poll worker and the detail worker never share the connection at the same moment. The data
    beside readiness (history, feeds, meetings) is read on a second one (``_read``)."""

    def __init__(self, url: str) -> None:
        from ccctl.registry.overview import ChangeCursor

        self.url = url
        self.db: Database | None = None
        self.cursor = ChangeCursor()
        self.lock = threading.Lock()
        self.data_db: Database | None = None  # the data beside readiness, read on a connection of its own
        self.data_lock = threading.Lock()
        self._feeds_cache: tuple[list[tuple[str, Any, Any, Any]], list[dict[str, Any]]] | None = None
        self._events_after: int | None = None  # the newest feed event read
        self._trend: tuple[float, int, dict[tuple[str, str], list[float | None]]] | None = None

    def _open(self) -> Database:
        if self.db is None:
            from ccctl.registry import open_registry

            self.db = open_registry(self.url, BUSY_TIMEOUT_MS)
        return self.db

    def _reopen_next_time(self) -> None:
        """After a failure the connection is dropped, so the next call starts afresh."""
        if self.db is not None:
            try:
                self.db.close()
            finally:
                self.db = None

    def load(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Every site with its latest state, and enabled sites per tier; resets the cursor."""
        from ccctl.errors import CcctlError
        from ccctl.registry.overview import ChangeCursor, latest_run_id, site_states, sites_per_tier

        with self.lock:
            try:
                db = self._open()
                run = latest_run_id(db)
                rows = site_states(db)
                self.cursor = ChangeCursor(run)  # the newest run is read once more: it may be running
                return rows, sites_per_tier(db)
            except CcctlError:
                self._reopen_next_time()
                raise

    def poll(self) -> list[dict[str, Any]]:
        """Results written since the last call."""
        from ccctl.errors import CcctlError
        from ccctl.registry.overview import results_since

        with self.lock:
            try:
                return results_since(self._open(), self.cursor)
            except CcctlError:
                self._reopen_next_time()
                raise

    def _read(self, read: Callable[[Database], T]) -> T:
        """One read of the data beside readiness (history, feeds, meetings), on a connection of
        its own: a read of seconds (a country's commune feed) never holds up the results' poll
        or a site's detail. A failed read drops that connection for the next call."""
        from ccctl.errors import CcctlError

        with self.data_lock:
            try:
                if self.data_db is None:
                    from ccctl.registry import open_registry

                    self.data_db = open_registry(self.url, BUSY_TIMEOUT_MS)
                return read(self.data_db)
            except CcctlError:
                if self.data_db is not None:
                    try:
                        self.data_db.close()
                    finally:
                        self.data_db = None
                raise

    def trend(self, now: float, hours: int = TREND_HOURS) -> dict[tuple[str, str], list[float | None]] | None:
        """Share ready per province and hour over the last ``hours`` (the overview's sparklines).

        The whole window is read when the hour changes; in between only the last
        ``TREND_FILLING`` hours are (a country's day of results is a million rows, the last
        two hours a tenth of it), merged into the hours kept from the last full read.
        """
        from ccctl.registry.overview import ready_trend

        end = (now // 3600 + 1) * 3600

        def read(db: Database) -> dict[tuple[str, str], list[float | None]]:
            kept = self._trend
            if kept is None or kept[:2] != (end, hours):
                merged = ready_trend(db, now, hours)
            else:
                fresh = ready_trend(db, now, hours, last=TREND_FILLING)
                merged = kept[2]
                for key in set(merged) | set(fresh):
                    series = merged.setdefault(key, [None] * hours)
                    series[-TREND_FILLING:] = fresh.get(key, [None] * hours)[-TREND_FILLING:]
            self._trend = (end, hours, merged)
            return {key: list(series) for key, series in merged.items()}  # the app's copy: ours changes

        return self._read(read)

    def feeds(self) -> FeedsRead | None:
        """The data feeds' newest values (re-read only when a feed pulled since the last call)
        and the feed events written since the last call (alerts, failed and good pulls)."""
        from ccctl.registry.feeds import feed_events, list_feeds

        def read(db: Database) -> FeedsRead:
            listed = list_feeds(db)
            signature = [(spec.name, state["last_pull_at"], state["last_ok_at"], state["row_count"])
                         for spec, state in listed]
            if self._feeds_cache is None or self._feeds_cache[0] != signature:
                self._feeds_cache = (signature, [feed_values(db, spec, state) for spec, state in listed])
            first = self._events_after is None
            events = [e for e in reversed(feed_events(db, None, EVENTS_PER_READ))
                      if self._events_after is None or e["id"] > self._events_after]
            if events:
                self._events_after = max(int(e["id"]) for e in events)
            elif first:
                self._events_after = 0
            if first:  # at start: the recent alerts and failures, not every past pull
                events = [e for e in events if e["kind"] != "pull_ok"]
            return FeedsRead(self._feeds_cache[1], events)

        return self._read(read)

    def meeting(self, now: float) -> dict[str, Any] | None:
        """The current or next meeting with its latest pre-check's readiness (``meeting_readiness``)."""
        return self._read(lambda db: meeting_readiness(db, now))

    def detail(self, site_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A site's registry record and its last checks."""
        from ccctl.registry.overview import site_history
        from ccctl.registry.sites import get_site, site_record

        with self.lock:
            db = self._open()
            return site_record(get_site(db, site_id)), site_history(db, site_id, 12)

    def close(self) -> None:
        """Close the connections (the app's shutdown), each once its read in a thread is done."""
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None
        with self.data_lock:
            if self.data_db is not None:
                self.data_db.close()
                self.data_db = None


class RemoteFeed:
    """The same reads from a server the operator's machine does not run (``--server URL``):
    the overview once, then the change stream carries the deltas; a site's detail on demand."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.last_event_id: str | None = None

    def _client(self) -> Any:
        from ccctl.media.client import ControlClient

        return ControlClient.remote(self.base_url, self.token)

    def load(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Every site with its state (``GET /api/overview``), and the stream id to follow from."""
        data = self._client().call("GET", "/api/overview", timeout=30)
        self.last_event_id = data.get("last_event_id")
        return list(data["sites"]), dict(data["expected"])

    def poll(self) -> list[dict[str, Any]]:
        """Nothing: the change stream brings the results."""
        return []

    def detail(self, site_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A site's record and last checks (``GET /api/sites/{site}/detail``)."""
        from urllib.parse import quote

        data = self._client().call("GET", f"/api/sites/{quote(site_id, safe='')}/detail", timeout=10)
        return dict(data["record"]), list(data["history"])

    def trend(self, now: float, hours: int = TREND_HOURS) -> dict[tuple[str, str], list[float | None]] | None:
        """None: the server does not serve the history (the overview shows no sparkline)."""
        return None

    def feeds(self) -> FeedsRead | None:
        """None: the server does not serve the feeds' data yet."""
        return None

    def meeting(self, now: float) -> dict[str, Any] | None:
        """None: the server does not serve the meetings' readiness yet (the app does not ask)."""
        return None

    def close(self) -> None:
        """Nothing held open."""


def control_client(home: Path, listen: str, server_url: str | None, token: str | None) -> Any:
    """The control client of the local server, or of the remote one with the given token."""
    from ccctl.media.client import ControlClient

    if server_url and token:
        return ControlClient.remote(server_url, token)
    return ControlClient(home, listen)


def broadcast_status(home: Path, listen: str, timeout: float = 3.0, server_url: str | None = None,
                     token: str | None = None) -> dict[str, Any]:
    """The server's ``GET /api/broadcast``; ServerDown when it does not answer."""
    return dict(control_client(home, listen, server_url, token).call("GET", "/api/broadcast", timeout=timeout))


class LiveFigures:
    """The live broadcast's figures as the change stream's ``stats`` events give them
    (``ccctl.media.changes``): per connected site (tier, state, kbps, loss over 20 s and its
    quality class, RTT, jitter, the edge serving it), the connected count by class, and the
    edges serving the broadcast (name, up, sites watching, capacity)."""

    def __init__(self) -> None:
        self.sites: dict[str, dict[str, Any]] = {}
        self.classes: dict[str, int] = {}
        self.edges: list[dict[str, Any]] = []

    def apply(self, data: dict[str, Any]) -> set[str]:
        """One stats event (the whole table when ``full``); the sites it changed."""
        changed = set(data.get("sites") or {}) | set(data.get("gone") or [])
        if data.get("full"):
            changed |= set(self.sites)
            self.sites = {}
        self.sites.update(data.get("sites") or {})
        for site in data.get("gone") or []:
            self.sites.pop(site, None)
        self.classes = dict(data.get("classes") or {})
        self.edges = list(data.get("edges") or [])
        return changed

    def clear(self) -> None:
        """Forget everything (the stream ended: the figures would go stale)."""
        self.sites, self.classes, self.edges = {}, {}, []
