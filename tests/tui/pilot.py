"""Helpers of the dashboard's Pilot tests: the app on a test registry, and bounded waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from ccctl.tui.app import Dashboard
from tests.conftest import free_port

SIZE = (160, 48)


def make_app(db_url: str, home: Path, **kwargs: Any) -> Dashboard:
    """The dashboard on ``db_url``; its server address has nothing listening (a dead server)."""
    kwargs.setdefault("poll_s", 0.2)
    kwargs.setdefault("server_poll_s", 0.2)
    return Dashboard(db_url, home, f"127.0.0.1:{free_port()}", **kwargs)


async def until(pilot: Pilot[Any], condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Let the app run until ``condition`` holds; fail after ``timeout`` seconds (a bound, not a
    synchronisation: the condition is checked after every round of the app's messages)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def screen_text(app: Dashboard) -> str:
    """What the main screen's list shows now, line by line (rendered through the Line API)."""
    rows = app.rowlist
    return "\n".join(rows.render_line(y).text for y in range(rows.size.height))
