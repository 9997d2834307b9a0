"""``ccctl dashboard``: the live Textual monitor (the TUI is imported only when it runs)."""

from __future__ import annotations

import click

from ccctl.cli import AppContext


@click.command()
@click.option("--readonly", is_flag=True, help="Watch only: no action exists (keys and palette entries gone).")
@click.option("--wall", is_flag=True, help="For a wall screen: read-only, high contrast, cycles through the "
                                           "provinces with sites down.")
@click.option("--poll", "poll_s", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True,
              help="Seconds between reads of the registry (each read starts after the last one ended).")
@click.pass_obj
def dashboard(obj: AppContext, readonly: bool, wall: bool, poll_s: float) -> None:
    """The whole country on one screen: counts by state, provinces worst first, drill-down to
    every site, a filter, the map, the event log; re-check, floor, tier and revoke from it."""
    run_dashboard(obj, readonly=readonly, wall=wall, poll_s=poll_s)


def run_dashboard(obj: AppContext, readonly: bool = False, wall: bool = False, poll_s: float = 2.0) -> None:
    """Run the dashboard on this context's registry and server until the operator quits."""
    from ccctl.rollcall.session import options_from_config
    from ccctl.tui.app import Dashboard

    config = obj.config
    app = Dashboard(config.db_url, config.home, config.serve.listen, readonly=readonly, wall=wall,
                    rollcall_options=options_from_config(config), poll_s=poll_s)
    app.run()
