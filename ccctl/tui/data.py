"""The data beside readiness on the dashboard: the share ready per province over the last hours
(the overview's sparklines), the data feeds' newest indicators (``i``), and the next meeting's
pre-check readiness (``M``).

Each is read by a thread worker of its own (through ``ccctl.tui.feeds``) that only posts a
message; the handler keeps the data, redraws, and schedules the next read once this one has
ended, so a slow registry never piles reads up. A read that fails is logged once and retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import work
from textual.message import Message

from ccctl.tui.guard import while_shown

if TYPE_CHECKING:
    from ccctl.tui.app import Dashboard
    from ccctl.tui.fleet import Place

TREND_S = 60.0  # the sparklines' hourly buckets: a minute's delay is plenty


class DataRead(Message):
    """One read of the data workers: ``kind`` (trend, feeds, meeting), its ``data`` or why it failed."""

    def __init__(self, kind: str, data: Any, error: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.data = data
        self.error = error


class DataMixin:
    """The data workers and their handlers, for the Dashboard app."""

    trend: dict[tuple[str, str], list[float | None]] | None = None
    data_errors: dict[str, str]

    def start_data(self: Dashboard) -> None:  # type: ignore[misc]
        """The first reads (the app's ``on_ready``); each schedules the next itself."""
        self.data_errors = {}
        self.read_trend()

    def trend_for(self, place: Place) -> dict[tuple[str, str], list[float | None]] | None:
        """The sparklines to show under ``place``: the provinces' at the country, else none."""
        if place.level != "country" or self.trend is None:
            return None
        return self.trend

    def _read(self: Dashboard, kind: str, read: Any) -> None:  # type: ignore[misc]
        try:
            self.post_message(DataRead(kind, read()))
        except Exception as exc:  # noqa: BLE001 - any failure is shown and the read retried
            from ccctl.errors import CcctlError

            self.post_message(DataRead(kind, None, str(exc) if isinstance(exc, CcctlError) else repr(exc)))

    @work(thread=True, exclusive=True, group="trend", exit_on_error=False)
    def read_trend(self: Dashboard) -> None:  # type: ignore[misc]
        """Share ready per province and hour (``ccctl.registry.overview.ready_trend``)."""
        self._read("trend", lambda: self.feed.trend(self.clock()))

    @while_shown
    def on_data_read(self: Dashboard, message: DataRead) -> None:  # type: ignore[misc]
        """Keep what was read, redraw what shows it, schedule the next read."""
        before = self.data_errors.get(message.kind, "")
        if message.error:
            if message.error != before:
                self.log_event(f"{message.kind}: {message.error} (retrying)", "warn")
            self.data_errors[message.kind] = message.error
        else:
            if before:
                self.log_event(f"{message.kind}: readable again")
            self.data_errors.pop(message.kind, None)
        if message.kind == "trend":
            if not message.error:
                self.trend = message.data
                if self.fleet.here.level == "country" and self.loaded:
                    self.repaint()
            if not message.error and message.data is None:
                return  # a remote console: the server does not serve it, nothing to poll
            self.set_timer(TREND_S, self.read_trend)
