"""Roll-call through the CLI against a real simulated fleet (worker processes, asyncssh
servers on 127.x addresses): classified states, Nagios codes, history, reports, exec."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccctl.registry import open_registry
from tests.conftest import Ccctl, free_port

FAULTS = ("2021-31816=authfail,2021-31819=hostkey,2021-31822=down,2021-31825=blackhole,"
          "2021-31828=nocam,2021-31831=diskfull,2021-31840=slow:1200,2021-31843=noagent")
SIX = ["2021-31813", "2021-31816", "2021-31819", "2021-31822", "2021-31825", "2021-31828"]



#: Stage timeout for checks that must pass: generous, as a loaded machine makes a loopback
#: login take seconds. Faults that must time out are far slower than any short timeout.
TIMEOUT = "10"


@pytest.fixture
def fleet(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ccctl]:
    """Bạc Liêu's 64 sites, simulated, six of them with a fault.

    ``exec_warn_ms`` is raised in the home's config so that a loaded machine's slow event
    loop never makes a healthy site DEGRADED "slow box"; the slow-box test sets it back.
    The tcp stage gets its own 3 s (``tcp_timeout_s``): a handshake with a box on loopback is
    the kernel's, however loaded, and the blackhole box then holds a run 3 s, not the 5-10 s
    the logins are given.
    """
    monkeypatch.setenv("CCCTL_SIM_PORT", str(free_port()))
    ccctl.home.mkdir(parents=True, exist_ok=True)
    (ccctl.home / "ccctl.toml").write_text("[rollcall]\nexec_warn_ms = 60000.0\ntcp_timeout_s = 3.0\n")
    assert ccctl("sites", "generate", "--province", "bac lieu").exit_code == 0
    result = ccctl("sim", "up", "--detach", "--faults", FAULTS, "--processes", "1")
    assert result.exit_code == 0, result.stderr
    yield ccctl
    ccctl("sim", "down")


def _sites(*ids: str) -> list[str]:
    return [arg for i in ids for arg in ("--site", i)]


@pytest.mark.parametrize("engine", ["libssh2", "asyncssh"])
def test_states_are_classified(fleet: Ccctl, engine: str) -> None:
    result = fleet("rollcall", "run", "--province", "bac lieu", "--timeout", TIMEOUT, "--retries", "0", "--json",
                   "--engine", engine)
    assert result.exit_code == 1, result.stderr  # 4/64 down = 6.3 % > warn 5 %
    rows = {r["site_id"]: r for r in json.loads(result.stdout)}
    states = {site_id: (r["state"], r["reason"]) for site_id, r in rows.items()}
    assert len(states) == 64
    # The blackhole is bounded by the tcp stage's own timeout, not the logins' 10 s.
    assert (states["2021-31825"], rows["2021-31825"]["stage"]) == (("TIMEOUT", "no TCP answer within 3 s"), "tcp")
    assert states["2021-31813"][0] == "OK"
    assert states["2021-31816"][0] == "AUTH_FAILED"
    assert states["2021-31819"][0] == "HOSTKEY_MISMATCH"
    assert states["2021-31822"][0] == "UNREACHABLE"
    assert states["2021-31825"][0] == "TIMEOUT"
    assert states["2021-31828"] == ("DEGRADED", "no camera")
    assert states["2021-31831"][0] == "DEGRADED" and "disk" in states["2021-31831"][1]
    assert states["2021-31840"][0] == "OK"  # 1.2 s answers within the stages (and no exec warning here)
    assert states["2021-31843"][0] == "OK"  # no agent: facts read by sh
    assert sum(1 for s, _ in states.values() if s == "OK") == 58
    assert "ROLLCALL WARNING - 58/64 ok, 2 degraded, 4 down" in result.stderr
    # The same slow box against stages shorter than its answers: a TIMEOUT, however loaded.
    slow = fleet("rollcall", "run", "--site", "2021-31840", "--timeout", "0.5", "--retries", "0", "--json",
                 "--engine", engine)
    assert slow.exit_code == 2, slow.stderr
    [row] = json.loads(slow.stdout)
    assert (row["state"], row["stage"]) == ("TIMEOUT", "ssh")


def test_box_without_agent_cold_and_warm(fleet: Ccctl) -> None:
    """A simulated box without ccctl-diag answers the sh fallback, cold and over a pool."""
    for engine in ("libssh2", "asyncssh"):  # one exec per site
        cold = fleet("rollcall", "run", *_sites("2021-31843", "2021-31813"), "--quiet", "--engine", engine)
        assert cold.exit_code == 0 and cold.stdout.startswith("ROLLCALL OK - 2/2 ok"), cold.stdout
    warm = fleet("rollcall", "run", *_sites("2021-31843", "2021-31813"), "--repeat", "2", "--quiet")  # pooled
    assert warm.exit_code == 0 and warm.stdout.count("ROLLCALL OK - 2/2 ok") == 2, warm.stdout
    for run in range(1, 5):
        facts = {r["site_id"]: r["facts"] for r in fleet.json("rollcall", "show", str(run))}
        assert facts["2021-31843"]["facts_via"] == "sh" and facts["2021-31813"]["facts_via"] == "agent"
        assert facts["2021-31843"]["camera"] is True and "agent_version" not in facts["2021-31843"]


def test_slow_box_is_degraded(fleet: Ccctl) -> None:
    (fleet.home / "ccctl.toml").write_text("[rollcall]\nexec_warn_ms = 1000.0\n")
    rows = fleet.json("rollcall", "run", "--site", "2021-31840", "--timeout", TIMEOUT)
    assert rows[0]["state"] == "DEGRADED" and rows[0]["reason"].startswith("slow box: diag took")


def test_nagios_codes_and_quiet_line(fleet: Ccctl, tmp_path: Path) -> None:
    ok = fleet("rollcall", "run", *_sites("2021-31813", "2021-31828"), "--quiet", "--timeout", TIMEOUT)
    assert ok.exit_code == 0 and ok.stdout.startswith("ROLLCALL OK - 1/2 ok, 1 degraded, 0 down")
    assert ok.stdout.count("\n") == 1 and ok.stderr == ""
    assert "| sites=2 ok=1 degraded=1 " in ok.stdout
    prom = tmp_path / "rollcall.prom"
    crit = fleet("rollcall", "run", *_sites(*SIX), "--quiet", "--timeout", "5", "--retries", "0",
                 "--warn", "10", "--crit", "50", "--prometheus", str(prom))
    assert crit.exit_code == 2 and crit.stdout.startswith("ROLLCALL CRITICAL - 1/6 ok")
    text = prom.read_text()
    assert 'ccctl_rollcall_sites{state="AUTH_FAILED"} 1' in text and "ccctl_rollcall_exit_code 2" in text
    warn = fleet("rollcall", "run", *_sites(*SIX), "--quiet", "--timeout", "5", "--retries", "0",
                 "--warn", "10", "--crit", "90")
    assert warn.exit_code == 1 and warn.stdout.startswith("ROLLCALL WARNING")
    nothing = fleet("rollcall", "run", "--site", "ghost", "--quiet")
    assert nothing.exit_code == 3 and nothing.stdout.startswith("ROLLCALL UNKNOWN - ")


def test_history_is_per_site(fleet: Ccctl) -> None:
    """Runs over other sites do not push a site's own results out of its history."""
    from ccctl.rollcall.history import recent_states

    fleet("rollcall", "run", "--site", "2021-31822", "--quiet", "--timeout", "5", "--retries", "0")
    for _ in range(11):
        fleet("rollcall", "run", "--site", "2021-31813", "--quiet", "--timeout", TIMEOUT)
    with open_registry(fleet.db_url) as db:
        history = recent_states(db, ["2021-31822", "2021-31813"])
    assert history["2021-31822"] == ["UNREACHABLE"] and len(history["2021-31813"]) == 10


def test_sim_up_keeps_real_endpoints(fleet: Ccctl) -> None:
    fleet("sim", "down")
    fleet("sites", "add", "real-1", "--name", "Thật", "--unit", "31813", "--host", "10.9.8.7")
    refused = fleet("sim", "up", "--detach", "--site", "real-1")
    assert refused.exit_code == 2 and "real endpoint" in refused.stderr
    assert fleet.json("sites", "show", "real-1")["host"] == "10.9.8.7"


def test_insecure_skips_host_key_check(fleet: Ccctl) -> None:
    rows = fleet.json("rollcall", "run", "--site", "2021-31819", "--insecure", "--timeout", TIMEOUT)
    assert rows[0]["state"] == "OK"


def test_history_show_diff_and_report(fleet: Ccctl, tmp_path: Path) -> None:
    fleet("rollcall", "run", *_sites(*SIX), "--quiet", "--timeout", "5", "--retries", "0")
    fleet("rollcall", "run", *_sites(*SIX), "--insecure", "--quiet", "--timeout", "5", "--retries", "0")
    runs = fleet.json("rollcall", "list")
    assert [r["run"] for r in runs] == [2, 1] and runs[1]["hostkey_mismatch"] == 1 and runs[0]["hostkey_mismatch"] == 0
    changed = fleet.json("rollcall", "diff", "1", "2")
    assert changed == [{"site_id": "2021-31819", "before": "HOSTKEY_MISMATCH", "after": "OK"}]
    assert fleet.json("rollcall", "diff") == changed
    shown = fleet.json("rollcall", "show", "1", "--state", "timeout")
    assert [r["site_id"] for r in shown] == ["2021-31825"]
    report = fleet.json("report", "rollcall", "1")
    assert report == [{"province_code": "95", "province_name": "Bạc Liêu", "sites": 6, "ok": 1, "degraded": 1,
                       "down": 4, "unreachable": 1, "timeout": 1, "auth_failed": 1, "hostkey_mismatch": 1,
                       "error": 0, "ready_pct": 33.3}]
    by_district = fleet.json("report", "rollcall", "--by", "district")
    assert sum(r["sites"] for r in by_district) == 6 and by_district[0]["district_name"]
    xlsx = tmp_path / "report.xlsx"
    assert fleet("report", "rollcall", "--format", "xlsx", "-o", str(xlsx)).exit_code == 0
    import pandas as pd

    assert pd.read_excel(xlsx)["sites"].sum() == 6
    assert fleet("report", "rollcall", "--format", "xlsx").exit_code == 2
    assert fleet("rollcall", "show", "99").exit_code == 4


def test_exec_on_many_sites(fleet: Ccctl) -> None:
    result = fleet("exec", *_sites("2021-31813", "2021-31834", "2021-31816"), "--json", "--", "echo", "xin chào")
    assert result.exit_code == 1  # one site refuses the login
    rows = {r["site_id"]: r for r in json.loads(result.stdout)}
    assert rows["2021-31813"]["stdout"] == "xin chào" and rows["2021-31813"]["exit_status"] == 0
    assert rows["2021-31816"]["state"] == "AUTH_FAILED" and rows["2021-31816"]["exit_status"] is None
    assert "exec: 2/3 sites exited 0" in result.stderr
    assert fleet("exec", "--", "true").exit_code == 2  # no filter: refused


def test_lock_stops_an_overlapping_run(fleet: Ccctl) -> None:
    from ccctl.rollcall.session import run_lock

    with run_lock(fleet.home):
        result = fleet("rollcall", "run", "--site", "2021-31813", "--quiet")
    assert result.exit_code == 3 and "another roll-call is running" in result.stdout


def _start_holding_run(fleet: Ccctl, sites: list[str]) -> subprocess.Popen[bytes]:
    """A roll-call in its own process that keeps the three quick sites' results and then waits
    on the blackhole site; returns once those three rows are in the registry (bounded poll)."""
    env = {**os.environ, "CCCTL_HOME": str(fleet.home), "CCCTL_DB": fleet.db_url}
    proc = subprocess.Popen([sys.executable, "-m", "ccctl", "rollcall", "run", *sites, "--timeout", "60",
                             "--retries", "0", "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    with open_registry(fleet.db_url) as db:
        while True:  # bounded wait for the condition, polled
            rows = db.query("SELECT COUNT(*) FROM rollcall_results r JOIN rollcall_runs u ON u.id = r.run_id "
                            "WHERE u.status = 'running'")
            if rows[0][0] == 3:
                return proc
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)  # another process writes the rows: nothing to wait on but the table


def _last_run(fleet: Ccctl) -> tuple[int, str, list[tuple[str, str]]]:
    with open_registry(fleet.db_url) as db:
        run = db.query_dicts("SELECT id, status FROM rollcall_runs ORDER BY id DESC LIMIT 1")[0]
        kept = db.query("SELECT site_id, state FROM rollcall_results WHERE run_id = ?", (run["id"],))
    return run["id"], run["status"], sorted(kept)


def test_killed_run_keeps_results_already_taken(fleet: Ccctl, tmp_path: Path) -> None:
    """SIGTERM and SIGKILL in the middle of a run: the results already taken stay; a SIGKILLed
    run is closed as interrupted by the next run to start, never while its process lives
    (a second console with its own home and lock runs meanwhile); and the site it never
    reached is no change in ``rollcall diff``."""
    quick = _sites("2021-31813", "2021-31834", "2021-31837")
    sites = [*quick, "--site", "2021-31825"]  # blackhole: holds the run for the whole timeout
    done = [("2021-31813", "OK"), ("2021-31834", "OK"), ("2021-31837", "OK")]
    first = fleet("rollcall", "run", *sites, "--timeout", "5", "--retries", "0", "--quiet")
    assert first.exit_code == 2 and first.stdout.startswith("ROLLCALL CRITICAL - 3/4 ok"), first.stdout  # run 1

    proc = _start_holding_run(fleet, sites)  # run 2
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert _last_run(fleet) == (2, "interrupted", done)

    proc = _start_holding_run(fleet, sites)  # run 3
    try:
        other = Ccctl(tmp_path / "other-console", fleet.db_url)  # another home: another lock
        assert other("rollcall", "run", "--site", "2021-31813", "--quiet").exit_code == 0  # run 4
        with open_registry(fleet.db_url) as db:
            assert db.query("SELECT status FROM rollcall_runs WHERE id = 3") == [("running",)]  # its owner lives
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    with open_registry(fleet.db_url) as db:
        assert db.query("SELECT status FROM rollcall_runs WHERE id = 3") == [("running",)]  # nobody started yet
    diff = fleet("rollcall", "diff", "1", "3", "--json")
    assert diff.exit_code == 0 and json.loads(diff.stdout) == [], diff.stdout  # not TIMEOUT -> ABSENT
    assert "run 3 is running: 1 site(s) not checked in it" in diff.stderr and "2021-31825" in diff.stderr

    assert fleet("rollcall", "run", "--site", "2021-31813", "--quiet").exit_code == 0  # run 5: the next start
    runs = {r["run"]: r for r in fleet.json("rollcall", "list")}
    assert [runs[n]["status"] for n in (1, 2, 3, 4, 5)] == ["finished", "interrupted", "interrupted", "finished",
                                                              "finished"]
    assert (runs[3]["ok"], runs[3]["timeout"], runs[3]["sites"], runs[3]["exit_code"]) == (3, 0, 4, 3)
    with open_registry(fleet.db_url) as db:
        kept = db.query("SELECT site_id, state FROM rollcall_results WHERE run_id = 3")
    assert sorted(kept) == done
    diff = fleet("rollcall", "diff", "3", "1", "--json")
    assert json.loads(diff.stdout) == [] and "run 3 is interrupted: 1 site(s) not checked" in diff.stderr
    finished = fleet.json("rollcall", "diff", "1", "5")  # both finished: a site one did not select is ABSENT
    assert {r["site_id"]: r["after"] for r in finished} == {"2021-31825": "ABSENT", "2021-31834": "ABSENT",
                                                            "2021-31837": "ABSENT"}


def test_ssh_opens_a_session_with_registry_keys(fleet: Ccctl) -> None:
    """`ccctl ssh` runs OpenSSH's client with the registry's host key and login key."""
    env = {**os.environ, "CCCTL_HOME": str(fleet.home), "CCCTL_DB": fleet.db_url}

    def ssh(site: str, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ccctl", "ssh", site, *command], env=env, text=True,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=60)

    ok = ssh("2021-31813", "hostname")
    assert ok.returncode == 0 and ok.stdout.strip() == "2021-31813", ok.stderr
    assert ssh("2021-31813", "false").returncode == 1
    mismatch = ssh("2021-31819", "hostname")  # the fleet serves another key than the registry's
    assert mismatch.returncode == 255 and "host key verification failed" in mismatch.stderr.lower()
    assert ssh("ghost").returncode == 4


def test_repeat_rounds_are_separate_runs(fleet: Ccctl) -> None:
    result = fleet("rollcall", "run", *_sites("2021-31813", "2021-31834"), "--repeat", "3", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("ROLLCALL OK - 2/2 ok") == 3
    assert [r["ok"] for r in fleet.json("rollcall", "list")] == [2, 2, 2]


def test_media_stage_through_the_cli(fleet: Ccctl) -> None:
    rows = fleet.json("rollcall", "run", "--site", "2021-31813", "--stages", "tcp,ssh,media", "--timeout", TIMEOUT)
    assert rows[0]["state"] == "OK" and rows[0]["stage"] == "media"
    shown = fleet.json("rollcall", "show", "latest")[0]["facts"]
    assert shown["media_loss_pct"] == 0 and shown["media_rtt_ms"] > 0 and shown["media_kbps"] > 0
    bad = fleet("rollcall", "run", "--site", "2021-31813", "--stages", "media,tcp")
    assert bad.exit_code == 3 and "Error: " in bad.stderr
