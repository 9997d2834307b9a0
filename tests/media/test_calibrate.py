"""``[admission] pps_budget = "auto"``: the send path measured at start (real forwarders, real
SRTP sessions, real loopback sockets), the budget made of it, and where it shows; a server
started with it (detached, through the CLI) says it on stderr, in /metrics and in
``broadcast status``. No timed assertion: the figures are checked against each other."""

from __future__ import annotations

import json
import os
import resource
import urllib.request
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ccctl.config import AdmissionConfig, load_config
from ccctl.errors import ConfigError
from ccctl.media import calibrate, native, tokens
from ccctl.media.admission import Admission
from ccctl.media.server import SERVER_KEY, create_app
from ccctl.media.tiers import DEFAULT_TIERS
from tests.conftest import Ccctl, free_port


def test_the_budget_setting_takes_auto_or_a_number(tmp_path: Path) -> None:
    env = {"CCCTL_HOME": str(tmp_path)}
    assert load_config(env=env).admission.pps_budget == "auto"  # the default (see the module doc of calibrate)
    assert load_config(env={**env, "CCCTL_ADMISSION_PPS_BUDGET": "12000"}).admission.pps_budget == 12000.0
    assert load_config(env={**env, "CCCTL_ADMISSION_PPS_BUDGET": " Auto "}).admission.pps_budget == "auto"
    (tmp_path / "f.toml").write_text("[admission]\npps_budget = 0\npps_headroom = 0.5\n")
    assert load_config(tmp_path / "f.toml", env=env).admission.pps_budget == 0.0
    for bad, said in (('"lots"', "expected \"auto\" or packets a second"), ("-5", "0 or more"),
                      ("true", "expected \"auto\""), ("nan", "0 or more")):
        (tmp_path / "f.toml").write_text(f"[admission]\npps_budget = {bad}\n")
        with pytest.raises(ConfigError, match="admission.pps_budget") as caught:
            load_config(tmp_path / "f.toml", env=env)
        assert said in str(caught.value) and "\n" not in str(caught.value)
    for bounds in ("pps_headroom = 0", "pps_headroom = 1.5", "pps_floor = 9000\npps_ceiling = 8000"):
        (tmp_path / "f.toml").write_text(f"[admission]\n{bounds}\n")
        with pytest.raises(ConfigError, match="admission.pps_"):
            load_config(tmp_path / "f.toml", env=env)


def test_the_measured_budget_is_the_send_paths_rate_times_the_headroom_clamped() -> None:
    done = calibrate.calibrate(0.15, 1.0, 1e9)
    assert done.error is None and done.path == ("native" if native.unavailable() is None else "python")
    assert done.measured_pps > 0 and 0 < done.cpu_share <= 1
    assert done.budget_pps == pytest.approx(done.measured_pps * 0.15)
    assert f"{done.budget_pps:,.0f} packets/s per fan-out process" in done.line()
    low = calibrate.calibrate(0.15, 1e9, 2e9)  # the floor wins over any measurement
    assert low.budget_pps == 1e9
    high = calibrate.calibrate(1.0, 1.0, 10.0)  # and the ceiling
    assert high.budget_pps == 10.0


def test_the_python_path_is_measured_when_the_native_one_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV, "0")
    done = calibrate.calibrate(0.15, 1.0, 1e9)
    assert (done.path, done.error) == ("python", None) and done.measured_pps > 0


def test_a_measurement_that_fails_gives_the_floor_and_says_why() -> None:
    # A real fault: no file descriptor left for the sinks' sockets (the soft limit lowered to
    # what is open now, for this block only).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use, hard))
    try:
        done = calibrate.calibrate(0.15, 4321.0, 1e9)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert done.budget_pps == 4321.0 and done.error is not None and "Too many open files" in done.error
    assert "could not be measured" in done.line() and "(pps_floor)" in done.line()


@pytest.mark.asyncio
async def test_an_auto_budget_is_measured_once_and_shown(units_db_url: str, tmp_path: Path) -> None:
    server_app = create_app(units_db_url, tmp_path, admission=AdmissionConfig())  # "auto"
    server = server_app[SERVER_KEY]
    done = calibrate.measured()
    assert done is not None and server.calibration is done  # measured once in this process, kept
    assert server.policy.pps_budget == done.budget_pps  # resolved to a number before any room splits it
    account = Admission(AdmissionConfig(), DEFAULT_TIERS, 25)  # an "auto" policy given directly: the same figure
    assert account.capacity == done.budget_pps and calibrate.calibration() is done
    client = TestClient(TestServer(server_app))
    await client.start_server()
    try:
        ctl = {"Authorization": f"Bearer {tokens.control_token(tokens.load_secret(tmp_path))}"}
        metrics = await (await client.get("/metrics", headers=ctl)).text()
    finally:
        await client.close()
    source = "floor" if done.error else "measured"
    assert f'ccctl_admission_budget_pps{{source="{source}"}} {done.budget_pps:g}' in metrics.splitlines()
    configured = create_app(units_db_url, tmp_path, admission=AdmissionConfig(pps_budget=777.0))[SERVER_KEY]
    assert configured.calibration is None and configured.policy.pps_budget == 777.0


def test_a_started_server_says_its_measured_budget(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch) -> None:
    listen = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", listen)
    added = ccctl("sites", "add", "bn-1", "--name", "Điểm cầu Bến Nghé", "--unit", "26740")
    assert added.exit_code == 0, added.stderr
    started = ccctl("serve", "--detach")
    assert started.exit_code == 0, started.stderr
    try:
        log = (ccctl.home / "serve.log").read_text()
        said = [line for line in log.splitlines() if line.startswith("admission: the ")]
        assert len(said) == 1 and "send path carried" in said[0], log  # once, on the server's stderr
        assert ccctl("broadcast", "start").exit_code == 0
        status = ccctl("broadcast", "status", "--format", "json")
        assert status.exit_code == 0, status.stderr
        broadcast = json.loads(status.stdout)["broadcast"]
        measured, admission = broadcast["calibration"], broadcast["admission"]
        assert measured["error"] is None and measured["path"] in said[0]
        assert admission["budget_pps"] == measured["budget_pps"] == admission["capacity_pps"]  # one process
        assert f"budget {measured['budget_pps']:,.0f} packets/s per fan-out process" in said[0]
        assert f"{measured['budget_pps']:,.0f} per fan-out process, measured at start" in status.stderr
        secret = tokens.load_secret(ccctl.home)
        scrape = urllib.request.Request(f"http://{listen}/metrics",
                                        headers={"Authorization": f"Bearer {tokens.control_token(secret)}"})
        lines = urllib.request.urlopen(scrape, timeout=10).read().decode().splitlines()
        assert f'ccctl_admission_budget_pps{{source="measured"}} {measured["budget_pps"]:g}' in lines
        assert f'ccctl_admission_send_path_pps{{path="{measured["path"]}"}} {measured["measured_pps"]:.0f}' in lines
    finally:
        ccctl("broadcast", "stop")
        ccctl("serve", "--stop")
