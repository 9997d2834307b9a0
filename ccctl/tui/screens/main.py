"""The main screen: header, breadcrumbs, the list (units or sites), the detail panel, the
event log, the filter/command prompt and the footer. It lays out; the app owns the state."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Static

from ccctl.tui.widgets.datapanel import DataPanel
from ccctl.tui.widgets.detail import Detail
from ccctl.tui.widgets.eventlog import EventLog
from ccctl.tui.widgets.footer import KeyFooter
from ccctl.tui.widgets.header import Header
from ccctl.tui.widgets.prompt import Prompt
from ccctl.tui.widgets.readiness import ReadinessPanel
from ccctl.tui.widgets.rowlist import RowList


class MainScreen(Screen[None]):
    """Everything on one screen; the map and help are screens of their own."""

    def compose(self) -> ComposeResult:
        yield Header(id="header")
        yield Static("", id="crumbs")
        with Horizontal(id="body"):
            yield RowList(id="list")
            yield Detail("", id="detail")
            yield DataPanel(id="data")
        yield ReadinessPanel(id="meeting")
        yield EventLog(id="log")
        yield Static("", id="status")
        yield Prompt(id="prompt")
        yield KeyFooter()  # every key fits at 160 columns; a new set of keys repaints one line

    def on_mount(self) -> None:
        self.query_one("#list", RowList).focus()
