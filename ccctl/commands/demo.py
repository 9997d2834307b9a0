"""``ccctl demo``: the main job on the embedded defaults, end to end."""

from __future__ import annotations

import click

from ccctl.cli import AppContext, say
from ccctl.output import emit
from ccctl.registry import sites as core
from ccctl.registry.units import load_units


@click.command()
@click.pass_obj
def demo(obj: AppContext) -> None:
    """Load the units, generate the 19 Directive-16 provinces' sites, print a summary."""
    for scheme in ("2021", "2025"):
        counts = load_units(obj.db, scheme)
        say(f"units {scheme}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    created, kept = core.generate_sites(obj.db, "2021", core.DIRECTIVE_16)
    say(f"sites: {created} generated, {kept} already registered")
    emit(core.site_summary(obj.db), "table", ["scheme", "code", "name", "sites", "enabled", "with_endpoint"])
