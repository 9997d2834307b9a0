"""``ccctl units``: load, list and map the official administrative units."""

from __future__ import annotations

import click

from ccctl.cli import AppContext, say
from ccctl.commands.common import format_options, resolve_format
from ccctl.output import emit
from ccctl.registry.units import list_units, load_units, map_unit


@click.group()
def units() -> None:
    """Official administrative units (GSO codes), 2021 and 2025 schemes."""


@units.command("load")
@click.option("--scheme", type=click.Choice(["2021", "2025"]), multiple=True, required=True,
              help="2021: 63 provinces/705 districts/10,599 communes; 2025: 34 provinces/3,321 communes (and the mapping).")
@format_options
@click.pass_obj
def load(obj: AppContext, scheme: tuple[str, ...], fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Load the official units into the registry (loading twice changes nothing)."""
    rows = []
    for s in scheme:
        counts = load_units(obj.db, s)
        rows.append({"scheme": s, **{level: counts.get(level, 0) for level in ("province", "district", "commune")}})
        say(f"loaded scheme {s}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    emit(rows, resolve_format(obj, fmt, as_json, as_csv))


@units.command("list")
@click.option("--scheme", type=click.Choice(["2021", "2025"]), help="Only this scheme.")
@click.option("--level", type=click.Choice(["province", "district", "commune"]), help="Only this level.")
@click.option("--province", metavar="P", help="Province code or name (diacritics folded).")
@click.option("--search", metavar="Q", help="Code or name, diacritics folded (ho chi minh).")
@format_options
@click.pass_obj
def list_cmd(obj: AppContext, scheme: str | None, level: str | None, province: str | None,
             search: str | None, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """List units; names match case- and diacritic-insensitively."""
    rows = list_units(obj.db, scheme, level, province, search)
    emit(rows, resolve_format(obj, fmt, as_json, as_csv),
         ["scheme", "level", "code", "name", "full_name", "unit_type", "parent_code", "province_code", "district_code"])


@units.command("map")
@click.argument("code")
@click.option("--from", "from_scheme", type=click.Choice(["2021", "2025"]),
              help="The scheme CODE belongs to (the schemes reuse codes); default: 2021, then 2025.")
@format_options
@click.pass_obj
def map_cmd(obj: AppContext, code: str, from_scheme: str | None, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """A 2021 commune's 2025 successor(s), or a 2025 commune's 2021 predecessors."""
    emit(map_unit(obj.db, code.strip(), from_scheme), resolve_format(obj, fmt, as_json, as_csv),
         ["direction", "old_code", "old_name", "old_province", "new_code", "new_name", "new_province", "is_default"])
