"""The data panel (``i``): each data feed's newest indicators for the selected province beside
the whole feed's, a sparkline of their last days, how old the last good pull is and its last
error; risk levels in their colours (1 green, 2 yellow, 3 orange, 4 red); and a bar chart of the
country's provinces with the most of the feed's first count (``new_cases`` when it has one), the
selected province's bar marked.

The chart is drawn with block characters in the panel's own text rather than with a plotting
widget (textual-plotext, which the issue named): ten bars need no dependency, and the same
text shows in a terminal, on the served wall screen and in the snapshots."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from ccctl.feeds.values import RISK, RISK_NAMES
from ccctl.tui.style import RISK_COLOURS, sparkline
from ccctl.tui.widgets.header import age_text
from ccctl.tui.widgets.textpanel import TextPanel

Province = tuple[str, str, str]  # scheme, code, name


def risk_text(level: float) -> Text:
    """A risk level as ``3 high`` in its colour."""
    n = int(level)
    name = RISK_NAMES.get(n, "").split(" (")[0]
    return Text(f"{n} {name}".strip(), style=f"bold {RISK_COLOURS.get(n, 'white')}")


def value_text(indicator: str, value: float | None) -> Text:
    """A value as the room reads it: ``12,345``, ``2.5``, a risk level coloured, ``—`` when none."""
    if value is None:
        return Text("—", style="dim")
    if indicator == RISK:
        return risk_text(value)
    return Text(f"{int(value):,}" if float(value).is_integer() else f"{value:,.2f}")


def whole_feed(values: dict[str, dict[str, tuple[str, float]]]) -> dict[str, tuple[str, float]]:
    """Every province of a feed together: counts summed, risk levels the worst (the rule of
    ``ccctl.feeds.views``), with the newest day."""
    out: dict[str, tuple[str, float]] = {}
    for indicators in values.values():
        for indicator, (day, value) in indicators.items():
            held = out.get(indicator)
            if held is None:
                out[indicator] = (day, value)
            else:
                total = max(held[1], value) if indicator == RISK else held[1] + value
                out[indicator] = (max(held[0], day), total)
    return out


def whole_series(history: dict[str, dict[str, list[float | None]]], indicator: str) -> list[float | None]:
    """One indicator's days over every province: summed, risk levels the worst; None where none has a value."""
    out: list[float | None] = []
    for values in zip(*(units[indicator] for units in history.values() if indicator in units), strict=True):
        known = [v for v in values if v is not None]
        out.append(None if not known else max(known) if indicator == RISK else sum(known))
    return out


def trend_text(indicator: str, values: list[float | None]) -> Text:
    """A sparkline of an indicator's days: counts scaled to their highest, risk levels to 4 (in the colour of the last)."""
    known = [v for v in values if v is not None]
    if not known:
        return Text("")
    if indicator == RISK:
        return Text(sparkline(values, 4.0), style=RISK_COLOURS.get(int(known[-1]), ""))
    return Text(sparkline(values, max(known) or 1.0), style="cyan")


TOP_N = 10
BAR_WIDTH = 22  # with the name and the value, the chart fits the panel's 56 columns
EIGHTHS = " ▏▎▍▌▋▊▉█"
PREFERRED = ("new_cases", "cases", "active", "deaths")  # the count a room ranks provinces by


def bar(value: float, most: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of ``value`` against ``most`` in eighths of a cell (at least a sliver for any value above 0)."""
    eighths = round(width * 8 * value / most) if most > 0 else 0
    eighths = max(eighths, 1) if value > 0 else 0
    return "█" * (eighths // 8) + (EIGHTHS[eighths % 8] if eighths % 8 else "")


def ranked_indicator(indicators: set[str]) -> str | None:
    """The count to rank provinces by: the first of PREFERRED the feed has, else its first count by name."""
    counts = sorted(indicators - {RISK})
    return next((i for i in PREFERRED if i in counts), counts[0] if counts else None)


def top_chart(units: dict[str, dict[str, tuple[str, float]]], names: dict[str, str], n: int = TOP_N,
              selected: str | None = None) -> Text:
    """The ``n`` provinces with the most of the ranked count, as bars on one scale (largest first,
    ties by code so the order is stable); ``selected`` (a province code) marked with ``▶``."""
    indicator = ranked_indicator({i for values in units.values() for i in values})
    if indicator is None:
        return Text("")
    ranked = sorted(((values[indicator][1], code) for code, values in units.items() if indicator in values),
                    key=lambda vc: (-vc[0], vc[1]))[:n]
    if len(ranked) < 3 or ranked[0][0] <= 0:  # a ranking of one or two units says nothing
        return Text("")
    most = ranked[0][0]
    text = Text.assemble("  ", (f"top {len(ranked)} provinces by {indicator}", "underline"), "\n")
    for value, code in ranked:
        mark = ("▶ ", "bold") if code == selected else "  "
        text.append_text(Text.assemble(mark, _cell(names.get(code, code), 16, False), " ",
                                       _cell(value_text(indicator, value), 10), " ", (bar(value, most), "cyan"), "\n"))
    return text


def _cell(text: Text | str, width: int, right: bool = True) -> Text:
    cell = text if isinstance(text, Text) else Text(text)
    cell.truncate(width, overflow="ellipsis")
    pad = " " * (width - cell.cell_len)
    return Text.assemble(pad, cell) if right else Text.assemble(cell, pad)


def data_text(feeds: list[dict[str, Any]] | None, province: Province | None, now: float,
              remote: bool = False) -> Text:
    """The panel's text for ``province`` (None: the country only)."""
    where = f"{province[2]} ({province[0]})" if province else "Việt Nam"
    text = Text.assemble(("Data feeds", "bold"), " · ", (where, "bold cyan"), "\n")
    if remote:
        return text.append("not served to a remote console yet", style="dim")
    if feeds is None:
        return text.append("reading...", style="dim")
    if not feeds:
        return text.append("no feed (ccctl feed add NAME SOURCE)", style="dim")
    for feed in feeds:
        text.append("\n")
        text.append(feed["name"], style="bold")
        provinces = feed["provinces"]
        covered = len(provinces.get(feed["scheme"], {}))
        text.append(f"  {feed['level']}, {feed['scheme']}, {covered} province{'s' * (covered != 1)}\n", style="dim")
        ok_at = feed["last_ok_at"]
        text.append("  pulled ")
        age = None if ok_at is None else now - ok_at
        text.append(age_text(age) + (" ago" if age is not None else ""),
                    style="bold yellow" if age is None or age > 2 * 3600 else "green")
        if feed["newest_day"]:
            text.append(f", newest day {feed['newest_day']}")
        text.append("\n")
        if feed["last_error"] and (ok_at is None or (feed["last_error_at"] or 0) > ok_at):
            text.append(f"  last pull failed {age_text(now - feed['last_error_at'])} ago: {feed['last_error']}\n",
                        style="bold red")
        mine: dict[str, tuple[str, float]] = {}
        if province is not None:
            mine = provinces.get(province[0], {}).get(province[1], {})
        total = whole_feed(provinces.get(feed["scheme"], {}))
        if not total:
            text.append("  no values yet\n", style="dim")
            continue
        history = feed.get("history", {})
        ours = province is not None and province[0] == feed["scheme"] and province[1] in history
        days = len(feed.get("days", []))
        head = province[2] if province else ""
        text.append_text(Text.assemble("  ", _cell("indicator", 15, False), " ", _cell(head, 12), " ", _cell("all units", 12),
                                       " ", _cell(f"{days} days" + ("" if ours else ", all"), days or 8, False),
                                       style="underline"))
        text.append("\n")
        older = []
        for indicator in sorted(total):
            day = mine.get(indicator, total[indicator])[0]
            if day != feed["newest_day"]:
                older.append(f"{indicator} {day}")
            series = history[province[1]].get(indicator, []) if ours and province else whole_series(history, indicator)
            text.append_text(Text.assemble(
                "  ", _cell(indicator, 15, False), " ",
                _cell(value_text(indicator, mine[indicator][1] if indicator in mine else None), 12), " ",
                _cell(value_text(indicator, total[indicator][1]), 12), " ", trend_text(indicator, series)))
            text.append("\n")
        if older:
            text.append(f"  older values: {', '.join(older)}\n", style="dim")
        scheme = feed["scheme"]
        text.append_text(top_chart(provinces.get(scheme, {}), feed.get("names", {}).get(scheme, {}),
                                   selected=province[1] if province and province[0] == scheme else None))
    return text


class DataPanel(TextPanel):
    """Shows what the app hands it; the app re-renders it when data or the selection change."""
