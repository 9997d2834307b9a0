"""`ccctl sim join/leave`: simulated sites join a real server's broadcast as aiortc receivers.

A detached `ccctl serve` on a free loopback port runs a testsrc broadcast; `sim join` starts
receiver worker processes that POST each site's WHEP offer with its token. The tests check
what the receivers count, what the server lists, a revoked site being refused, a crashed and
restarted server being rejoined, and leaving. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ccctl.sim.control import plan_receivers, receiver_processes
from ccctl.sim.receiver import LinkShaper, sampling_filter
from tests.conftest import Ccctl, free_port

TIMEOUT = 45.0
SITES = {"j-1": "low", "j-2": "audio", "j-3": "high"}


@pytest.fixture
def server(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ccctl]:
    """A detached server on a free loopback port and three sites to join."""
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", f"127.0.0.1:{free_port()}")
    for site_id, tier in SITES.items():
        assert ccctl("sites", "add", site_id, "--name", f"Điểm cầu {site_id}", "--unit", "26740",
                     "--tier", tier).exit_code == 0
    started = ccctl("serve", "--detach")
    assert started.exit_code == 0, started.stderr
    try:
        yield ccctl
    finally:
        ccctl("sim", "down")
        ccctl("serve", "--stop")


@pytest.fixture
def live(server: Ccctl) -> Ccctl:
    """The server with a live testsrc broadcast."""
    assert server("broadcast", "start").exit_code == 0
    return server


def wait_for(what: str, probe: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Poll ``probe`` (another process's state: no handle to wait on) until it returns a truthy
    value, or fail naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; last seen: {value!r}")
        time.sleep(0.2)


def sites(ccctl: Ccctl) -> dict[str, dict[str, Any]]:
    """`sim status --sites` by site id."""
    return {r["site_id"]: r for r in ccctl.json("sim", "status", "--sites")}


def sessions(ccctl: Ccctl) -> dict[str, dict[str, Any]]:
    """The server's connected sessions (`broadcast status`) by site id."""
    return {r["site_id"]: r for r in ccctl.json("broadcast", "status")["sessions"] if r["state"] == "connected"}


def test_sites_join_receive_are_listed_refused_rejoin_and_leave(live: Ccctl) -> None:
    joined = live("sim", "join", "--wait", str(TIMEOUT), "--media-timeout", "3", "--format", "json")
    assert joined.exit_code == 0, joined.stderr
    row = json.loads(joined.stdout)[0]
    assert (row["receivers"], row["joined"], row["refused"]) == (3, 3, 0)
    again = live("sim", "join")
    assert again.exit_code == 8 and "sim leave" in again.stderr

    # Video tiers get audio and video, the audio tier sound only; all of it counted.
    def receiving() -> dict[str, dict[str, Any]] | None:
        rows = sites(live)
        ok = all(r["receiving"] and r["packets_audio"] > 0 for r in rows.values()) and all(
            rows[s]["packets_video"] > 0 for s in ("j-1", "j-3"))
        return rows if ok else None

    rows = wait_for("every site to receive", receiving)
    assert rows["j-2"]["packets_video"] == 0 and rows["j-2"]["kinds"] == "audio"
    assert rows["j-1"]["kinds"] == "audio,video"
    listed = sessions(live)
    assert {s: r["tier"] for s, r in listed.items()} == SITES
    status = live.json("sim", "status")[0]
    assert status["joined"] == 3 and status["receiving"] == 3

    # A revoked site's session is cut; its receiver rejoins, is refused, and says so.
    assert live("broadcast", "revoke", "j-2").exit_code == 0
    refused = wait_for("j-2 to be refused", lambda: (r := sites(live)["j-2"])["state"] == "refused" and r)
    assert "401" in refused["last_error"]
    assert set(sessions(live)) == {"j-1", "j-3"}
    assert live.json("sim", "status")[0]["refused"] == 1

    # The server crashes and comes back: the others rejoin on their own (the live broadcast
    # is resumed from the registry); the refused one stays refused.
    pid = int((live.home / "serve.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for("the server to be gone", lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid))
    assert live("serve", "--detach").exit_code == 0
    wait_for("j-1 and j-3 to rejoin", lambda: set(sessions(live)) == {"j-1", "j-3"})
    after = wait_for("both rejoined and receiving", lambda: (
        (r := sites(live)) and all(r[s]["joins"] == 2 and r[s]["receiving"] for s in ("j-1", "j-3")) and r))
    assert after["j-2"]["state"] == "refused" and after["j-2"]["joins"] == 1

    plans = list((live.home / "sim" / "join").glob("shard-*/plan.json"))
    assert plans and all(p.stat().st_mode & 0o777 == 0o600 for p in plans)  # they hold the tokens
    left = live("sim", "leave")
    assert left.exit_code == 0 and "left" in left.stderr
    assert sessions(live) == {}  # each receiver DELETEd its session before its worker ended
    assert live.json("sim", "status")[0]["receivers"] == 0
    assert not list((live.home / "sim" / "join").glob("shard-*/plan.json"))
    assert live("sim", "leave").stderr.startswith("no simulated site had joined")


def test_sites_wait_for_a_broadcast_and_join_when_it_starts(server: Ccctl) -> None:
    joined = server("sim", "join", "--site", "j-1", "--site", "j-3", "--format", "json")
    assert joined.exit_code == 0 and "no broadcast is live" in joined.stderr
    assert wait_for("the sites to be told there is no broadcast", lambda: (
        (r := sites(server)) and all("no_broadcast" in (x["last_error"] or "") for x in r.values()) and r))
    assert server("broadcast", "start").exit_code == 0
    wait_for("both to join once it is live", lambda: set(sessions(server)) == {"j-1", "j-3"})
    wait_for("the receivers to say so", lambda: server.json("sim", "status")[0]["joined"] == 2)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[-1][:1] == "Z"
    except OSError:
        return True


def test_join_rejects_bad_options(ccctl: Ccctl) -> None:
    assert ccctl("sites", "add", "x-1", "--name", "X", "--unit", "26740").exit_code == 0
    bad = ccctl("sim", "join", "--faults", "down=10%")
    assert bad.exit_code == 2 and "loss and bwcap" in bad.stderr and bad.stderr.count("\n") == 1
    url = ccctl("sim", "join", "--server", "ftp://x")
    assert url.exit_code == 2 and "--server" in url.stderr


def test_plan_spreads_sites_and_keeps_their_addresses() -> None:
    from ccctl.models import Site
    from ccctl.sim.faults import parse_fault_spec

    fleet = [Site(f"s-{i:04d}", "n", "26740", host=f"127.1.0.{i + 1}", simulated=True, tier="audio") for i in range(3)]
    real = Site("r-1", "n", "26740", host="10.0.0.5", tier="low")
    plan = plan_receivers([real, *fleet], audio_only=True, faults=parse_fault_spec("r-1=loss:10"))
    assert [(p.site_id, p.host, p.kinds, p.fault) for p in plan] == [
        ("r-1", "127.0.0.1", ("audio",), "loss:10"), ("s-0000", "127.1.0.1", ("audio",), None),
        ("s-0001", "127.1.0.2", ("audio",), None), ("s-0002", "127.1.0.3", ("audio",), None)]
    assert [receiver_processes(n) for n in (1, 400, 401, 2594)] == [1, 1, 2, 7]
    assert receiver_processes(10, processes=20) == 10


def test_link_shaper_loss_and_cap() -> None:
    lossy = LinkShaper("site", parse("loss:25"))
    assert sum(lossy.drop(100) for _ in range(400)) == 100
    now = [0.0]
    capped = LinkShaper("site", parse("bwcap:80"), clock=lambda: now[0])  # 10,000 bytes/s
    passed = 0
    for _ in range(200):  # 200 packets of 500 bytes over 2 s: 100,000 bytes offered
        now[0] += 0.01
        passed += not capped.drop(500)
    assert 40 <= passed <= 50  # about 20,000 bytes got through, plus the bucket's half second


def parse(text: str) -> Any:
    from ccctl.sim.faults import parse_fault

    return parse_fault(text)


def test_sampling_filter_passes_control_and_samples_rtp() -> None:
    import socket

    from ccctl.sim.receiver import attach_filter

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        attach_filter(rx, sampling_filter(10))
        kinds = {"stun": b"\x00\x01", "dtls": b"\x16\xfe", "rtcp": b"\x80\xc8", "rtp": b"\x80\x6f", "rtp_marker": b"\x80\xef"}
        for head in kinds.values():
            for _ in range(300):
                tx.sendto(head + bytes(30), rx.getsockname())
        tx.sendto(b"\x00\x02end" + bytes(30), rx.getsockname())  # STUN-like: always passes, marks the end
        got: dict[bytes, int] = {}
        rx.settimeout(5)
        while True:
            data = rx.recv(100)
            if data.startswith(b"\x00\x02end"):
                break
            got[data[:2]] = got.get(data[:2], 0) + 1
    assert got[kinds["stun"]] == got[kinds["dtls"]] == got[kinds["rtcp"]] == 300
    sampled = got.get(kinds["rtp"], 0) + got.get(kinds["rtp_marker"], 0)
    assert 20 <= sampled <= 120  # one in ten of 600, at random
