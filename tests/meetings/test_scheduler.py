"""Pre-checks driven by an injected clock on a simulated fleet with faults, on SQLite and
PostgreSQL: checks run at their time, once, late when missed, and name whom to call."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from ccctl.meetings.plan import plan_meeting
from ccctl.meetings.readiness import not_ready, province_readiness, site_readiness
from ccctl.meetings.scheduler import tick
from ccctl.registry import meetings as store
from ccctl.registry import open_registry
from ccctl.registry.sites import SiteFilter
from tests.conftest import Ccctl
from tests.meetings.conftest import AUDIENCE, CONTACTS, START, TZ, at, fleet_options


def _plan(url: str, checks: str, now: float) -> int:
    with open_registry(url) as db:
        planned = plan_meeting(db, title="Giao ban trực tuyến", at=START, tz=TZ, flt=SiteFilter(ids=tuple(AUDIENCE)),
                               checks=checks, source="testsrc", record=False, now=now)
    assert planned.audience == len(AUDIENCE) and planned.dropped == []
    return planned.meeting_id


def _runs(url: str) -> int:
    with open_registry(url) as db:
        return int(db.query("SELECT COUNT(*) FROM rollcall_runs")[0][0])


def test_checks_run_at_their_time_once_and_late_when_missed(fleet: Ccctl) -> None:
    options = fleet_options(fleet)
    meeting = _plan(fleet.db_url, "-9m,-6m,-3m", at("2026-12-05 07:40"))
    with open_registry(fleet.db_url) as db:
        assert asyncio.run(tick(db, at("2026-12-05 07:50:59"), options)) == []  # nothing due yet
        [first] = asyncio.run(tick(db, at("2026-12-05 07:51:30"), options))
        assert first["action"] == "ran" and first["offset"] == "-9m" and first["note"] is None
        assert (first["ready"], first["degraded"], first["down"]) == (3, 1, 2)
        assert asyncio.run(tick(db, at("2026-12-05 07:52:00"), options)) == []  # idempotent
        # Cron was down from 07:52 to 07:59: the -6m check is superseded, the -3m one runs 2 min late.
        actions = asyncio.run(tick(db, at("2026-12-05 07:59:00"), options))
        assert [(a["offset"], a["action"]) for a in actions] == [("-6m", "skipped"), ("-3m", "ran late")]
        assert "superseded by the -3m check" in actions[0]["note"]
        assert actions[1]["note"] == "ran 120 s late (due at -3m)"
        rows = {c["offset_s"]: c for c in store.checks(db, meeting)}
        assert [rows[o]["status"] for o in (-540, -360, -180)] == ["done", "skipped", "done"]
        assert rows[-180]["late_s"] == 120 and rows[-540]["late_s"] is None
        assert rows[-180]["run_id"] == actions[1]["run_id"] != rows[-540]["run_id"]
        kinds = [e["kind"] for e in store.events(db, meeting)]
        assert kinds == ["planned", "check_done", "check_skipped", "check_late", "check_done"]
        done = [e for e in store.events(db, meeting) if e["kind"] == "check_done"][-1]["detail"]
        assert done["late_s"] == 120 and done["to_call_total"] == 3
        # The readiness report: the faulty sites, with their reason and whom to call.
        sites = site_readiness(db, meeting, rows[-180]["run_id"])
        calls = {r["site_id"]: r for r in not_ready(sites)}
        assert set(calls) == {"2021-31816", "2021-31822", "2021-31828"}
        assert calls["2021-31816"]["state"] == "AUTH_FAILED" and calls["2021-31822"]["state"] == "UNREACHABLE"
        assert (calls["2021-31828"]["readiness"], calls["2021-31828"]["reason"]) == ("degraded", "no camera")
        for site, row in calls.items():
            assert (row["contact_name"], row["contact_phone"]) == CONTACTS[site]
        [province] = province_readiness(sites)
        assert province["province_name"] == "Bạc Liêu" and (province["audience"], province["ready"],
                                                             province["down"]) == (6, 3, 2)
        # Once the meeting has started nothing more runs; a tick after it changes nothing.
        assert asyncio.run(tick(db, at("2026-12-05 08:05"), options)) == []


def test_two_ticks_at_once_run_one_check(fleet: Ccctl) -> None:
    options = fleet_options(fleet)
    meeting = _plan(fleet.db_url, "-15m", at("2026-12-05 07:00"))
    before = _runs(fleet.db_url)
    barrier = threading.Barrier(2, timeout=60)
    results: list[list[dict[str, Any]]] = []
    errors: list[BaseException] = []

    def one_tick() -> None:
        try:
            with open_registry(fleet.db_url) as db:  # one connection per tick, as two cron processes have
                barrier.wait()
                results.append(asyncio.run(tick(db, at("2026-12-05 07:45:10"), options)))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=one_tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 2
    ran = [a for r in results for a in r if a["action"] == "ran"]
    assert len(ran) == 1 and all(a["action"] in ("ran", "taken") for r in results for a in r)
    assert _runs(fleet.db_url) == before + 1
    with open_registry(fleet.db_url) as db:
        [check] = store.checks(db, meeting)
        assert check["status"] == "done" and check["run_id"] == ran[0]["run_id"]


def test_a_tick_while_another_runs_the_check_leaves_it(fleet: Ccctl) -> None:
    """The second tick starts while the first holds the check (seen as ``running`` in the
    registry): it must not run it again."""
    options = fleet_options(fleet)
    meeting = _plan(fleet.db_url, "-15m", at("2026-12-05 07:00"))
    done = threading.Event()
    first: list[list[dict[str, Any]]] = []

    def first_tick() -> None:
        with open_registry(fleet.db_url) as db:
            first.append(asyncio.run(tick(db, at("2026-12-05 07:45:10"), options)))
        done.set()

    thread = threading.Thread(target=first_tick)
    thread.start()
    with open_registry(fleet.db_url) as db:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a bounded poll on the registry: the claim is one UPDATE away
            status = store.checks(db, meeting)[0]["status"]
            if status != "due" or done.is_set():
                break
        assert status in ("running", "done")
        second = asyncio.run(tick(db, at("2026-12-05 07:45:20"), options))
    thread.join(timeout=120)
    assert second == [] and len(first) == 1 and first[0][0]["action"] == "ran"
    with open_registry(fleet.db_url) as db:
        assert store.checks(db, meeting)[0]["status"] == "done"
