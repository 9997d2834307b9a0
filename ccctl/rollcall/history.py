"""Roll-call runs and results in the registry, streamed in as they arrive.

Results are buffered for at most ``FLUSH_S`` seconds or ``FLUSH_ROWS`` rows and written in
one transaction, so the registry is not the bottleneck of a 10,000-site run; a run stopped by
SIGINT/SIGTERM flushes what it holds, and one killed outright loses at most that one batch.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ccctl.models import CheckResult, CheckState
from ccctl.registry.db import Database
from ccctl.registry.refs import resolve_ref

FLUSH_S = 0.25
FLUSH_ROWS = 500
HISTORY_DEPTH = 10
HISTORY_RUNS = 500  # runs looked back over for a site's history



def _facts_encoder() -> Callable[[dict[str, Any]], str]:
    """``json.dumps(facts, ensure_ascii=False)`` as one C call per result.

    ``json.dumps`` with options builds a JSONEncoder, and ``encode`` builds the C encoder,
    on every call; here the C encoder is built once. Facts are parsed JSON plus numbers,
    so they hold no cycles and the circular-reference check is left out.
    """
    encoder = json.JSONEncoder(ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has _json
        return encoder.encode
    scan = make(None, encoder.default, json.encoder.encode_basestring, None, ": ", ", ", False, False, True)

    def encode(facts: dict[str, Any]) -> str:
        return "".join(scan(facts, 0))

    return encode


_facts_json = _facts_encoder()


class RunRecorder:
    """Opens a run, streams its results into ``rollcall_results``, then closes it."""

    def __init__(self, db: Database, params: dict[str, Any]) -> None:
        self.db = db
        self.counts: Counter[str] = Counter()
        self._buffer: list[tuple[Any, ...]] = []
        self._last_flush = time.monotonic()
        with db.transaction():
            if db.dialect == "postgresql":
                rows = db.query("INSERT INTO rollcall_runs (started_at, status, params) VALUES (?, 'running', ?) RETURNING id",
                                (time.time(), json.dumps(params)))
            else:
                db.execute("INSERT INTO rollcall_runs (started_at, status, params) VALUES (?, 'running', ?)",
                           (time.time(), json.dumps(params)))
                rows = db.query("SELECT last_insert_rowid()")
        self.run_id = int(rows[0][0])

    def add(self, result: CheckResult) -> None:
        """Buffer one result; write the buffer when it is full or old enough."""
        state = result.state.value
        self.counts[state] += 1
        self._buffer.append((self.run_id, result.site_id, state, int(result.hard),
                             int(result.flapping), result.stage, result.reason, result.rtt_ms,
                             result.attempts, _facts_json(result.facts),
                             result.started_at, result.duration_ms))
        if len(self._buffer) >= FLUSH_ROWS or time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered, in one transaction."""
        if self._buffer:
            with self.db.transaction():
                self.db.executemany(
                    "INSERT INTO rollcall_results (run_id, site_id, state, hard, flapping, stage, reason, "
                    "rtt_ms, attempts, facts, started_at, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    self._buffer,
                )
            self._buffer = []
        self._last_flush = time.monotonic()

    def finish(self, status: str, summary: dict[str, Any]) -> None:
        """Flush and mark the run ``finished`` (or ``interrupted``/``failed``) with its summary."""
        self.flush()
        with self.db.transaction():
            self.db.execute("UPDATE rollcall_runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
                            (time.time(), status, json.dumps(summary), self.run_id))


def recent_states(db: Database, site_ids: list[str], depth: int = HISTORY_DEPTH) -> dict[str, list[str]]:
    """Each site's own last ``depth`` states, oldest first, for SOFT/HARD and flapping.

    Per site, not per run: runs over other provinces must not push a site's history out
    (within the last ``HISTORY_RUNS`` runs).
    """
    if not site_ids:
        return {}
    wanted = set(site_ids)
    history: dict[str, list[str]] = {}
    # Only the last HISTORY_RUNS runs are scanned, so the cost stays flat as history grows
    # (cron every few minutes over 10,000 sites adds millions of rows a day).
    rows = db.query(
        "SELECT site_id, state FROM (SELECT site_id, state, run_id, ROW_NUMBER() OVER "
        "(PARTITION BY site_id ORDER BY run_id DESC) AS n FROM rollcall_results "
        "WHERE run_id > (SELECT COALESCE(MAX(id), 0) FROM rollcall_runs) - ?) AS recent "
        "WHERE n <= ? ORDER BY run_id", (HISTORY_RUNS, depth))
    for site_id, state in rows:
        if site_id in wanted:
            history.setdefault(site_id, []).append(state)
    return history


def list_runs(db: Database, limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs with their counts by state."""
    rows = db.query_dicts("SELECT id, started_at, finished_at, status, params, summary FROM rollcall_runs "
                          "ORDER BY id DESC LIMIT ?", (limit,))
    out = []
    for r in rows:
        summary = json.loads(r["summary"]) if r["summary"] else {}
        counts = summary.get("counts", {})
        out.append({"run": r["id"], "started_at": _iso(r["started_at"]), "status": r["status"],
                    "duration_s": round(r["finished_at"] - r["started_at"], 2) if r["finished_at"] else None,
                    "sites": summary.get("sites"), **{s.value.lower(): counts.get(s.value, 0) for s in CheckState},
                    "exit_code": summary.get("exit_code")})
    return out


def resolve_run(db: Database, run: str | int | None) -> int:
    """A run id from ``RUN`` (a number, ``latest``/None, or ``previous``)."""
    return resolve_ref(db, "rollcall_runs", run, "roll-call")


def run_results(db: Database, run_id: int) -> list[dict[str, Any]]:
    """Per-site results of one run, joined with the site's place, worst first."""
    rows = db.query_dicts(
        "SELECT r.site_id, s.name AS site_name, p.name AS province_name, d.full_name AS district_name, "
        "s.province_code, s.district_code, r.state, r.hard, r.flapping, r.stage, r.reason, r.rtt_ms, "
        "r.attempts, r.facts, r.duration_ms FROM rollcall_results r "
        "LEFT JOIN sites s ON s.id = r.site_id "
        "LEFT JOIN units p ON p.scheme = s.scheme AND p.level = 'province' AND p.code = s.province_code "
        "LEFT JOIN units d ON d.scheme = s.scheme AND d.level = 'district' AND d.code = s.district_code "
        "WHERE r.run_id = ?", (run_id,))
    order = {s.value: i for i, s in enumerate(reversed(list(CheckState)))}
    for r in rows:
        r["hard"] = bool(r["hard"])
        r["flapping"] = bool(r["flapping"])
        r["facts"] = json.loads(r["facts"]) if r["facts"] else {}
    rows.sort(key=lambda r: (order.get(r["state"], 0), r["province_code"] or "", r["site_id"]))
    return rows


def diff_runs(db: Database, run_a: int, run_b: int) -> list[dict[str, Any]]:
    """Sites whose state differs between two runs (a site missing from one shows as absent)."""
    a = {s: st for s, st in db.query("SELECT site_id, state FROM rollcall_results WHERE run_id = ?", (run_a,))}
    b = {s: st for s, st in db.query("SELECT site_id, state FROM rollcall_results WHERE run_id = ?", (run_b,))}
    changed = []
    for site_id in sorted(set(a) | set(b)):
        before, after = a.get(site_id, "ABSENT"), b.get(site_id, "ABSENT")
        if before != after:
            changed.append({"site_id": site_id, "before": before, "after": after})
    return changed


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
