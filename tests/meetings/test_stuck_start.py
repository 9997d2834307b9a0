"""A meeting left ``starting`` by a tick that died: the next tick past the lease retries it
(against a server that is not there: the start fails and it stays planned), marks it failed
once its start window has passed, or adopts the broadcast the server did start.

The dead tick is real: a ``tick`` in a child process, SIGKILLed while its start holds (after
the claim, before the server's answer is recorded). Its start function holds on stdin, as
the place where the real one would call the server; in the last test it does call a real
detached server first.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ccctl.config import load_config
from ccctl.media.client import ControlClient
from ccctl.meetings.scheduler import START_LEASE_S, tick
from ccctl.meetings.starting import start_meeting
from ccctl.meetings.times import local_text
from ccctl.registry import meetings as store
from ccctl.registry import open_registry
from ccctl.rollcall.session import options_from_config
from tests.conftest import Ccctl, free_port

TZ = "Asia/Ho_Chi_Minh"
DYING_TICK = r'''
import asyncio, json, sys, time
from ccctl.config import load_config
from ccctl.media.client import ControlClient
from ccctl.meetings.scheduler import tick
from ccctl.registry import meetings as store
from ccctl.registry import open_registry
from ccctl.rollcall.session import options_from_config

db_url, now, window, call = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "call"
config = load_config()

def start(meeting_id):
    if call:  # the server is called and starts the broadcast; the tick dies before recording it
        m = store.get_meeting(db, meeting_id)
        body = {"source": m["source"], "title": m["title"],
                "sites": [r["site_id"] for r in store.audience(db, meeting_id)]}
        print(json.dumps(ControlClient(config.home, config.serve.listen).call("POST", "/api/broadcast", body)),
              flush=True)
    print("claimed", meeting_id, flush=True)
    sys.stdin.read()  # held here until killed
    raise SystemExit("not killed")

with open_registry(db_url) as db:
    asyncio.run(tick(db, time.time() if now == "real" else float(now), options_from_config(config), start=start,
                     start_window_s=window))
'''


def _dying_tick(cli: Ccctl, now: str, window: float = 600.0, call: bool = False) -> list[str]:
    """Run a tick in a child process, kill it (SIGKILL) once its start holds; its output lines."""
    env = {**os.environ, "CCCTL_HOME": str(cli.home), "CCCTL_DB": cli.db_url}
    proc = subprocess.Popen([sys.executable, "-c", DYING_TICK, cli.db_url, now, str(window), "call" if call else "-"],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    try:
        while not lines or not lines[-1].startswith("claimed"):
            line = proc.stdout.readline()  # EOF (the child failed) ends the loop below
            assert line, proc.stderr.read() if proc.stderr else "child ended"
            lines.append(line.strip())
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return lines


def _plan(cli: Ccctl, title: str, start: float) -> int:
    at = local_text(start, TZ)
    assert at is not None
    return int(cli.json("meeting", "plan", "--at", at[:16], "--title", title, "--site", "bn-1", "--site", "bl-1",
                        "--checks", "-20m")["id"])


def _kinds(db: Any, meeting: int) -> list[str]:
    return [e["kind"] for e in store.events(db, meeting)]


def test_stuck_start_is_retried_then_failed(units_db_url: str, tmp_path: Path) -> None:
    cli = Ccctl(tmp_path / "home", units_db_url)
    for site, unit in (("bn-1", "26740"), ("bl-1", "31813")):
        assert cli("sites", "add", site, "--name", f"Điểm cầu {site}", "--unit", unit).exit_code == 0
    starts = (time.time() // 60 + 30) * 60
    meeting = _plan(cli, "Giao ban", starts)
    config = load_config(env={"CCCTL_HOME": str(cli.home)})
    options = options_from_config(config)
    nowhere = ControlClient(cli.home, f"127.0.0.1:{free_port()}")  # no server there: a real refused connection

    def start(now: float) -> Any:
        def starter(meeting_id: int) -> dict[str, Any]:
            return start_meeting(db, meeting_id, nowhere, cli.home, now, claimed=True)
        return starter

    claimed_at = starts + 5
    assert _dying_tick(cli, str(claimed_at)) == [f"claimed {meeting}"]
    with open_registry(units_db_url) as db:
        assert store.get_meeting(db, meeting)["status"] == "starting"
        # Within the lease, the start may still be under way: left alone, not started twice.
        actions = asyncio.run(tick(db, claimed_at + START_LEASE_S - 1, options, start=start(claimed_at + 299)))
        assert [a for a in actions if a["meeting_id"] == meeting and "start" in a["action"]] == []
        assert store.get_meeting(db, meeting)["status"] == "starting"
        # Past the lease: retried at once, and the server is not there, so it stays planned.
        now = claimed_at + START_LEASE_S + 1
        actions = asyncio.run(tick(db, now, options, start=start(now)))
        mine = [(a["action"], a["note"]) for a in actions if a["meeting_id"] == meeting and "start" in a["action"]]
        assert [a for a, _ in mine] == ["start stuck", "start failed"], actions
        assert "retrying" in mine[0][1] and "no ccctl server" in mine[1][1]
        assert store.get_meeting(db, meeting)["status"] == "planned"
        # (its -20m check, found after the start time, is skipped as missed)
        assert _kinds(db, meeting)[-3:] == ["start_stuck", "start_failed", "check_skipped"]
    # It dies again, and this time its start window has passed when the next tick comes.
    second = starts + 400
    assert _dying_tick(cli, str(second)) == [f"claimed {meeting}"]
    with open_registry(units_db_url) as db:
        now = second + START_LEASE_S + 1
        [action] = asyncio.run(tick(db, now, options, start=start(now)))
        assert (action["meeting_id"], action["action"]) == (meeting, "start failed")
        assert f"ccctl meeting start {meeting}" in action["note"]
        m = store.get_meeting(db, meeting)
        assert m["status"] == "failed"
        assert store.events(db, meeting)[-1]["kind"] == "start_failed"
        assert {c["status"] for c in store.checks(db, meeting)} <= {"skipped", "cancelled"}
        assert asyncio.run(tick(db, now + 60, options, start=start(now + 60))) == []  # settled once
    # The room gives up on it: a failed meeting can be cancelled (or started by hand).
    cancelled = cli("meeting", "cancel", str(meeting), "--yes")
    assert cancelled.exit_code == 0, cancelled.stderr
    assert cli.json("meeting", "show", str(meeting))["status"] == "cancelled"


def test_stuck_start_adopts_the_broadcast_the_server_started(served: Ccctl) -> None:
    assert served("serve", "--detach").exit_code == 0
    try:
        meeting = _plan(served, "Họp khẩn", (time.time() // 60 + 30) * 60)
        with open_registry(served.db_url) as db:
            # Its time passed 700 s ago: outside the server's own start window (600 s), so only
            # the dying tick (given a wider window) claims it.
            store.update_meeting(db, meeting, {"starts_at": time.time() - 700}, time.time())
        lines = _dying_tick(served, "real", window=1000.0, call=True)
        answer = json.loads(lines[0])
        assert lines[1] == f"claimed {meeting}"
        options = options_from_config(load_config(env={"CCCTL_HOME": str(served.home)}))
        with open_registry(served.db_url) as db:
            assert store.get_meeting(db, meeting)["status"] == "starting"
            [action] = asyncio.run(tick(db, time.time() + START_LEASE_S + 1, options, start_window_s=1000.0))
            assert (action["meeting_id"], action["action"]) == (meeting, "start recovered")
            m = store.get_meeting(db, meeting)
            assert (m["status"], m["broadcast_id"]) == ("live", answer["id"])
            started = store.events(db, meeting)[-1]
            assert started["kind"] == "started" and started["detail"]["by"] == "tick (recovered)"
    finally:
        served("serve", "--stop")
