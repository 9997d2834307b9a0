"""Broadcasts' audiences and listings in the registry.

A broadcast's audience is either every enabled site (``params.audience == "all"``, also what a
broadcast recorded before audiences existed means) or the sites listed in ``broadcast_sites``
(``params.audience == "listed"``), resolved once at start like a meeting's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from ccctl.registry.db import Database

#: The columns of ``broadcast list``.
LIST_COLUMNS = ["id", "title", "source", "status", "started_at", "ended_at", "audience", "floor_site"]


def set_audience(db: Database, broadcast_id: int, site_ids: Sequence[str]) -> None:
    """Keep ``site_ids`` (deduplicated) as the broadcast's listed audience."""
    rows = [(broadcast_id, s) for s in dict.fromkeys(site_ids)]
    with db.transaction():
        db.executemany("INSERT INTO broadcast_sites (broadcast_id, site_id) VALUES (?, ?)", rows)


def audience_ids(db: Database, broadcast_id: int) -> frozenset[str] | None:
    """The listed audience of a broadcast; None when it is every enabled site."""
    rows = db.query("SELECT params FROM broadcasts WHERE id = ?", (broadcast_id,))
    if not rows or json.loads(rows[0][0]).get("audience") != "listed":
        return None
    return frozenset(r[0] for r in db.query("SELECT site_id FROM broadcast_sites WHERE broadcast_id = ?",
                                            (broadcast_id,)))


def audience_sites(db: Database, broadcast_id: int) -> list[dict[str, Any]]:
    """The audience as rows (site id, name, province code), ordered by province then id: the
    listed sites (a site deleted since keeps its id), or every enabled site now."""
    listed = audience_ids(db, broadcast_id)
    if listed is None:
        return db.query_dicts("SELECT id AS site_id, name AS site_name, province_code FROM sites WHERE enabled = 1 "
                              "ORDER BY province_code, id")
    rows = db.query_dicts("SELECT b.site_id, COALESCE(s.name, b.site_id) AS site_name, s.province_code "
                          "FROM broadcast_sites b LEFT JOIN sites s ON s.id = b.site_id "
                          "WHERE b.broadcast_id = ? ORDER BY s.province_code, b.site_id", (broadcast_id,))
    return rows


def audience_size(db: Database, broadcast_id: int) -> int:
    """How many sites the broadcast's audience holds (every enabled site: how many there are now)."""
    if audience_ids(db, broadcast_id) is None:
        return int(db.query("SELECT COUNT(*) FROM sites WHERE enabled = 1")[0][0])
    return int(db.query("SELECT COUNT(*) FROM broadcast_sites WHERE broadcast_id = ?", (broadcast_id,))[0][0])


def live_ids(db: Database) -> list[int]:
    """The ids of the broadcasts live now, oldest first."""
    return [int(r[0]) for r in db.query("SELECT id FROM broadcasts WHERE status = 'live' ORDER BY id")]


def list_broadcasts(db: Database, limit: int = 20) -> list[dict[str, Any]]:
    """Live broadcasts and the most recent ones (``limit`` in all), newest first; ``audience``
    is ``all`` or the number of listed sites."""
    rows = db.query_dicts("SELECT id, title, source, status, started_at, ended_at, floor_site, params FROM broadcasts "
                          "ORDER BY CASE WHEN status = 'live' THEN 0 ELSE 1 END, id DESC LIMIT ?", (limit,))
    counts = dict(db.query("SELECT broadcast_id, COUNT(*) FROM broadcast_sites WHERE broadcast_id IN "
                           f"({', '.join('?' for _ in rows) or 'NULL'}) GROUP BY broadcast_id",
                           tuple(r["id"] for r in rows)))
    for r in rows:
        listed = json.loads(r.pop("params")).get("audience") == "listed"
        r["audience"] = int(counts.get(r["id"], 0)) if listed else "all"
        for key in ("started_at", "ended_at"):
            if r[key] is not None:
                r[key] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r[key]))
    return rows


#: The levels of :func:`audience_level`, highest first (the four-level system: centre, province, district).
LEVELS = ("every site", "several provinces", "one province", "one district")


def audience_level(db: Database, broadcast_id: int) -> int:
    """How wide a broadcast's audience is, as an index into :data:`LEVELS` (0 is the widest):
    every enabled site; else sites of several provinces; of one province; of one district."""
    listed = audience_ids(db, broadcast_id)
    return sites_level(db, None if listed is None else sorted(listed))


def sites_level(db: Database, site_ids: Sequence[str] | None) -> int:
    """The :data:`LEVELS` index of an audience (None: every enabled site) before it is recorded."""
    if site_ids is None:
        return 0
    ids = list(dict.fromkeys(site_ids))
    provinces: set[str] = set()
    districts: set[str | None] = set()
    for i in range(0, len(ids), 500):  # bounded statements, whatever the audience's size
        chunk = ids[i:i + 500]
        for province, district in db.query("SELECT province_code, district_code FROM sites WHERE id IN "
                                           f"({', '.join('?' for _ in chunk)})", tuple(chunk)):
            provinces.add(province)
            districts.add(district)
    if len(provinces) > 1:
        return 1
    return 2 if len(districts) != 1 or None in districts else 3


def broadcast_row(db: Database, broadcast_id: int) -> dict[str, Any] | None:
    """A broadcast as the server keeps it (``params`` decoded), or None."""
    rows = db.query_dicts("SELECT id, title, source, status, started_at, ended_at, floor_site, params "
                          "FROM broadcasts WHERE id = ?", (broadcast_id,))
    if not rows:
        return None
    rows[0]["params"] = json.loads(rows[0]["params"])
    return rows[0]
