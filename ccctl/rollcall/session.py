"""One roll-call as the operator and cron see it: lock, run, stream to history, judge.

Ties the runner to the registry: the sites' endpoints become targets, each result is
recorded as it arrives, the run ends with a Nagios verdict (share of down sites against
``warn``/``crit`` percentages), a one-line perfdata summary and, if asked, a Prometheus
node-exporter textfile. ``repeat`` rounds in one process reuse the SSH connection pool, so
rounds after the first pay no handshake.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ccctl.config import Config, RollcallConfig
from ccctl.errors import Busy, UsageError
from ccctl.models import CheckResult, CheckState, Site

NAGIOS = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


@dataclass(frozen=True)
class RollcallOptions:
    """What one roll-call does, checked: build it with ``options_from_config``.

    The fields named as in ``RollcallConfig`` take its values (its defaults are the shipped
    ones, so none are restated here); ``stages`` is the parsed list, ``engine`` a choice of
    ``runner.ENGINE_CHOICES``; the SSH ones come from ``SshConfig``.
    """

    stages: tuple[str, ...]
    concurrency: int
    timeout_s: float
    tcp_timeout_s: float
    retries: int
    warn_pct: float
    crit_pct: float
    rtt_warn_ms: float
    exec_warn_ms: float
    persistent: bool
    engine: str
    verify_host_keys: bool
    keepalive_s: int
    client_key: str | None


@dataclass
class RunOutcome:
    """A finished (or interrupted) run: its id, counts, verdict."""

    run_id: int
    sites: int
    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    exit_code: int = 0
    status: str = "finished"

    @property
    def down(self) -> int:
        """Sites in a down state."""
        return sum(n for s, n in self.counts.items() if CheckState(s).is_down)

    def summary(self) -> dict[str, Any]:
        """What the registry keeps about the run."""
        return {"sites": self.sites, "counts": dict(self.counts), "seconds": round(self.seconds, 3),
                "exit_code": self.exit_code}

    def line(self) -> str:
        """The one-line Nagios plugin output with perfdata."""
        ok, degraded = self.counts.get("OK", 0), self.counts.get("DEGRADED", 0)
        perf = " ".join(f"{s.value.lower()}={self.counts.get(s.value, 0)}" for s in CheckState)
        return (f"ROLLCALL {NAGIOS[self.exit_code]} - {ok}/{self.sites} ok, {degraded} degraded, {self.down} down "
                f"(run {self.run_id}, {self.seconds:.1f} s) | sites={self.sites} {perf} down={self.down} "
                f"seconds={self.seconds:.3f}")


def options_from_config(config: Config, **overrides: Any) -> RollcallOptions:
    """RollcallOptions from a ``Config``, with the given fields overridden, checked once.

    ``None`` overrides are ignored, so CLI options left unset keep the configured value.
    ``stages`` (config text or override, ``tcp,ssh,media`` or a sequence) is parsed and
    checked here, and the engine choice too: UsageError names the bad value.
    """
    from ccctl.rollcall.runner import ENGINE_CHOICES, parse_stages

    names = {f.name for f in fields(RollcallOptions)}
    values: dict[str, Any] = {f.name: getattr(config.rollcall, f.name) for f in fields(RollcallConfig)
                              if f.name in names}
    values.update(verify_host_keys=config.ssh.verify_host_keys, keepalive_s=config.ssh.keepalive_s,
                  client_key=str(config.client_key_path) if config.client_key_path.exists() else None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    spec = values["stages"]
    try:
        values["stages"] = parse_stages(spec)
    except ValueError as exc:
        raise UsageError(f"stages: {exc} (got {spec if isinstance(spec, str) else ','.join(spec)!r})") from None
    if values["engine"] not in ENGINE_CHOICES:
        raise UsageError(f"unknown SSH engine {values['engine']!r}: use {', '.join(ENGINE_CHOICES)}")
    return RollcallOptions(**values)


def nagios_code(down: int, total: int, warn_pct: float, crit_pct: float) -> int:
    """0 under warn, 1 over warn, 2 over crit (shares of down sites, in percent)."""
    if total == 0:
        return 3
    share = down * 100.0 / total
    if share > crit_pct:
        return 2
    if share > warn_pct:
        return 1
    return 0


@contextmanager
def run_lock(home: Path) -> Iterator[None]:
    """An exclusive lock so two cron roll-calls never overlap; Busy if one runs."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "rollcall.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy("another roll-call is running (lock held on rollcall.lock)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def write_prometheus(path: Path, outcome: RunOutcome) -> None:
    """A node-exporter textfile with the run's counts, written atomically."""
    lines = ["# HELP ccctl_rollcall_sites Sites by state in the last roll-call.",
             "# TYPE ccctl_rollcall_sites gauge"]
    lines += [f'ccctl_rollcall_sites{{state="{s.value}"}} {outcome.counts.get(s.value, 0)}' for s in CheckState]
    lines += ["# HELP ccctl_rollcall_duration_seconds Wall time of the last roll-call.",
              "# TYPE ccctl_rollcall_duration_seconds gauge",
              f"ccctl_rollcall_duration_seconds {outcome.seconds:.3f}",
              "# HELP ccctl_rollcall_last_run_timestamp_seconds When the last roll-call ended.",
              "# TYPE ccctl_rollcall_last_run_timestamp_seconds gauge",
              f"ccctl_rollcall_last_run_timestamp_seconds {time.time():.0f}",
              "# HELP ccctl_rollcall_exit_code Nagios code of the last roll-call.",
              "# TYPE ccctl_rollcall_exit_code gauge",
              f"ccctl_rollcall_exit_code {outcome.exit_code}"]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


async def rollcall(db: Any, sites: list[Site], options: RollcallOptions, *, repeat: int = 1,
                   interval_s: float = 0.0, on_result: Callable[[CheckResult], None] | None = None,
                   on_round: Callable[[RunOutcome], None] | None = None) -> list[RunOutcome]:
    """Run ``repeat`` rounds over ``sites``, each recorded as one run; return their outcomes.

    A round interrupted (Ctrl-C, SIGTERM, cancellation) is closed as ``interrupted`` with every
    result taken so far, and the interruption propagates.
    """
    from ccctl.rollcall.pool import ConnectionPool

    # Repeated rounds keep their SSH logins (asyncssh pool, one diagnostics session per box);
    # a single round (cron) logs in cold, through libssh2 where the engine allows it.
    pooled = options.persistent and "ssh" in options.stages and repeat > 1
    pool = ConnectionPool(keepalive_interval=options.keepalive_s) if pooled else None
    engine = resolve_engine(options.engine, pooled=pool is not None)
    outcomes: list[RunOutcome] = []
    try:
        for round_no in range(repeat):
            if round_no and interval_s > 0:
                await asyncio.sleep(interval_s)  # the cadence between rounds, not a synchronisation
            outcome = await _round(db, sites, options, pool, engine, round_no + 1, on_result)
            outcomes.append(outcome)
            if on_round is not None:
                on_round(outcome)
    finally:
        if pool is not None:
            await pool.close()
    return outcomes


def resolve_engine(choice: str, pooled: bool) -> str:
    """The SSH engine a run uses (``runner.resolve_engine``); UsageError if it cannot run here."""
    from ccctl.rollcall import runner

    try:
        return runner.resolve_engine(choice, pooled)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def _round(db: Any, sites: list[Site], options: RollcallOptions, pool: Any, engine: str, round_no: int,
                 on_result: Callable[[CheckResult], None] | None) -> RunOutcome:
    """One recorded run over ``sites``."""
    from ccctl.rollcall.classify import Thresholds
    from ccctl.rollcall.history import FLUSH_S, RunRecorder, recent_states
    from ccctl.rollcall.runner import run_rollcall

    history = recent_states(db, [s.id for s in sites])
    recorder = RunRecorder(db, {"stages": list(options.stages), "sites": len(sites),
                                "concurrency": options.concurrency, "timeout_s": options.timeout_s,
                                "tcp_timeout_s": options.tcp_timeout_s,
                                "retries": options.retries, "round": round_no, "engine": engine},
                           on_written=on_result)
    outcome = RunOutcome(recorder.run_id, len(sites))
    started = time.perf_counter()

    async def flush_often() -> None:
        # Results are written at least every FLUSH_S even while slow sites hold the run,
        # so a run killed outright keeps all but the last fraction of a second.
        while True:
            await asyncio.sleep(FLUSH_S)
            recorder.flush()

    flusher = asyncio.create_task(flush_often())
    try:
        await run_rollcall([(s.id, s.endpoint(options.verify_host_keys)) for s in sites],
                           stages=options.stages, concurrency=options.concurrency, timeout=options.timeout_s,
                           tcp_timeout=options.tcp_timeout_s or None,
                           retries=options.retries, client_key=options.client_key, pool=pool,
                           thresholds=Thresholds(rtt_warn_ms=options.rtt_warn_ms, exec_warn_ms=options.exec_warn_ms),
                           on_result=recorder.add,
                           history=history, engine=engine)
    except BaseException:
        outcome.status = "interrupted"
        outcome.counts = recorder.counts
        outcome.seconds = time.perf_counter() - started
        outcome.exit_code = 3
        recorder.finish("interrupted", outcome.summary())
        raise
    finally:
        flusher.cancel()
    outcome.counts = recorder.counts
    outcome.seconds = time.perf_counter() - started
    outcome.exit_code = nagios_code(outcome.down, outcome.sites, options.warn_pct, options.crit_pct)
    recorder.finish("finished", outcome.summary())
    return outcome
