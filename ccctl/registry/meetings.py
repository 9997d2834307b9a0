"""Meetings in the registry: the meeting, its audience as planned, its pre-checks, its events.

A pre-check row is ``due`` until one tick claims it with a conditional UPDATE (``... WHERE
status = 'due'``): the database lets exactly one writer change the row, on SQLite (one writer
at a time) as on PostgreSQL (the second UPDATE waits for the row, then sees it taken), so two
ticks at once never run the same check. Times are UTC epoch seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ccctl.errors import NotFound
from ccctl.models import Site
from ccctl.registry.broadcasts import audience_ids
from ccctl.registry.db import Database

_MEETING_COLUMNS = ("id, title, starts_at, tz, source, record, status, filters, broadcast_id, recording, "
                    "created_at, updated_at")
_CHECK_COLUMNS = ("id, meeting_id, offset_s, due_at, status, claimed_by, started_at, finished_at, late_s, run_id, "
                  "summary, note")
EDITABLE = frozenset({"title", "starts_at", "tz", "source", "record", "status", "broadcast_id", "recording"})


def _insert_id(db: Database, sql: str, params: Sequence[Any]) -> int:
    if db.dialect == "postgresql":
        return int(db.query(sql + " RETURNING id", params)[0][0])
    db.execute(sql, params)
    return int(db.query("SELECT last_insert_rowid()")[0][0])


def _meeting(row: dict[str, Any]) -> dict[str, Any]:
    row["record"] = bool(row["record"])
    row["filters"] = json.loads(row["filters"]) if row["filters"] else {}
    return row


def _check(row: dict[str, Any]) -> dict[str, Any]:
    row["summary"] = json.loads(row["summary"]) if row.get("summary") else None
    return row


def insert_meeting(db: Database, values: dict[str, Any], audience: Sequence[Site],
                   checks: Iterable[tuple[int, float]], now: float) -> int:
    """Store a meeting, its audience and its due checks ``(offset_s, due_at)`` in one transaction."""
    with db.transaction():
        meeting_id = _insert_id(
            db, "INSERT INTO meetings (title, starts_at, tz, source, record, status, filters, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, 'planned', ?, ?, ?)",
            (values["title"], values["starts_at"], values["tz"], values["source"], int(values["record"]),
             json.dumps(values.get("filters", {}), ensure_ascii=False), now, now))
        _add_sites(db, meeting_id, audience)
        _add_checks(db, meeting_id, checks)
    return meeting_id


def _add_sites(db: Database, meeting_id: int, sites: Sequence[Site]) -> None:
    db.executemany("INSERT INTO meeting_sites (meeting_id, site_id, site_name, province_code) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (meeting_id, site_id) DO NOTHING",
                   [(meeting_id, s.id, s.name, s.province_code) for s in sites])


def _add_checks(db: Database, meeting_id: int, checks: Iterable[tuple[int, float]]) -> None:
    db.executemany("INSERT INTO meeting_checks (meeting_id, offset_s, due_at, status) VALUES (?, ?, ?, 'due')",
                   [(meeting_id, int(offset), float(due)) for offset, due in checks])


def get_meeting(db: Database, meeting_id: int) -> dict[str, Any]:
    """One meeting by id, or NotFound."""
    rows = db.query_dicts(f"SELECT {_MEETING_COLUMNS} FROM meetings WHERE id = ?", (meeting_id,))
    if not rows:
        raise NotFound(f"no meeting {meeting_id}")
    return _meeting(rows[0])


def list_meetings(db: Database, since: float | None = None) -> list[dict[str, Any]]:
    """Meetings starting at or after ``since`` (all when None), soonest first, with their audience size."""
    rows = db.query_dicts(
        f"SELECT {', '.join('m.' + c.strip() for c in _MEETING_COLUMNS.split(','))}, "
        "(SELECT COUNT(*) FROM meeting_sites s WHERE s.meeting_id = m.id) AS audience, "
        "(SELECT COUNT(*) FROM meeting_checks c WHERE c.meeting_id = m.id AND c.status = 'done') AS checks_done, "
        "(SELECT COUNT(*) FROM meeting_checks c WHERE c.meeting_id = m.id AND c.status != 'cancelled') AS checks "
        "FROM meetings m WHERE m.starts_at >= ? ORDER BY m.starts_at, m.id",
        (since if since is not None else float("-inf"),))
    return [_meeting(r) for r in rows]


def update_meeting(db: Database, meeting_id: int, changes: dict[str, Any], now: float) -> None:
    """Set some fields of a meeting (names from EDITABLE)."""
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    if not changes:
        return
    values = {k: (int(v) if k == "record" else v) for k, v in changes.items()}
    sets = ", ".join(f"{k} = ?" for k in values)
    db.execute(f"UPDATE meetings SET {sets}, updated_at = ? WHERE id = ?", (*values.values(), now, meeting_id))


def audience(db: Database, meeting_id: int) -> list[dict[str, Any]]:
    """The sites a meeting expects, as kept at plan time (id, name, province code)."""
    return db.query_dicts("SELECT site_id, site_name, province_code FROM meeting_sites WHERE meeting_id = ? "
                          "ORDER BY province_code, site_id", (meeting_id,))


def change_audience(db: Database, meeting_id: int, add: Sequence[Site], remove: Sequence[str]) -> None:
    """Add sites to and remove site ids from a meeting's audience, in one transaction."""
    with db.transaction():
        _add_sites(db, meeting_id, add)
        db.executemany("DELETE FROM meeting_sites WHERE meeting_id = ? AND site_id = ?",
                       [(meeting_id, s) for s in remove])


def reschedule_checks(db: Database, meeting_id: int, checks: Iterable[tuple[int, float]]) -> None:
    """Replace the checks still due by these; checks already run stay as history."""
    with db.transaction():
        db.execute("DELETE FROM meeting_checks WHERE meeting_id = ? AND status = 'due'", (meeting_id,))
        _add_checks(db, meeting_id, checks)


def cancel_checks(db: Database, meeting_id: int, note: str, now: float) -> int:
    """Mark every check still due as cancelled; return how many."""
    return db.execute("UPDATE meeting_checks SET status = 'cancelled', note = ?, finished_at = ? "
                      "WHERE meeting_id = ? AND status = 'due'", (note, now, meeting_id))


def checks(db: Database, meeting_id: int) -> list[dict[str, Any]]:
    """A meeting's checks, in time order."""
    return [_check(r) for r in db.query_dicts(
        f"SELECT {_CHECK_COLUMNS} FROM meeting_checks WHERE meeting_id = ? ORDER BY due_at, id", (meeting_id,))]


def get_check(db: Database, check_id: int) -> dict[str, Any]:
    """One check by id, or NotFound."""
    rows = db.query_dicts(f"SELECT {_CHECK_COLUMNS} FROM meeting_checks WHERE id = ?", (check_id,))
    if not rows:
        raise NotFound(f"no meeting check {check_id}")
    return _check(rows[0])


def due_checks(db: Database, now: float) -> list[dict[str, Any]]:
    """Checks due by ``now`` of meetings still planned, by meeting then time."""
    rows = db.query_dicts(
        "SELECT c.id, c.meeting_id, c.offset_s, c.due_at, m.starts_at, m.title FROM meeting_checks c "
        "JOIN meetings m ON m.id = c.meeting_id WHERE c.status = 'due' AND c.due_at <= ? AND m.status = 'planned' "
        "ORDER BY c.meeting_id, c.due_at, c.id", (now,))
    return rows


def running_checks(db: Database) -> list[dict[str, Any]]:
    """Checks some tick has claimed and not finished."""
    return [_check(r) for r in db.query_dicts(
        f"SELECT {_CHECK_COLUMNS} FROM meeting_checks WHERE status = 'running' ORDER BY id")]


def claim_check(db: Database, check_id: int, owner: dict[str, Any], now: float, late_s: float | None) -> bool:
    """Take a due check for this tick; False when another tick took it first."""
    return db.execute("UPDATE meeting_checks SET status = 'running', claimed_by = ?, started_at = ?, late_s = ? "
                      "WHERE id = ? AND status = 'due'", (json.dumps(owner), now, late_s, check_id)) == 1


def skip_check(db: Database, check_id: int, note: str, now: float) -> bool:
    """Mark a due check skipped with the reason; False when another tick took it first."""
    return db.execute("UPDATE meeting_checks SET status = 'skipped', note = ?, finished_at = ? "
                      "WHERE id = ? AND status = 'due'", (note, now, check_id)) == 1


def release_check(db: Database, check_id: int, claimed_by: str | None, note: str) -> bool:
    """Give a claimed check back (its tick died); False when its state changed meanwhile."""
    return db.execute("UPDATE meeting_checks SET status = 'due', claimed_by = NULL, started_at = NULL, note = ? "
                      "WHERE id = ? AND status = 'running' AND claimed_by = ?", (note, check_id, claimed_by)) == 1


def finish_check(db: Database, check_id: int, status: str, now: float, run_id: int | None,
                 summary: dict[str, Any] | None, note: str | None) -> None:
    """Close a claimed check: done (with its roll-call run) or failed."""
    db.execute("UPDATE meeting_checks SET status = ?, finished_at = ?, run_id = ?, summary = ?, note = ? WHERE id = ?",
               (status, now, run_id, json.dumps(summary, ensure_ascii=False) if summary is not None else None, note,
                check_id))


def add_event(db: Database, meeting_id: int, ts: float, kind: str, detail: dict[str, Any]) -> None:
    """One event of a meeting (check_done, check_late, check_skipped, started, cancelled, ...)."""
    db.execute("INSERT INTO meeting_events (meeting_id, ts, kind, detail) VALUES (?, ?, ?, ?)",
               (meeting_id, ts, kind, json.dumps(detail, ensure_ascii=False, default=str)))


def events(db: Database, meeting_id: int) -> list[dict[str, Any]]:
    """A meeting's events, oldest first."""
    rows = db.query_dicts("SELECT ts, kind, detail FROM meeting_events WHERE meeting_id = ? ORDER BY ts, id",
                          (meeting_id,))
    for r in rows:
        r["detail"] = json.loads(r["detail"])
    return rows


def claim_start(db: Database, now: float, window_s: float) -> list[int]:
    """Take the planned meetings whose time came within the last ``window_s`` for this tick to
    start (status ``starting``); another tick gets none of them."""
    ids = [int(r[0]) for r in db.query("SELECT id FROM meetings WHERE status = 'planned' AND starts_at <= ? "
                                       "AND starts_at > ? ORDER BY starts_at, id", (now, now - window_s))]
    return [i for i in ids if db.execute("UPDATE meetings SET status = 'starting', updated_at = ? "
                                         "WHERE id = ? AND status = 'planned'", (now, i)) == 1]


def stuck_starts(db: Database, claimed_before: float) -> list[dict[str, Any]]:
    """Meetings left ``starting`` by a tick that claimed them before ``claimed_before`` (the
    claim's time is ``updated_at``: nothing else changes a meeting while it is starting)."""
    return [_meeting(r) for r in db.query_dicts(
        f"SELECT {_MEETING_COLUMNS} FROM meetings WHERE status = 'starting' AND updated_at < ? ORDER BY id",
        (claimed_before,))]


def settle_start(db: Database, meeting_id: int, claimed_at: float, status: str, now: float,
                 broadcast_id: int | None = None) -> bool:
    """Move a meeting stuck in ``starting`` since ``claimed_at`` to ``status`` (planned, failed,
    or live with its broadcast); False when another tick settled or re-claimed it meanwhile."""
    return db.execute("UPDATE meetings SET status = ?, broadcast_id = COALESCE(?, broadcast_id), updated_at = ? "
                      "WHERE id = ? AND status = 'starting' AND updated_at = ?",
                      (status, broadcast_id, now, meeting_id, claimed_at)) == 1


def live_broadcasts_since(db: Database, since: float) -> list[dict[str, Any]]:
    """Broadcasts live now that started at or after ``since``: id, title, source, the sites invited."""
    rows = db.query_dicts("SELECT id, title, source, started_at, params FROM broadcasts "
                          "WHERE status = 'live' AND started_at >= ? ORDER BY id", (since,))
    for r in rows:
        listed = audience_ids(db, r["id"])  # None: every enabled site (or a broadcast from before audiences)
        r["sites"] = sorted(listed) if listed is not None else json.loads(r.pop("params") or "{}").get("sites", [])
        r.pop("params", None)
    return rows


def settle_ended(db: Database, now: float) -> list[int]:
    """Mark ended the live meetings whose broadcast has ended; return their ids."""
    ids = [int(r[0]) for r in db.query(
        "SELECT m.id FROM meetings m JOIN broadcasts b ON b.id = m.broadcast_id "
        "WHERE m.status = 'live' AND b.status = 'ended'")]
    for meeting_id in ids:
        if db.execute("UPDATE meetings SET status = 'ended', updated_at = ? WHERE id = ? AND status = 'live'",
                      (now, meeting_id)) == 1:
            add_event(db, meeting_id, now, "ended", {})
    return ids


def broadcast_span(db: Database, broadcast_id: int) -> tuple[float, float | None] | None:
    """When a broadcast started and ended (None while live); None if there is no such broadcast."""
    rows = db.query("SELECT started_at, ended_at FROM broadcasts WHERE id = ?", (broadcast_id,))
    if not rows:
        return None
    return float(rows[0][0]), (float(rows[0][1]) if rows[0][1] is not None else None)


def unit_points() -> tuple[dict[tuple[str, str], tuple[float, float]], list[tuple[float, float]]]:
    """Coordinates for the attendance map, from ``vietnamadminunits``' dataset (read-only).

    Returns ``{(scheme, commune code): (lat, lon)}`` for both schemes (a 2021 commune without
    its own point takes its district's), and the 2021 districts' points as the country's backdrop.
    """
    from ccctl.registry.units import _vau_dataset

    points: dict[tuple[str, str], tuple[float, float]] = {}
    backdrop: dict[str, tuple[float, float]] = {}
    conn = _vau_dataset()
    try:
        for code, lat, lon, dcode, dlat, dlon in conn.execute(
                "SELECT wardCode, wardLat, wardLon, districtCode, districtLat, districtLon FROM admin_units_legacy"):
            if dlat is not None and dlon is not None:
                backdrop.setdefault(str(dcode), (float(dlat), float(dlon)))
            if lat is not None and lon is not None:
                points[("2021", str(code))] = (float(lat), float(lon))
            elif dlat is not None and dlon is not None:
                points[("2021", str(code))] = (float(dlat), float(dlon))
        for code, lat, lon in conn.execute("SELECT wardCode, wardLat, wardLon FROM admin_units"):
            if lat is not None and lon is not None:
                points[("2025", str(code))] = (float(lat), float(lon))
    finally:
        conn.close()
    return points, list(backdrop.values())
