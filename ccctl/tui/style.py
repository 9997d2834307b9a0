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

# Eight heights of a block, for sparklines of a share (0-100 %) on a fixed scale.
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_GAP = "·"  # a bucket without data: no check in that hour


def sparkline(values: list[float | None], top: float = 100.0) -> str:
    """One character per value on a fixed 0..``top`` scale (a share: a dip from 100 % to 80 %
    shows as such, not stretched to the full height), ``·`` where there is no value."""
    steps = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_GAP if v is None else SPARK_BLOCKS[max(0, min(steps, round(v * steps / top)))]
                   for v in values)

# Risk levels 1-4 (Resolution 128/NQ-CP): green, yellow, orange, red.
RISK_COLOURS = {1: "green", 2: "yellow", 3: "dark_orange", 4: "red"}
NO_RISK = "no risk data"


def risk_key(level: float | None) -> str:
    """The map's key of a risk level (``risk 3``), or ``no risk data``."""
    return NO_RISK if level is None else f"risk {int(level)}"


RISK_KEY_COLOURS = {**{risk_key(n): colour for n, colour in RISK_COLOURS.items()}, NO_RISK: "grey50"}
RISK_RANKS = {**{risk_key(n): 4 - n for n in RISK_COLOURS}, NO_RISK: 4}  # worst (4) first, as SEVERITY ranks
