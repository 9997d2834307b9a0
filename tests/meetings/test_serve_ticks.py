"""``serve`` ticks the meetings itself: the scheduler's cleanup_ctx on an injected clock beside
a cron ``meeting tick`` process at the same time (each check runs once), and a detached server
running a due check and starting a meeting with no cron at all."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from aiohttp import web

from ccctl.meetings.service import meeting_scheduler
from ccctl.meetings.times import local_text
from ccctl.registry import meetings as store
from ccctl.registry import open_registry
from tests.conftest import Ccctl, free_port
from tests.meetings.conftest import at, fleet_options
from tests.meetings.test_scheduler import _plan, _runs


def test_serve_and_cron_tick_at_once_run_the_check_once(fleet: Ccctl) -> None:
    options = fleet_options(fleet)
    meeting = _plan(fleet.db_url, "-15m", at("2026-12-05 07:00"))
    before = _runs(fleet.db_url)
    clock = [at("2026-12-05 07:40")]
    # No server answers at this address: nothing here starts a meeting (the time never comes).
    ctx = meeting_scheduler(fleet.db_url, fleet.home, f"127.0.0.1:{free_port()}", options=options,
                            interval_s=3600, clock=lambda: clock[0])
    scheduler = ctx.scheduler
    env = {**os.environ, "CCCTL_HOME": str(fleet.home), "CCCTL_DB": fleet.db_url}

    async def scenario() -> tuple[list[dict[str, Any]], bytes]:
        app = web.Application()
        app.cleanup_ctx.append(ctx)
        runner = web.AppRunner(app)
        await runner.setup()  # the scheduler's first tick, at 07:40: nothing due
        try:
            await scheduler.wait_for(lambda ticks: len(ticks) >= 1, 60)
            assert (scheduler.ticks[0].actions, scheduler.ticks[0].error) == ([], None)
            clock[0] = at("2026-12-05 07:45:10")
            cron = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ccctl", "meeting", "tick", "--now", "2026-12-05 07:45:10", "--format", "json",
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            scheduler.wake()  # serve's tick and cron's, at once, on the same minute
            out, err = await asyncio.wait_for(cron.communicate(), 180)
            assert cron.returncode == 0, err.decode()
            await scheduler.wait_for(lambda ticks: len(ticks) >= 2, 180)
            return json.loads(out or b"[]"), err
        finally:
            await runner.cleanup()

    cron_actions, _ = asyncio.run(scenario())
    served = scheduler.ticks[1]
    assert served.error is None and served.now == at("2026-12-05 07:45:10")
    both = served.actions + cron_actions
    ran = [a for a in both if a["action"] == "ran"]
    # One of the two ran it; the other found it taken (running) or, if it came after, nothing due.
    assert len(ran) == 1 and all(a["action"] in ("ran", "taken") for a in both), both
    assert _runs(fleet.db_url) == before + 1
    with open_registry(fleet.db_url) as db:
        [check] = store.checks(db, meeting)
        assert check["status"] == "done" and check["run_id"] == ran[0]["run_id"]
        assert [e["kind"] for e in store.events(db, meeting)].count("check_done") == 1


def test_detached_server_runs_checks_and_starts_meetings_without_cron(served: Ccctl) -> None:
    now = time.time()
    later = local_text((int(now) // 60 + 30) * 60, "Asia/Ho_Chi_Minh")
    assert later is not None
    checked = served.json("meeting", "plan", "--at", later[:16], "--title", "Kiểm tra", "--site", "bn-1",
                          "--checks", "-20m")["id"]
    starting = served.json("meeting", "plan", "--at", later[:16], "--title", "Giao ban", "--site", "bl-1",
                           "--checks", "-20m")["id"]
    # While no server ran, the first meeting's check came due and the second meeting's time came.
    with open_registry(served.db_url) as db:
        db.execute("UPDATE meeting_checks SET due_at = ? WHERE meeting_id = ?", (now - 30, checked))
        store.update_meeting(db, starting, {"starts_at": now - 60}, now)
    started = served("serve", "--detach")
    assert started.exit_code == 0, started.stderr
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # a bounded poll: the server ticks at once when it starts
            with open_registry(served.db_url) as db:
                check = store.checks(db, checked)[0]
                status = store.get_meeting(db, starting)["status"]
            if check["status"] in ("done", "failed") and status not in ("planned", "starting"):
                break
            time.sleep(0.2)
        assert check["status"] == "done" and check["run_id"] is not None, check
        assert status == "live"
        shown = served.json("meeting", "show", str(starting))
        with open_registry(served.db_url) as db:
            assert db.query("SELECT id FROM broadcasts WHERE status = 'live'") == [(shown["broadcast_id"],)]
        kinds = [e["kind"] for e in served.json("meeting", "events", str(starting))]
        assert "started" in kinds
        assert [e["detail"] for e in served.json("meeting", "events", str(starting)) if e["kind"] == "started"][0][
            "by"] == "tick"
    finally:
        served("serve", "--stop")
