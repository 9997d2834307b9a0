"""Where the dashboard's data comes from: the registry (a full read, then results since a
cursor; the share ready per hour; the data feeds' newest indicators; the next meeting's
readiness) and the server's broadcast status. Blocking calls, run by the app's thread workers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ccctl.media.paneldata import (  # noqa: F401 - meeting_readiness: named here as the dashboard knows it
    TREND_HOURS,
    FeedsRead,
    FeedValues,
    TrendKeeper,
    feed_events_after,
    meeting_readiness,
)
from ccctl.registry.db import Database

BUSY_TIMEOUT_MS = 2000  # a locked registry shows as such within two seconds, then is retried
T = TypeVar("T")


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
        self._feeds = FeedValues()
        self._events_after: int | None = None  # the newest feed event read
        self._trend = TrendKeeper()

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
        """Share ready per province and hour over the last ``hours`` (the overview's sparklines),
        the last hours topped up between full reads (``TrendKeeper``)."""
        from ccctl.registry.overview import ready_trend

        return self._read(lambda db: self._trend.update(now, hours, lambda last: ready_trend(db, now, hours, last=last)))

    def feeds(self) -> FeedsRead | None:
        """The data feeds' newest values (re-read only when a feed pulled since the last call)
        and the feed events written since the last call (alerts, failed and good pulls)."""
        def read(db: Database) -> FeedsRead:
            values = self._feeds.read(db)
            events, self._events_after = feed_events_after(db, self._events_after)
            return FeedsRead(values, events)

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
    the overview once, then the change stream carries the deltas; a site's detail on demand;
    the panels' data (sparklines, feeds, meeting) from the server's data routes
    (``ccctl.media.dataroutes``), built on the same core as the local reads. A server too old
    to have them answers 404: the panel then says it is not served (None), as before."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.last_event_id: str | None = None
        self._trend = TrendKeeper()
        self._events_after: int | None = None
        self.unserved: set[str] = set()  # the panels' reads the server answered 404 (an older server)

    def _client(self) -> Any:
        from ccctl.media.client import ControlClient

        return ControlClient.remote(self.base_url, self.token)

    def _get(self, kind: str, path: str, timeout: float) -> Any:
        """One GET of a panel's data; None when the server does not serve ``path`` (404, kept
        in ``unserved`` under ``kind``)."""
        from ccctl.errors import NotFound

        try:
            data = self._client().call("GET", path, timeout=timeout)
        except NotFound:
            self.unserved.add(kind)
            return None
        self.unserved.discard(kind)
        return data

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
        """Share ready per province and hour (``GET /api/data/trend``), the last hours topped
        up between full reads as the local console does; None: not served."""
        from ccctl.media.paneldata import decode_trend

        served = True

        def read(last: int | None) -> dict[tuple[str, str], list[float | None]]:
            nonlocal served
            data = self._get("trend", f"/api/data/trend?now={now!r}&hours={int(hours)}" + (f"&last={last}" if last else ""), 30)
            served = data is not None
            return decode_trend(data["trend"]) if data is not None else {}

        trend = self._trend.update(now, hours, read)
        if not served:
            self._trend = TrendKeeper()
            return None
        return trend

    def feeds(self) -> FeedsRead | None:
        """The feeds' newest values and the feed events since the last call
        (``GET /api/data/feeds``); None: not served."""
        from ccctl.media.paneldata import decode_feeds

        after = "" if self._events_after is None else f"?after={self._events_after}"
        data = self._get("feeds", f"/api/data/feeds{after}", 60)
        if data is None:
            return None
        self._events_after = int(data["after"])
        return FeedsRead(decode_feeds(data["feeds"]), list(data["events"]))

    def meeting(self, now: float) -> dict[str, Any] | None:
        """The current or next meeting and its latest pre-check (``GET /api/data/meeting``)."""
        data = self._get("meeting", f"/api/data/meeting?now={now!r}", 30)
        return None if data is None else data.get("meeting")

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
    """The server's ``GET /api/broadcast`` of its highest-level live broadcast (the one its
    ``/healthz`` names: with several live, the centre's over a province's), or its answer that
    nothing is live; ServerDown when it does not answer."""
    from ccctl.errors import NotFound

    client = control_client(home, listen, server_url, token)
    top = client.call("GET", "/healthz", timeout=timeout).get("broadcast")
    if top is not None:
        try:
            status = dict(client.call("GET", f"/api/broadcast?broadcast={int(top)}", timeout=timeout))
        except NotFound:  # it ended between the two calls: what is live now
            pass
        else:
            status["others"] = other_broadcasts(client, status, timeout)
            return status
    return dict(client.call("GET", "/api/broadcast", timeout=timeout))


def other_broadcasts(client: Any, status: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """The live broadcasts other than ``status``'s (its ``live_ids``): id, title and level of
    each, highest level first; one that ended meanwhile is left out."""
    from ccctl.errors import NotFound
    from ccctl.registry.broadcasts import LEVELS

    others = []
    for bid in status.get("live_ids") or []:
        if bid == status.get("id"):
            continue
        try:
            other = client.call("GET", f"/api/broadcast?broadcast={int(bid)}", timeout=timeout)
        except NotFound:
            continue
        others.append({"id": other.get("id", bid), "title": other.get("title") or "", "level": other.get("level")})
    order = {level: i for i, level in enumerate(LEVELS)}  # the server's names, widest first
    return sorted(others, key=lambda o: (order.get(o["level"], len(LEVELS)), o["id"]))


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
