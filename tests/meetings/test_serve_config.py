"""``ccctl --config FILE serve --detach``: the file reaches everything the server runs, not
only the command that starts it: admission's budget (seen in ``broadcast status`` and
``/metrics`` of the running server) and the meeting scheduler's late grace (a check due 30 s
ago runs late under a 5 s grace; under the home's 90 s default it would not)."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

from ccctl.media.client import ControlClient
from ccctl.media.tokens import control_token, load_secret
from ccctl.meetings.times import local_text
from ccctl.registry import meetings as store
from ccctl.registry import open_registry
from tests.conftest import Ccctl

CONFIG = """\
[admission]
pps_budget = 75.0
[meetings]
late_grace_s = 5.0
"""


def test_a_config_file_reaches_admission_and_the_meeting_scheduler(served: Ccctl, tmp_path: Path) -> None:
    config = tmp_path / "elsewhere" / "ccctl-site.toml"  # not the home's file: only --config names it
    config.parent.mkdir()
    config.write_text(CONFIG)
    now = time.time()
    later = local_text((int(now) // 60 + 30) * 60, "Asia/Ho_Chi_Minh")
    assert later is not None
    checked = served.json("meeting", "plan", "--at", later[:16], "--title", "Kiểm tra", "--site", "bn-1",
                          "--checks", "-20m")["id"]
    starting = served.json("meeting", "plan", "--at", later[:16], "--title", "Giao ban", "--site", "bl-1",
                           "--checks", "-20m")["id"]
    with open_registry(served.db_url) as db:
        db.execute("UPDATE meeting_checks SET due_at = ? WHERE meeting_id = ?", (now - 30, checked))
        store.update_meeting(db, starting, {"starts_at": now - 60}, now)
    started = served("--config", str(config), "serve", "--detach")
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
        assert check["status"] == "done", check
        kinds = [e["kind"] for e in served.json("meeting", "events", str(checked))]
        assert "check_late" in kinds, kinds  # 30 s after its time, past the file's 5 s grace
        assert status == "live"
        listen = os.environ["CCCTL_SERVE_LISTEN"]  # the fixture's address
        data = ControlClient(served.home, listen).call("GET", "/api/broadcast")
        assert data["admission"]["capacity_pps"] == 75.0, data["admission"]
        scrape = urllib.request.Request(f"http://{listen}/metrics",
                                        headers={"Authorization": f"Bearer {control_token(load_secret(served.home))}"})
        metrics = urllib.request.urlopen(scrape, timeout=10).read().decode()
        assert any(line.startswith("ccctl_admission_capacity_pps{") and line.endswith(" 75")
                   for line in metrics.splitlines()), metrics
    finally:
        served("serve", "--stop")
