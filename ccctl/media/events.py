"""What the media core and the ingest share: the tasks they own and the events they emit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

EventSink = Callable[[str, str, dict[str, Any]], None]


class EventSource:
    """Owns background tasks (awaited on close) and reports events to one listener."""

    def __init__(self, on_event: EventSink | None) -> None:
        self._on_event = on_event
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, kind: str, site_id: str, detail: dict[str, Any]) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, site_id, detail)
        except Exception:  # a failing listener (e.g. the registry) must not break media
            log.exception("on_event(%s, %s) failed", kind, site_id)
