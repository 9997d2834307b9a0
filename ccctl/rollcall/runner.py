"""Run a roll-call or a command over many sites at once and collect one result per site.

A fixed set of workers pulls sites from the target list (the same bound as a
semaphore, without parking thousands of waiting tasks); each site runs its stages in
order under an overall timeout, is retried if down, and becomes a ``CheckResult``
however it fails. Results are handed to ``on_result`` as each site finishes so the
caller can stream them into the registry and a progress display; a cancelled run
keeps what was already handed over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ccctl.models import CheckResult, CheckState, Endpoint
from ccctl.rollcall import fastssh
from ccctl.rollcall.classify import DEFAULT_THRESHOLDS, Thresholds, classify, link_rtt_ms
from ccctl.rollcall.mediaprobe import media_probe
from ccctl.rollcall.pool import ClientKey, ConnectionPool, exec_command
from ccctl.rollcall.probes import ProbeOutcome, describe_error, ssh_probe, tcp_probe
from ccctl.rollcall.state import StateTracker

T = TypeVar("T")

NO_ENDPOINT = "no endpoint configured"


@dataclass
class ExecResult:
    """One site's answer to ``ccctl exec``: exit status and output, or why there is none."""

    site_id: str
    exit_status: int | None
    stdout: str
    stderr: str
    state: CheckState
    reason: str = ""
    duration_ms: float = 0.0


#: The SSH engines a run can use; ``auto`` (see ``resolve_engine``) picks one of them.
ENGINES = ("asyncssh", "libssh2")
ENGINE_CHOICES = ("auto", *ENGINES)


@dataclass(frozen=True)
class _Run:
    """What every stage of one run shares, fixed once per run."""

    timeout: float
    client_key: ClientKey
    pool: ConnectionPool | None
    cold_libssh2: bool  # the libssh2 engine without a pool: SSH checks run in C (fastssh)
    tcp_timeout: float  # the tcp stage's (a handshake is the kernel's: it needs no login's margin)


#: One stage: (endpoint, the run, the outcome so far) -> its outcome.
StageProbe = Callable[[Endpoint, _Run, ProbeOutcome], Awaitable[ProbeOutcome]]


async def _tcp_stage(endpoint: Endpoint, run: _Run, before: ProbeOutcome) -> ProbeOutcome:
    """TCP reachability; its handshake RTT kept as the ``tcp_rtt_ms`` fact.

    Warm (a live pooled connection to the box), the open SSH connection under keepalives
    already proves reachability and its kernel RTT stands for the handshake.
    """
    pooled_rtt = run.pool.live_rtt_ms(endpoint) if run.pool is not None else None
    if pooled_rtt is not None:
        outcome = ProbeOutcome(CheckState.OK, rtt_ms=pooled_rtt)
    else:
        outcome = await tcp_probe(endpoint, run.tcp_timeout)
    if outcome.rtt_ms is not None:
        outcome.facts["tcp_rtt_ms"] = round(outcome.rtt_ms, 3)
    return outcome


async def _ssh_stage(endpoint: Endpoint, run: _Run, before: ProbeOutcome) -> ProbeOutcome:
    """SSH login and the box's facts (agent or ``sh``), in C for cold libssh2 runs."""
    if run.cold_libssh2:
        return await fastssh.fast_ssh_probe(endpoint, run.timeout, run.client_key)
    return await ssh_probe(endpoint, run.timeout, run.client_key, run.pool)


async def _media_stage(endpoint: Endpoint, run: _Run, before: ProbeOutcome) -> ProbeOutcome:
    """The WebRTC media probe, always on asyncssh (libssh2 has no channel API here); without a
    kernel RTT of its own it keeps the SSH stage's."""
    media = await media_probe(endpoint, run.timeout, run.client_key, run.pool)
    if media.net_rtt_ms is None:
        media.net_rtt_ms = before.net_rtt_ms
    return media


#: The stages a roll-call knows: name -> (probe, stages that must come before it).
STAGES: dict[str, tuple[StageProbe, tuple[str, ...]]] = {
    "tcp": (_tcp_stage, ()),
    "ssh": (_ssh_stage, ()),
    "media": (_media_stage, ("ssh",)),  # signalling runs over SSH
}
KNOWN_STAGES = tuple(STAGES)


def parse_stages(spec: str | Sequence[str]) -> tuple[str, ...]:
    """The stage list of ``tcp,ssh,media`` (or a sequence of names), checked; ValueError if not."""
    stages = tuple(s.strip() for s in spec.split(",")) if isinstance(spec, str) else tuple(spec)
    stages = tuple(s for s in stages if s)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"unknown roll-call stages {unknown}; known: {', '.join(KNOWN_STAGES)}")
    if len(set(stages)) != len(stages):
        raise ValueError(f"a roll-call stage is named twice in {','.join(stages)}")
    for index, stage in enumerate(stages):
        for needed in STAGES[stage][1]:
            if needed not in stages[:index]:
                why = " (signalling runs over SSH)" if (stage, needed) == ("media", "ssh") else ""
                raise ValueError(f"the {stage} stage needs the {needed} stage before it{why}")
    return stages


def check_stages(stages: Sequence[str]) -> None:
    """Raise ValueError unless ``stages`` are known, once each, each after what it requires."""
    parse_stages(stages)


def check_engine(engine: str) -> None:
    """Raise ValueError unless ``engine`` is one a run can use here."""
    if engine not in ENGINES:
        raise ValueError(f"unknown SSH engine {engine!r}; known: {', '.join(ENGINES)}")
    if engine == "libssh2" and (why := fastssh.available()) is not None:
        raise ValueError(f"the libssh2 engine is not available: {why}")


def resolve_engine(choice: str, pooled: bool) -> str:
    """The SSH engine a run uses: ``auto`` is libssh2 for cold rounds when it is installed.

    Pooled rounds always use asyncssh, whose connections the pool keeps open. Raises
    ValueError for an unknown choice, or libssh2 asked for where it is not installed.
    """
    if choice not in ENGINE_CHOICES:
        raise ValueError(f"unknown SSH engine {choice!r}: use {', '.join(ENGINE_CHOICES)}")
    if pooled or choice == "asyncssh":
        return "asyncssh"
    if choice == "libssh2":
        check_engine(choice)
        return choice
    return "libssh2" if fastssh.available() is None else "asyncssh"


_Step = Callable[[Endpoint, _Run, ProbeOutcome], Awaitable[tuple[ProbeOutcome, str]]]


def _plan(stages: tuple[str, ...], run: _Run) -> list[_Step]:
    """The steps of one site's check, made once per run from the stage table.

    A cold libssh2 run fuses ``tcp`` and ``ssh`` into one connection (``fastssh``);
    every other stage is its table entry.
    """
    steps: list[_Step] = []
    rest = stages
    if run.cold_libssh2 and stages[:2] == ("tcp", "ssh"):
        async def fused(endpoint: Endpoint, run: _Run, before: ProbeOutcome) -> tuple[ProbeOutcome, str]:
            return await fastssh.fast_tcp_ssh_probe(endpoint, run.timeout, run.client_key,
                                                    tcp_timeout=run.tcp_timeout)

        steps.append(fused)
        rest = stages[2:]
    for name in rest:
        steps.append(_named(name, STAGES[name][0]))
    return steps


def _named(name: str, probe: StageProbe) -> _Step:
    async def step(endpoint: Endpoint, run: _Run, before: ProbeOutcome) -> tuple[ProbeOutcome, str]:
        return await probe(endpoint, run, before), name

    return step


async def _fan_out(
    items: Sequence[T], concurrency: int, work: Callable[[int, T], Awaitable[None]]
) -> None:
    """Run ``work(index, item)`` for every item with at most ``concurrency`` at once.

    Workers pull from a shared iterator; if the caller is cancelled, the TaskGroup
    cancels every worker and the cancellation propagates.
    """
    queue = iter(enumerate(items))

    async def worker() -> None:
        for index, item in queue:
            await work(index, item)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(concurrency, len(items)))):
            group.create_task(worker())


async def _run_stages(endpoint: Endpoint, steps: Sequence[_Step], run: _Run) -> tuple[ProbeOutcome, str]:
    """Run the steps in order, stopping at the first that fails; (last outcome, its stage).

    Facts accumulate: each stage's outcome carries the facts of the stages before it
    (``tcp_rtt_ms``, the SSH stage's facts and ``ssh_exec_ms``, then ``media_*``), so the
    registry holds every stage's timing.
    """
    outcome, stage = ProbeOutcome(CheckState.OK), ""
    for step in steps:
        before = outcome
        outcome, stage = await step(endpoint, run, before)
        if before.facts:
            outcome.facts = {**before.facts, **outcome.facts}
        if outcome.state is not CheckState.OK:
            break
    return outcome, stage


async def run_rollcall(
    targets: Sequence[tuple[str, Endpoint | None]],
    *,
    stages: Sequence[str] = ("tcp", "ssh"),
    concurrency: int = 500,
    timeout: float = 5.0,
    tcp_timeout: float | None = None,
    retries: int = 0,
    client_key: ClientKey = None,
    pool: ConnectionPool | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    on_result: Callable[[CheckResult], None] | None = None,
    history: Mapping[str, Sequence[str]] | None = None,
    site_timeout: float | None = None,
    retry_backoff: float = 0.05,
    tracker: StateTracker | None = None,
    engine: str = "asyncssh",
) -> list[CheckResult]:
    """Check every target and return one ``CheckResult`` per target, in target order.

    ``timeout`` bounds each stage but ``tcp``, bounded by ``tcp_timeout`` (default:
    ``timeout``); ``site_timeout`` (default: the stages' bounds plus 1 s) bounds one attempt
    of one site. A down site is retried up to
    ``retries`` times, after ``retry_backoff * attempt`` seconds (50 ms, 100 ms, ...:
    long enough to let a dropped SYN or a restarting sshd pass, short enough not to
    slow the run). ``history`` maps site id to its recent states, newest last, for
    SOFT/HARD and flapping (see ``state.py``); it is not modified. ``rtt_ms`` of a
    result is the network RTT the kernel measured on the last stage's connection (see
    ``classify.link_rtt_ms``); the stages' own timings are in the facts. Site failures
    never raise; an exception from ``on_result`` aborts the run, as it is the caller's bug.
    """
    check_engine(engine)
    stages = parse_stages(stages)
    connect = tcp_timeout if tcp_timeout is not None else timeout
    run = _Run(timeout, client_key, pool, cold_libssh2=engine == "libssh2" and pool is None, tcp_timeout=connect)
    steps = _plan(stages, run)
    per_site = site_timeout if site_timeout is not None else sum(
        connect if s == "tcp" else timeout for s in stages) + 1.0
    # The fused libssh2 tcp+ssh check bounds itself (each stage by ``timeout``, in its own
    # reactor); when that bound is within ``per_site`` an asyncio timeout scope per site
    # would only add a timer and a cancel scope to every check of a cold run.
    self_bounded = (run.cold_libssh2 and stages == ("tcp", "ssh")
                    and per_site > fastssh.fused_bound(timeout, connect))
    tracker = tracker or StateTracker(retries=retries)
    past = history or {}
    results: list[CheckResult | None] = [None] * len(targets)

    async def check(index: int, target: tuple[str, Endpoint | None]) -> None:
        site_id, endpoint = target
        started_at = time.time()
        t0 = time.perf_counter()
        attempts = 0
        stage = ""
        while True:
            attempts += 1
            if endpoint is None:
                outcome = ProbeOutcome(CheckState.ERROR, NO_ENDPOINT)
                break
            if self_bounded:
                outcome, stage = await fastssh.fast_tcp_ssh_probe(endpoint, timeout, client_key,
                                                                  tcp_timeout=connect)
            else:
                try:
                    async with asyncio.timeout(per_site):
                        outcome, stage = await _run_stages(endpoint, steps, run)
                except TimeoutError:
                    outcome = ProbeOutcome(CheckState.TIMEOUT, f"site check exceeded {per_site:g} s")
            if not outcome.state.is_down or attempts > retries:
                break
            await asyncio.sleep(retry_backoff * attempts)
        state, reason = classify(outcome, thresholds)
        rtt = link_rtt_ms(outcome)
        decision = tracker.decide(past.get(site_id, ()), state, attempts)
        result = CheckResult(
            site_id=site_id,
            state=state,
            reason=reason,
            stage=stage,
            rtt_ms=round(rtt, 3) if rtt is not None else None,
            attempts=attempts,
            hard=decision.hard,
            flapping=decision.flapping,
            facts=outcome.facts,
            started_at=started_at,
            duration_ms=round((time.perf_counter() - t0) * 1000.0, 3),
        )
        results[index] = result
        if on_result is not None:
            on_result(result)

    await _fan_out(targets, concurrency, check)
    return [r for r in results if r is not None]


async def run_command(
    targets: Sequence[tuple[str, Endpoint | None]],
    command: str,
    *,
    concurrency: int = 100,
    timeout: float = 30.0,
    client_key: ClientKey = None,
    pool: ConnectionPool | None = None,
    on_result: Callable[[ExecResult], None] | None = None,
) -> list[ExecResult]:
    """Run ``command`` on every target (``ccctl exec``) and return one ``ExecResult`` each.

    ``timeout`` bounds login plus command per site. A non-zero exit is state ERROR
    with the output kept; a login failure is classified like a roll-call's SSH stage.
    The whole output is held in memory, so keep commands' output small.
    """
    results: list[ExecResult | None] = [None] * len(targets)

    async def one(index: int, target: tuple[str, Endpoint | None]) -> None:
        site_id, endpoint = target
        t0 = time.perf_counter()
        if endpoint is None:
            result = ExecResult(site_id, None, "", "", CheckState.ERROR, NO_ENDPOINT)
        else:
            try:
                async with asyncio.timeout(timeout):
                    done, _exec_ms, _net_rtt = await exec_command(
                        endpoint, command, timeout=timeout, client_key=client_key, pool=pool
                    )
            except Exception as exc:  # noqa: BLE001 - a site's failure is a result
                state, reason = describe_error(exc, timeout)
                result = ExecResult(site_id, None, "", "", state, reason)
            else:
                status = done.exit_status if done.exit_status is not None and done.exit_status >= 0 else None
                ok = status == 0
                result = ExecResult(
                    site_id,
                    status,
                    _as_text(done.stdout),
                    _as_text(done.stderr),
                    CheckState.OK if ok else CheckState.ERROR,
                    "" if ok else _exit_reason(done.exit_status, done.exit_signal),
                )
        result.duration_ms = round((time.perf_counter() - t0) * 1000.0, 3)
        results[index] = result
        if on_result is not None:
            on_result(result)

    await _fan_out(targets, concurrency, one)
    return [r for r in results if r is not None]


def _exit_reason(status: int | None, signal: tuple[str, bool, str, str] | None) -> str:
    """``exit status 3`` or ``killed by signal TERM``."""
    if status is not None and status >= 0:
        return f"exit status {status}"
    if signal:
        return f"killed by signal {signal[0]}"
    return "no exit status"


def _as_text(data: str | bytes | None) -> str:
    """Command output as text."""
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
