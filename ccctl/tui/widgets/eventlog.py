"""The event log: a ring buffer of lines (joins, leaves, state changes, alerts) drawn with the
Line API. It follows the newest line unless paused (or scrolled up); paused, it stays where it
is, its title says so and counts the lines that arrived meanwhile. A severity filter shows
every line (info), warnings and errors, or errors only."""

from __future__ import annotations

import time
from collections import deque

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ccctl.tui.widgets.rowlist import set_virtual_size

CAPACITY = 10_000
SEVERITY_STYLES = {"info": Style(), "warn": Style(color="yellow"), "alert": Style(color="red", bold=True)}
RANK = {"info": 0, "warn": 1, "alert": 2}
ALIASES = {"warning": "warn", "error": "alert"}  # the names the operator reads and types
LEVELS = ("info", "warning", "error")  # the filter's steps: the least severe line shown


class EventLog(ScrollView, can_focus=True):
    """At most ``capacity`` lines; the oldest go first."""

    def __init__(self, capacity: int = CAPACITY, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: deque[tuple[str, str]] = deque(maxlen=capacity)  # every line: (text, severity)
        self.total = 0  # lines ever added: line n of all time is lines[n - (total - len(lines))]
        self.shown: deque[tuple[int, str, str]] = deque()  # the lines the filter passes: (n, text, severity)
        self.width = 0
        self.level = "info"
        self.paused = False
        self.unseen = 0  # lines that arrived while paused

    def on_mount(self) -> None:
        self._title()

    def add(self, text: str, severity: str = "info", when: float | None = None) -> None:
        """Append one line, stamped with the UTC time."""
        self.add_lines([(text, severity)], when)

    def add_lines(self, lines: list[tuple[str, str]], when: float | None = None) -> None:
        """Append (text, severity) lines at once: one resize and one repaint for a whole batch."""
        if not lines:
            return
        stamp = time.strftime("%H:%M:%S", time.gmtime(time.time() if when is None else when))
        following = not self.paused and self.scroll_y >= self.max_scroll_y
        floor = RANK[ALIASES.get(self.level, self.level)]
        added = 0
        for text, severity in lines:
            severity = ALIASES.get(severity, severity)
            line = f"{stamp} {text}"
            self.lines.append((line, severity))
            if RANK.get(severity, 0) >= floor:
                self.shown.append((self.total, line, severity))
                self.width = max(self.width, len(line))
                added += 1
            self.total += 1
        oldest = self.total - len(self.lines)
        dropped = 0
        while self.shown and self.shown[0][0] < oldest:  # fallen out of the ring buffer
            self.shown.popleft()
            dropped += 1
        set_virtual_size(self, Size(self.width, len(self.shown)))  # no layout of the screen per batch
        if following:
            self.scroll_end(animate=False, immediate=True)
        elif dropped:  # keep the lines on screen where they are while older ones go
            self.scroll_to(y=max(0, self.scroll_y - dropped), animate=False, immediate=True)
        if self.paused and added:
            self.unseen += added
            self._title()
        self.refresh()

    def toggle_pause(self) -> bool:
        """Pause (stay put, count new lines) or follow again (to the newest line); True if paused."""
        self.paused = not self.paused
        if not self.paused:
            self.unseen = 0
            self.scroll_end(animate=False, immediate=True)
        self._title()
        return self.paused

    def set_level(self, level: str | None = None) -> str:
        """Show lines from ``level`` up (info, warning, error); None: the next level in turn."""
        if level is None:
            level = LEVELS[(LEVELS.index(self.level) + 1) % len(LEVELS)]
        if level not in LEVELS:
            raise ValueError(f"unknown severity {level!r} ({', '.join(LEVELS)})")
        self.level = level
        floor = RANK[ALIASES.get(level, level)]
        first = self.total - len(self.lines)
        self.shown = deque((first + i, text, severity) for i, (text, severity) in enumerate(self.lines)
                           if RANK.get(severity, 0) >= floor)
        self.width = max((len(text) for _, text, _ in self.shown), default=0)
        set_virtual_size(self, Size(self.width, len(self.shown)))  # no layout of the screen per batch
        if not self.paused:
            self.scroll_end(animate=False, immediate=True)
        self._title()
        self.refresh()
        return level

    def _title(self) -> None:
        state = f"PAUSED, {self.unseen:,} new (p follows)" if self.paused else "following"
        shown = "all" if self.level == "info" else f"{self.level} and worse" if self.level == "warning" else "errors"
        self.border_title = f"event log · {state} · {shown}"

    def render_line(self, y: int) -> Strip:
        """The line at the scroll position (only visible lines are drawn)."""
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        if index >= len(self.shown):
            return Strip.blank(width, self.rich_style)
        _, text, severity = self.shown[index]
        strip = Strip([Segment(text, self.rich_style + SEVERITY_STYLES.get(severity, Style()))])
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)
