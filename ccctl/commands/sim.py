"""``ccctl sim``: a simulated fleet of sites on loopback, for demos, drills, tests, benchmarks.

``up``/``down`` run the sites' boxes (SSH endpoints); ``join``/``leave`` make sites join the
live broadcast as WHEP receivers. Joining is its own phase of a drill, so it has its own
commands and worker processes: the boxes can stay up while sites join and leave, and sites
can join without the SSH fleet. ``status`` shows both; ``down`` ends both.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from typing import TYPE_CHECKING, Any

import click

from ccctl.cli import AppContext, say
from ccctl.commands.common import format_options, resolve_format, site_filter, site_filter_options
from ccctl.errors import CcctlError, NotFound, UsageError
from ccctl.output import emit

if TYPE_CHECKING:
    from ccctl.media.tls import ServerTrust


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


@sim.command("join")
@site_filter_options
@click.option("--server", metavar="URL",
              help="The ccctl server (default: the one on SERVE.LISTEN of the config, over https with its "
                   "certificate pinned when it serves https).")
@click.option("--count", type=click.IntRange(min=1), help="Only the first N selected sites (by id).")
@click.option("--video/--audio-only", default=True, show_default=True,
              help="Offer audio and video as the join page does (the server sends what each site's tier "
                   "allows), or sound only.")
@click.option("--faults", "fault_spec", default="", metavar="SPEC",
              help="Media faults of the sites' links, e.g. 'loss=5%:10,bwcap=2%:200,seed=7' or 'SITE=loss:20'.")
@click.option("--sample", type=click.IntRange(min=1),
              help="Count one RTP packet in N; the kernel drops the rest unread, counts are scaled estimates "
                   "and no receiver reports are sent (default: 1 up to 200 sites, else 20).")
@click.option("--processes", type=click.IntRange(min=1), help="Worker processes (default: one per 400 sites).")
@click.option("--wait", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds to wait until every site is connected (0: return at once).")
@click.option("--media-timeout", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="A connected site that receives nothing for this long rejoins (a crashed server says nothing).")
@format_options
@click.pass_obj
def join(obj: AppContext, server: str | None, count: int | None, video: bool, fault_spec: str, sample: int | None,
         processes: int | None, wait: float, media_timeout: float, fmt: str | None, as_json: bool, as_csv: bool,
         **kwargs: Any) -> None:
    """Selected sites join the live broadcast as simulated receivers (WHEP, each with its token,
    at its registry tier) and stay until `sim leave`; they rejoin on their own after a server
    restart. Prints the joined counts; exit 1 when not all connected within --wait."""
    from ccctl.media.client import local_endpoint
    from ccctl.media.tokens import generation, load_secret, site_token
    from ccctl.registry.sites import select_sites
    from ccctl.sim.control import plan_receivers, receiver_processes, start_receivers
    from ccctl.sim.faults import BWCAP, LOSS, parse_fault_spec

    try:
        faults = parse_fault_spec(fault_spec)
    except ValueError as exc:
        raise UsageError(f"--faults: {exc}") from None
    other = sorted({f.kind for f in [s.fault for s in faults.shares] + list(faults.sites.values())} - {LOSS, BWCAP})
    if other:
        raise UsageError(f"--faults: joined sites take only the media faults loss and bwcap, not {', '.join(other)}")
    sites = select_sites(obj.db, site_filter(kwargs, enabled_only=True))
    if not sites:
        raise NotFound("no enabled site matches; register or generate sites first")
    plan = plan_receivers(sites, audio_only=not video, faults=faults)[:count]
    secret = load_secret(obj.config.home)
    tokens = {r.site_id: site_token(secret, r.site_id, generation(obj.db, r.site_id)) for r in plan}
    config = obj.config
    local, local_trust = local_endpoint(config.home, config.serve.listen)
    base = (server or local).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--server: expected http://HOST:PORT, got {base!r}")
    trust = local_trust if base == local else None  # another server: checked against the system's store
    if sample is None:
        sample = 1 if len(plan) <= 200 else 20
    live = _live_broadcast(base, trust)
    up = live is not None
    if not up:
        say(f"no server answers at {base}: the sites will keep trying until one does")
    elif live is False:
        say("no broadcast is live: the sites will join when one starts")
        up = False
    workers = receiver_processes(len(plan), processes)
    say(f"{len(plan)} simulated site(s) joining {base} from {workers} process(es)"
        + (f", counting 1 packet in {sample}" if sample > 1 else ""))
    start_receivers(config.home, plan, tokens, base, processes=processes, sample=sample, media_timeout=media_timeout,
                    trust=dataclasses.asdict(trust) if trust is not None else None)
    row = _wait_joined(config.home, len(plan), wait if up else 0.0)
    emit([row], resolve_format(obj, fmt, as_json, as_csv))
    if wait and up and row["joined"] + row["refused"] < len(plan):
        raise CcctlError(f"only {row['joined']} of {len(plan)} sites connected within {wait:g} s; "
                         "the others keep trying (ccctl sim status)")


def _live_broadcast(base: str, trust: ServerTrust | None) -> bool | None:
    """Whether the server at ``base`` has a live broadcast (its open /healthz); None when none
    answers. An https server is checked with ``trust`` (CertificateRefused, exit 12)."""
    import json
    import urllib.error

    from ccctl.media.client import opener

    try:
        with opener(trust).open(base + "/healthz", timeout=5) as response:
            return bool(json.loads(response.read()).get("broadcast"))
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None


def _wait_joined(home: Any, total: int, wait: float) -> dict[str, Any]:
    """Poll the receivers' status files until all are connected or refused, or ``wait`` passes,
    with progress on stderr; the last status row."""
    from ccctl.sim.control import read_receivers

    started = time.monotonic()
    deadline = started + wait
    shown = 0.0
    while True:
        row = _receiver_row(read_receivers(home))
        done = row["joined"] + row["refused"] >= total
        now = time.monotonic()
        if done or now >= deadline:
            if wait:
                say(f"{row['joined']}/{total} connected, {row['receiving']} receiving, {row['refused']} refused "
                    f"after {now - started:.1f} s")
            return row
        if now - shown >= 2.0:
            say(f"  {row['joined']}/{total} connected, {row['retrying']} retrying, {row['refused']} refused")
            shown = now
        time.sleep(0.25)  # polling files written by the worker processes: no handle to wait on


def _receiver_row(state: dict[str, Any] | None) -> dict[str, Any]:
    """The receivers' part of a ``sim status`` row (zeros when none joined)."""
    if not state:
        return {"receivers": 0, "receiver_workers_alive": 0, "joined": 0, "receiving": 0, "joining": 0,
                "retrying": 0, "refused": 0, "joins": 0, "packets_audio": 0, "packets_video": 0, "failures": {}}
    states = state["states"]
    return {"receivers": state["receivers"], "receiver_workers_alive": len(state["alive"]),
            "joined": states.get("connected", 0), "receiving": state["receiving"], "joining": states.get("joining", 0),
            "retrying": states.get("retrying", 0), "refused": states.get("refused", 0), "joins": state["joins"],
            "packets_audio": state["packets"]["audio"], "packets_video": state["packets"]["video"],
            "failures": state["failures"]}


@sim.command("leave")
@click.pass_obj
def leave(obj: AppContext) -> None:
    """The joined simulated sites leave the broadcast (each ends its session)."""
    from ccctl.sim.control import stop_receivers

    count = stop_receivers(obj.config.home)
    say(f"the simulated sites left ({count} worker(s) stopped)" if count else "no simulated site had joined")


@sim.command("status")
@click.option("--sites", "per_site", is_flag=True, help="One row per joined site instead of the summary.")
@format_options
@click.pass_obj
def status(obj: AppContext, per_site: bool, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Whether the fleet runs, its workers and faults, and how many sites joined and receive."""
    from ccctl.sim.control import read_receivers, read_state

    joined = read_receivers(obj.config.home)
    if per_site:
        rows = joined["sites"] if joined else []
        emit(rows, resolve_format(obj, fmt, as_json, as_csv),
             ["site_id", "tier", "state", "receiving", "kinds", "packets_audio", "packets_video", "joins",
              "last_join_s", "last_error"])
        return
    state = read_state(obj.config.home)
    if not state:
        row: dict[str, Any] = {"running": False, "workers": 0, "workers_alive": 0, "endpoints": 0, "faults": {}}
    else:
        row = {"running": bool(state["alive"]), "workers": len(state["pids"]),
               "workers_alive": len(state["alive"]), "endpoints": state["endpoints"], "faults": state["faults"]}
    row.update(_receiver_row(joined))
    emit([row], resolve_format(obj, fmt, as_json, as_csv))


@sim.command("down")
@click.pass_obj
def down(obj: AppContext) -> None:
    """Stop the simulated fleet, and make every joined simulated site leave."""
    from ccctl.sim.control import stop_fleet, stop_receivers

    left = stop_receivers(obj.config.home)
    if left:
        say(f"the simulated sites left ({left} receiver worker(s) stopped)")
    count = stop_fleet(obj.config.home)
    say(f"stopped {count} simulator worker(s)" if count else "no simulated fleet was running")
