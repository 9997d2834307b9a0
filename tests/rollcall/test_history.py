"""Run history on each backend (SQLite file; PostgreSQL when the test script starts one): runs
whose owner is gone are closed as interrupted by the next run, and diff skips what they missed."""

from __future__ import annotations

import json

from ccctl.models import CheckResult, CheckState
from ccctl.registry import open_registry
from ccctl.rollcall.history import RunRecorder, close_dead_runs, compare_runs, list_runs, run_owner


def _result(site: str, state: CheckState, at: float) -> CheckResult:
    return CheckResult(site_id=site, state=state, started_at=at, duration_ms=500.0)


def test_dead_runs_are_closed_and_diff_skips_what_they_missed(db_url: str) -> None:
    with open_registry(db_url) as db:
        first = RunRecorder(db, {"sites": 3})
        for site, state in (("a", CheckState.OK), ("b", CheckState.TIMEOUT), ("c", CheckState.OK)):
            first.add(_result(site, state, 1000.0))
        first.finish("finished", {"sites": 3})
        killed = RunRecorder(db, {"sites": 3})
        killed.add(_result("a", CheckState.OK, 2000.0))
        killed.add(_result("c", CheckState.UNREACHABLE, 2001.0))
        killed.flush()  # what a SIGKILL leaves: rows, and a run that says running
        found = compare_runs(db, first.run_id, killed.run_id)
        assert found.changes == [{"site_id": "c", "before": "OK", "after": "UNREACHABLE"}]
        assert found.not_checked == {killed.run_id: ["b"]}

        assert close_dead_runs(db) == []  # its owner (this process) lives
        gone = {**run_owner(), "pid_start": -1}  # the same pid, another process: the owner died
        db.execute("UPDATE rollcall_runs SET params = ? WHERE id = ?",
                   (json.dumps({"sites": 3, "owner": gone}), killed.run_id))
        nxt = RunRecorder(db, {"sites": 1})  # the next start closes it
        assert nxt.closed_runs == [killed.run_id]
        nxt.finish("finished", {"sites": 0})
        row = {r["run"]: r for r in list_runs(db)}[killed.run_id]
        assert (row["status"], row["ok"], row["unreachable"], row["sites"], row["exit_code"]) == (
            "interrupted", 1, 1, 3, 3)
        assert row["duration_s"] == round(2001.5 - db.query(
            "SELECT started_at FROM rollcall_runs WHERE id = ?", (killed.run_id,))[0][0], 2)
        assert close_dead_runs(db) == []  # once
        assert compare_runs(db, killed.run_id, first.run_id).not_checked == {killed.run_id: ["b"]}


def test_results_reach_the_caller_only_once_written(db_url: str) -> None:
    """What a progress line or the dashboard shows is in the registry: a SIGKILL cannot take it."""
    with open_registry(db_url) as db:
        seen: list[tuple[str, int]] = []

        def written(result: CheckResult) -> None:
            rows = db.query("SELECT COUNT(*) FROM rollcall_results WHERE run_id = ? AND site_id = ?",
                            (recorder.run_id, result.site_id))
            seen.append((result.site_id, int(rows[0][0])))

        recorder = RunRecorder(db, {"sites": 2}, on_written=written)
        recorder.add(_result("a", CheckState.OK, 1000.0))
        recorder.add(_result("b", CheckState.TIMEOUT, 1000.5))
        assert all(count == 1 for _site, count in seen)  # flushed by age or not yet shown
        recorder.finish("finished", {"sites": 2})
        assert seen == [("a", 1), ("b", 1)]
