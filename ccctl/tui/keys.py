"""Footer groups: keys of one kind share one footer entry (``WNC Sort``), so that every key of
the dashboard fits in the footer of a 160-column screen; each key is still in the help (``?``)
and the palette with its own description."""

from __future__ import annotations

from textual.binding import Binding

SORT_KEYS = Binding.Group("Sort", compact=True)
LOG_KEYS = Binding.Group("Log", compact=True)
PANEL_KEYS = Binding.Group("Panels", compact=True)
FLOOR_KEYS = Binding.Group("Floor", compact=True)
BOX_KEYS = Binding.Group("Box", compact=True)
