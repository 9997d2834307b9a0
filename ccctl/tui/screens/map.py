"""The map screen (``m``): every commune coloured by state, or by risk level (``v``); the
current province lit."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from ccctl.registry.overview import site_point
from ccctl.tui.fleet import Fleet
from ccctl.tui.style import risk_key
from ccctl.tui.widgets.map import RISKS, STATES, MapView, Point

REDRAW_S = 1.0


class MapScreen(Screen[None]):
    """Redraws from the fleet at most once a second."""

    BINDINGS = [Binding("escape,m,q", "close", "Back"), Binding("v", "colouring", "State/risk")]

    class PointsLoaded(Message):
        """Commune coordinates read from the units dataset."""

        def __init__(self, points: dict[tuple[str, str, str], tuple[float, float]]) -> None:
            super().__init__()
            self.points = points

    def __init__(self, fleet: Fleet) -> None:
        super().__init__()
        self.fleet = fleet
        self.coords: dict[tuple[str, str, str], tuple[float, float]] | None = None
        self.sites_drawn: list[Point] = []
        self.by_risk = False  # coloured by the data feeds' risk levels instead of roll-call states

    def compose(self) -> ComposeResult:
        yield Static("loading the communes' coordinates...", id="map-title")
        yield MapView(id="map")
        yield Footer(compact=True)  # every key fits at 160 columns

    def on_mount(self) -> None:
        self.load_points()
        self.set_interval(REDRAW_S, self.redraw)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load_points(self) -> None:
        """The coordinates, read once in a thread."""
        from ccctl.registry.overview import place_points

        self.post_message(self.PointsLoaded(place_points()))

    def on_map_screen_points_loaded(self, message: PointsLoaded) -> None:
        self.coords = message.points
        self.redraw()

    def redraw(self) -> None:
        """Points of every site with a known place; the operator's province lit."""
        if self.coords is None:
            return
        here = self.fleet.here
        province = next((p for p in reversed(self.fleet.path) if p.level == "province"), None)
        points: list[Point] = []
        missing = 0
        sited = {(s["scheme"], s["unit_code"]) for s in self.fleet.order}
        risk_of = getattr(self.app, "site_risk", None) if self.by_risk else None
        # Every 2021 commune without a site, faint: the country's shape under the sites.
        outline = [(lat, lon, "", False) for (scheme, level, code), (lat, lon) in self.coords.items()
                   if scheme == "2021" and level == "commune" and (scheme, code) not in sited]
        for site in self.fleet.order:
            coord = site_point(self.coords, site)
            if coord is None:
                missing += 1
                continue
            lit = province is not None and site["scheme"] == province.scheme and \
                site["province_code"] == province.code
            points.append((coord[0], coord[1], risk_key(risk_of(site)) if risk_of else site["state"], lit))
        where = f"{province.name} lit" if province is not None else here.name
        self.query_one("#map-title", Static).update(
            f"{len(points):,} sites on the map, coloured by {'risk level' if risk_of else 'state'} ({where}); "
            "communes without a site faint"
            + (f"; {missing} sites without coordinates" if missing else ""))
        self.sites_drawn = points
        self.query_one("#map", MapView).show(outline + points, RISKS if risk_of else STATES)

    def action_colouring(self) -> None:
        """Colour by roll-call state or by the data feeds' risk level (``v``)."""
        self.by_risk = not self.by_risk
        self.redraw()

    def action_close(self) -> None:
        """Back to the lists."""
        self.app.pop_screen()

    def points(self) -> list[Point]:
        """The sites' points drawn last (tests read them)."""
        return self.sites_drawn
