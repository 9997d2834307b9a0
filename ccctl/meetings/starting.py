"""Starting a meeting's broadcast: its title, source and audience (and recording) through the
server's control API, the same call ``broadcast start`` makes; by hand or from a tick.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from ccctl.errors import CcctlError, UsageError
from ccctl.registry import meetings as store
from ccctl.registry.db import Database


class Control(Protocol):
    """What starting needs of the control client (``ccctl.media.client.ControlClient``)."""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> Any: ...


def recording_path(home: Path, meeting_id: int) -> Path:
    """Where a meeting's program is recorded: ``$CCCTL_HOME/recordings/meeting-ID-<UTC>.ts``."""
    folder = home / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    return (folder / f"meeting-{meeting_id}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.ts").resolve()


def start_meeting(db: Database, meeting_id: int, client: Control, home: Path, now: float,
                  claimed: bool = False) -> dict[str, Any]:
    """Start the broadcast of a planned meeting (``claimed``: a tick already moved it to
    ``starting``; by hand, one that failed to start can be started too); the server's answer.
    The meeting becomes live, its checks still due are cancelled. On failure a claimed
    meeting goes back to planned and the error propagates."""
    m = store.get_meeting(db, meeting_id)
    expected = ("starting",) if claimed else ("planned", "failed")
    if m["status"] not in expected:
        raise UsageError(f"meeting {meeting_id} is {m['status']}; only a planned meeting (or one that failed to "
                         "start) can start")
    body: dict[str, Any] = {"source": m["source"], "title": m["title"],
                            "sites": [r["site_id"] for r in store.audience(db, meeting_id)]}
    if m["record"]:
        body["record"] = str(recording_path(home, meeting_id))
    try:
        result = client.call("POST", "/api/broadcast", body)
    except CcctlError as exc:
        if claimed:
            store.update_meeting(db, meeting_id, {"status": "planned"}, now)
            store.add_event(db, meeting_id, now, "start_failed", {"error": str(exc)})
        raise
    with db.transaction():
        store.update_meeting(db, meeting_id, {"status": "live", "broadcast_id": int(result["id"]),
                                              "recording": result.get("record")}, now)
        store.cancel_checks(db, meeting_id, "meeting started", now)
        store.add_event(db, meeting_id, now, "started", {"broadcast_id": result["id"], "record": result.get("record"),
                                                         "by": "tick" if claimed else "operator"})
    return {**result, "sites": len(body["sites"])}
