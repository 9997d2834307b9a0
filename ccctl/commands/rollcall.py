"""``ccctl rollcall``: check every site is ready; history, per-site results, differences.

``rollcall run`` exits with the Nagios codes: 0 OK (share of down sites under --warn),
1 WARNING (over --warn), 2 CRITICAL (over --crit), 3 UNKNOWN (the roll-call could not run:
no site selected, another roll-call holds the lock, the registry failed).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from ccctl.cli import AppContext, run_async, say
from ccctl.commands.common import format_options, resolve_format, site_filter, site_filter_options
from ccctl.errors import CcctlError, UsageError
from ccctl.models import CheckResult, CheckState
from ccctl.output import emit

RESULT_COLUMNS = ["site_id", "site_name", "province_name", "district_name", "state", "hard", "flapping",
                  "stage", "reason", "rtt_ms", "attempts", "duration_ms"]


class Progress:
    """Counts by state, rate and ETA on stderr, redrawn at most every 0.2 s, only on a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self.counts: Counter[str] = Counter()
        self.start = time.perf_counter()
        self._drawn = 0.0

    def __call__(self, result: CheckResult) -> None:
        self.counts[result.state.value] += 1
        now = time.perf_counter()
        done = sum(self.counts.values())
        if self.enabled and (now - self._drawn >= 0.2 or done == self.total):
            self._drawn = now
            rate = done / max(now - self.start, 1e-6)
            eta = (self.total - done) / rate if rate else 0.0
            states = " ".join(f"{s.value.lower()}={self.counts[s.value]}" for s in CheckState if self.counts[s.value])
            sys.stderr.write(f"\r{done}/{self.total} {states}  {rate:.0f}/s  eta {eta:.0f}s\033[K")
            sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


@click.group()
def rollcall() -> None:
    """Roll-call: reachability, SSH login and diagnostics of every site."""


@rollcall.command("run", epilog=__doc__.split("\n\n", 1)[1])
@site_filter_options
@click.option("--stages", metavar="LIST", help="Comma-separated, in order: tcp,ssh[,media] (media needs ssh before it).")
@click.option("--concurrency", type=click.IntRange(1, 20000), help="Sites checked at once.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.05, 300), help="Seconds per stage.")
@click.option("--tcp-timeout", "tcp_timeout_s", type=click.FloatRange(0.05, 300),
              help="Seconds for the TCP handshake (the tcp stage; default: rollcall.tcp_timeout_s, 0 = --timeout).")
@click.option("--retries", type=click.IntRange(0, 10), help="Retries before a failure counts as HARD.")
@click.option("--warn", "warn_pct", type=click.FloatRange(0, 100), help="WARNING above this % of sites down.")
@click.option("--crit", "crit_pct", type=click.FloatRange(0, 100), help="CRITICAL above this % of sites down.")
@click.option("--insecure", is_flag=True, help="Do not verify SSH host keys (the operator's explicit choice).")
@click.option("--engine", type=click.Choice(["auto", "asyncssh", "libssh2"]),
              help="SSH engine of cold rounds (default: rollcall.engine, auto = libssh2 when installed).")
@click.option("--repeat", type=click.IntRange(1, 1000), default=1, help="Rounds in this process (pooled SSH).")
@click.option("--interval", "interval_s", type=click.FloatRange(0, 86400), default=0.0, help="Seconds between rounds.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the one-line verdict with perfdata (for cron).")
@click.option("--prometheus", type=click.Path(dir_okay=False, path_type=Path), help="Write a node-exporter textfile.")
@format_options
@click.pass_obj
def run(obj: AppContext, stages: str | None, concurrency: int | None, timeout_s: float | None,
        tcp_timeout_s: float | None, retries: int | None, warn_pct: float | None, crit_pct: float | None,
        insecure: bool, engine: str | None,
        repeat: int,
        interval_s: float, quiet: bool, prometheus: Path | None, fmt: str | None, as_json: bool,
        as_csv: bool, **kwargs: Any) -> None:
    """Check the selected sites; print per-site results (or, with --quiet, one line)."""
    from ccctl.registry.sites import select_sites
    from ccctl.rollcall.history import run_results
    from ccctl.rollcall.session import options_from_config, run_lock, write_prometheus
    from ccctl.rollcall.session import rollcall as run_rounds

    try:
        config = obj.config
        options = options_from_config(
            config, stages=stages, concurrency=concurrency, timeout_s=timeout_s,
            tcp_timeout_s=tcp_timeout_s, retries=retries,
            warn_pct=warn_pct, crit_pct=crit_pct, engine=engine, verify_host_keys=False if insecure else None)
        sites = select_sites(obj.db, site_filter(kwargs, enabled_only=True))
        if not sites:
            raise UsageError("no enabled site matches")
        output = resolve_format(obj, fmt, as_json, as_csv)
        with run_lock(config.home):
            progress = Progress(len(sites), not quiet)

            def round_done(outcome: Any) -> None:
                progress.end()
                if prometheus:
                    write_prometheus(prometheus, outcome)
                if quiet:
                    click.echo(outcome.line())
                else:
                    say(outcome.line())
                    emit(run_results(obj.db, outcome.run_id), output, RESULT_COLUMNS)
                progress.__init__(len(sites), not quiet)  # type: ignore[misc]

            outcomes = run_async(run_rounds(obj.db, sites, options, repeat=repeat, interval_s=interval_s,
                                            on_result=progress, on_round=round_done))
    except CcctlError as exc:
        click.echo(f"ROLLCALL UNKNOWN - {exc}" if quiet else f"Error: {exc}", err=not quiet)
        raise click.exceptions.Exit(3) from None
    raise click.exceptions.Exit(outcomes[-1].exit_code)


@rollcall.command("list")
@click.option("--limit", type=click.IntRange(1, 10000), default=20)
@format_options
@click.pass_obj
def list_cmd(obj: AppContext, limit: int, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """The latest roll-calls with their counts by state."""
    from ccctl.rollcall.history import list_runs

    emit(list_runs(obj.db, limit), resolve_format(obj, fmt, as_json, as_csv))


@rollcall.command("show")
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in CheckState], case_sensitive=False))
@format_options
@click.pass_obj
def show(obj: AppContext, run_ref: str | None, states: tuple[str, ...], fmt: str | None, as_json: bool,
         as_csv: bool) -> None:
    """Per-site results of a run (default: the latest), worst first."""
    from ccctl.rollcall.history import resolve_run, run_results

    rows = run_results(obj.db, resolve_run(obj.db, run_ref))
    if states:
        wanted = {s.upper() for s in states}
        rows = [r for r in rows if r["state"] in wanted]
    emit(rows, resolve_format(obj, fmt, as_json, as_csv), RESULT_COLUMNS + ["facts"])


@rollcall.command("diff")
@click.argument("run_a", required=False, default="previous")
@click.argument("run_b", required=False, default="latest")
@format_options
@click.pass_obj
def diff(obj: AppContext, run_a: str, run_b: str, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Sites whose state changed between two runs (default: previous and latest).

    A site missing from a finished run shows as ABSENT; one that an interrupted (or still
    running) run never reached is no change: stderr says how many were not checked.
    """
    from ccctl.rollcall.history import compare_runs, resolve_run

    a, b = resolve_run(obj.db, run_a), resolve_run(obj.db, run_b)
    found = compare_runs(obj.db, a, b)
    for run, sites in sorted(found.not_checked.items()):
        say(f"run {run} is {found.statuses.get(run, 'unfinished')}: {len(sites)} site(s) not checked in it, "
            f"not shown as changes ({', '.join(sites[:5])}{', ...' if len(sites) > 5 else ''})")
    emit(found.changes, resolve_format(obj, fmt, as_json, as_csv), ["site_id", "before", "after"])
