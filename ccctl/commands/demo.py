"""``ccctl demo``: the main job on the embedded defaults, end to end.

Loads the official units, generates one site per commune of the 19 Directive-16 provinces,
starts the simulated fleet with a few seeded faults, runs a roll-call (TCP + SSH +
diagnostics) and prints the per-province report; the fleet is stopped at the end.
"""

from __future__ import annotations

import click

from ccctl.cli import AppContext, run_async, say
from ccctl.output import emit

DEMO_FAULTS = "down=1%,blackhole=1%,authfail=0.5%,hostkey=0.5%,nocam=1%,slow=1%:1200,seed=2021"


@click.command()
@click.option("--faults", default=DEMO_FAULTS, show_default=True, help="Fault spec of the simulated fleet.")
@click.option("--timeout", "timeout_s", type=float, default=3.0, show_default=True, help="Seconds per stage.")
@click.pass_obj
def demo(obj: AppContext, faults: str, timeout_s: float) -> None:
    """Units, the 19 provinces' sites, a simulated fleet, a roll-call, the report."""
    from ccctl.registry import sites as core
    from ccctl.registry.units import load_units
    from ccctl.reports import frame_records, rollcall_frame
    from ccctl.rollcall.history import run_results
    from ccctl.rollcall.session import options_from_config, rollcall, run_lock
    from ccctl.sim.control import launch, read_state, stop_fleet
    from ccctl.sim.faults import parse_fault_spec

    db, config = obj.db, obj.config
    for scheme in ("2021", "2025"):
        counts = load_units(db, scheme)
        say(f"units {scheme}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    created, kept = core.generate_sites(db, "2021", core.DIRECTIVE_16)
    say(f"sites: {created} generated, {kept} already registered")
    sites = core.select_sites(db, core.SiteFilter(province=None, enabled_only=True))
    started_here = not (read_state(config.home) or {}).get("alive")
    if started_here:
        plan = launch(db, config, [s.id for s in sites], parse_fault_spec(faults))
        say(f"simulated fleet: {len(plan)} sites, {sum(1 for p in plan if p.fault)} with a fault ({faults})")
    else:
        say("simulated fleet already running; using it")
    try:
        sites = core.select_sites(db, core.SiteFilter(enabled_only=True))
        options = options_from_config(config, timeout_s=timeout_s)
        with run_lock(config.home):
            outcome = run_async(rollcall(db, sites, options))[-1]
        say(outcome.line())
        frame = rollcall_frame(run_results(db, outcome.run_id), "province")
        emit(frame_records(frame), "table", list(frame.columns))
    finally:
        if started_here:
            stop_fleet(config.home)
            say("simulated fleet stopped")
