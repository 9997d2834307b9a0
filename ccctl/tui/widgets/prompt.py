"""The filter and command prompt: Textual's ``Input`` without a layout of the screen per keystroke.

``Input`` sets its virtual size to the width of its text on every change of value, and the
screen's layout sets it back to the widget's size: with Textual's reactive ``virtual_size``
(``layout=True``) each keystroke in the filter asked for a layout of the whole screen (tens of
milliseconds on a loaded machine, on top of the filtering). The prompt is one line of a fixed
width, so its virtual size never changes anything around it: here it only repaints.
"""

from __future__ import annotations

from textual.geometry import Size
from textual.reactive import Reactive
from textual.widgets import Input


class Prompt(Input):
    """A one-line ``Input`` whose virtual size changes repaint it, never lay the screen out."""

    virtual_size: Reactive[Size] = Reactive(Size(0, 0), layout=False)
