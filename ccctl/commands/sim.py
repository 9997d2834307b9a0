"""``ccctl sim``: a simulated fleet of sites on loopback, for demos, drills, tests, benchmarks."""

from __future__ import annotations

import signal
from typing import Any

import click

from ccctl.cli import AppContext, say
from ccctl.commands.common import format_options, resolve_format, site_filter, site_filter_options
from ccctl.errors import NotFound, UsageError
from ccctl.output import emit


@click.group()
def sim() -> None:
    """Simulated sites: real SSH servers on 127.x.y.z addresses, with seeded faults."""


@sim.command("up")
@site_filter_options
@click.option("--faults", "fault_spec", default="", metavar="SPEC",
              help="e.g. 'down=1%,blackhole=1%,slow=2%:800,flap=1%,authfail=1%,hostkey=1%,nocam=2%,seed=7' "
                   "or 'SITE=KIND[:ARG]'.")
@click.option("--processes", type=int, help="Worker processes (default: sim.processes).")
@click.option("--detach", is_flag=True, help="Return once the fleet listens; stop it with: ccctl sim down.")
@click.option("--force", is_flag=True, help="Also take over sites that have a real endpoint (their host and key are replaced).")
@click.pass_obj
def up(obj: AppContext, fault_spec: str, processes: int | None, detach: bool, force: bool, **kwargs: Any) -> None:
    """Start one simulated endpoint per selected site and record it in the registry."""
    from ccctl.registry.sites import select_sites
    from ccctl.sim.control import launch, stop_fleet
    from ccctl.sim.faults import parse_fault_spec

    try:
        faults = parse_fault_spec(fault_spec)
    except ValueError as exc:
        raise UsageError(f"--faults: {exc}") from None
    sites = select_sites(obj.db, site_filter(kwargs, enabled_only=True))
    if not sites:
        raise NotFound("no enabled site matches; register or generate sites first")
    real = [s.id for s in sites if s.host and not s.simulated]
    if real and not force:
        raise UsageError(f"{len(real)} selected site(s) have a real endpoint (e.g. {real[0]}); narrow the filters "
                         "or pass --force to replace their host and host key with simulated ones")
    config = obj.config
    say(f"starting {len(sites)} simulated sites in {processes or config.sim.processes} process(es)...")
    plan = launch(obj.db, config, [s.id for s in sites], faults, processes)
    faulty = sum(1 for e in plan if e.fault)
    say(f"simulated fleet up: {len(plan)} sites ({faulty} with a fault) on 127.x.y.z:{config.sim.port}")
    if detach:
        return
    say("press Ctrl-C to stop")
    # Block the signals first, so that sigwait receives them instead of their default action.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stop_fleet(config.home)
        say("simulated fleet stopped")


@sim.command("status")
@format_options
@click.pass_obj
def status(obj: AppContext, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Whether the fleet runs, its workers and its faults."""
    from ccctl.sim.control import read_state

    state = read_state(obj.config.home)
    if not state:
        rows = [{"running": False, "workers": 0, "workers_alive": 0, "endpoints": 0, "faults": {}}]
    else:
        rows = [{"running": bool(state["alive"]), "workers": len(state["pids"]),
                 "workers_alive": len(state["alive"]), "endpoints": state["endpoints"], "faults": state["faults"]}]
    emit(rows, resolve_format(obj, fmt, as_json, as_csv))


@sim.command("down")
@click.pass_obj
def down(obj: AppContext) -> None:
    """Stop the simulated fleet."""
    from ccctl.sim.control import stop_fleet

    count = stop_fleet(obj.config.home)
    say(f"stopped {count} simulator worker(s)" if count else "no simulated fleet was running")
