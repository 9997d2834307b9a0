"""The meetings' scheduler inside ``ccctl serve``: pre-checks and starts without cron.

``meeting_scheduler(db_url, home, listen)`` is an aiohttp ``cleanup_ctx`` entry, like the
feeds' poller: while the server runs, it ticks every ``interval_s`` (and whenever
:meth:`MeetingScheduler.wake` is called): the pre-checks due run, and a meeting whose time
has come is started through the server's own control API, as ``meeting tick --start`` does.
Each tick runs in a worker thread with its own event loop and registry connection, so a
roll-call of thousands of sites never stalls the server's loop (media, control API), and the
blocking control call cannot wait on the loop that has to answer it. A cron ``meeting tick``
at the same time is safe: every check and every start is claimed with a conditional UPDATE
(:mod:`ccctl.registry.meetings`), so each runs once whichever tick gets there first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ccctl.meetings.loop import TickRecord, tick_loop
from ccctl.rollcall.session import RollcallOptions

if TYPE_CHECKING:
    from ccctl.config import Config

log = logging.getLogger(__name__)
SERVER_WAIT_S = 15.0  # how long a start waits for the server's control API to answer (it may be starting)


def _tick_in_thread(db_url: str, home: Path, listen: str, now: float, options: RollcallOptions,
                    late_grace_s: float, autostart: bool) -> list[dict[str, Any]]:
    """One tick on a registry connection of its own, in this (worker) thread's own event loop."""
    from ccctl.media.client import ControlClient
    from ccctl.meetings.scheduler import tick
    from ccctl.meetings.starting import start_meeting
    from ccctl.registry import open_registry

    with open_registry(db_url) as db:
        def starter(meeting_id: int) -> dict[str, Any]:
            client = ControlClient(home, listen)
            deadline = time.monotonic() + SERVER_WAIT_S
            while not client.alive() and time.monotonic() < deadline:  # bounded: the server may still be binding
                time.sleep(0.2)
            return start_meeting(db, meeting_id, client, home, now, claimed=True)

        return asyncio.run(tick(db, now, options, late_grace_s=late_grace_s, start=starter if autostart else None))


class MeetingScheduler:
    """Ticks the meetings of a registry in the running loop until stopped."""

    def __init__(self, db_url: str, home: Path, listen: str, options: RollcallOptions, *,
                 late_grace_s: float = 90.0, interval_s: float = 60.0, autostart: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.db_url, self.home, self.listen, self.options = db_url, home, listen, options
        self.late_grace_s, self.interval_s, self.autostart, self.clock = late_grace_s, interval_s, autostart, clock
        self.ticks: list[TickRecord] = []  # oldest first
        self.changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start ticking in the running loop (the first tick at once)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ccctl-meeting-scheduler")

    def wake(self) -> None:
        """Tick now rather than at the end of the interval (after the tick under way, if any)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop after the tick under way (if any) ends."""
        self._stop = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def wait_for(self, predicate: Callable[[list[TickRecord]], bool], timeout: float) -> None:
        """Wait (bounded) until ``predicate(ticks)`` holds; TimeoutError otherwise."""
        async def until() -> None:
            while not predicate(self.ticks):
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(until(), timeout)

    async def _run(self) -> None:
        def tick_at(now: float) -> Awaitable[list[dict[str, Any]]]:
            return asyncio.to_thread(_tick_in_thread, self.db_url, self.home, self.listen, now, self.options,
                                     self.late_grace_s, self.autostart)

        await tick_loop(tick_at, self._wake, lambda: self._stop, self._record, interval_s=self.interval_s,
                        clock=self.clock, contain_bugs=True)

    def _record(self, record: TickRecord) -> None:
        if record.error:
            log.warning("meetings: tick failed: %s", record.error)
        for a in record.actions:
            log.info("meeting %s: %s %s%s", a["meeting_id"], a.get("offset", ""), a["action"],
                     f": {a['note']}" if a.get("note") else "")
        self.ticks.append(record)
        self.changed.set()


class SchedulerContext:
    """The aiohttp ``cleanup_ctx`` entry: runs ``scheduler`` while the application runs."""

    def __init__(self, scheduler: MeetingScheduler) -> None:
        self.scheduler = scheduler

    async def __call__(self, app: web.Application) -> AsyncIterator[None]:
        """Start ticking when the application starts; stop, after the tick under way, at its cleanup."""
        self.scheduler.start()
        yield
        await self.scheduler.stop()


def meeting_scheduler(db_url: str, home: Path, listen: str, *, options: RollcallOptions | None = None,
                      interval_s: float = 60.0, clock: Callable[[], float] = time.time,
                      config: Config | None = None) -> SchedulerContext:
    """An aiohttp ``cleanup_ctx`` entry that ticks the meetings while the application runs.

    ``listen`` (``host:port``) is where the server's control API answers, for starting a
    meeting's broadcast. The roll-call options and ``meetings.late_grace_s`` come from the
    configuration ``config`` (``serve``'s, its ``--config`` file included), else the one of
    ``home`` (as a command builds them: ConfigError now if it is bad), unless ``options`` is given.
    """
    from ccctl.config import load_config
    from ccctl.rollcall.session import options_from_config

    if config is None:
        config = load_config(db=db_url, env={**os.environ, "CCCTL_HOME": str(home)})
    return SchedulerContext(MeetingScheduler(db_url, home, listen, options or options_from_config(config),
                                             late_grace_s=config.meetings.late_grace_s, interval_s=interval_s,
                                             clock=clock))
