"""The data panel beside readiness (``i``), the map coloured by risk level (``v`` on the map)
and feed alerts in the event log, through Pilot on a real SQLite registry with feeds pulled
from the shipped fixtures (configs/feeds/, made-up numbers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccctl.errors import FeedError
from ccctl.feeds import views
from ccctl.feeds.pull import pull_feed
from ccctl.feeds.spec import FeedSpec
from ccctl.registry import feeds as store
from ccctl.registry import open_registry
from ccctl.tui import data
from ccctl.tui.style import risk_key, sparkline
from ccctl.tui.widgets.datapanel import BAR_WIDTH, DataPanel, bar, ranked_indicator, top_chart, whole_feed, whole_series
from ccctl.tui.widgets.eventlog import EventLog
from ccctl.tui.widgets.map import RISKS, STATES, draw
from tests.tui.pilot import SIZE, make_app, until

FIXTURES = Path(__file__).resolve().parents[2] / "configs" / "feeds"


def panel_text(app: object) -> str:
    panel = app.widget("#data", DataPanel)  # type: ignore[attr-defined]
    return panel.last.plain if panel.last is not None else ""


def span_style(app: object, words: str) -> str:
    """The style of the first span of the panel's text that starts where ``words`` do."""
    text = app.widget("#data", DataPanel).last  # type: ignore[attr-defined]
    at = text.plain.index(words)
    return " ".join(str(s.style) for s in text.spans if s.start <= at < s.end)


@pytest.mark.asyncio
async def test_data_panel_alerts_and_risk_map(dash_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "FEEDS_S", 0.1)
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [', "utf-8")  # truncated JSON
    with open_registry(dash_db_url) as db:
        store.add_feed(db, FeedSpec("risk", str(FIXTURES / "ca-mau-communes.csv"), level="commune",
                                    alerts=("risk_level>=4",)))
        store.add_feed(db, FeedSpec("covid", str(FIXTURES / "covid-provinces.json")))
        store.add_feed(db, FeedSpec("broken", str(broken)))
        risk_pull = await pull_feed(db, "risk")
        await pull_feed(db, "covid")
        with pytest.raises(FeedError):
            await pull_feed(db, "broken")
        covid = views.indicator_table(db, "covid", "province")
        commune_risk = {u: v for i, u, _, v in views.snapshot(db, "risk", by="commune") if i == "risk_level"}
        cases_all = sum(v["new_cases"] for v in covid.values())
        days = [f"2021-10-{d:02d}" for d in range(2, 16)]  # the panel's 14 days to the newest
        ca_mau_days = dict(views.history(db, "covid", "new_cases", by="province", since=days[0])["96"])
    assert risk_pull.alerts and covid["95"]["risk_level"] == 2 and covid["96"]["risk_level"] == 1

    app = make_app(dash_db_url, tmp_path / "home")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded and app.feed_data is not None, "the registry and the feeds read")
        log = app.widget("#log", EventLog)
        alerts = [line for line, severity in log.lines if severity == "alert" and "feed risk:" in line]
        assert len(alerts) == len(risk_pull.alerts) and "risk_level>=4" in alerts[0]
        assert any("feed broken: pull failed:" in line and severity == "warn" for line, severity in log.lines)

        await pilot.press("colon", *"prov 95", "enter", "i")
        await until(pilot, lambda: "Bạc Liêu (2021)" in panel_text(app), "the panel for Bạc Liêu")
        text = panel_text(app)
        assert "covid" in text and "risk" in text and "broken" in text
        assert "last pull failed" in text and "no values yet" in text  # the broken feed: its error shown
        cases = next(line for line in text.splitlines() if line.strip().startswith("new_cases") and "," in line)
        assert f"{int(covid['95']['new_cases']):,}" in cases and f"{int(cases_all):,}" in cases
        assert "yellow" in span_style(app, "2 medium")  # Bạc Liêu's risk level, in its colour
        assert "4 very high" in text  # the commune feed's worst over Cà Mau, in the "all units" column
        # The chart: the covid feed's provinces with the most new cases, largest first, by name.
        ranked = sorted(covid, key=lambda code: (-covid[code]["new_cases"], code))[:10]
        chart = text[text.index("top "):].splitlines()[:1 + len(ranked)]
        assert chart[0].strip() == f"top {len(ranked)} provinces by new_cases"
        first = chart[1]
        assert f"{int(covid[ranked[0]]['new_cases']):,}" in first and first.rstrip().endswith("█" * BAR_WIDTH)
        assert not chart[1].split()[0].isdigit()  # a name from the registry's units, not a code
        assert any("Bạc Liêu" in line for line in chart) == ("95" in ranked)
        if "95" in ranked:  # the selected province's bar is marked
            assert next(line for line in chart if "Bạc Liêu" in line).startswith("▶")

        await pilot.press("colon", *"prov 96", "enter")
        await until(pilot, lambda: "Cà Mau (2021)" in panel_text(app), "the panel follows the province")
        assert "red" in span_style(app, "4 very high")
        # Each indicator's last 14 days for the province, scaled to its highest day.
        series = [ca_mau_days.get(d) for d in days]
        assert series[:6] == [None] * 6 and all(v is not None for v in series[-7:])  # the fixture's 7 days
        line = next(t for t in panel_text(app).splitlines() if t.strip().startswith("new_cases") and "," in t)
        assert line.rstrip().endswith(sparkline(series, max(v for v in series if v is not None))), line

        # The map: by state, then by the feeds' risk level (commune, else province) with "v".
        await pilot.press("m")
        screen = app.screen
        await until(pilot, lambda: len(screen.points()) == len(app.fleet.order), "the map drawn")  # type: ignore[attr-defined]
        assert {p[2] for p in screen.points()} <= set(STATES.colours)  # type: ignore[attr-defined]
        await pilot.press("v")
        keys = [p[2] for p in screen.points()]  # type: ignore[attr-defined]
        assert set(keys) <= set(RISKS.colours)
        drawn = app.fleet.order  # every site has a point (tests/tui/test_core.py)
        for site in drawn:
            if site["scheme"] == "2021" and site["province_code"] == "96" and site["unit_code"] in commune_risk:
                assert app.site_risk(site) == commune_risk[site["unit_code"]]
            if site["scheme"] == "2021" and site["province_code"] == "95":
                assert app.site_risk(site) == 2.0  # no commune data: the province's level
        assert keys.count(risk_key(4)) == sum(1 for s in drawn if app.site_risk(s) == 4.0) > 0
        await pilot.press("v")
        assert {p[2] for p in screen.points()} <= set(STATES.colours)  # type: ignore[attr-defined]
        await pilot.press("escape")

        # A later failure reaches the log once; the alerts already shown are not repeated.
        with open_registry(dash_db_url) as db:
            with pytest.raises(FeedError):
                await pull_feed(db, "broken")
        await until(pilot, lambda: sum("feed broken: pull failed" in line for line, _ in log.lines) == 2,
                    "the second failure in the log")
        assert len([line for line, severity in log.lines if severity == "alert" and "feed risk:" in line]) == len(alerts)

        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Data feeds", "Meeting"} <= titles  # in the palette too
        await pilot.press("i")
        assert not app.widget("#data", DataPanel).display


@pytest.mark.asyncio
async def test_the_wall_shows_the_data_beside_the_province_it_cycles_to(dash_db_url: str, tmp_path: Path) -> None:
    with open_registry(dash_db_url) as db:
        store.add_feed(db, FeedSpec("covid", str(FIXTURES / "covid-provinces.json")))
        await pull_feed(db, "covid")
    app = make_app(dash_db_url, tmp_path / "home", wall=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded and app.feed_data is not None, "the registry and the feeds read")
        assert app.widget("#data", DataPanel).display  # open without a key: a wall has no keyboard
        for _ in range(2):
            app.wall_cycle()  # what the wall's timer calls
            here = app.fleet.here
            await until(pilot, lambda here=here: f"{here.name} ({here.scheme})" in panel_text(app),
                        "the panel follows the wall to its province")
        assert "top " in panel_text(app)


def test_whole_feed_sums_counts_and_keeps_the_worst_risk() -> None:
    values = {"95": {"new_cases": ("2021-10-15", 3.0), "risk_level": ("2021-10-15", 2.0)},
              "96": {"new_cases": ("2021-10-14", 4.0), "risk_level": ("2021-10-14", 4.0)}}
    assert whole_feed(values) == {"new_cases": ("2021-10-15", 7.0), "risk_level": ("2021-10-15", 4.0)}
    history = {"95": {"new_cases": [None, 1.0, 2.0], "risk_level": [None, 1.0, 3.0]},
               "96": {"new_cases": [None, None, 5.0], "risk_level": [None, 2.0, 1.0]}}
    assert whole_series(history, "new_cases") == [None, 1.0, 7.0]
    assert whole_series(history, "risk_level") == [None, 2.0, 3.0]


def test_top_chart_ranks_on_one_scale_with_stable_ties() -> None:
    assert bar(10, 10, 4) == "████" and bar(5, 10, 4) == "██" and bar(1, 10, 4) == "▍" and bar(0, 10, 4) == ""
    assert bar(0.001, 10, 4) == "▏"  # any value above zero shows
    assert ranked_indicator({"risk_level", "deaths", "new_cases"}) == "new_cases"
    assert ranked_indicator({"risk_level", "doses"}) == "doses" and ranked_indicator({"risk_level"}) is None
    units = {code: {"new_cases": ("2021-10-15", value)} for code, value in
             (("01", 5.0), ("79", 20.0), ("02", 5.0), ("96", 0.0))}
    lines = top_chart(units, {"79": "Hồ Chí Minh"}, n=3, selected="02").plain.splitlines()
    assert lines[0].strip() == "top 3 provinces by new_cases"
    assert [line.split()[0] for line in lines[1:]] == ["Hồ", "01", "▶"]  # ties by code; 02 marked
    assert lines[1].rstrip().endswith("█" * BAR_WIDTH) and lines[2].rstrip().endswith("█████▌")  # a quarter of 22 cells
    assert top_chart({"01": {"risk_level": ("2021-10-15", 3.0)}}, {}).plain == ""  # nothing to rank
    assert top_chart({c: units[c] for c in ("01", "79")}, {}).plain == ""  # two units: no ranking


def test_risk_palette_colours_the_worst_level_of_a_cell() -> None:
    points = [(16.0, 108.0, risk_key(1), False), (16.0, 108.0, risk_key(3), False)]
    styles = {str(s.style) for line in draw(points, 40, 20, RISKS) for s in line.spans}
    assert any("dark_orange" in s for s in styles) and not any("green" in s for s in styles)
