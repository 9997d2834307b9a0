"""Whether a roll-call run's owner still runs: the test the next run applies to ``running`` rows."""

from __future__ import annotations

import json
import subprocess
import sys

from ccctl.rollcall.history import owner_alive, run_owner


def test_this_process_is_alive_and_a_reused_pid_is_not() -> None:
    me = run_owner()
    assert owner_alive(me) is True
    assert owner_alive({**me, "pid_start": me["pid_start"] + 1}) is False  # same pid, another process
    assert owner_alive({**me, "boot_id": "another-boot"}) is False  # the machine rebooted since
    assert owner_alive({**me, "host": me["host"] + "-elsewhere"}) is None  # not ours to judge
    assert owner_alive(None) is None and owner_alive({"host": me["host"]}) is None


def test_an_exited_process_is_gone() -> None:
    child = subprocess.run([sys.executable, "-c", "import json, ccctl.rollcall.history as h; print(json.dumps(h.run_owner()))"],
                           capture_output=True, text=True, check=True, timeout=60)
    owner = json.loads(child.stdout)
    assert owner["pid"] != run_owner()["pid"] and owner_alive(owner) is False
