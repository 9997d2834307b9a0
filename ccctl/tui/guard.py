"""A guard for the app's message handlers and timers: they do nothing once the main screen is
gone (the app is shutting down and a worker's last message arrives late)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from ccctl.tui.screens.main import MainScreen

F = TypeVar("F", bound=Callable[..., None])


def while_shown(method: F) -> F:
    """Run ``method`` only while the main screen is on the app's screen stack."""

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> None:
        if any(isinstance(screen, MainScreen) for screen in self.screen_stack):
            method(self, *args, **kwargs)

    return guarded  # type: ignore[return-value]
