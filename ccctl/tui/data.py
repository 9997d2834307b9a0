"""The data beside readiness on the dashboard: the share ready per province over the last hours
(the overview's sparklines), the data feeds' newest indicators (``i``), and the meeting on now
or next with its latest pre-check's readiness and whom to call (``M``).

Each is read by a thread worker of its own (through ``ccctl.tui.feeds``) that only posts a
message; the handler keeps the data, redraws, and schedules the next read once this one has
ended, so a slow registry never piles reads up. A read that fails is logged once and retried.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import SystemCommand
from textual.binding import Binding
from textual.message import Message

from ccctl.tui.guard import while_shown
from ccctl.tui.keys import PANEL_KEYS
from ccctl.tui.widgets.datapanel import DataPanel, Province, data_text
from ccctl.tui.widgets.eventlog import EventLog
from ccctl.tui.widgets.readiness import ReadinessPanel, readiness_text

if TYPE_CHECKING:
    from ccctl.tui.app import Dashboard
    from ccctl.tui.feeds import FeedsRead
    from ccctl.tui.fleet import Place
    from ccctl.tui.widgets.rowlist import RowList

TREND_S = 60.0  # the sparklines' hourly buckets: a minute's delay is plenty
FEEDS_S = 15.0  # feeds pull every few minutes; unchanged feeds cost one small query per read
MEETING_S = 10.0  # a pre-check's report shows within seconds of its end
FEED_EVENT_SEVERITY = {"alert": "alert", "pull_failed": "warn"}


class DataRead(Message):
    """One read of the data workers: ``kind`` (trend, feeds, meeting), its ``data`` or why it failed."""

    def __init__(self, kind: str, data: Any, error: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.data = data
        self.error = error


class DataMixin:
    """The data workers and their handlers, for the Dashboard app."""

    DATA_BINDINGS = [
        Binding("i", "toggle_data", "Data", group=PANEL_KEYS),
        Binding("M", "toggle_meeting", "Meeting", group=PANEL_KEYS),
    ]
    trend: dict[tuple[str, str], list[float | None]] | None = None
    feed_data: list[dict[str, Any]] | None = None
    meeting_read: dict[str, Any] | None = None
    meeting_loaded = False
    risk_map: dict[tuple[str, str, str], float]
    data_errors: dict[str, str]

    def start_data(self: Dashboard) -> None:  # type: ignore[misc]
        """The first reads (the app's ``on_ready``); each schedules the next itself."""
        self.data_errors = {}
        self.risk_map = {}
        self.read_trend()
        self.read_feeds()
        self.read_meeting()
        self.set_interval(1.0, self.show_meeting)  # "in 12 min" moves on between reads
        if self.wall:  # the room's wall screen has no keyboard: the data beside readiness from the start
            self.get_screen_main().add_class("data-open")

    def _unserved(self: Dashboard, kind: str) -> bool:  # type: ignore[misc]
        """Whether the remote server does not serve this panel's data (an older server)."""
        from ccctl.tui.feeds import RemoteFeed

        return isinstance(self.feed, RemoteFeed) and kind in self.feed.unserved

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

    @work(thread=True, exclusive=True, group="feeds", exit_on_error=False)
    def read_feeds(self: Dashboard) -> None:  # type: ignore[misc]
        """The data feeds' newest values and new events (``ccctl.feeds.views``)."""
        self._read("feeds", self.feed.feeds)

    @work(thread=True, exclusive=True, group="meeting", exit_on_error=False)
    def read_meeting(self: Dashboard) -> None:  # type: ignore[misc]
        """The meeting on now or next and its latest pre-check (``ccctl.meetings.readiness``)."""
        self._read("meeting", lambda: self.feed.meeting(self.clock()))

    def data_commands(self: Dashboard) -> Iterable[SystemCommand]:  # type: ignore[misc]
        """The palette's entries for the panels."""
        yield SystemCommand("Data feeds", "The feeds' newest indicators for the selection (i)", self.action_toggle_data)
        yield SystemCommand("Meeting", "The next meeting's pre-check and whom to call (M)", self.action_toggle_meeting)

    # --- the meeting ------------------------------------------------------------------------

    def action_toggle_meeting(self: Dashboard) -> None:  # type: ignore[misc]
        """Show or hide the meeting panel."""
        self.get_screen_main().toggle_class("meeting-open")
        self.show_meeting()

    @while_shown
    def show_meeting(self: Dashboard) -> None:  # type: ignore[misc]
        """Redraw the meeting panel (only while it is open)."""
        if self.get_screen_main().has_class("meeting-open"):
            self.widget("#meeting", ReadinessPanel).show(
                readiness_text(self.meeting_read, self.clock(), remote=self._unserved("meeting"),
                               loaded=self.meeting_loaded))

    # --- the data feeds ---------------------------------------------------------------------

    def action_toggle_data(self: Dashboard) -> None:  # type: ignore[misc]
        """Show or hide the data panel."""
        self.get_screen_main().toggle_class("data-open")
        self.show_data()

    def selected_province(self: Dashboard) -> Province | None:  # type: ignore[misc]
        """The province the operator stands in, else the one under the cursor (a province row
        or a site's), else None (the country)."""
        here = next((p for p in reversed(self.fleet.path) if p.level == "province"), None)
        if here is not None:
            return (str(here.scheme), str(here.code), here.name)
        row = self.rowlist.current()
        if row is None:
            return None
        if row.get("level") == "province":
            return (row["scheme"], row["code"], row["name"])
        if "level" not in row:
            return (row["scheme"], row["province_code"], row["province_name"] or row["province_code"])
        return None

    def show_data(self: Dashboard) -> None:  # type: ignore[misc]
        """Redraw the data panel for the selection (only while it is open)."""
        if not self.get_screen_main().has_class("data-open"):
            return
        self.widget("#data", DataPanel).show(data_text(self.feed_data, self.selected_province(), self.clock(),
                                                       remote=self._unserved("feeds")))

    def site_risk(self, site: dict[str, Any]) -> float | None:
        """The worst risk level the feeds give a site's unit: its commune's, else its district's,
        else its province's (the map's risk colouring)."""
        scheme = site["scheme"]
        for key in ((scheme, "commune", site["unit_code"]), (scheme, "district", site.get("district_code") or ""),
                    (scheme, "province", site["province_code"])):
            level = self.risk_map.get(key)
            if level is not None:
                return level
        return None

    def _took_feeds(self: Dashboard, read: FeedsRead | None) -> None:  # type: ignore[misc]
        if read is None:  # a remote server that does not serve it
            self.show_data()
            return
        self.feed_data = read.feeds
        merged: dict[tuple[str, str, str], float] = {}
        for feed in read.feeds:
            for key, level in feed["risk"].items():
                merged[key] = max(merged.get(key, 0.0), level)
        self.risk_map = merged
        log = self.widget("#log", EventLog)
        for event in read.events:
            kind = event["kind"]
            detail = event["detail"]
            what = detail if kind == "alert" else f"pull failed: {detail}" if kind == "pull_failed" else \
                f"{kind.replace('_', ' ')}: {detail}"
            log.add(f"feed {event['feed']}: {what}", FEED_EVENT_SEVERITY.get(kind, "info"), when=event["ts"])
        self.show_data()

    @while_shown
    def on_row_list_highlighted(self: Dashboard, message: RowList.Highlighted) -> None:  # type: ignore[misc]
        """The selection moved: the data panel follows it."""
        self.show_data()

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
        if message.kind == "feeds":
            if not message.error:
                self._took_feeds(message.data)
                if message.data is None:
                    return
            self.set_timer(FEEDS_S, self.read_feeds)
        if message.kind == "meeting":
            if not message.error:
                self.meeting_read = message.data
                self.meeting_loaded = True
                self.show_meeting()
                if self._unserved("meeting"):
                    return  # a remote server without it: nothing to poll
            self.set_timer(MEETING_S, self.read_meeting)
        if message.kind == "trend":
            if not message.error:
                self.trend = message.data
                if self.fleet.here.level == "country" and self.loaded:
                    self.repaint()
            if not message.error and message.data is None:
                return  # a remote server that does not serve it: nothing to poll
            self.set_timer(TREND_S, self.read_trend)
