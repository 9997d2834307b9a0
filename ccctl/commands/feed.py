"""``ccctl feed``: data feeds from the national platforms, joined to the units, with history.

``feed pull`` is for cron: exit 0 when the data were stored (or the source answered "not
modified"), 10 when the pull failed or the data were malformed (the last good data are
kept; one ``Error: feed NAME: ...`` line, bad rows listed above it), 4 unknown feed, 7 units
not loaded.
"""

from __future__ import annotations

import time
from typing import Any

import click

from ccctl.cli import AppContext, run_async, say
from ccctl.commands.common import format_options, resolve_format
from ccctl.feeds.spec import FORMATS, LEVELS, FeedSpec
from ccctl.output import emit
from ccctl.registry import feeds as store


@click.group()
def feed() -> None:
    """Data feeds (files, folders of dated files, http(s) URLs) joined to the official units."""


@feed.command("add")
@click.argument("name")
@click.argument("source")
@click.option("--every", "every_s", type=float, default=300.0, show_default=True, metavar="S",
              help="Seconds between pulls when `serve` polls it.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="How to read it; ncsc: the 2021 national COVID API's shape.")
@click.option("--level", type=click.Choice(LEVELS), default="province", show_default=True)
@click.option("--scheme", type=click.Choice(["2021", "2025"]), default="2021", show_default=True,
              help="The units' scheme the feed names.")
@click.option("--unit-column", metavar="C", help="The column naming the units (default: found by its header).")
@click.option("--alert", "alerts", multiple=True, metavar="RULE",
              help='An event when crossed, e.g. "new_cases>500" or "province:risk_level>=3" (repeatable).')
@click.option("--header-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="HTTP headers ('Name: value' lines, or one bearer token); the path is kept, never the secret.")
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True, metavar="S")
@click.option("--keep-days", type=int, default=400, show_default=True, help="History kept behind the newest day.")
@click.option("--replace", is_flag=True, help="Redefine an existing feed (its history stays).")
@click.pass_obj
def add(obj: AppContext, name: str, source: str, replace: bool, **options: Any) -> None:
    """Define a feed NAME reading SOURCE (file, folder or http(s) URL)."""
    from ccctl.feeds.alerts import parse_alert
    from ccctl.feeds.fetch import is_url

    if not is_url(source):
        from pathlib import Path

        source = str(Path(source).expanduser().resolve())
    if options["header_file"]:  # serve and cron read it from elsewhere
        from pathlib import Path

        options["header_file"] = str(Path(options["header_file"]).expanduser().resolve())
    options["alerts"] = tuple(options["alerts"])
    options["format"] = options.pop("fmt")
    spec = FeedSpec(name=name, source=source, **options)
    for rule in spec.alerts:
        parse_alert(rule, spec.level)
    store.add_feed(obj.db, spec, replace=replace)
    say(f"feed {name}: {'redefined' if replace else 'added'}; pull it with: ccctl feed pull {name}")


def _shown_source(source: str) -> str:
    """A URL without user, password or query (they may carry keys); paths as they are."""
    from ccctl.feeds.fetch import is_url, safe_url

    return safe_url(source) if is_url(source) else source


def _status(state: dict[str, Any], now: float) -> dict[str, Any]:
    ok, err = state["last_ok_at"], state["last_error_at"]
    status = "never pulled" if ok is None and err is None else "failing" if err and (ok is None or err > ok) else "ok"
    return {"status": status, "newest_day": state["newest_day"],
            "data_age_s": None if ok is None else round(now - ok), "last_pull_values": state["row_count"],
            "last_error": state["last_error"]}


@feed.command("list")
@format_options
@click.pass_obj
def list_cmd(obj: AppContext, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Every feed, with its data age and last error."""
    now = time.time()
    rows = [{"name": s.name, "source": _shown_source(s.source), "format": s.format, "level": s.level,
             "scheme": s.scheme, "every_s": s.every_s, **_status(st, now), "alerts": list(s.alerts)}
            for s, st in store.list_feeds(obj.db)]
    emit(rows, resolve_format(obj, fmt, as_json, as_csv),
         ["name", "source", "format", "level", "scheme", "every_s", "status", "newest_day", "data_age_s",
          "last_pull_values", "last_error", "alerts"])


@feed.command("show")
@click.argument("name")
@click.option("--at", metavar="DATE", help="As of this day (d/m/yyyy or yyyy-mm-dd): each indicator's newest day up to it.")
@click.option("--by", type=click.Choice(LEVELS), help="Summed up to this level (risk levels: the worst).")
@click.option("--scheme", type=click.Choice(["2021", "2025"]),
              help="Units of this scheme (a 2021 feed in 2025 units: through the units map).")
@click.option("--long", "long_", is_flag=True, help="One row per unit, day and indicator.")
@format_options
@click.pass_obj
def show(obj: AppContext, name: str, at: str | None, by: str | None, scheme: str | None, long_: bool,
         fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """A feed's values per unit (one column per indicator), with its state on stderr."""
    from ccctl.feeds import views

    spec, state = store.get_feed(obj.db, name)
    info = _status(state, time.time())
    age = "never pulled" if info["data_age_s"] is None else f"pulled {info['data_age_s']} s ago"
    error = f"; last error: {info['last_error']}" if info["status"] == "failing" else ""
    say(f"feed {name}: {info['status']}, newest day {info['newest_day'] or '-'}, {age}{error}")
    try:
        if long_:
            emit(views.long_rows(obj.db, name, at, by, scheme), resolve_format(obj, fmt, as_json, as_csv),
                 ["unit_code", "unit_name", "day", "indicator", "value"])
        else:
            rows, columns = views.wide_rows(obj.db, name, at, by, scheme)
            emit(rows, resolve_format(obj, fmt, as_json, as_csv), columns)
    except ValueError as exc:  # a bad --at
        from ccctl.errors import UsageError

        raise UsageError(f"--at: {exc}") from None


@feed.command("history")
@click.argument("name")
@click.argument("indicator")
@click.option("--by", type=click.Choice(LEVELS), help="Summed up to this level (risk levels: the worst).")
@click.option("--since", metavar="DATE", help="From this day on (d/m/yyyy or yyyy-mm-dd).")
@click.option("--unit", "unit_codes", multiple=True, metavar="CODE", help="Only this unit code (feed's level; repeatable).")
@format_options
@click.pass_obj
def history_cmd(obj: AppContext, name: str, indicator: str, by: str | None, since: str | None,
                unit_codes: tuple[str, ...], fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """One indicator's daily history per unit, oldest first (what a sparkline draws)."""
    from ccctl.errors import UsageError
    from ccctl.feeds import views
    from ccctl.feeds.values import show_value

    try:
        series = views.history(obj.db, name, indicator, by, since, list(unit_codes) or None)
    except ValueError as exc:  # a bad --since
        raise UsageError(f"--since: {exc}") from None
    rows = [{"unit_code": unit, "day": day, "value": show_value(indicator, value)}
            for unit, points in series.items() for day, value in points]
    emit(rows, resolve_format(obj, fmt, as_json, as_csv), ["unit_code", "day", "value"])


@feed.command("pull")
@click.argument("name")
@click.option("--quiet", "-q", is_flag=True, help="Nothing on stdout, only errors and alerts on stderr (cron).")
@format_options
@click.pass_obj
def pull(obj: AppContext, name: str, quiet: bool, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Pull a feed once (for cron): all or nothing.

    Exit 0: stored, or not modified; 10: the pull failed or the data were malformed (nothing
    stored, the last good data kept; bad rows listed by line, then one Error line); 4: no
    such feed; 7: the feed's units are not loaded.
    """
    from ccctl.feeds.pull import pull_feed

    result = run_async(pull_feed(obj.db, name))
    for alert in result.alerts:
        say(f"alert: feed {name}: {alert}")
    if quiet:
        return
    if result.status == "not_modified":
        say(f"feed {name}: not modified since the last pull")
    else:
        say(f"feed {name}: {result.values} values for {result.units} units, newest day {result.newest_day}")
    emit([{"feed": name, "status": result.status, "values": result.values, "units": result.units,
           "newest_day": result.newest_day, "alerts": len(result.alerts)}], resolve_format(obj, fmt, as_json, as_csv))


@feed.command("events")
@click.argument("name", required=False)
@click.option("--limit", type=int, default=50, show_default=True)
@format_options
@click.pass_obj
def events(obj: AppContext, name: str | None, limit: int, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Pulls, failures and alerts, newest first."""
    rows = store.feed_events(obj.db, name, limit)
    for r in rows:
        r["time"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.pop("ts")))
    emit(rows, resolve_format(obj, fmt, as_json, as_csv),
         ["id", "time", "feed", "kind", "unit_code", "indicator", "detail"])


@feed.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_context
def remove(ctx: click.Context, name: str, yes: bool) -> None:
    """Remove a feed and its history (its events stay)."""
    from ccctl.cli import confirm

    obj: AppContext = ctx.obj
    store.get_feed(obj.db, name)
    confirm(ctx, f"remove feed {name} and its history?", yes)
    dropped = store.remove_feed(obj.db, name)
    say(f"feed {name}: removed ({dropped} values dropped)")
