"""Read-side queries of the dashboard and the reports: every site with its latest state, the
changes since a cursor, one site's check history, sites per tier, commune coordinates, and the
share ready per province over the last hours (the overview's sparklines).

A site's state is its result in the latest roll-call that checked it; a site never checked is
``UNCHECKED``. Aggregations (counts per level, worst first) live in ``ccctl.reports``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from ccctl.registry.db import Database

UNCHECKED = "UNCHECKED"

_SITES = (
    "SELECT s.id, s.name, s.scheme, s.unit_code, s.province_code, s.district_code, s.tier, s.host, "
    "s.enabled, p.name AS province_name, d.full_name AS district_name, u.full_name AS unit_name, s.fold "
    "FROM sites s "
    "LEFT JOIN units u ON u.scheme = s.scheme AND u.level = 'commune' AND u.code = s.unit_code "
    "LEFT JOIN units p ON p.scheme = s.scheme AND p.level = 'province' AND p.code = s.province_code "
    "LEFT JOIN units d ON d.scheme = s.scheme AND d.level = 'district' AND d.code = s.district_code "
    "ORDER BY s.scheme, s.province_code, s.district_code, s.unit_code, s.id"
)

_LATEST = (
    "SELECT r.site_id, r.run_id, r.state, r.reason, r.stage, r.rtt_ms, r.started_at, r.duration_ms "
    "FROM rollcall_results r JOIN (SELECT site_id, MAX(run_id) AS run_id FROM rollcall_results "
    "GROUP BY site_id) l ON l.site_id = r.site_id AND l.run_id = r.run_id"
)


def _result_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {"state": row["state"], "reason": row["reason"], "stage": row["stage"], "rtt_ms": row["rtt_ms"],
            "run_id": row["run_id"], "checked_at": row["started_at"] + (row["duration_ms"] or 0.0) / 1000}


def site_states(db: Database) -> list[dict[str, Any]]:
    """Every site with its place, tier and latest roll-call state, in registry order.

    Each row carries ``id``, ``name``, ``scheme``, ``unit_code``, ``province_code``,
    ``district_code`` (None in the 2025 scheme), the three place names, ``tier``, ``host``,
    ``enabled``, ``fold`` (folded search text) and ``state``, ``reason``, ``stage``,
    ``rtt_ms``, ``run_id``, ``checked_at`` (None while never checked).
    """
    latest = {r["site_id"]: r for r in db.query_dicts(_LATEST)}
    rows = db.query_dicts(_SITES)
    for row in rows:
        row["enabled"] = bool(row["enabled"])
        result = latest.get(row["id"])
        if result is None:
            row.update(state=UNCHECKED, reason="", stage="", rtt_ms=None, run_id=None, checked_at=None)
        else:
            row.update(_result_fields(result))
    return rows


@dataclass
class ChangeCursor:
    """Where a reader of roll-call results stands: the first run it has not read to the end,
    and the sites already read in runs still running (each result is returned once)."""

    run_id: int = 0
    seen: dict[int, set[str]] = field(default_factory=dict)


def latest_run_id(db: Database) -> int:
    """The id of the newest roll-call (0 when none ran)."""
    return int(db.query("SELECT COALESCE(MAX(id), 0) FROM rollcall_runs")[0][0])


def results_since(db: Database, cursor: ChangeCursor) -> list[dict[str, Any]]:
    """Results written since the last call with ``cursor`` (in run order), and move the cursor.

    Runs still running stay under the cursor and are read again next time, returning only the
    sites not returned before; a finished run is read once more after it finished and then
    passed, so a poller gets every result exactly once and never re-reads the whole history.
    """
    runs = db.query("SELECT id, status FROM rollcall_runs WHERE id >= ? ORDER BY id", (cursor.run_id,))
    if not runs:
        return []
    rows = db.query_dicts(
        "SELECT site_id, run_id, state, reason, stage, rtt_ms, started_at, duration_ms FROM rollcall_results "
        "WHERE run_id >= ? ORDER BY run_id", (cursor.run_id,))
    out = []
    for r in rows:
        seen = cursor.seen.setdefault(int(r["run_id"]), set())
        if r["site_id"] in seen:
            continue
        seen.add(r["site_id"])
        out.append({"site_id": r["site_id"], **_result_fields(r)})
    running = [run_id for run_id, status in runs if status == "running"]
    cursor.run_id = min(running) if running else int(runs[-1][0]) + 1
    cursor.seen = {run: sites for run, sites in cursor.seen.items() if run >= cursor.run_id}
    return out


def site_history(db: Database, site_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """A site's last ``limit`` roll-call results, newest first."""
    rows = db.query_dicts(
        "SELECT run_id, state, hard, flapping, stage, reason, rtt_ms, attempts, facts, started_at, duration_ms "
        "FROM rollcall_results WHERE site_id = ? ORDER BY run_id DESC LIMIT ?", (site_id, limit))
    for r in rows:
        r["hard"] = bool(r["hard"])
        r["flapping"] = bool(r["flapping"])
        r["facts"] = json.loads(r["facts"]) if r["facts"] else {}
    return rows


READY_STATES = ("OK", "DEGRADED")  # as ``ccctl.reports.count_states`` counts a site ready


def ready_trend(db: Database, now: float, buckets: int = 24, bucket_s: float = 3600.0, last: int | None = None
                ) -> dict[tuple[str, str], list[float | None]]:
    """(scheme, province code) -> share ready in % per time bucket, oldest first (None: no check).

    The last bucket is the one holding ``now`` (buckets are aligned on multiples of
    ``bucket_s``, so hourly buckets start on the hour). A bucket's share is the part of the
    results taken in it that found the site OK or DEGRADED: what the province's roll-calls saw
    in that hour. One grouped query, bounded by time: only the runs that can have results in
    the window are read (through the results' primary key), never the whole history.
    ``last``: read only the newest ``last`` buckets (the older ones None), for a reader that
    keeps the hours already complete and re-reads those still filling.
    """
    end = (now // bucket_s + 1) * bucket_s
    since = end - buckets * bucket_s
    read_since = end - min(last, buckets) * bucket_s if last else since
    # SQLite's CAST truncates (the offset is never negative here); PostgreSQL's rounds, hence FLOOR.
    bucket = "CAST(FLOOR((r.started_at - ?) / ?) AS INTEGER)" if db.dialect == "postgresql" \
        else "CAST((r.started_at - ?) / ? AS INTEGER)"
    ready = ", ".join(f"'{state}'" for state in READY_STATES)
    rows = db.query(
        f"SELECT {bucket} AS bucket, s.scheme, s.province_code, "
        f"SUM(CASE WHEN r.state IN ({ready}) THEN 1 ELSE 0 END), COUNT(*) "
        "FROM rollcall_results r JOIN sites s ON s.id = r.site_id "
        "WHERE r.run_id >= (SELECT COALESCE(MIN(id), 0) FROM rollcall_runs "
        "WHERE started_at >= ? OR finished_at IS NULL OR finished_at >= ?) "
        "AND r.started_at >= ? AND r.started_at < ? "
        "GROUP BY 1, s.scheme, s.province_code",
        (since, float(bucket_s), read_since, read_since, read_since, end))
    out: dict[tuple[str, str], list[float | None]] = {}
    for index, scheme, province, n_ready, n in rows:
        series = out.setdefault((scheme, province), [None] * buckets)
        if 0 <= int(index) < buckets and n:
            series[int(index)] = round(int(n_ready) * 100.0 / int(n), 1)
    return out


def sites_per_tier(db: Database) -> dict[str, int]:
    """Enabled sites by registry tier: how many each tier expects in a broadcast."""
    return {tier: int(n) for tier, n in db.query("SELECT tier, COUNT(*) FROM sites WHERE enabled = 1 GROUP BY tier")}


def place_points() -> dict[tuple[str, str, str], tuple[float, float]]:
    """(scheme, level, code) -> (latitude, longitude) of communes, 2021 districts and provinces,
    from ``vietnamadminunits``'s dataset (empty if it cannot be read).

    A map looks a site up by its commune, then its district, then its province; the dataset has
    no points for Hoàng Sa and Trường Sa, which the map draws itself.
    """
    from ccctl.registry.units import _vau_dataset

    points: dict[tuple[str, str, str], tuple[float, float]] = {}

    def put(scheme: str, level: str, code: str | None, lat: float | None, lon: float | None) -> None:
        if code and lat is not None and lon is not None:
            points.setdefault((scheme, level, str(code)), (float(lat), float(lon)))

    conn = _vau_dataset()
    try:
        for row in conn.execute(
                "SELECT wardCode, wardLat, wardLon, districtCode, districtLat, districtLon, provinceCode, "
                "provinceLat, provinceLon FROM admin_units_legacy"):
            put("2021", "commune", *row[0:3])
            put("2021", "district", *row[3:6])
            put("2021", "province", *row[6:9])
        for row in conn.execute(
                "SELECT wardCode, wardLat, wardLon, provinceCode, provinceLat, provinceLon FROM admin_units"):
            put("2025", "commune", *row[0:3])
            put("2025", "province", *row[3:6])
    except sqlite3.Error:
        return points
    finally:
        conn.close()
    return points


def site_point(points: dict[tuple[str, str, str], tuple[float, float]], site: dict[str, Any]
               ) -> tuple[float, float] | None:
    """A site's point: its commune's, else its district's, else its province's."""
    scheme = site["scheme"]
    return (points.get((scheme, "commune", site["unit_code"]))
            or points.get((scheme, "district", site.get("district_code") or ""))
            or points.get((scheme, "province", site["province_code"])))


def last_broadcast_event_id(db: Database) -> int:
    """The id of the newest broadcast event (0 when none)."""
    return int(db.query("SELECT COALESCE(MAX(id), 0) FROM broadcast_events")[0][0])


def broadcast_events_since(db: Database, after_id: int, limit: int = 5000) -> list[dict[str, Any]]:
    """Broadcast events (join, leave, tier, floor, ...) with an id above ``after_id``, oldest first."""
    rows = db.query_dicts(
        "SELECT id, broadcast_id, ts, site_id, kind, detail FROM broadcast_events WHERE id > ? ORDER BY id LIMIT ?",
        (after_id, limit))
    for r in rows:
        r["detail"] = json.loads(r["detail"]) if r["detail"] else {}
    return rows
