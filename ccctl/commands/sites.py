"""``ccctl sites``: register, list, edit, remove, import, export and generate bridge points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ccctl.cli import AppContext, confirm, say
from ccctl.commands.common import acting_site_filter_options, format_options, resolve_format, site_filter, site_filter_options
from ccctl.errors import NotFound, UsageError
from ccctl.output import emit, emit_object
from ccctl.registry import sites as core

LIST_COLUMNS = ["id", "name", "scheme", "unit_code", "unit_name", "district_name", "province_name",
                "host", "ssh_port", "tier", "tags", "enabled", "simulated"]
FULL_COLUMNS = ["id", "name", "scheme", "unit_code", "unit_name", "district_code", "district_name",
                "province_code", "province_name", "host", "ssh_port", "ssh_user", "host_key", "key_path",
                "tier", "link_kbps", "contact_name", "contact_phone", "tags", "enabled", "simulated"]


def _field_options(func: Any) -> Any:
    """The editable fields of a site as options (shared by add and edit)."""
    options = [
        click.option("--enable/--disable", "enabled", default=None, help="Take part in roll-calls and broadcasts."),
        click.option("--tags", metavar="T,T", help="Comma-separated tags (replaces)."),
        click.option("--contact-phone", metavar="PHONE"),
        click.option("--contact-name", metavar="NAME"),
        click.option("--link-kbps", type=int, metavar="KBPS", help="Measured link capacity."),
        click.option("--tier", type=click.Choice(["high", "low", "audio"]), help="Bandwidth tier."),
        click.option("--key-path", metavar="PATH", help="Path of the private key to log in with (never the key)."),
        click.option("--host-key", metavar="KEY", help="The box's SSH public host key, or known_hosts:PATH."),
        click.option("--ssh-user", metavar="USER"),
        click.option("--ssh-port", metavar="PORT", help="SSH port (default 22)."),
        click.option("--host", metavar="HOST", help="Address of the site's box."),
        click.option("--scheme", type=click.Choice(["2021", "2025"]), help="Scheme of the unit code (default 2021)."),
        click.option("--unit", "unit_code", metavar="CODE", help="Administrative unit code (GSO)."),
        click.option("--name", metavar="NAME", help="Display name (UTF-8, with diacritics)."),
    ]
    for option in options:
        func = option(func)
    return func


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@click.group()
def sites() -> None:
    """Bridge points: each tied to an official administrative unit."""


@sites.command("add")
@click.argument("site_id")
@_field_options
@format_options
@click.pass_obj
def add(obj: AppContext, site_id: str, fmt: str | None, as_json: bool, as_csv: bool, **values: Any) -> None:
    """Register one site (needs --name and --unit)."""
    values = _given(values)
    if "name" not in values or "unit_code" not in values:
        raise UsageError("sites add needs --name and --unit")
    site = core.add_site(obj.db, {"id": site_id, **values})
    say(f"added site {site.id}")
    emit_object({k: core.site_record(site)[k] for k in FULL_COLUMNS}, resolve_format(obj, fmt, as_json, as_csv))


@sites.command("show")
@click.argument("site_id")
@format_options
@click.pass_obj
def show(obj: AppContext, site_id: str, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Every field of one site."""
    site = core.get_site(obj.db, site_id)
    emit_object({k: core.site_record(site)[k] for k in FULL_COLUMNS}, resolve_format(obj, fmt, as_json, as_csv))


@sites.command("edit")
@click.argument("site_id")
@_field_options
@format_options
@click.pass_obj
def edit(obj: AppContext, site_id: str, fmt: str | None, as_json: bool, as_csv: bool, **values: Any) -> None:
    """Change fields of one site."""
    changes = _given(values)
    if not changes:
        raise UsageError("nothing to change; give at least one field option")
    site = core.edit_site(obj.db, site_id, changes)
    say(f"edited site {site.id}: {', '.join(sorted(changes))}")
    emit_object({k: core.site_record(site)[k] for k in FULL_COLUMNS}, resolve_format(obj, fmt, as_json, as_csv))


@sites.command("remove")
@acting_site_filter_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.pass_context
def remove(ctx: click.Context, yes: bool, **kwargs: Any) -> None:
    """Retire sites: remove them from the registry (their history stays); --all for every site."""
    obj: AppContext = ctx.obj
    flt = site_filter(kwargs)
    chosen = core.select_sites(obj.db, flt)
    if not chosen:
        raise NotFound("no site matches")
    confirm(ctx, f"Remove {len(chosen)} site(s)?", yes)
    count = core.remove_sites(obj.db, [s.id for s in chosen])
    say(f"removed {count} site(s)")


@sites.command("list")
@site_filter_options
@click.option("--all-columns", is_flag=True, help="Every field, not the summary columns.")
@format_options
@click.pass_obj
def list_cmd(obj: AppContext, all_columns: bool, fmt: str | None, as_json: bool, as_csv: bool, **kwargs: Any) -> None:
    """List sites, filtered by province, district, unit, tag, tier and free text."""
    chosen = core.select_sites(obj.db, site_filter(kwargs))
    emit([core.site_record(s) for s in chosen], resolve_format(obj, fmt, as_json, as_csv),
         FULL_COLUMNS if all_columns else LIST_COLUMNS)


@sites.command("summary")
@click.option("--by", type=click.Choice(["province", "district"]), default="province")
@format_options
@click.pass_obj
def summary(obj: AppContext, by: str, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Sites per province or district: how many, enabled, with an endpoint."""
    emit(core.site_summary(obj.db, by), resolve_format(obj, fmt, as_json, as_csv),
         ["scheme", "code", "name", "sites", "enabled", "with_endpoint"])


@sites.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--scheme", type=click.Choice(["2021", "2025"]), default="2021", help="Scheme of rows without one.")
@click.option("--dry-run", is_flag=True, help="Validate only; import nothing.")
@click.option("--replace", is_flag=True, help="Overwrite sites whose id is already registered.")
@click.pass_obj
def import_cmd(obj: AppContext, file: Path, scheme: str, dry_run: bool, replace: bool) -> None:
    """Import sites from CSV or Excel: all rows, or none if any row is bad.

    Columns: id, name, unit_code required; scheme, host, ssh_port, ssh_user, host_key,
    key_path, tier, link_kbps, contact_name, contact_phone, tags, enabled, simulated optional.
    Every row has as many fields as the header, and no column is named twice. A leading '
    before text starting with = + - @ or ' (what export writes against formula injection) is
    dropped.
    """
    from ccctl.registry.files import import_sites

    count = import_sites(obj.db, file, scheme, dry_run, replace)
    say(f"{'validated' if dry_run else 'imported'} {count} site(s) from {file}")


@sites.command("export")
@click.argument("file", type=click.Path(path_type=Path))
@site_filter_options
@click.pass_obj
def export_cmd(obj: AppContext, file: Path, **kwargs: Any) -> None:
    """Write sites to CSV or Excel (.xlsx) in the columns import reads.

    Text a spreadsheet would run as a formula (starting with = + - @) is written with a leading '
    (import drops it again); xlsx cells are text, never formulas.
    """
    from ccctl.registry.files import export_sites

    count = export_sites(obj.db, file, site_filter(kwargs))
    say(f"exported {count} site(s) to {file}")


@sites.command("generate")
@click.option("--scheme", type=click.Choice(["2021", "2025"]), default="2021")
@click.option("--province", "provinces", multiple=True, metavar="P", help="Province code or name (repeatable).")
@click.option("--preset", type=click.Choice(["directive-16"]), help="directive-16: the 19 southern provinces of 2021.")
@click.pass_obj
def generate(obj: AppContext, scheme: str, provinces: tuple[str, ...], preset: str | None) -> None:
    """Create one site per commune of the chosen provinces (existing ones are kept)."""
    chosen = list(provinces)
    if preset == "directive-16":
        if scheme != "2021":
            raise UsageError("--preset directive-16 names 2021 provinces; use --scheme 2021")
        chosen += list(core.DIRECTIVE_16)
    if not chosen:
        raise UsageError("give --province or --preset")
    created, kept = core.generate_sites(obj.db, scheme, chosen)
    say(f"generated {created} site(s), {kept} already registered")
