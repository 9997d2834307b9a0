"""The dashboard app: owns the fleet's state, runs every read in workers that only post
messages, and hands the widgets what to show (attributes down, messages up).

The registry is read in full once, then polled for results since a cursor; the server's
status is polled beside it. Each poll is scheduled again only when the previous one ended,
so polls never pile up behind a slow or locked registry or a dead server. Changes are merged
at once but drawn at most ``REPAINT_S`` apart, so thousands of changes a second cost a few
repaints. The operator's actions (re-check, floor, tier, revoke) live in ``ccctl.tui.actions``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Input, Static
from textual.worker import Worker, WorkerState

from ccctl.reports import SEVERITY, tier_summary
from ccctl.tui import messages as msg
from ccctl.tui.actions import ACTIONS, REGISTRY_ACTIONS, ActionsMixin
from ccctl.tui.commands import run_command
from ccctl.tui.data import DataMixin
from ccctl.tui.feeds import LiveFigures, RegistryFeed, RemoteFeed, broadcast_status
from ccctl.tui.fleet import Fleet
from ccctl.tui.guard import while_shown
from ccctl.tui.keys import LOG_KEYS, SORT_KEYS
from ccctl.tui.screens.help import HelpScreen
from ccctl.tui.screens.main import MainScreen
from ccctl.tui.views import site_columns, unit_columns
from ccctl.tui.widgets.detail import Detail, detail_text
from ccctl.tui.widgets.eventlog import EventLog
from ccctl.tui.widgets.header import Header, broadcast_lines, edges_of
from ccctl.tui.widgets.rowlist import RowList

REPAINT_S = 0.5
POLL_S = 2.0
SERVER_POLL_S = 3.0
FULL_READ_S = 60.0  # sites added or removed show within a minute
WALL_CYCLE_S = 10.0
LOG_PER_BATCH = 50
STREAM_RETRY_S = 2.0  # the change stream is reopened this long after it ended
STREAM_BATCH_S = 0.03  # change-stream events arriving within this are handled (and drawn) together
GC_THRESHOLDS = (700, 10, 100)  # Python's are (700, 10, 10): a full collection a tenth as often
RESORT_S = 3.0  # a site list under a flood of changes is re-filtered and re-sorted this often


class Dashboard(DataMixin, ActionsMixin, App[None]):
    """``ccctl dashboard``: the whole country on one screen."""

    CSS_PATH = str(Path(__file__).with_name("ccctl.tcss"))  # absolute: subclasses live elsewhere
    TITLE = "ccctl dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "go_back", "Back"),
        Binding("slash", "prompt('/')", "Filter"),
        Binding("colon", "prompt(':')", "Command"),
        Binding("question_mark", "help", "Help"),
        Binding("s", "toggle_sites", "Sites"),
        Binding("W", "sort('worst')", "Worst", group=SORT_KEYS),
        Binding("N", "sort('name')", "Name", group=SORT_KEYS),
        Binding("C", "sort('code')", "Code", group=SORT_KEYS),
        Binding("m", "map", "Map"),
        Binding("l", "toggle_log", "Log", group=LOG_KEYS),
        Binding("p", "log_pause", "Pause log", group=LOG_KEYS),
        Binding("e", "log_level", "Log level", group=LOG_KEYS),
        Binding("r", "refresh", "Refresh", show=False),
        *DataMixin.DATA_BINDINGS,
        *ActionsMixin.ACTION_BINDINGS,
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, db_url: str, home: Path, listen: str, *, readonly: bool = False, wall: bool = False,
                 rollcall_options: Any = None, poll_s: float = POLL_S, server_poll_s: float = SERVER_POLL_S,
                 clock: Any = time.time, server_url: str | None = None, token: str | None = None,
                 config_file: str | None = None) -> None:
        super().__init__()
        self.config_file = config_file  # passed on to the ccctl commands the dashboard runs (the shell)
        self.db_url = db_url
        self.home = home
        self.listen = listen
        self.wall = wall
        self.readonly = readonly or wall
        self.rollcall_options = rollcall_options
        self.poll_s = poll_s
        self.server_poll_s = server_poll_s
        self.clock = clock
        self.server_url = server_url.rstrip("/") if server_url else None
        self.token = token
        # A remote console reads everything from the server; the registry is not on this machine.
        self.feed: RegistryFeed | RemoteFeed = RemoteFeed(self.server_url, token or "") if self.server_url \
            else RegistryFeed(db_url)
        self.fleet = Fleet()
        self.loaded = False
        self.registry_state = "loading"
        self.server_status: dict[str, Any] | None = None
        self.expected: dict[str, int] = {}
        self.dirty = False
        self.prompt_mode = ""
        self.last_full = 0.0
        self.details: dict[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]] = {}
        self.recheck_line = ""
        self.last_sorted = 0.0
        self.crumbs = ""
        self.changed_ids: set[str] = set()  # sites changed since the list was last drawn
        self.filter_pending = False  # a keypress of the filter waits to be applied
        self.stream_state = "not connected"
        self.stream_id: str | None = None  # the last change-stream event taken, to resume after
        self.live = LiveFigures()  # the broadcast's live figures, from the stream's stats events
        self._gc_thresholds: tuple[int, ...] | None = None  # the collector's, while the app runs

    # --- layout -------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[Any]:
        return MainScreen()

    def on_ready(self) -> None:
        """The main screen is up: start the polls and the timers."""
        # The widgets, and the sites once read, live as long as the app: moved out of the
        # garbage collector's view, a full collection no longer walks them all (it took
        # 60-340 ms on a loaded machine, the longest stalls of the screen). Site rows hold no
        # cycles, so those of an earlier read are still freed by reference counting. Full
        # collections also run a tenth as often: thousands of changes a second (and the
        # screen's lines) are allocations. Both are undone when the app ends.
        self._gc_thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        self.widget("#header", Header).clock = self.clock
        if self.wall:
            self.add_class("wall")
        self.log_event("dashboard started" + (" (read-only)" if self.readonly else ""))
        self.poll_registry()
        self.poll_server()
        self.start_data()
        if self.server_url is None:  # remote: the stream starts after the overview, from its id
            self.follow_changes()
        self.set_interval(REPAINT_S, self.repaint_if_dirty)
        self.set_interval(1.0, self._tick_header)
        if self.wall:
            self.set_interval(WALL_CYCLE_S, self.wall_cycle)

    def on_unmount(self) -> None:
        self.feed.close()
        if self._gc_thresholds is not None:
            gc.unfreeze()  # what the app froze is collectable again once it ends
            gc.set_threshold(*self._gc_thresholds)

    def watch_app_focus(self, focus: bool) -> None:
        """In a browser (--serve) the page's focus says nothing about a wall screen, and the web
        driver starts the app blurred: it keeps the focus, so the footer keeps its keys."""
        if not focus and self.is_web:
            self.app_focus = True

    @property
    def rowlist(self) -> RowList:
        return self.screen.query_one("#list", RowList) if isinstance(self.screen, MainScreen) else \
            self.get_screen_main().query_one("#list", RowList)

    def get_screen_main(self) -> MainScreen:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                return screen
        raise LookupError("no main screen")

    def widget(self, selector: str, kind: type[Any]) -> Any:
        """A widget of the main screen (which may lie under a modal one)."""
        return self.get_screen_main().query_one(selector, kind)

    def log_event(self, text: str, severity: str = "info") -> None:
        """One line in the event log."""
        self.widget("#log", EventLog).add(text, severity)

    # --- workers: they only post messages ---------------------------------------------------

    @work(thread=True, exclusive=True, group="registry", exit_on_error=False)
    def poll_registry(self) -> None:
        """Read the registry: in full at first and every minute, else results since the cursor."""
        from ccctl.errors import CcctlError

        try:
            if not self.loaded or time.monotonic() - self.last_full >= FULL_READ_S:
                rows, expected = self.feed.load()
                self.post_message(msg.SitesLoaded(rows, expected))
            else:
                self.post_message(msg.ResultsArrived(self.feed.poll(), "registry"))
        except CcctlError as exc:
            self.post_message(msg.RegistryFailed(str(exc)))

    @work(thread=True, exclusive=True, group="server", exit_on_error=False)
    def poll_server(self) -> None:
        """The server's broadcast status, or why it did not answer."""
        from ccctl.errors import CcctlError

        try:
            self.post_message(msg.ServerPolled(broadcast_status(self.home, self.listen, server_url=self.server_url,
                                                                token=self.token)))
        except CcctlError as exc:
            self.post_message(msg.ServerPolled(None, str(exc)))

    @work(thread=True, exclusive=True, group="stream", exit_on_error=False)
    async def follow_changes(self) -> None:
        """The server's change stream: roll-call results and broadcast events as they are
        written, resumed after the last event taken (the registry poll stays as the fallback).

        It runs in a thread with an event loop of its own, so reading the stream and parsing
        its JSON (a stats table of the whole country is ~2 MB) never runs on the screen's loop;
        what arrives within ``STREAM_BATCH_S`` is posted as one message."""
        import asyncio

        from textual.worker import get_current_worker

        from ccctl.errors import CcctlError
        from ccctl.media.changes import follow
        from ccctl.media.client import ServerTrust, local_endpoint
        from ccctl.media.tokens import control_token, load_secret

        worker = get_current_worker()
        pending: list[tuple[str, str, dict[str, Any]]] = []

        def flush() -> None:
            if pending:
                self.post_message(msg.StreamEvents(pending[:]))
                pending.clear()

        async def read() -> None:
            trust: ServerTrust | None = None
            if self.server_url:
                base, token = self.server_url, self.token or ""
            else:  # https with the local server's own certificate pinned when it speaks TLS
                (base, trust), token = local_endpoint(self.home, self.listen), control_token(load_secret(self.home))
            async for event in follow(base, token, self.stream_id, trust=trust):
                pending.append(event)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while not reader.done():  # bounded by the worker's cancellation and the app's end
                await asyncio.wait({reader}, timeout=STREAM_BATCH_S)
                flush()
                if worker.is_cancelled or not self.is_running:
                    reader.cancel()
                    return
            flush()
            reader.result()
            self.post_message(msg.StreamState("ended by the server"))
        except CcctlError as exc:
            self.post_message(msg.StreamState(f"down: {exc}"))
        except asyncio.CancelledError:
            return

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def load_detail(self, site_id: str) -> None:
        """A site's record and history for the detail panel."""
        from ccctl.errors import CcctlError

        try:
            record, history = self.feed.detail(site_id)
            self.post_message(msg.DetailLoaded(site_id, record, history))
        except CcctlError as exc:
            self.post_message(msg.DetailLoaded(site_id, None, [], str(exc)))

    @while_shown
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Schedule the next poll once this one ended, whatever its outcome."""
        worker = event.worker
        if event.state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        if event.state == WorkerState.ERROR:
            self.log_event(f"{worker.group} worker failed: {worker.error!r}", "alert")
        if worker.group == "registry" and event.state != WorkerState.CANCELLED:
            self.set_timer(self.poll_s, self.poll_registry)
        elif worker.group == "server" and event.state != WorkerState.CANCELLED:
            self.set_timer(self.server_poll_s, self.poll_server)
        elif worker.group == "stream" and event.state != WorkerState.CANCELLED:
            self.set_timer(STREAM_RETRY_S, self.follow_changes)

    # --- messages from workers -----------------------------------------------------------

    @while_shown
    def on_sites_loaded(self, message: msg.SitesLoaded) -> None:
        self.fleet.load(message.rows)
        gc.freeze()  # the sites live as long as the app (see on_ready)
        self.expected = message.expected
        self.last_full = time.monotonic()
        first = not self.loaded
        self.loaded = True
        if first and isinstance(self.feed, RemoteFeed):
            self.stream_id = self.feed.last_event_id  # follow from the overview's moment: no gap
            self.follow_changes()
        self._registry_ok()
        if first:
            self.log_event(f"registry read: {len(message.rows):,} sites")
        self.repaint()

    @while_shown
    def on_results_arrived(self, message: msg.ResultsArrived) -> None:
        if message.source == "registry":
            self._registry_ok()
        self.merge(message.results)

    def merge(self, results: list[dict[str, Any]]) -> None:
        """Newer results into the fleet: the event log tells the changes, the list redraws soon."""
        changed = self.fleet.apply(results)
        lines = []
        for site, before in changed[:LOG_PER_BATCH]:  # a flood of changes is summed up, not listed
            severity = "alert" if SEVERITY.get(site["state"], 0) < SEVERITY["DEGRADED"] else "info"
            lines.append((f"{site['id']} {site['name']}: {before} -> {site['state']} {site['reason']}", severity))
        if len(changed) > LOG_PER_BATCH:
            lines.append((f"... and {len(changed) - LOG_PER_BATCH} more state changes", "warn"))
        self.widget("#log", EventLog).add_lines(lines)
        if changed or results:
            self.dirty = True
            self.changed_ids.update(c["site_id"] for c in results)

    @while_shown
    def on_registry_failed(self, message: msg.RegistryFailed) -> None:
        if self.registry_state != message.reason:
            self.log_event(f"registry: {message.reason} (retrying)", "alert")
        self.registry_state = message.reason
        self.widget("#header", Header).show(registry=f"{message.reason} (retrying every {self.poll_s:g} s)")

    def _registry_ok(self) -> None:
        if self.registry_state != "ok":
            if self.registry_state not in ("loading",):
                self.log_event("registry: readable again")
            self.registry_state = "ok"
            self.widget("#header", Header).show(registry="ok")

    @while_shown
    def on_server_polled(self, message: msg.ServerPolled) -> None:
        was_up = self.server_status is not None
        self.server_status = message.status
        header = self.widget("#header", Header)
        if message.status is None:
            if was_up:
                self.log_event(f"server: {message.reason}", "alert")
            header.show(server=f"down: {message.reason}", broadcast=[])
            return
        if not was_up:
            self.log_event("server: answering")
        tiers = tier_summary(message.status.get("sessions", []), self.expected)
        header.show(server="up", broadcast=broadcast_lines(message.status, tiers))
        if self.stream_state != "live":  # the edges from the status poll; the stream's are fuller
            header.show(edges=edges_of(message.status.get("sessions", [])))

    @while_shown
    def on_stream_event(self, message: msg.StreamEvent) -> None:
        self.take_stream([(message.event_id, message.name, message.data)])

    @while_shown
    def on_stream_events(self, message: msg.StreamEvents) -> None:
        self.take_stream(message.events)

    def take_stream(self, events: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Events of the change stream, in order: consecutive roll-call results are merged
        together, and the live figures are shown once for the whole batch."""
        results: list[dict[str, Any]] = []
        live: set[str] = set()
        stats = False
        for event_id, name, data in events:
            if event_id:
                self.stream_id = event_id
            if name == "rollcall":
                results.append(data)
                continue
            if results:
                self.merge(results)
                results = []
            if name == "hello":
                self._stream("live")
            elif name == "reset":  # the server cannot continue from our last event: read all once
                self.log_event("change stream: resumed with a gap; reading the registry in full", "warn")
                self.action_refresh()
            elif name == "broadcast":
                detail = " ".join(f"{k}={v}" for k, v in (data.get("detail") or {}).items())
                self.log_event(f"{data.get('site_id')}: {data.get('kind')} {detail}".rstrip())
            elif name == "stats":
                stats = True
                live |= self.live.apply(data)
        if results:
            self.merge(results)
        if stats:
            self.show_live(live)

    def show_live(self, changed: set[str] | None) -> None:
        """The live figures to the header, and to the detail panel when its site changed (None: any)."""
        self.widget("#header", Header).show(quality=self.live.classes, edges=self.live.edges)
        row = self.rowlist.current()
        if row is not None and (changed is None or row.get("id") in changed):
            self.show_detail()

    @while_shown
    def on_stream_state(self, message: msg.StreamState) -> None:
        self._stream(message.state)

    def _stream(self, state: str) -> None:
        if state != self.stream_state and (state == "live" or self.stream_state == "live"):
            self.log_event(f"change stream: {state}", "info" if state == "live" else "warn")
        self.stream_state = state
        if state != "live" and (self.live.sites or self.live.edges):  # stale without the stream
            self.live.clear()
            self.show_live(None)
        self.widget("#header", Header).show(stream="live" if state == "live" else "polling the registry")

    @while_shown
    def on_detail_loaded(self, message: msg.DetailLoaded) -> None:
        self.details[message.site_id] = (message.record, message.history)
        if message.reason:
            self.log_event(f"{message.site_id}: {message.reason}", "warn")
        self.show_detail()

    # --- drawing -------------------------------------------------------------------------

    @while_shown
    def repaint_if_dirty(self) -> None:
        """The timer's repaint: a site list keeps its order and only redraws the visible lines
        (their rows are the sites themselves, changed in place) unless ``RESORT_S`` passed;
        unit counts are recounted."""
        if not self.dirty:
            return
        if self.fleet.showing_sites() and time.monotonic() - self.last_sorted < RESORT_S:
            self.dirty = False
            fleet = self.fleet
            self.rowlist.refresh_keys(self.changed_ids)
            self.changed_ids = set()
            self.widget("#header", Header).show(counts=fleet.totals(), newest=fleet.newest_check(), now=self.clock())
            self.show_detail()
            return
        self.repaint()

    def repaint(self, keep_cursor: bool = True, reuse: bool = False) -> None:
        """Recount and redraw the list, the header and the breadcrumbs; with ``reuse`` (the
        filter's keypresses, the drill-down), the view's list counted and sorted less than
        ``RESORT_S`` ago is only filtered again, and what changed since is left to the repaint
        timer (at most ``REPAINT_S`` later)."""
        fleet = self.fleet
        rows = fleet.rows(RESORT_S if reuse else 0.0)
        if not fleet.reused:
            self.dirty = False
            self.changed_ids = set()
            self.last_sorted = time.monotonic()
        elif fleet.stale:
            self.dirty = True  # the kept list is recounted and re-sorted by the repaint timer
        is_sites = fleet.showing_sites()
        with self.batch_update():
            self.rowlist.set_rows(rows, site_columns() if is_sites else
                                  unit_columns(fleet.here.level, self.trend_for(fleet.here)),
                                  "id" if is_sites else "code", keep_cursor)
            self.widget("#header", Header).show(counts=fleet.totals(), newest=fleet.newest_check(), now=self.clock())
            query = fleet.query
            parts = [fleet.breadcrumbs()]
            if query.text:
                parts.append(f"filter “{query.text}”")
            if query.states:
                parts.append("state " + ",".join(sorted(query.states)))
            if query.tier:
                parts.append(f"tier {query.tier}")
            parts.append(f"{len(rows):,} rows, sort {fleet.sort}{' reversed' if fleet.reverse else ''}")
            if self.recheck_line:
                parts.append(self.recheck_line)
            crumbs = "  ·  ".join(parts)
            if crumbs != self.crumbs:
                self.crumbs = crumbs
                self.widget("#crumbs", Static).update(crumbs, layout=False)
            self.get_screen_main().set_class(is_sites, "sites")
            self.show_detail()

    @while_shown
    def _tick_header(self) -> None:
        self.widget("#header", Header).redraw(self.clock())

    def show_detail(self) -> None:
        """The detail panel for the site under the cursor (its record loads in a worker)."""
        row = self.rowlist.current()
        panel = self.widget("#detail", Detail)
        if row is None or "level" in row:
            panel.show(None)
            return
        site = self.fleet.sites.get(row["id"], row)
        record, history = self.details.get(site["id"], (None, []))
        sessions = (self.server_status or {}).get("sessions", [])
        session = next((s for s in sessions if s.get("site_id") == site["id"]), None)
        panel.show(detail_text(site, record, history, session, self.live.sites.get(site["id"])))

    @while_shown
    def on_row_list_highlighted(self, message: RowList.Highlighted) -> None:
        row = message.row
        if row is not None and "level" not in row and self.fleet.showing_sites():
            if row["id"] not in self.details:
                self.load_detail(row["id"])
            self.show_detail()

    @while_shown
    def on_row_list_chosen(self, message: RowList.Chosen) -> None:
        if self.fleet.enter(message.row):
            self.repaint(keep_cursor=False, reuse=True)
        else:
            self.details.pop(message.row["id"], None)  # Enter on a site: read its detail afresh
            self.load_detail(message.row["id"])

    # --- navigation ----------------------------------------------------------------------

    def action_go_back(self) -> None:
        """Esc: close the prompt, else one step back along the breadcrumbs."""
        if self.prompt_mode:
            self.close_prompt(cancel=True)
            return
        if self.fleet.back():
            self.repaint(keep_cursor=False, reuse=True)

    def action_toggle_sites(self) -> None:
        """The sites under this place, or its units again."""
        if self.fleet.here.level == "commune":
            return
        self.fleet.flat = not self.fleet.flat
        self.repaint(keep_cursor=False)

    def action_sort(self, key: str) -> None:
        """Sort by ``key``; again to reverse."""
        self.fleet.set_sort(key)
        self.repaint()

    def action_toggle_log(self) -> None:
        """Show or hide the event log."""
        self.get_screen_main().toggle_class("log-open")

    def _open_log(self) -> EventLog:
        self.get_screen_main().add_class("log-open")
        log: EventLog = self.widget("#log", EventLog)
        return log

    def action_log_pause(self, pause: bool | None = None) -> None:
        """Pause the event log (it stays put and counts new lines) or follow it again."""
        log = self._open_log()
        if pause is None or pause != log.paused:
            log.toggle_pause()
        self.status("event log paused: new lines are counted, not shown (p follows)" if log.paused
                    else "event log follows the newest line")

    def action_log_level(self, level: str | None = None) -> None:
        """Show the event log's lines from a severity up (info, warning, error); none: the next."""
        level = self._open_log().set_level(level)
        shown = {"info": "every line", "warning": "warnings and errors", "error": "errors only"}[level]
        self.status(f"event log: {shown}")

    def action_refresh(self) -> None:
        """Read the registry in full now."""
        self.last_full = 0.0
        self.poll_registry()

    def action_help(self) -> None:
        """The keys and commands."""
        self.push_screen(HelpScreen(self.readonly))

    def action_map(self) -> None:
        """The map of every commune, coloured by state."""
        from ccctl.tui.screens.map import MapScreen

        self.push_screen(MapScreen(self.fleet))

    @while_shown
    def wall_cycle(self) -> None:
        """``--wall``: show the next province with sites down, in turn."""
        fleet = self.fleet
        provinces = [r for r in fleet.units_under(fleet.path[0]) if r["down"]]
        provinces.sort(key=lambda r: (r["ready_pct"], r["scheme"], r["code"]))
        if not provinces:
            fleet.path = fleet.path[:1]
        else:
            current = fleet.here.code if fleet.here.level == "province" else None
            codes = [(p["scheme"], p["code"]) for p in provinces]
            at = codes.index((fleet.here.scheme, current)) + 1 if (fleet.here.scheme, current) in codes else 0
            target = provinces[at % len(provinces)]
            fleet.path = fleet.path[:1]
            fleet.enter(target)
        self.repaint(keep_cursor=False)

    # --- the prompt: / filter and : commands ---------------------------------------------------

    def action_prompt(self, mode: str) -> None:
        """Open the filter (``/``) or command (``:``) prompt."""
        prompt = self.widget("#prompt", Input)
        self.prompt_mode = mode
        prompt.placeholder = "filter (diacritics folded; ! inverts)" if mode == "/" else \
            "command: prov 96, state UNREACHABLE, tier audio, sites, top, help"
        prompt.value = self.fleet.query.text if mode == "/" else ""
        self.get_screen_main().add_class("prompting")
        prompt.focus()

    def close_prompt(self, cancel: bool = False) -> None:
        """Hide the prompt; a cancelled filter is cleared."""
        if self.prompt_mode == "/" and cancel:
            self.fleet.query.text = ""
            self.repaint()
        self.prompt_mode = ""
        self.get_screen_main().remove_class("prompting")
        self.rowlist.focus()

    @while_shown
    def on_input_changed(self, event: Input.Changed) -> None:
        """The filter follows the typing; keys already queued are taken first, so a burst of
        them filters once (the filter runs after the messages waiting now)."""
        if self.prompt_mode == "/":
            self.fleet.query.text = event.value
            if not self.filter_pending:
                self.filter_pending = True
                self.call_later(self._filter_now)

    @while_shown
    def _filter_now(self) -> None:
        self.filter_pending = False
        self.repaint(keep_cursor=False, reuse=True)

    @while_shown
    def on_input_submitted(self, event: Input.Submitted) -> None:
        mode = self.prompt_mode
        self.close_prompt()
        if mode == ":":
            self.status(run_command(self, event.value))

    def status(self, line: str) -> None:
        """One line of feedback under the list."""
        self.widget("#status", Static).update(line, layout=False)

    # --- palette -------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Sites or units", "Toggle the flat site list", self.action_toggle_sites)
        yield SystemCommand("Map", "Every commune coloured by state", self.action_map)
        yield SystemCommand("Event log", "Show or hide the event log", self.action_toggle_log)
        yield SystemCommand("Pause / follow the event log", "Stay put and count new lines, or follow again",
                            self.action_log_pause)
        yield SystemCommand("Event log severity", "Every line, warnings and errors, errors only (in turn)",
                            self.action_log_level)
        yield SystemCommand("Refresh", "Read the registry in full now", self.action_refresh)
        yield from self.data_commands()
        if not self.readonly:
            yield from (c for c in self.action_commands() if self.check_action(c.callback.__name__[7:], ()))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """In read-only mode the actions do not exist: no key, no footer entry."""
        if self.readonly and action in ACTIONS:
            return False
        if self.server_url and action in REGISTRY_ACTIONS:  # they write the registry, not here
            return False
        if action == "shell" and not (self._driver is not None and self._driver.can_suspend):
            return False  # no terminal to hand over: a browser (--serve), a headless run
        return True
