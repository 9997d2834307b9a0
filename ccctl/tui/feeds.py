"""Where the dashboard's data comes from: the registry (a full read, then results since a
cursor; the share ready per hour; the data feeds' newest indicators; the next meeting's
readiness) and the server's broadcast status. Blocking calls, run by the app's thread workers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ccctl.registry.db import Database

BUSY_TIMEOUT_MS = 2000  # a locked registry shows as such within two seconds, then is retried
TREND_HOURS = 24  # the overview's sparkline: share ready per hour over the last day
T = TypeVar("T")


class RegistryFeed:
    """One registry connection for the dashboard's reads; every call holds its lock, so the
    poll worker and the detail worker never share the connection at the same moment."""

    def __init__(self, url: str) -> None:
        from ccctl.registry.overview import ChangeCursor

        self.url = url
        self.db: Database | None = None
        self.cursor = ChangeCursor()
        self.lock = threading.Lock()

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
        """One read under the lock; a failed one drops the connection for the next call."""
        from ccctl.errors import CcctlError

        with self.lock:
            try:
                return read(self._open())
            except CcctlError:
                self._reopen_next_time()
                raise

    def trend(self, now: float, hours: int = TREND_HOURS) -> dict[tuple[str, str], list[float | None]] | None:
        """Share ready per province and hour over the last ``hours`` (the overview's sparklines)."""
        from ccctl.registry.overview import ready_trend

        return self._read(lambda db: ready_trend(db, now, hours))

    def detail(self, site_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A site's registry record and its last checks."""
        from ccctl.registry.overview import site_history
        from ccctl.registry.sites import get_site, site_record

        with self.lock:
            db = self._open()
            return site_record(get_site(db, site_id)), site_history(db, site_id, 12)

    def close(self) -> None:
        """Close the connection (the app's shutdown)."""
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None


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
