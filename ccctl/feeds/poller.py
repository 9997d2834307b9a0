"""Feeds pulled on their intervals inside a long-running process (``ccctl serve``).

Each pull runs in a worker thread with its own event loop and registry connection, so a
big feed's parsing and storing never stalls the server's loop (media, control API). Pulls
run one at a time and the next is scheduled when one ends, so they never overlap; a failed
pull is recorded by ``pull_feed`` (last error, event) and the poller goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ccctl.errors import CcctlError

log = logging.getLogger(__name__)
IDLE_S = 30.0  # the longest wait, so a feed added meanwhile is noticed


def _pull_in_thread(db_url: str, name: str) -> tuple[str, str]:
    """Pull one feed on a connection of its own; (status, detail) for the log."""
    from ccctl.feeds.pull import pull_feed
    from ccctl.registry import open_registry

    with open_registry(db_url) as db:
        try:
            result = asyncio.run(pull_feed(db, name))
        except CcctlError as exc:
            return "failed", str(exc)
        return result.status, f"{result.values} values, {len(result.alerts)} alerts"


def _due(db_url: str, now: float, tried: dict[str, float]) -> tuple[list[str], float]:
    """Feeds due now, and seconds until the next one is due. ``tried`` holds when this
    poller last tried each feed: a pull refused before it is recorded (units not loaded)
    waits its interval like any other."""
    from ccctl.registry import feeds as store
    from ccctl.registry import open_registry

    with open_registry(db_url) as db:
        feeds = store.list_feeds(db)
    due, wait = [], IDLE_S
    for spec, state in feeds:
        next_at = max(state["last_pull_at"] or 0.0, tried.get(spec.name, 0.0)) + spec.every_s
        if next_at <= now:
            due.append(spec.name)
        else:
            wait = min(wait, next_at - now)
    return due, wait


class FeedPoller:
    """Pulls every feed of a registry when its interval has passed, until stopped."""

    def __init__(self, db_url: str, on_result: Callable[[str, str, str], None] | None = None) -> None:
        self.db_url = db_url
        self.on_result = on_result
        self.results: list[tuple[str, str, str]] = []  # (feed, status, detail), oldest first
        self.changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tried: dict[str, float] = {}

    def start(self) -> None:
        """Start polling in the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ccctl-feed-poller")

    async def stop(self) -> None:
        """Stop after the pull under way (if any) ends."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def wait_for(self, predicate: Callable[[list[tuple[str, str, str]]], bool], timeout: float) -> None:
        """Wait (bounded) until ``predicate(results)`` holds; TimeoutError otherwise."""
        async def until() -> None:
            while not predicate(self.results):
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(until(), timeout)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                due, wait = await asyncio.to_thread(_due, self.db_url, time.time(), dict(self._tried))
            except CcctlError as exc:  # the registry is unreachable: try again later
                log.warning("feeds: %s", exc)
                due, wait = [], IDLE_S
            for name in due:
                if self._stop.is_set():
                    return
                self._tried[name] = time.time()
                try:
                    status, detail = await asyncio.to_thread(_pull_in_thread, self.db_url, name)
                except Exception as exc:  # a bug must not end the server's polling
                    status, detail = "failed", f"unexpected {type(exc).__name__}: {exc}"
                log.info("feed %s: %s (%s)", name, status, detail)
                self.results.append((name, status, detail))
                if self.on_result is not None:
                    self.on_result(name, status, detail)
                self.changed.set()
            if due:
                continue  # look again: the pulls took time, others may be due now
            try:
                await asyncio.wait_for(self._stop.wait(), max(wait, 0.05))
            except TimeoutError:
                pass


def feed_poller(db_url: str) -> Callable[[Any], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry: polls the feeds while the application runs."""
    async def ctx(app: Any) -> AsyncIterator[None]:
        poller = FeedPoller(db_url)
        poller.start()
        yield
        await poller.stop()
    return ctx
