"""The event log: a ring buffer of lines (joins, leaves, state changes, alerts) drawn with the
Line API, following the newest line unless the operator scrolled up."""

from __future__ import annotations

import time
from collections import deque

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

CAPACITY = 10_000
SEVERITY_STYLES = {"info": Style(), "warn": Style(color="yellow"), "alert": Style(color="red", bold=True)}


class EventLog(ScrollView, can_focus=True):
    """At most ``capacity`` lines; the oldest go first."""

    def __init__(self, capacity: int = CAPACITY, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: deque[tuple[str, str]] = deque(maxlen=capacity)
        self.width = 0

    def add(self, text: str, severity: str = "info", when: float | None = None) -> None:
        """Append one line, stamped with the UTC time."""
        self.add_lines([(text, severity)], when)

    def add_lines(self, lines: list[tuple[str, str]], when: float | None = None) -> None:
        """Append (text, severity) lines at once: one resize and one repaint for a whole batch."""
        if not lines:
            return
        stamp = time.strftime("%H:%M:%S", time.gmtime(time.time() if when is None else when))
        following = self.scroll_y >= self.max_scroll_y
        for text, severity in lines:
            line = f"{stamp} {text}"
            self.lines.append((line, severity))
            self.width = max(self.width, len(line))
        self.virtual_size = Size(self.width, len(self.lines))
        if following:
            self.scroll_end(animate=False, immediate=True)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        """The line at the scroll position (only visible lines are drawn)."""
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        if index >= len(self.lines):
            return Strip.blank(width, self.rich_style)
        text, severity = self.lines[index]
        strip = Strip([Segment(text, self.rich_style + SEVERITY_STYLES.get(severity, Style()))])
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)
