"""The README's main job, ``ccctl demo``, end to end in a process of its own (a few joiners)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port


def test_demo_runs_the_rollcall_and_a_broadcast_then_cleans_up(tmp_path: Path) -> None:
    env = {**os.environ, "CCCTL_HOME": str(tmp_path), "CCCTL_SERVE_LISTEN": f"127.0.0.1:{free_port()}"}
    env.pop("CCCTL_DB", None)
    done = subprocess.run([sys.executable, "-m", "ccctl", "demo", "--join", "4"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out, err = done.stdout, done.stderr
    assert "Hồ Chí Minh" in out and "ready_pct" in out  # the roll-call report, per province
    assert "4/4 connected" in err and "kbps_avg" in out
    assert "broadcast 1 stopped" in err and "stopped server" in err and "simulated fleet stopped" in err
    assert not (tmp_path / "serve.pid").exists()
