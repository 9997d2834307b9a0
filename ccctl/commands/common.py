"""Options shared by commands: output format and the site filters.

Commands that act on the sites they select (``sites remove``, ``exec``) take their filters from
``acting_site_filter_options``: with no filter they refuse, and ``--all`` means every site.
Listing and read-only fleet commands (``sites list``, ``sites export``, ``rollcall run``,
``broadcast links``, ``sim``) select every site when given no filter. Everywhere, a filter that
is given must narrow (``--search '%'`` is an error, not "everything").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ccctl.cli import AppContext
from ccctl.errors import UsageError
from ccctl.output import FORMATS

if TYPE_CHECKING:  # imported where used: commands without site filters start sooner
    from ccctl.registry.sites import SiteFilter

F = Callable[..., Any]


def format_options(func: F) -> F:
    """``--format table|csv|json`` with ``--json`` and ``--csv`` shorthands, as ``fmt``."""

    func = click.option("--csv", "as_csv", is_flag=True, help="Shorthand for --format csv.")(func)
    func = click.option("--json", "as_json", is_flag=True, help="Shorthand for --format json.")(func)
    func = click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                        help="Output format (default: table, or output.format in the config).")(func)
    return func


def resolve_format(obj: AppContext, fmt: str | None, as_json: bool, as_csv: bool) -> str:
    """The format chosen by flags, else the configured default."""
    if as_json:
        return "json"
    if as_csv:
        return "csv"
    return fmt or obj.config.output.format


def site_filter_options(func: F) -> F:
    """The site filters every command acting on sites takes."""
    # multiple=True so that site_filter can refuse a repeat, which click would reduce to the last.
    once: dict[str, Any] = {"multiple": True}
    options = [
        click.option("--search", "f_search", metavar="Q", help="Free text, diacritics folded (ho chi minh).", **once),
        click.option("--tier", "f_tier", type=click.Choice(["high", "low", "audio"]), help="Bandwidth tier.", **once),
        click.option("--tag", "f_tag", metavar="T", help="Sites carrying this tag.", **once),
        click.option("--unit", "f_unit", metavar="CODE", help="Administrative unit code (GSO).", **once),
        click.option("--district", "f_district", metavar="D", help="District code or name.", **once),
        click.option("--province", "f_province", metavar="P", help="Province code or name.", **once),
        click.option("--site", "f_sites", metavar="ID", multiple=True, help="Site id (repeatable)."),
    ]
    for option in options:
        func = option(func)
    return func


def acting_site_filter_options(func: F) -> F:
    """The site filters of a command that changes or runs something on the sites, plus ``--all``."""
    func = click.option("--all", "f_all", is_flag=True, help="Every site (instead of a filter).")(func)
    return site_filter_options(func)


def site_filter(kwargs: dict[str, Any], enabled_only: bool = False) -> SiteFilter:
    """Pop the site-filter options out of a command's kwargs into a checked SiteFilter.

    For a command with ``--all`` (``acting_site_filter_options``), an empty filter without
    ``--all`` and ``--all`` with a filter are usage errors.
    """
    def once(key: str, flag: str) -> str | None:
        values = kwargs.pop(key, None) or ()
        if isinstance(values, str):  # ctx.invoke with a plain value
            return values
        if len(values) > 1:
            raise UsageError(f"{flag} given {len(values)} times; give it once (several sites: repeat --site)")
        return values[0] if values else None

    from ccctl.registry.sites import SiteFilter

    acting = "f_all" in kwargs
    every = bool(kwargs.pop("f_all", False))
    flt = SiteFilter(
        ids=tuple(kwargs.pop("f_sites", ()) or ()),
        province=once("f_province", "--province"),
        district=once("f_district", "--district"),
        unit=once("f_unit", "--unit"),
        tag=once("f_tag", "--tag"),
        tier=once("f_tier", "--tier"),
        search=once("f_search", "--search"),
        enabled_only=enabled_only,
    )
    flt.check()
    if acting and flt.is_empty() and not every:
        raise UsageError("give --site or another filter to choose the sites, or --all for every site")
    if acting and every and not flt.is_empty():
        raise UsageError("--all means every site; give it without filters")
    return flt
