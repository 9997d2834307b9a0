"""``ccctl demo``: the main job on the embedded defaults, end to end.

On a terminal (stdin, stdout and stderr all ttys) the demo opens the dashboard once the roll-call
and the broadcast are up, with the fleet and the server still running, and stops them when
the operator quits; in a pipe, under cron or in CI it prints the reports below.

Loads the official units, generates one site per commune of the 19 Directive-16 provinces,
starts the simulated fleet with a few seeded faults, runs a roll-call (TCP + SSH +
diagnostics) and prints the per-province report; the fleet is stopped at the end. Then the
broadcast: the server starts in the background, a test-pattern broadcast goes live, simulated
sites join it as real WebRTC receivers (a few with lossy links, which their own RTCP reports
move to a lower tier), and the broadcast's status is printed per tier; then everything stops.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO

import click

from ccctl.cli import AppContext, run_async, say
from ccctl.output import emit

DEMO_FAULTS = "down=1%,blackhole=1%,authfail=0.5%,hostkey=0.5%,nocam=1%,slow=1%:1200,seed=2021"
DEMO_JOIN_FAULTS = "loss=5%:15,seed=2021"
SETTLE_S = 8.0  # seconds of broadcast before the status is taken (lossy sites need a few reports)


@click.command()
@click.option("--faults", default=DEMO_FAULTS, show_default=True, help="Fault spec of the simulated fleet.")
@click.option("--timeout", "timeout_s", type=float, default=3.0, show_default=True, help="Seconds per stage.")
@click.option("--join", "joining", type=click.IntRange(min=0), default=200, show_default=True,
              help="Simulated sites joining the broadcast (0: no broadcast part).")
@click.option("--no-dashboard", is_flag=True, help="Print the reports even on a terminal.")
@click.pass_context
def demo(ctx: click.Context, faults: str, timeout_s: float, joining: int, no_dashboard: bool) -> None:
    """Units, the 19 provinces' sites, a simulated fleet, a roll-call, the report; then a
    broadcast that simulated sites join, and its status. On a terminal, the dashboard instead
    of the reports, while the fleet and the broadcast run."""
    if no_dashboard or not interactive(sys.stdin, sys.stdout, sys.stderr):
        _rollcall(ctx.obj, faults, timeout_s)
        if joining:
            _broadcast(ctx, joining)
        return

    def dashboard() -> None:
        from ccctl.commands.dashboard import run_dashboard

        run_dashboard(ctx.obj)

    _rollcall(ctx.obj, faults, timeout_s, inside=(lambda: _broadcast(ctx, joining, inside=dashboard))
              if joining else dashboard)


def interactive(stdin: IO[str], stdout: IO[str], stderr: IO[str] | None = None) -> bool:
    """True when stdin and stdout are a terminal (an operator is there to use the dashboard),
    and stderr too when given: Textual draws on stderr, so ``ccctl demo 2>log`` gets the reports."""
    try:
        return stdin.isatty() and stdout.isatty() and (stderr is None or stderr.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _rollcall(obj: AppContext, faults: str, timeout_s: float, inside: Callable[[], None] | None = None) -> None:
    """The roll-call part; ``inside`` (the dashboard) runs instead of the report while the
    fleet is up."""
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
        if inside is not None:
            inside()
            return
        frame = rollcall_frame(run_results(db, outcome.run_id), "province")
        emit(frame_records(frame), "table", list(frame.columns))
    finally:
        if started_here:
            stop_fleet(config.home)
            say("simulated fleet stopped")


def _broadcast(ctx: click.Context, joining: int, inside: Callable[[], None] | None = None) -> None:
    """The server, a test-pattern broadcast, ``joining`` simulated sites, the status by tier
    (or, with ``inside``, the dashboard while the broadcast runs)."""
    import time

    from ccctl.commands import broadcast, serve, sim
    from ccctl.media.client import ControlClient
    from ccctl.reports import tier_summary

    obj: AppContext = ctx.obj
    client = ControlClient(obj.config.home, obj.config.serve.listen)
    server_here = not client.alive()
    say("--- broadcast ---")
    ctx.invoke(broadcast.start, title="Hội nghị trực tuyến toàn quốc (demo)")
    try:
        ctx.invoke(sim.join, count=joining, fault_spec=DEMO_JOIN_FAULTS, wait=120.0)
        if inside is not None:
            inside()
            return
        time.sleep(SETTLE_S)  # let the program run before the figures are read
        data = client.call("GET", "/api/broadcast")
        emit(tier_summary(data["sessions"]), "table", ["tier", "sites", "connected", "kbps_avg", "packets_sent",
                                                      "lost_pct_max", "rtt_ms_max"])
        moved = sum(1 for s in data["sessions"] if s["tier"] != "high")  # every demo site is registered high
        budget = int((data.get("admission") or {}).get("moved_to_audio", 0))  # to stay within the packet budget
        say(f"broadcast {data['id']}: {data['title']}, {len(data['sessions'])} site(s); {budget} moved to audio by "
            f"admission to stay within the server's packet budget, {max(moved - budget, 0)} with a lossy link moved "
            "down by their own RTCP reports; `ccctl broadcast status` lists every site")
    finally:
        ctx.invoke(sim.leave)
        ctx.invoke(broadcast.stop)
        if server_here:
            ctx.invoke(serve.serve, stop_=True)
