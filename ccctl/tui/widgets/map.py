"""The map: every commune as a braille dot at its coordinates, coloured by its site's state
or by the risk level the data feeds give its unit (``Palette``).

A terminal cell holds 2 x 4 braille dots; a cell takes the colour of the worst key among
its points. Hoàng Sa and Trường Sa, which the data has no points for, are drawn and labelled
as Vietnam's. The app redraws the map at most once a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from ccctl.reports import SEVERITY
from ccctl.tui.style import RISK_KEY_COLOURS, RISK_RANKS, STATE_COLOURS

# The frame: the mainland and both archipelagos (latitude north, longitude east).
LAT_MIN, LAT_MAX = 7.6, 23.5
LON_MIN, LON_MAX = 102.0, 117.0
# (label, the label's anchor, the islands' points)
ARCHIPELAGOS = (
    ("Hoàng Sa (Việt Nam)", (16.9, 111.2),
     [(16.83, 112.33), (16.53, 111.61), (16.45, 111.70), (16.95, 112.28), (16.58, 111.78), (15.78, 111.20)]),
    ("Trường Sa (Việt Nam)", (11.9, 112.6),
     [(8.65, 111.92), (10.38, 114.36), (10.18, 114.30), (11.43, 114.33), (9.90, 114.20), (10.72, 115.82),
      (8.87, 112.83), (9.72, 113.25), (11.05, 114.28), (8.95, 113.70)]),
)
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # braille bit of (row, column) in a cell
Point = tuple[float, float, str, bool]  # latitude, longitude, key ("" for a commune without a site), lit
BACKGROUND = 99  # rank of a commune without a site: drawn only where no site is


@dataclass(frozen=True)
class Palette:
    """What a point's key means on the map: its colour, and its rank (lowest is worst, wins a cell)."""

    colours: Mapping[str, str]
    ranks: Mapping[str, int]


STATES = Palette(STATE_COLOURS, SEVERITY)
RISKS = Palette(RISK_KEY_COLOURS, RISK_RANKS)


LON_SCALE = 0.96  # a degree of longitude near 16° N is cos(16°) of a degree of latitude


def _cell_of(lat: float, lon: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The cell and the dot in it; one scale on both axes (braille dots are about square)."""
    dots_x, dots_y = width * 2 - 1, height * 4 - 1
    scale = min(dots_x / ((LON_MAX - LON_MIN) * LON_SCALE), dots_y / (LAT_MAX - LAT_MIN))
    pad_x = (dots_x - (LON_MAX - LON_MIN) * LON_SCALE * scale) / 2
    xi = int(round(pad_x + (lon - LON_MIN) * LON_SCALE * scale))
    yi = int(round((LAT_MAX - lat) * scale))
    return xi // 2, yi // 4, yi % 4, xi % 2


def draw(points: Iterable[Point], width: int, height: int, palette: Palette = STATES) -> list[Text]:
    """The map as ``height`` lines of ``width`` cells, each point coloured by its key in ``palette``."""
    width, height = max(width, 10), max(height, 5)
    bits = [[0] * width for _ in range(height)]
    worst: list[list[tuple[int, str, bool] | None]] = [[None] * width for _ in range(height)]
    for lat, lon, state, lit in points:
        cx, cy, row, col = _cell_of(lat, lon, width, height)
        if not (0 <= cx < width and 0 <= cy < height):
            continue
        bits[cy][cx] |= _DOTS[row][col]
        rank = palette.ranks.get(state, 0) if state else BACKGROUND
        held = worst[cy][cx]
        if held is None or rank < held[0] or (lit and not held[2]):
            worst[cy][cx] = (rank, state, lit or bool(held and held[2]))
    labels: dict[tuple[int, int], str] = {}
    for label, (lat, lon), islands in ARCHIPELAGOS:
        for ilat, ilon in islands:
            cx, cy, row, col = _cell_of(ilat, ilon, width, height)
            if 0 <= cx < width and 0 <= cy < height:
                bits[cy][cx] |= _DOTS[row][col]
        cx, cy, _, _ = _cell_of(lat, lon, width, height)
        labels[(cy, max(0, min(cx, width - len(label))))] = label
    lines = []
    for cy in range(height):
        text = Text()
        cx = 0
        while cx < width:
            name = labels.get((cy, cx))
            if name is not None:
                text.append(name, style=Style(color="cyan", italic=True))
                cx += len(name)
                continue
            held = worst[cy][cx]
            char = chr(0x2800 + bits[cy][cx]) if bits[cy][cx] else " "
            if held is None:
                text.append(char, style=Style(color="cyan") if bits[cy][cx] else None)
            else:
                _, state, lit = held
                colour = palette.colours.get(state, "white") if state else "grey30"
                text.append(char, style=Style(color=colour, bold=lit and bool(state), dim=not lit and bool(state)))
            cx += 1
        lines.append(text)
    return lines


class MapView(Widget):
    """Shows the last drawn map; ``show`` hands it new points."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.points: list[Point] = []
        self.palette = STATES
        self.draws = 0

    def show(self, points: list[Point], palette: Palette = STATES) -> None:
        """Draw these points, keyed by ``palette`` (the caller keeps to one draw a second)."""
        self.points = points
        self.palette = palette
        self.refresh()

    def render(self) -> Text:
        self.draws += 1
        return Text("\n").join(draw(self.points, self.size.width, self.size.height, self.palette))
