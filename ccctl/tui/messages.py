"""Messages the dashboard's workers post to the app (workers never touch widgets)."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class SitesLoaded(Message):
    """A full read of the registry: every site with its latest state."""

    def __init__(self, rows: list[dict[str, Any]], expected: dict[str, int]) -> None:
        super().__init__()
        self.rows = rows
        self.expected = expected  # enabled sites per tier


class ResultsArrived(Message):
    """Roll-call results newer than the last read (from the registry or a re-check)."""

    def __init__(self, results: list[dict[str, Any]], source: str) -> None:
        super().__init__()
        self.results = results
        self.source = source


class RegistryFailed(Message):
    """The registry could not be read (locked, gone, broken); the next poll retries."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class ServerPolled(Message):
    """The server's broadcast status (``status`` None when it did not answer: ``reason``)."""

    def __init__(self, status: dict[str, Any] | None, reason: str = "", expected: dict[str, int] | None = None) -> None:
        super().__init__()
        self.status = status
        self.reason = reason
        self.expected = expected or {}


class DetailLoaded(Message):
    """A site's registry record and check history, for the detail panel."""

    def __init__(self, site_id: str, record: dict[str, Any] | None, history: list[dict[str, Any]],
                 reason: str = "") -> None:
        super().__init__()
        self.site_id = site_id
        self.record = record
        self.history = history
        self.reason = reason


class RecheckProgress(Message):
    """A re-check run by the dashboard: ``done`` of ``total`` sites (``finished`` at the end)."""

    def __init__(self, done: int, total: int, finished: bool = False, line: str = "") -> None:
        super().__init__()
        self.done = done
        self.total = total
        self.finished = finished
        self.line = line


class ActionDone(Message):
    """A control action's outcome, one line for the event log (``ok`` False on failure)."""

    def __init__(self, line: str, ok: bool = True) -> None:
        super().__init__()
        self.line = line
        self.ok = ok


class StreamEvent(Message):
    """One event of the server's change stream (``GET /api/events``)."""

    def __init__(self, event_id: str, name: str, data: dict[str, Any]) -> None:
        super().__init__()
        self.event_id = event_id
        self.name = name
        self.data = data


class StreamState(Message):
    """The change stream ended or could not be opened (``state`` says why)."""

    def __init__(self, state: str) -> None:
        super().__init__()
        self.state = state


class StreamEvents(Message):
    """Events of the change stream taken together (``events``: (id, name, data) in order): the
    stream's reader posts what arrived within a frame as one message, not one per event."""

    def __init__(self, events: list[tuple[str, str, dict[str, Any]]]) -> None:
        super().__init__()
        self.events = events
