"""The scheduler as a long-running loop: one ``tick`` per interval until told to stop.

:func:`tick_loop` is the one loop: ``meeting watch`` runs it in the foreground instead of cron
(through :func:`run_scheduler`, ticking in the loop on the command's registry connection), and
``serve`` beside its other tasks (:mod:`ccctl.meetings.service`, each tick in a worker thread).
A failing tick (registry down, server gone) is recorded and the loop goes on; ticks never
overlap, as each starts after the previous one ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ccctl.errors import CcctlError
from ccctl.meetings.scheduler import tick
from ccctl.registry.db import Database
from ccctl.rollcall.session import RollcallOptions


@dataclass
class TickRecord:
    """One tick of the scheduler: its clock, what it did, or why it failed."""

    now: float
    actions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


async def tick_loop(tick_at: Callable[[float], Awaitable[list[dict[str, Any]]]], wake: asyncio.Event,
                    stopping: Callable[[], bool], on_record: Callable[[TickRecord], None], *,
                    interval_s: float = 60.0, clock: Callable[[], float] = time.time,
                    contain_bugs: bool = False) -> int:
    """Run ``tick_at(clock())`` every ``interval_s``, or as soon as ``wake`` is set, until
    ``stopping()``; each tick's record goes to ``on_record``. Returns how many ticks ran.

    A CcctlError is the tick's recorded error; any other exception too with ``contain_bugs``
    (a server must go on scheduling), else it propagates (a foreground command shows the bug).
    """
    ticks = 0
    while not stopping():
        wake.clear()  # a wake from now on asks for another tick
        record = TickRecord(clock())
        try:
            record.actions = await tick_at(record.now)
        except CcctlError as exc:  # the registry is unreachable, say: the next tick tries again
            record.error = str(exc)
        except Exception as exc:
            if not contain_bugs:
                raise
            record.error = f"unexpected {type(exc).__name__}: {exc}"
        ticks += 1
        on_record(record)
        with contextlib.suppress(TimeoutError):  # the cadence; ends at once when woken or told to stop
            await asyncio.wait_for(wake.wait(), interval_s)
    return ticks


async def run_scheduler(db: Database, options: RollcallOptions, stop: asyncio.Event, *, interval_s: float = 60.0,
                        late_grace_s: float = 90.0, start: Callable[[int], dict[str, Any]] | None = None,
                        clock: Callable[[], float] = time.time,
                        on_actions: Callable[[list[dict[str, Any]]], None] | None = None,
                        on_error: Callable[[str], None] | None = None) -> int:
    """Tick ``db`` in this loop every ``interval_s`` until ``stop`` is set; return how many ticks ran."""
    def report(record: TickRecord) -> None:
        if record.error is not None:
            if on_error is not None:
                on_error(record.error)
        elif on_actions is not None:
            on_actions(record.actions)

    async def tick_at(now: float) -> list[dict[str, Any]]:
        return await tick(db, now, options, late_grace_s=late_grace_s, start=start)

    return await tick_loop(tick_at, stop, stop.is_set, report, interval_s=interval_s, clock=clock)
