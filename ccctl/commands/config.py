"""``ccctl config``: show the configuration in force."""

from __future__ import annotations

import click

from ccctl.cli import AppContext
from ccctl.commands.common import format_options, resolve_format
from ccctl.config import as_dict
from ccctl.output import emit


@click.group("config")
def config_group() -> None:
    """The configuration in force (defaults, files, CCCTL_* variables)."""


@config_group.command("show")
@format_options
@click.pass_obj
def show(obj: AppContext, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Every setting with its value; no secret is ever held in the configuration."""
    data = as_dict(obj.config)
    rows = [{"key": "home", "value": data.pop("home")}, {"key": "db_url", "value": data.pop("db_url")}]
    for section, values in data.items():
        for key, value in values.items():
            rows.append({"key": f"{section}.{key}", "value": value})
    emit(rows, resolve_format(obj, fmt, as_json, as_csv), ["key", "value"])
