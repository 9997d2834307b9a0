"""Broadcasts and their events in the registry, so a restarted server finds its state again.

A broadcast is ``live`` from start to stop; every join, leave, tier change and floor change is
an event, from which ``attendance`` computes who was connected, when, for how long and at
what tier. The floor holder is also kept on the broadcast row (``floor_site``), so a
restarted server gives the floor back to the same site.

Event kinds: ``join`` (a site's WHEP session is connected and media flows), ``leave`` (it
ended, or an offer never connected), ``tier``, ``floor`` (detail
``action``: ``grant``, ``release``, or ``on_air`` when the holder's uplink became the
program), ``publish`` (a WHIP session ``start``/``end``; site "" is the control room) and
``refused`` (a site outside the broadcast's audience tried to join: detail ``why``; once per
site while a server process runs the broadcast).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from ccctl.registry.db import Database
from ccctl.registry.refs import resolve_ref


def _insert_id(db: Database, sql: str, params: tuple[Any, ...]) -> int:
    if db.dialect == "postgresql":
        return int(db.query(sql + " RETURNING id", params)[0][0])
    db.execute(sql, params)
    return int(db.query("SELECT last_insert_rowid()")[0][0])


def live_broadcast(db: Database) -> dict[str, Any] | None:
    """The broadcast now live, if any."""
    rows = db.query_dicts("SELECT id, title, source, status, started_at, ended_at, floor_site, params "
                          "FROM broadcasts WHERE status = 'live' ORDER BY id DESC LIMIT 1")
    if not rows:
        return None
    row = rows[0]
    row["params"] = json.loads(row["params"])
    return row


def start_broadcast(db: Database, title: str, source: str, params: dict[str, Any],
                    audience: Sequence[str] | None = None) -> int:
    """Record a new live broadcast; the caller checked none is live. ``audience``: the sites
    that may join it (None: every enabled site), kept in :mod:`ccctl.registry.broadcasts`."""
    from ccctl.registry.broadcasts import set_audience

    params = {**params, "audience": "all" if audience is None else "listed"}
    with db.transaction():
        db.lock("ccctl-broadcast")
        bid = _insert_id(db, "INSERT INTO broadcasts (title, source, status, started_at, params) VALUES (?, ?, 'live', ?, ?)",
                         (title, source, time.time(), json.dumps(params)))
        if audience is not None:
            set_audience(db, bid, audience)
        return bid


def end_broadcast(db: Database, broadcast_id: int) -> None:
    """Mark a broadcast ended, closing the attendance of sites still connected and the floor."""
    now = time.time()
    with db.transaction():
        still = [r["site_id"] for r in attendance(db, broadcast_id) if r["connected"]]
        db.executemany("INSERT INTO broadcast_events (broadcast_id, ts, site_id, kind, detail) VALUES (?, ?, ?, 'leave', ?)",
                       [(broadcast_id, now, site, json.dumps({"why": "broadcast ended"})) for site in still])
        holder = db.query("SELECT floor_site FROM broadcasts WHERE id = ?", (broadcast_id,))
        if holder and holder[0][0]:
            db.execute("INSERT INTO broadcast_events (broadcast_id, ts, site_id, kind, detail) VALUES (?, ?, ?, 'floor', ?)",
                       (broadcast_id, now, holder[0][0], json.dumps({"action": "release", "why": "broadcast ended"})))
        db.execute("UPDATE broadcasts SET status = 'ended', ended_at = ?, floor_site = NULL WHERE id = ?",
                   (now, broadcast_id))


def set_floor(db: Database, broadcast_id: int, site_id: str | None, why: str | None = None) -> str | None:
    """Give the floor to ``site_id`` (None: release it), recording ``floor`` events; returns
    the previous holder. Giving it to another site releases the previous one first; ``why``
    (e.g. ``revoked``) goes into the release event."""
    now = time.time()
    with db.transaction():
        rows = db.query("SELECT floor_site FROM broadcasts WHERE id = ?", (broadcast_id,))
        previous = rows[0][0] if rows else None
        if previous == site_id:
            return previous
        events = []
        if previous:
            release = {"action": "release", **({"why": why} if why else {})}
            events.append((broadcast_id, now, previous, "floor", json.dumps(release)))
        if site_id:
            events.append((broadcast_id, now, site_id, "floor", json.dumps({"action": "grant"})))
        db.executemany("INSERT INTO broadcast_events (broadcast_id, ts, site_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
                       events)
        db.execute("UPDATE broadcasts SET floor_site = ? WHERE id = ?", (site_id, broadcast_id))
    return str(previous) if previous else None


def floor_events(db: Database, broadcast_id: int) -> list[dict[str, Any]]:
    """The broadcast's floor history, oldest first: time, site and what happened."""
    return [{"ts": ts, "site_id": site_id, **(json.loads(detail) if detail else {})}
            for ts, site_id, detail in db.query(
                "SELECT ts, site_id, detail FROM broadcast_events WHERE broadcast_id = ? AND kind = 'floor' "
                "ORDER BY ts, id", (broadcast_id,))]


def record_event(db: Database, broadcast_id: int, site_id: str, kind: str, detail: dict[str, Any]) -> None:
    """One event (see the module doc for the kinds)."""
    with db.transaction():
        db.execute("INSERT INTO broadcast_events (broadcast_id, ts, site_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
                   (broadcast_id, time.time(), site_id, kind, json.dumps(detail, ensure_ascii=False)))


def resolve_broadcast(db: Database, ref: str | int | None) -> int:
    """A broadcast id from a number, ``latest``/None or ``previous``."""
    return resolve_ref(db, "broadcasts", ref, "broadcast")


def _ends(leave: dict[str, Any], session: str | None) -> bool:
    """Whether a ``leave`` ends the site's connected session: one naming another session
    (an offer that never connected, a session already replaced) does not."""
    left = leave.get("session_id")
    return left is None or session is None or left == session


def attendance(db: Database, broadcast_id: int) -> list[dict[str, Any]]:
    """Per site: first join, last leave, seconds connected, joins, last tier, connected now,
    and the edge that served its last join (None: ccctl itself).

    A ``join`` is recorded when a site's session is connected and media flows to it (not
    when its offer is answered), so only that time counts."""
    end = db.query("SELECT COALESCE(ended_at, ?) FROM broadcasts WHERE id = ?", (time.time(), broadcast_id))
    until = float(end[0][0]) if end else time.time()
    per_site: dict[str, dict[str, Any]] = {}
    for site_id, ts, kind, detail in db.query(
            "SELECT site_id, ts, kind, detail FROM broadcast_events WHERE broadcast_id = ? "
            "AND kind IN ('join', 'leave', 'tier') ORDER BY ts, id", (broadcast_id,)):
        info = json.loads(detail) if detail else {}
        row = per_site.setdefault(site_id, {"site_id": site_id, "first_join": None, "last_leave": None, "joins": 0,
                                            "seconds": 0.0, "tier": None, "connected": False, "edge": None,
                                            "_since": None, "_session": None})
        if kind == "join":
            row["joins"] += 1
            row["edge"] = info.get("edge")  # the edge serving it (ccctl/edges), None: ccctl itself
            row["first_join"] = row["first_join"] or ts
            row["tier"] = info.get("tier", row["tier"])
            row["_session"] = info.get("session_id")
            if not row["connected"]:
                row["connected"], row["_since"] = True, ts
        elif kind == "leave" and row["connected"] and _ends(info, row["_session"]):
            row["seconds"] += ts - row["_since"]
            row["connected"], row["_since"], row["last_leave"] = False, None, ts
        elif kind == "tier":  # the core records {"from": ..., "to": ...}
            row["tier"] = info.get("to", info.get("tier", row["tier"]))
    out = []
    for row in per_site.values():
        if row["connected"]:
            row["seconds"] += until - row["_since"]
        del row["_since"], row["_session"]
        row["seconds"] = round(row["seconds"], 1)
        for key in ("first_join", "last_leave"):
            if row[key] is not None:
                row[key] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row[key]))
        out.append(row)
    return sorted(out, key=lambda r: r["site_id"])
