"""The header: counts by state, the data's age, the registry and the server, the broadcast, its
connected sites by quality class and the edges serving it (sites watching / capacity)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.widgets import Static

from ccctl.media.quality import CLASSES
from ccctl.reports import STATES
from ccctl.tui.style import STATE_STYLES
from ccctl.tui.widgets.detail import QUALITY_STYLES


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
    """Two lines of figures the app hands over; redrawn each second for the data's age. A line
    longer than the screen is cut: it never wraps and pushes the second one out of view."""

    DEFAULT_CSS = "Header { text-wrap: nowrap; text-overflow: ellipsis; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.counts: dict[str, int] = {}
        self.newest: float | None = None
        self.registry = "loading"
        self.server = "not polled yet"
        self.broadcast: list[str] = []
        self.stream = "polling the registry"
        self.quality: dict[str, int] = {}  # connected sites of the live broadcast by quality class
        self.edges: list[dict[str, Any]] = []  # the edges serving it
        self.last: Text | None = None
        self.clock: Callable[[], float] = time.time  # the app's clock (tests freeze it)

    def show(self, counts: dict[str, int] | None = None, newest: float | None = None, registry: str | None = None,
             server: str | None = None, broadcast: list[str] | None = None, now: float | None = None,
             stream: str | None = None, quality: dict[str, int] | None = None,
             edges: list[dict[str, Any]] | None = None) -> None:
        """Update the given parts and redraw."""
        if quality is not None:
            self.quality = quality
        if edges is not None:
            self.edges = edges
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
        if self.broadcast and sum(self.quality.values()):
            quality_line(text, self.quality)
        reg_style = "green" if self.registry == "ok" else "bold red"
        text.append("\nregistry ", style="dim")
        text.append(self.registry, style=reg_style)
        text.append("   server ", style="dim")
        text.append(self.server, style="green" if self.server.startswith("up") else "bold red")
        text.append("   changes ", style="dim")
        text.append(self.stream, style="green" if self.stream == "live" else "yellow")
        if self.broadcast:
            text.append("   " + "  ".join(self.broadcast))
            if self.edges:
                edges_line(text, self.edges)
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
    others = status.get("others") or []
    if others:  # several live: this one is the highest level's; the others named after it
        parts.append("also live: " + ", ".join(
            f"#{o['id']} {o['title'] or '(untitled)'}" + (f" ({o['level']})" if o.get("level") else "")
            for o in others))
    return parts


def quality_line(text: Text, counts: dict[str, int]) -> None:
    """The live broadcast's connected sites by quality class (loss over 20 s), onto ``text``:
    the classes with sites only, so that the line stays short."""
    text.append("   connected", style="dim")
    for name in CLASSES:
        if counts.get(name):
            text.append(f" {name} ", style=QUALITY_STYLES[name])
            text.append(f"{counts[name]:,}")
    if counts.get("unknown"):
        text.append(f" no figure {counts['unknown']:,}", style="dim")


def edges_line(text: Text, edges: list[dict[str, Any]]) -> None:
    """The edges serving the live broadcast: sites watching from each / its capacity, or down."""
    text.append("   edges", style="dim")
    for e in edges:
        text.append(f" {e['name']} ")
        if not e.get("up"):
            text.append("down", style="bold red")
            continue
        capacity = e.get("capacity")
        full = capacity is not None and e.get("watching", 0) >= capacity
        text.append(f"{e.get('watching', 0):,}/{'-' if capacity is None else f'{capacity:,}'}",
                    style="bold yellow" if full else "green")


def edges_of(sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The edges as the server's broadcast status shows them (when the change stream is down):
    those serving a site, with the sites watching from each; no capacity, none shown down."""
    counts: dict[str, int] = {}
    for s in sessions:
        if s.get("edge"):
            counts[s["edge"]] = counts.get(s["edge"], 0) + 1
    return [{"name": name, "up": True, "watching": n, "capacity": None} for name, n in sorted(counts.items())]
