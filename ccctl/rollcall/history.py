"""Roll-call runs and results in the registry, streamed in as they arrive.

Results are buffered for at most ``FLUSH_S`` seconds or ``FLUSH_ROWS`` rows and written in
one transaction, so the registry is not the bottleneck of a 10,000-site run; a run stopped by
SIGINT/SIGTERM flushes what it holds, and one killed outright loses at most that one batch.

A run killed outright (SIGKILL, power cut) cannot close itself, so each run records its owner
(host, boot id, pid and the pid's start time) and the next run to start closes every
``running`` run whose owner is provably gone as ``interrupted``. That holds for cron and for two
consoles at once, whatever their homes and locks: a live owner is never closed, and a run
owned by another host is left alone (this host cannot see its processes). ``rollcall diff``
does not count the sites an unfinished run never reached as changes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ccctl.limits import pid_exists
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


def _boot_id() -> str | None:
    """This boot's id (Linux); a pid from another boot is dead whatever its number."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), None if it is
    gone or a zombie; the same pid with another start time is another process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rpartition(b")")[2].split()
    except OSError:
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def run_owner() -> dict[str, Any]:
    """Who is running a run started now: this host, boot, pid and the pid's start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "pid_start": _start_time(pid)}


def owner_alive(owner: Any) -> bool | None:
    """Whether a run's recorded owner still runs: False when provably gone, None when unknown
    (another host, or a run recorded without an owner)."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return None
    boot = _boot_id()
    if boot is not None and owner.get("boot_id") is not None:
        if owner["boot_id"] != boot:
            return False
        started = _start_time(pid)
        return started is not None and started == owner.get("pid_start")
    return pid_exists(pid)  # no /proc: the pid's existence is all there is to go on


def close_dead_runs(db: Database) -> list[int]:
    """Mark ``interrupted`` every ``running`` run whose owner is gone; their ids.

    The summary is rebuilt from the results the run kept (counts by state, exit code 3)
    and ``finished_at`` is when its last kept result ended (its start if none), so
    ``rollcall list`` shows how far it got. Runs of live owners or other hosts stay.
    """
    closed = []
    for run_id, started_at, params_text in db.query(
            "SELECT id, started_at, params FROM rollcall_runs WHERE status = 'running'"):
        try:
            params = json.loads(params_text)
        except (TypeError, ValueError):
            continue
        if not isinstance(params, dict) or owner_alive(params.get("owner")) is not False:
            continue
        with db.transaction():
            rows = db.query("SELECT state, COUNT(*), MAX(started_at + duration_ms / 1000.0) FROM rollcall_results "
                            "WHERE run_id = ? GROUP BY state", (run_id,))
            counts = {state: int(n) for state, n, _end in rows}
            ends = [float(end) for _state, _n, end in rows if end is not None]
            summary = {"sites": params.get("sites"), "counts": counts, "seconds": None, "exit_code": 3,
                       "closed": "owner gone"}
            db.execute("UPDATE rollcall_runs SET finished_at = ?, status = 'interrupted', summary = ? "
                       "WHERE id = ? AND status = 'running'",
                       (max(ends, default=float(started_at)), json.dumps(summary), run_id))
        closed.append(int(run_id))
    return closed


class RunRecorder:
    """Opens a run, streams its results into ``rollcall_results``, then closes it.

    Opening a run first closes the runs whose owners died (``close_dead_runs``), and records
    this process as the new run's owner. ``on_written`` is called for each result once it is
    committed, so what a progress line or a dashboard shows is never lost by a SIGKILL.
    """

    def __init__(self, db: Database, params: dict[str, Any],
                 on_written: Callable[[CheckResult], None] | None = None) -> None:
        self.db = db
        self.counts: Counter[str] = Counter()
        self._buffer: list[tuple[Any, ...]] = []
        self._pending: list[CheckResult] = []
        self._on_written = on_written
        self._last_flush = time.monotonic()
        self.closed_runs = close_dead_runs(db)
        params = {**params, "owner": run_owner()}
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
        self._pending.append(result)
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
            written, self._pending = self._pending, []
            if self._on_written is not None:
                for result in written:
                    self._on_written(result)
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


@dataclass
class RunDiff:
    """What changed between two runs, and which sites an unfinished run never checked."""

    changes: list[dict[str, Any]]
    not_checked: dict[int, list[str]]  # run id -> sites of the other run it did not reach
    statuses: dict[int, str]


def compare_runs(db: Database, run_a: int, run_b: int) -> RunDiff:
    """Sites whose state differs between two runs.

    A site missing from a finished run shows as ABSENT (that run did not select it). A
    site missing from a run that did not finish (``interrupted``, or still ``running``)
    was not checked: it is no change, and is listed in ``not_checked`` instead.
    """
    statuses = {int(i): str(st) for i, st in db.query("SELECT id, status FROM rollcall_runs WHERE id IN (?, ?)",
                                                      (run_a, run_b))}
    a = {s: st for s, st in db.query("SELECT site_id, state FROM rollcall_results WHERE run_id = ?", (run_a,))}
    b = {s: st for s, st in db.query("SELECT site_id, state FROM rollcall_results WHERE run_id = ?", (run_b,))}
    changed = []
    not_checked: dict[int, list[str]] = {}
    for site_id in sorted(set(a) | set(b)):
        unfinished = [run for run, seen in ((run_a, a), (run_b, b))
                      if site_id not in seen and statuses.get(run) != "finished"]
        if unfinished:
            for run in unfinished:
                not_checked.setdefault(run, []).append(site_id)
            continue
        before, after = a.get(site_id, "ABSENT"), b.get(site_id, "ABSENT")
        if before != after:
            changed.append({"site_id": site_id, "before": before, "after": after})
    return RunDiff(changed, not_checked, statuses)


def diff_runs(db: Database, run_a: int, run_b: int) -> list[dict[str, Any]]:
    """The changes of ``compare_runs``: sites whose state differs between two runs."""
    return compare_runs(db, run_a, run_b).changes


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
