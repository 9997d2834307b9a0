"""A list of rows drawn with Textual's Line API: only the visible lines are rendered.

Not a DataTable: with 10,599 sites changing state a DataTable takes seconds to load and stalls
on updates, while a ScrollView over a plain list costs the same whatever the length (only
``render_line`` for the lines on screen). Columns are (title, width, function of a row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from math import ceil
from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.strip import Strip
from textual.widget import Widget

from ccctl.tui.style import STATE_STYLES

Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    """One column: its title, its width in cells and how a row shows in it."""

    title: str
    width: int
    text: Callable[[Row], str]
    right: bool = False


def set_virtual_size(view: Widget, size: Size) -> None:
    """Give a Line-API view (or a panel of a fixed size) a new virtual size without a layout of
    the whole screen: only its scrollbars are updated (they ask for a layout themselves when one appears or goes). The
    reactive ``virtual_size`` asks for a full layout on every change, which at the country's
    scale was most of a keypress's time (a new filter changes the number of rows)."""
    if size == view.virtual_size:
        return
    view.set_reactive(Widget.virtual_size, size)
    view._scroll_update(size)


class LineScrollBar(ScrollBar):
    """A vertical scrollbar drawn line by line from the bar's segments, kept while its size,
    position and colours are the same. Textual's renders the bar as a Rich renderable through
    the console for every frame it moves in (1.4 ms a keypress on the site list, more than the
    list's own lines); this gives the same cells (same glyphs, colours and mouse actions)."""

    def __init__(self, *, thickness: int) -> None:
        super().__init__(vertical=True, name="vertical", thickness=thickness)
        self._lines: tuple[tuple[Any, ...], list[Strip]] | None = None

    def render_lines(self, crop: Region) -> list[Strip]:
        """The bar's lines, made once for its size, position and colours (not once per line)."""
        parent = self.parent
        if not isinstance(parent, Widget) or self.screen.styles.scrollbar_color.a == 0:
            self._lines = None
            return super().render_lines(crop)
        styles = parent.styles
        if self.grabbed:
            background, color = styles.scrollbar_background_active, styles.scrollbar_color_active
        elif self.mouse_over:
            background, color = styles.scrollbar_background_hover, styles.scrollbar_color_hover
        else:
            background, color = styles.scrollbar_background, styles.scrollbar_color
        if background.a < 1:
            background = parent.background_colors[0] + background
        color = background + color
        width, height = self.size
        virtual = ceil(self.window_virtual_size)
        window = ceil(self.window_size if self.window_size < self.window_virtual_size else 0)
        base = self.rich_style  # under the bar's own styles, as the renderable is drawn
        key = (width, height, virtual, window, self.position, background, color, base)
        if self._lines is None or self._lines[0] != key:
            bar = ScrollBarRender.render_bar(size=height, virtual_size=virtual, window_size=window,
                                             position=self.position, thickness=width, vertical=True,
                                             back_color=background.rich_color, bar_color=color.rich_color)
            self._lines = (key, [Strip([Segment(segment.text, base + segment.style)], width)
                                 for segment in bar.segments])
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the bar (made by ``render_lines``)."""
        if self._lines is None:
            return super().render_line(y)
        lines = self._lines[1]
        return lines[y] if 0 <= y < len(lines) else Strip.blank(self.size.width)


def _positions(rows: list[Row], row: Row) -> Iterator[int]:
    """Where ``row`` may be in ``rows``: the indexes ``list.index`` finds equal to it, in order."""
    start = 0
    while True:
        try:
            start = rows.index(row, start) + 1
        except ValueError:
            return
        yield start - 1


def _cell(text: str, width: int, right: bool) -> str:
    text = text if len(text) <= width else text[: max(width - 1, 0)] + "…"
    return text.rjust(width) if right else text.ljust(width)


class RowList(ScrollView, can_focus=True):
    """Rows under a header line, a cursor, Enter to choose; only visible lines are drawn."""

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "jump(0)", "Top", show=False),
        Binding("end,G", "jump(-1)", "Bottom", show=False),
        Binding("enter", "choose", "Open", show=True),
    ]

    class Highlighted(Message):
        """The cursor moved to ``row`` (None when the list is empty)."""

        def __init__(self, row: Row | None) -> None:
            super().__init__()
            self.row = row

    class Chosen(Message):
        """Enter on ``row``."""

        def __init__(self, row: Row) -> None:
            super().__init__()
            self.row = row

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[Row] = []
        self.columns: Sequence[Column] = ()
        self.cursor = 0
        self.key_field = "id"
        self.renders = 0  # lines rendered since mount (tests read it)
        self._frame_style: Style | None = None
        self._cursor_style: Style | None = None
        self._state_column: int | None = None  # the column drawn in the state's colour

    def set_rows(self, rows: list[Row], columns: Sequence[Column], key_field: str = "id",
                 keep_cursor: bool = True) -> None:
        """Show ``rows``; the cursor stays on the same row (by ``key_field``) when it is still there."""
        current = self.current() if keep_cursor else None
        self.rows = rows
        self.columns = columns
        self._state_column = next((i for i, c in enumerate(columns) if c.title == "state"), None)
        self.key_field = key_field
        self.cursor = 0
        if current is not None:
            try:  # the same row object (a site's row is the site itself): found at C speed
                self.cursor = next(i for i in _positions(rows, current) if rows[i] is current)
            except StopIteration:
                key = current.get(key_field)
                for i, row in enumerate(rows):
                    if row.get(key_field) == key:
                        self.cursor = i
                        break
        width = sum(c.width + 1 for c in columns)
        set_virtual_size(self, Size(width, len(rows) + 1))
        self._keep_cursor_visible()
        self.refresh()
        self.post_message(self.Highlighted(self.current()))

    @property
    def vertical_scrollbar(self) -> ScrollBar:
        """The list's vertical scrollbar: a ``LineScrollBar`` (created when first asked for, as
        Textual's widgets create theirs)."""
        if self._vertical_scrollbar is None:
            bar = LineScrollBar(thickness=self.scrollbar_size_vertical)
            bar.display = False
            self._vertical_scrollbar = bar
            self.app._start_widget(self, bar)
        return self._vertical_scrollbar

    def current(self) -> Row | None:
        """The row under the cursor."""
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def render_lines(self, crop: Region) -> list[Strip]:
        """The widget's styles are looked up once per frame, not once per line."""
        base = self.rich_style
        self._frame_style = base
        self._cursor_style = Style(reverse=True) if self.has_focus else Style(bgcolor="grey23")
        try:
            return super().render_lines(crop)
        finally:
            self._frame_style = None

    def render_line(self, y: int) -> Strip:
        """One screen line: the header on line 0, then the row at the scroll position.

        A row is one string of its cells cut to the screen at the scroll position, in at most
        four segments (before the state, the state in its colour, after it, the blank to the
        edge): the cursor's style is part of each segment's style, not a second pass."""
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self._frame_style or self.rich_style
        if y == 0:
            text = " ".join(_cell(c.title, c.width, c.right) for c in self.columns)
            strip = Strip([Segment(text, base + Style(bold=True, underline=True))])
            return strip.crop_extend(scroll_x, scroll_x + width, base)
        index = scroll_y + y - 1
        if index >= len(self.rows):
            return Strip.blank(width, base)
        self.renders += 1
        row = self.rows[index]
        cells = [_cell(column.text(row), column.width, column.right) + " " for column in self.columns]
        line = "".join(cells)
        style = base
        if index == self.cursor:
            cursor = self._cursor_style or (Style(reverse=True) if self.has_focus else Style(bgcolor="grey23"))
            style = cursor + base  # as Strip.apply_style: the segment's own style wins
        state = row.get("state")
        at = self._state_column
        if at is None or not isinstance(state, str) or state not in STATE_STYLES:
            spans = [(0, len(line), style)]
        else:
            start = sum(len(c) for c in cells[:at])
            end = start + len(cells[at])
            state_style = base + STATE_STYLES[state]
            if index == self.cursor:
                state_style = cursor + state_style
            spans = [(0, start, style), (start, end, state_style), (end, len(line), style)]
        right = scroll_x + width
        segments = [Segment(line[max(a, scroll_x):min(b, right)], st) for a, b, st in spans
                    if min(b, right) > max(a, scroll_x)]
        shown = max(0, min(len(line), right) - scroll_x)
        if shown < width:
            segments.append(Segment(" " * (width - shown), base))
        return Strip(segments, width)

    def refresh_visible(self) -> None:
        """Redraw the lines on screen (after the rows' values changed in place)."""
        self.refresh()

    def refresh_keys(self, keys: set[Any]) -> int:
        """Redraw only the visible rows whose key is in ``keys`` (changed in place); how many."""
        top = int(self.scroll_y)
        drawn = 0
        for index in range(top, min(top + self.size.height, len(self.rows))):
            if self.rows[index].get(self.key_field) in keys:
                self.refresh_line(index + 1)  # line 0 is the column titles
                drawn += 1
        return drawn

    def _keep_cursor_visible(self) -> None:
        height = max(self.size.height - 1, 1)
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    def _move(self, index: int) -> None:
        if not self.rows:
            return
        old = self.cursor
        self.cursor = max(0, min(index, len(self.rows) - 1))
        if old != self.cursor:
            self._keep_cursor_visible()
            self.refresh()
            self.post_message(self.Highlighted(self.current()))

    def action_cursor(self, step: int) -> None:
        """Move the cursor ``step`` rows."""
        self._move(self.cursor + step)

    def action_page(self, pages: int) -> None:
        """Move the cursor a screenful."""
        self._move(self.cursor + pages * max(self.size.height - 2, 1))

    def action_jump(self, index: int) -> None:
        """To the first (0) or last (-1) row."""
        self._move(len(self.rows) - 1 if index < 0 else index)

    def action_choose(self) -> None:
        """Enter: announce the row under the cursor."""
        row = self.current()
        if row is not None:
            self.post_message(self.Chosen(row))

    def on_click(self, event: Any) -> None:
        """A click moves the cursor to the clicked row."""
        y = getattr(event, "y", 0)
        if y >= 1:
            self._move(int(self.scroll_y) + y - 1)
