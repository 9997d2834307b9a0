"""Colours of the states, shared by the lists, the header and the map."""

from __future__ import annotations

from rich.style import Style

STATE_COLOURS = {
    "OK": "green",
    "DEGRADED": "yellow",
    "UNCHECKED": "grey50",
    "UNREACHABLE": "red",
    "TIMEOUT": "red",
    "ERROR": "magenta",
    "AUTH_FAILED": "bright_red",
    "HOSTKEY_MISMATCH": "bright_red",
}
STATE_STYLES = {state: Style(color=colour, bold=state not in ("OK", "UNCHECKED")) for state, colour in STATE_COLOURS.items()}
