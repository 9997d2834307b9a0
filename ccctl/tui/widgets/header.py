"""The header: counts by state, the data's age, the registry and the server, the broadcast."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.widgets import Static

from ccctl.reports import STATES
from ccctl.tui.style import STATE_STYLES


def age_text(seconds: float | None) -> str:
    """``12 s``, ``4 min``, ``3 h`` or ``never``."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


class Header(Static):
    """Two lines of figures the app hands over; redrawn each second for the data's age."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.counts: dict[str, int] = {}
        self.newest: float | None = None
        self.registry = "loading"
        self.server = "not polled yet"
        self.broadcast: list[str] = []
        self.stream = "polling the registry"
        self.last: Text | None = None
        self.clock: Callable[[], float] = time.time  # the app's clock (tests freeze it)

    def show(self, counts: dict[str, int] | None = None, newest: float | None = None, registry: str | None = None,
             server: str | None = None, broadcast: list[str] | None = None, now: float | None = None,
             stream: str | None = None) -> None:
        """Update the given parts and redraw."""
        if counts is not None:
            self.counts = counts
            self.newest = newest
        if registry is not None:
            self.registry = registry
        if server is not None:
            self.server = server
        if broadcast is not None:
            self.broadcast = broadcast
        if stream is not None:
            self.stream = stream
        self.redraw(now)

    def redraw(self, now: float | None = None) -> None:
        """Draw the figures as they stand."""
        now = self.clock() if now is None else now
        text = Text()
        total = sum(self.counts.values())
        text.append(f"{total:,} sites ", style="bold")
        for state in STATES:
            n = self.counts.get(state, 0)
            if n:
                text.append(f" {state} ", style=STATE_STYLES.get(state))
                text.append(f"{n:,}")
        age = None if self.newest is None else now - self.newest
        text.append(f"   data {age_text(age)} old", style="dim" if age is None or age < 900 else "bold yellow")
        reg_style = "green" if self.registry == "ok" else "bold red"
        text.append("\nregistry ", style="dim")
        text.append(self.registry, style=reg_style)
        text.append("   server ", style="dim")
        text.append(self.server, style="green" if self.server.startswith("up") else "bold red")
        text.append("   changes ", style="dim")
        text.append(self.stream, style="green" if self.stream == "live" else "yellow")
        if self.broadcast:
            text.append("   " + "  ".join(self.broadcast))
        if text != self.last:
            self.last = text
            self.update(text, layout=False)  # two lines always: no layout pass


def broadcast_lines(status: dict[str, Any], tiers: list[dict[str, Any]]) -> list[str]:
    """The live broadcast in a few words: title, floor, connected / expected per tier."""
    if not status.get("live"):
        return ["no live broadcast"]
    parts = [f"on air: {status.get('title', '')} ({status.get('source', '')})"]
    if status.get("floor"):
        parts.append(f"floor: {status['floor']}")
    parts.append(" ".join(f"{t['tier']} {t['connected']}/{t['expected']}" for t in tiers))
    return parts
