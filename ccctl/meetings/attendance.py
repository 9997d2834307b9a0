"""Attendance against an audience (a meeting's, or a broadcast's own), from the broadcast's
join and leave events.

Each audience site is ``present``, ``late`` (first joined more than ``late_after_s`` after the
start: for a meeting the later of its time and the broadcast's start) or ``absent`` (never
joined); besides, ``left_early`` (gone for good more than ``left_early_s`` before the end) and
``audio_only`` (its last tier was sound only): :func:`classify`, shared by both. For a meeting
the latest pre-check and the site's contact come along, so one table says who was missing and
whom to call.
"""

from __future__ import annotations

from calendar import timegm
from dataclasses import dataclass
from time import strptime
from typing import Any

from ccctl.meetings.readiness import site_directory, site_readiness
from ccctl.meetings.times import local_text
from ccctl.registry import meetings as store
from ccctl.registry.db import Database

SITE_COLUMNS = ["site_id", "site_name", "province_name", "status", "first_join", "last_leave", "minutes",
                "connected_pct", "joins", "tier", "left_early", "audio_only", "precheck", "precheck_reason",
                "contact_name", "contact_phone"]
PROVINCE_COLUMNS = ["province_code", "province_name", "audience", "present", "late", "absent", "left_early",
                    "audio_only", "attended_pct"]


@dataclass(frozen=True)
class Tolerances:
    """How late is late and how early is early, in seconds (``[meetings]`` in the config)."""

    late_after_s: float = 300.0
    left_early_s: float = 300.0


def _epoch(iso: str | None) -> float | None:
    return float(timegm(strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))) if iso else None


def classify(seen: dict[str, Any] | None, begin: float, end: float, tol: Tolerances) -> dict[str, Any]:
    """``status``, ``left_early`` and ``audio_only`` of one audience site, from its row of
    :func:`ccctl.media.state.attendance` (None: it never joined) and the span it was expected."""
    first = _epoch(seen["first_join"]) if seen else None
    last_leave = _epoch(seen["last_leave"]) if seen else None
    if first is None:
        status = "absent"
    elif first > begin + tol.late_after_s:
        status = "late"
    else:
        status = "present"
    gone = seen is not None and not seen["connected"] and last_leave is not None
    return {"status": status, "left_early": gone and last_leave is not None and last_leave < end - tol.left_early_s,
            "audio_only": seen is not None and seen["tier"] == "audio"}


def broadcast_attendance(db: Database, broadcast_id: int, now: float,
                         tol: Tolerances = Tolerances()) -> list[dict[str, Any]]:
    """One row per site of the broadcast's audience (and any other site that joined it, an older
    broadcast's for instance): :func:`ccctl.media.state.attendance`'s figures, the site's name
    and province, its :func:`classify` classes and share of the broadcast connected; absent first."""
    from ccctl.media.state import attendance
    from ccctl.registry.broadcasts import audience_sites

    span = store.broadcast_span(db, broadcast_id)
    begin, end = (span[0], span[1] if span[1] is not None else now) if span else (now, now)
    length = max(end - begin, 1.0)
    joined = {r["site_id"]: r for r in attendance(db, broadcast_id)}
    members = {m["site_id"]: m for m in audience_sites(db, broadcast_id)}
    rows = []
    for site_id in [*members, *(s for s in joined if s not in members)]:
        seen, member = joined.get(site_id), members.get(site_id)
        figures = seen or {"site_id": site_id, "first_join": None, "last_leave": None, "joins": 0, "seconds": 0.0,
                           "tier": None, "connected": False, "edge": None}
        rows.append({**figures, "site_name": member["site_name"] if member else None,
                     "province_code": member["province_code"] if member else None, "in_audience": member is not None,
                     **classify(seen, begin, end, tol),
                     "connected_pct": round(min(figures["seconds"] / length, 1.0) * 100, 1)})
    order = {"absent": 0, "late": 1, "present": 2}
    rows.sort(key=lambda r: (order[r["status"]], not r["left_early"], r["province_code"] or "", r["site_id"]))
    return rows


def latest_check(db: Database, meeting_id: int) -> dict[str, Any] | None:
    """The meeting's last check that ran, if any."""
    done = [c for c in store.checks(db, meeting_id) if c["status"] == "done"]
    return done[-1] if done else None


def site_attendance(db: Database, meeting_id: int, now: float, tol: Tolerances = Tolerances()) -> list[dict[str, Any]]:
    """One row per audience site: attendance, quality, latest pre-check, contact; absent first."""
    from ccctl.media.state import attendance

    meeting = store.get_meeting(db, meeting_id)
    tz = meeting["tz"]
    members = store.audience(db, meeting_id)
    directory = site_directory(db, [m["site_id"] for m in members])
    check = latest_check(db, meeting_id)
    prechecks = {r["site_id"]: r for r in site_readiness(db, meeting_id, check["run_id"])} if check else {}
    joined: dict[str, dict[str, Any]] = {}
    begin, end = meeting["starts_at"], now
    span = store.broadcast_span(db, meeting["broadcast_id"]) if meeting["broadcast_id"] else None
    if span is not None:
        joined = {r["site_id"]: r for r in attendance(db, meeting["broadcast_id"])}
        begin = max(begin, span[0])
        end = span[1] if span[1] is not None else now
    length = max(end - begin, 1.0)
    rows = []
    for m in members:
        info = directory.get(m["site_id"], {})
        seen = joined.get(m["site_id"])
        first = _epoch(seen["first_join"]) if seen else None
        last_leave = _epoch(seen["last_leave"]) if seen else None
        classes = classify(seen, begin, end, tol)
        pre = prechecks.get(m["site_id"], {})
        rows.append({
            "site_id": m["site_id"], "site_name": info.get("site_name", m["site_name"]),
            "province_code": info.get("province_code", m["province_code"]), "province_name": info.get("province_name"),
            "scheme": info.get("scheme"), "unit_code": info.get("unit_code"), "status": classes["status"],
            "first_join": local_text(first, tz), "last_leave": local_text(last_leave, tz),
            "minutes": round(seen["seconds"] / 60, 1) if seen else 0.0,
            "connected_pct": round(min(seen["seconds"] / length, 1.0) * 100, 1) if seen else 0.0,
            "joins": seen["joins"] if seen else 0, "tier": seen["tier"] if seen else None,
            "left_early": classes["left_early"], "audio_only": classes["audio_only"],
            "precheck": pre.get("readiness"), "precheck_reason": pre.get("reason"),
            "contact_name": info.get("contact_name"), "contact_phone": info.get("contact_phone")})
    order = {"absent": 0, "late": 1, "present": 2}
    rows.sort(key=lambda r: (order[r["status"]], not r["left_early"], r["province_code"] or "", r["site_id"]))
    return rows


def province_attendance(site_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per province: audience, present, late, absent, left early, audio only, share attended; worst first."""
    groups: dict[str, dict[str, Any]] = {}
    for r in site_rows:
        code = r["province_code"] or ""
        g = groups.setdefault(code, {"province_code": code, "province_name": r["province_name"] or "", "audience": 0,
                                     "present": 0, "late": 0, "absent": 0, "left_early": 0, "audio_only": 0})
        g["audience"] += 1
        g[r["status"]] += 1
        g["left_early"] += int(r["left_early"])
        g["audio_only"] += int(r["audio_only"])
    for g in groups.values():
        g["attended_pct"] = round((g["present"] + g["late"]) * 100.0 / g["audience"], 1)
    return sorted(groups.values(), key=lambda g: (g["attended_pct"], g["province_code"]))


def to_call(site_rows: list[dict[str, Any]], started: bool) -> list[dict[str, Any]]:
    """The sites someone should phone: once the meeting has started, those absent or gone early;
    before, those not ready at the last pre-check."""
    if started:
        return [r for r in site_rows if r["status"] == "absent" or r["left_early"]]
    return [r for r in site_rows if r["precheck"] not in (None, "ready")]
