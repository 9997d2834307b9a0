"""A panel of one text that the app renders and hands it (the data and meeting panels)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class TextPanel(Static):
    """Shows what the app hands it, redrawn only when the text changed."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.last: Text | None = None

    def show(self, text: Text) -> None:
        """Redraw only when the text changed."""
        if text != self.last:
            self.last = text
            self.update(text)
