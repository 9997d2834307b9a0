"""Real network faults under the roll-call and the media tiers: the kernel delays and drops.

Each test makes two private network namespaces joined by a veth pair
(:class:`ccctl.sim.netns.Link`: 10.213.0.1 "near", 10.213.0.2 "far", nothing else in them)
and runs real processes at each end with ``ip netns exec``: a simulated site box
(``ccctl.sim.worker``, asyncssh) or ``ccctl serve`` near, ``ccctl rollcall run`` or a
simulated site's aiortc receiver far. Faults go on a veth end's egress: delay by ``tc
netem``, loss by a random ``cls_bpf`` classifier into a dropping class, a rate cap by ``tbf``
(see the module), so the roll-call's own code and the receiver's own RTCP see a real slow,
lossy or narrow link.

They need root (network namespaces, tc) and skip with the reason where they cannot run; the
delay test also needs a kernel with netem. CI runs them as root. Every wait is a bounded
poll of a state (a status file, the registry); nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ccctl.keys import ensure_client_key
from ccctl.media.tokens import generation, load_secret, site_token
from ccctl.registry import open_registry
from ccctl.registry.sites import complete, insert_sites, update_endpoints
from ccctl.sim import netns
from tests.conftest import Ccctl

ROOT = Path(__file__).resolve().parent.parent
SITE = "netem-01"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real link faults need root: network namespaces and tc "
                                                            "(CAP_NET_ADMIN); CI runs these tests as root")
T = TypeVar("T")


@pytest.fixture
def link() -> Iterator[netns.Link]:
    """A fresh pair of namespaces and their veth; deleted (with what runs inside) afterwards."""
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    with netns.Link() as made:
        yield made


def _env(home: Ccctl, **extra: str) -> dict[str, str]:
    return {**os.environ, "CCCTL_HOME": str(home.home), "CCCTL_DB": home.db_url, **extra}


def _add_site(ccctl: Ccctl, tier: str = "high") -> None:
    with open_registry(ccctl.db_url) as db:
        insert_sites(db, [complete({"id": SITE, "name": "Điểm cầu xã Vĩnh Trạch", "unit_code": "26740", "tier": tier})])


def _until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something (bounded); what the test waits for is named."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.2)  # another process writes the state polled here: nothing to wait on


def _worker(link: netns.Link, side: str, shard: Path, payload: dict[str, Any]) -> subprocess.Popen[bytes]:
    """A ``ccctl.sim.worker`` inside ``side``'s namespace, once it said ready (60 s at most)."""
    shard.mkdir(parents=True)
    plan = shard / "plan.json"
    plan.write_text(json.dumps(payload))
    plan.chmod(0o600)  # receivers' plans hold tokens
    read_fd, write_fd = os.pipe()
    log = open(shard / "worker.log", "wb")
    proc = subprocess.Popen([*link.exec(side), sys.executable, "-m", "ccctl.sim.worker", str(shard), str(write_fd)],
                            pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT)
    log.close()
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 60)
        said = os.read(read_fd, 4096).decode(errors="replace").strip() if ready else "no answer in 60 s"
    finally:
        os.close(read_fd)
    if said != "ready":
        _stop(proc)
        pytest.fail(f"worker in {side}: {said}; log: {(shard / 'worker.log').read_text()[-2000:]}")
    return proc


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 20 s: the processes this test started, by their pid."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(20)


# -- the roll-call --------------------------------------------------------------------------------


@pytest.fixture
def box(ccctl: Ccctl, link: netns.Link, tmp_path: Path) -> Iterator[Ccctl]:
    """A simulated site box (asyncssh, ``ccctl-diag``) on port 22 of the near end, registered."""
    _add_site(ccctl)
    config_key = ccctl.home / "keys" / "id_ed25519"
    public = ensure_client_key(config_key)
    worker = _worker(link, "near", tmp_path / "box", {"authorized_key": public, "user": "ccctl", "endpoints": [
        {"site_id": SITE, "host": link.near_addr, "port": 22, "fault": None}]})
    try:
        host_key = json.loads((tmp_path / "box" / "published.json").read_text())[SITE]
        with open_registry(ccctl.db_url) as db:
            update_endpoints(db, {SITE: {"host": link.near_addr, "ssh_port": 22, "ssh_user": "ccctl",
                                         "host_key": host_key, "key_path": str(config_key), "simulated": True}})
        yield ccctl
    finally:
        _stop(worker)


def _rollcall(link: netns.Link, ccctl: Ccctl, *args: str, **env: str) -> dict[str, Any]:
    """``ccctl rollcall run`` of the one site from the far end; its result row."""
    done = subprocess.run([*link.exec("far"), sys.executable, "-m", "ccctl", "rollcall", "run", "--site", SITE,
                           "--format", "json", "--retries", "0", *args], env=_env(ccctl, **env), cwd=ROOT,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode in (0, 1, 2), done.stderr  # Nagios codes; 3 or more: the run itself failed
    (row,) = json.loads(done.stdout)
    return dict(row)


def test_a_silent_link_times_out_and_a_clear_one_is_ok(box: Ccctl, link: netns.Link) -> None:
    clear = _rollcall(link, box, "--timeout", "5")
    assert (clear["state"], clear["reason"]) == ("OK", ""), clear  # the same box, the link untouched
    link.shape("near", loss_pct=100)  # nothing the box sends gets through (ARP still does: no "no route")
    silent = _rollcall(link, box, "--timeout", "2")
    assert (silent["state"], silent["reason"]) == ("TIMEOUT", "no TCP answer within 2 s"), silent
    assert link.drops("near") > 0  # the kernel dropped the box's answers
    link.shape("near")
    assert _rollcall(link, box, "--timeout", "5")["state"] == "OK"  # and the site is back once the link is


@pytest.fixture
def delays() -> None:
    """Skip (with the reason) where the kernel cannot delay packets; first, before any box starts."""
    reason = netns.why_unavailable(delay=True)
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("engine", ["libssh2", "asyncssh"])
def test_a_slow_link_is_degraded_by_the_configured_rtt(delays: None, box: Ccctl, link: netns.Link, engine: str) -> None:
    link.shape("near", delay_ms=150)  # every packet from the box waits 150 ms: RTT >= 150 ms
    # The box's own time (ssh_exec_ms, a few round trips here) is judged apart: not this test's subject.
    patient = {"CCCTL_ROLLCALL_EXEC_WARN_MS": "60000"}
    slow = _rollcall(link, box, "--timeout", "10", "--engine", engine, CCCTL_ROLLCALL_RTT_WARN_MS="100", **patient)
    assert slow["state"] == "DEGRADED", slow
    words = slow["reason"].split()  # "slow link: rtt 151 ms > 100 ms"
    assert words[:3] == ["slow", "link:", "rtt"] and words[4:] == ["ms", ">", "100", "ms"], slow
    assert int(words[3]) >= 150, slow  # the kernel's RTT of the SSH connection, delay included
    # The same link under the shipped threshold (300 ms) is fine: the config decides, not the delay alone.
    assert _rollcall(link, box, "--timeout", "10", "--engine", engine, **patient)["state"] == "OK"


# -- the media tiers ------------------------------------------------------------------------------


def _tier_moves(ccctl: Ccctl) -> list[dict[str, Any]]:
    with open_registry(ccctl.db_url) as db:
        rows = db.query("SELECT detail FROM broadcast_events WHERE site_id = ? AND kind = 'tier' ORDER BY id", (SITE,))
    return [json.loads(detail) for (detail,) in rows]


def _receiving(status: Path) -> dict[str, Any] | None:
    try:
        row = json.loads(status.read_text())["sites"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return None  # not written yet, or being replaced
    return dict(row) if row["receiving"] and row["packets_audio"] > 0 else None


@pytest.mark.parametrize("fault", [{"loss_pct": 25.0}, {"rate_kbit": 200.0}], ids=["loss-25pct", "rate-200kbit"])
def test_a_bad_link_moves_the_site_down_a_tier_and_a_clean_one_back(ccctl: Ccctl, link: netns.Link, tmp_path: Path,
                                                                    fault: dict[str, float]) -> None:
    """``ccctl serve`` bound to the near address (media then on the veth, not loopback) and a
    simulated site's aiortc receiver far: 25 % loss, or a 200 kbit/s cap (the low tier needs
    about 630), on what the server sends shows in the site's own receiver reports, and the
    server moves it from low to audio; once the link is clean again, good reports bring it
    back to low (its registry tier, the ceiling)."""
    _add_site(ccctl, tier="low")  # 360p: cheaper to encode than 720p on a shared machine
    # The governor's way back up, shortened from 15 good reports and 20 s at the lower tier.
    ccctl.home.mkdir(parents=True, exist_ok=True)
    (ccctl.home / "ccctl.toml").write_text("[adapt]\nup_after = 4\nhold_s = 3.0\n")
    listen = f"{link.near_addr}:8080"
    env = _env(ccctl, CCCTL_SERVE_LISTEN=listen)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([*link.exec("near"), sys.executable, "-m", "ccctl", "serve"], env=env, cwd=ROOT,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    receiver: subprocess.Popen[bytes] | None = None
    try:
        _until(lambda: "listening on" in log_path.read_text() or server.poll() is not None, 60, "server up")
        assert server.poll() is None, log_path.read_text()[-2000:]
        start = subprocess.run([*link.exec("far"), sys.executable, "-m", "ccctl", "broadcast", "start"], env=env,
                               cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert start.returncode == 0, start.stderr
        with open_registry(ccctl.db_url) as db:
            token = site_token(load_secret(ccctl.home), SITE, generation(db, SITE))
        receiver = _worker(link, "far", tmp_path / "site", {
            "server": f"http://{listen}", "sample": 1, "media_timeout": 30.0, "receivers": [
                {"site_id": SITE, "token": token, "tier": "low", "host": link.far_addr, "kinds": ["audio", "video"],
                 "fault": None}]})
        status = tmp_path / "site" / "status.json"
        first = _until(lambda: _receiving(status), 60, "the site receiving over the veth")
        assert first["packets_video"] > 0 and _tier_moves(ccctl) == []  # a clean link: it stays on low

        link.shape("near", **fault)
        down = _until(lambda: _tier_moves(ccctl), 60, f"a tier move under {fault}")[0]
        assert (down["from"], down["to"]) == ("low", "audio") and down["reason"].startswith("auto: loss "), down
        assert link.drops("near") > 0

        link.shape("near")
        # Back up only after 4 good reports and 3 s at the lower tier (the home's [adapt]).
        up = _until(lambda: _tier_moves(ccctl)[1:], 120, "the move back up on a clean link")[0]
        assert (up["from"], up["to"]) == ("audio", "low") and up["reason"].startswith("auto: loss "), up
    finally:
        if receiver is not None:
            _stop(receiver)
        _stop(server)
