"""The scheduler as a long-running loop: one ``tick`` per interval until told to stop.

``meeting watch`` runs it in the foreground instead of cron; a server can run the same
coroutine beside its other tasks. A failing tick (registry down, server gone) is reported and
the loop goes on; ticks never overlap, as each starts after the previous one ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ccctl.errors import CcctlError
from ccctl.meetings.scheduler import tick
from ccctl.registry.db import Database
from ccctl.rollcall.session import RollcallOptions


async def run_scheduler(db: Database, options: RollcallOptions, stop: asyncio.Event, *, interval_s: float = 60.0,
                        late_grace_s: float = 90.0, start: Callable[[int], dict[str, Any]] | None = None,
                        clock: Callable[[], float] = time.time,
                        on_actions: Callable[[list[dict[str, Any]]], None] | None = None,
                        on_error: Callable[[CcctlError], None] | None = None) -> int:
    """Tick every ``interval_s`` until ``stop`` is set; return how many ticks ran."""
    ticks = 0
    while not stop.is_set():
        try:
            actions = await tick(db, clock(), options, late_grace_s=late_grace_s, start=start)
        except CcctlError as exc:
            if on_error is not None:
                on_error(exc)
        else:
            if on_actions is not None:
                on_actions(actions)
        ticks += 1
        try:
            await asyncio.wait_for(stop.wait(), interval_s)  # the cadence; ends at once when told to stop
        except TimeoutError:
            pass
    return ticks
