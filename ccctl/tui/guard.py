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
        if not self.is_running:  # shutting down: the widgets are being taken apart
            return
        main = next((s for s in self.screen_stack if isinstance(s, MainScreen)), None)
        if main is not None and main.is_attached and main.children:
            method(self, *args, **kwargs)

    return guarded  # type: ignore[return-value]
