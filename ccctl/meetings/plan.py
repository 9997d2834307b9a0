"""Planning a meeting: check the request, resolve and keep its audience, schedule its checks.

The audience is the sites the filters select when the meeting is planned (enabled ones),
stored with the meeting so that a later change to the registry does not change who was
expected; ``edit`` adds or removes sites explicitly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ccctl.errors import UsageError
from ccctl.meetings.times import local_text, offset_text, parse_local, parse_offsets, zone
from ccctl.registry import meetings as store
from ccctl.registry.db import Database
from ccctl.registry.sites import SiteFilter, select_sites

STATUSES = ("planned", "live", "ended", "cancelled")


def check_source(source: str) -> str:
    """The program source as the server takes it: testsrc, whip or file:PATH."""
    if source in ("testsrc", "whip") or (source.startswith("file:") and len(source) > 5):
        return source
    raise UsageError(f"unknown source {source!r}: use testsrc, file:PATH or whip")


@dataclass
class Planned:
    """A stored meeting and the checks that could not be scheduled (their time had passed)."""

    meeting_id: int
    audience: int
    dropped: list[str]


def _schedule(starts_at: float, offsets: list[int], now: float) -> tuple[list[tuple[int, float]], list[str]]:
    kept = [(o, starts_at + o) for o in offsets if starts_at + o > now]
    dropped = [offset_text(o) for o in offsets if starts_at + o <= now]
    return kept, dropped


def plan_meeting(db: Database, *, title: str, at: str, tz: str, flt: SiteFilter, checks: str, source: str,
                 record: bool, now: float) -> Planned:
    """Store a new meeting; UsageError on a bad title, time, source, offsets or an empty audience."""
    title = title.strip()
    if not title:
        raise UsageError("the meeting needs a title")
    zone(tz)
    starts_at = parse_local(at, tz)
    if starts_at <= now:
        raise UsageError(f"{at} ({tz}) is in the past")
    offsets = parse_offsets(checks)
    check_source(source)
    if flt.is_empty():
        raise UsageError("choose the audience with site filters (--province, --site, --tag, ...)")
    sites = select_sites(db, dataclasses.replace(flt, enabled_only=True))
    if not sites:
        raise UsageError("no enabled site matches the filters")
    kept, dropped = _schedule(starts_at, offsets, now)
    filters = {k: v for k, v in dataclasses.asdict(flt).items() if v and k != "enabled_only"}
    meeting_id = store.insert_meeting(db, {"title": title, "starts_at": starts_at, "tz": tz, "source": source,
                                           "record": record, "filters": filters}, sites, kept, now)
    store.add_event(db, meeting_id, now, "planned", {"audience": len(sites), "checks": [offset_text(o) for o, _ in kept],
                                                     "dropped_checks": dropped})
    return Planned(meeting_id, len(sites), dropped)


def edit_meeting(db: Database, meeting_id: int, *, now: float, title: str | None = None, at: str | None = None,
                 checks: str | None = None, source: str | None = None, record: bool | None = None,
                 add: SiteFilter | None = None, remove: tuple[str, ...] = ()) -> Planned:
    """Change a planned meeting; a new time or new offsets reschedule the checks still due."""
    meeting = store.get_meeting(db, meeting_id)
    if meeting["status"] != "planned":
        raise UsageError(f"meeting {meeting_id} is {meeting['status']}; only a planned meeting can be edited")
    changes: dict[str, Any] = {}
    if title is not None:
        if not title.strip():
            raise UsageError("the meeting needs a title")
        changes["title"] = title.strip()
    if source is not None:
        changes["source"] = check_source(source)
    if record is not None:
        changes["record"] = record
    starts_at = meeting["starts_at"]
    if at is not None:
        starts_at = parse_local(at, meeting["tz"])
        if starts_at <= now:
            raise UsageError(f"{at} ({meeting['tz']}) is in the past")
        changes["starts_at"] = starts_at
    added = select_sites(db, dataclasses.replace(add, enabled_only=True)) if add is not None and not add.is_empty() else []
    if add is not None and not add.is_empty() and not added:
        raise UsageError("no enabled site matches the filters to add")
    current = {r["site_id"] for r in store.audience(db, meeting_id)}
    unknown = [s for s in remove if s not in current]
    if unknown:
        raise UsageError(f"not in the audience of meeting {meeting_id}: {', '.join(unknown)}")
    dropped: list[str] = []
    with db.transaction():
        store.update_meeting(db, meeting_id, changes, now)
        if added or remove:
            store.change_audience(db, meeting_id, added, remove)
        if at is not None or checks is not None:
            if checks is not None:
                offsets = parse_offsets(checks)
            else:
                offsets = sorted({c["offset_s"] for c in store.checks(db, meeting_id) if c["status"] == "due"})
            kept, dropped = _schedule(starts_at, offsets, now)
            store.reschedule_checks(db, meeting_id, kept)
        size = len(store.audience(db, meeting_id))
        if size == 0:
            raise UsageError("that would leave the meeting without an audience")
        store.add_event(db, meeting_id, now, "edited", {"changes": changes, "added": [s.id for s in added],
                                                        "removed": list(remove), "dropped_checks": dropped})
    return Planned(meeting_id, size, dropped)


def cancel_meeting(db: Database, meeting_id: int, now: float) -> int:
    """Cancel a planned meeting (or one that failed to start) and its checks still due; return
    how many checks were cancelled."""
    with db.transaction():
        meeting = store.get_meeting(db, meeting_id)
        if meeting["status"] not in ("planned", "failed"):
            raise UsageError(f"meeting {meeting_id} is {meeting['status']}; only a planned meeting (or one that failed "
                             "to start) can be cancelled")
        store.update_meeting(db, meeting_id, {"status": "cancelled"}, now)
        cancelled = store.cancel_checks(db, meeting_id, "meeting cancelled", now)
        store.add_event(db, meeting_id, now, "cancelled", {"checks_cancelled": cancelled})
    return cancelled


def meeting_record(db: Database, meeting_id: int) -> dict[str, Any]:
    """A meeting as ``show`` prints it: its fields, local time, audience size and checks."""
    m = store.get_meeting(db, meeting_id)
    return {"id": m["id"], "title": m["title"], "starts_at_local": local_text(m["starts_at"], m["tz"]), "tz": m["tz"],
            "starts_at_utc": local_text(m["starts_at"], "UTC"), "status": m["status"], "source": m["source"],
            "record": m["record"], "recording": m["recording"], "broadcast_id": m["broadcast_id"],
            "filters": m["filters"], "audience": len(store.audience(db, meeting_id)),
            "checks": [check_record(c, m["tz"]) for c in store.checks(db, meeting_id)]}


def check_record(check: dict[str, Any], tz: str) -> dict[str, Any]:
    """One check as listings print it (local times, the offset as written)."""
    summary = check.get("summary") or {}
    return {"check_id": check["id"], "offset": offset_text(check["offset_s"]), "due_at": local_text(check["due_at"], tz),
            "status": check["status"], "started_at": local_text(check["started_at"], tz),
            "late": bool(check["late_s"]), "late_s": round(check["late_s"]) if check["late_s"] else None,
            "run_id": check["run_id"], "ready": summary.get("ready"), "not_ready": summary.get("not_ready"),
            "note": check["note"]}
