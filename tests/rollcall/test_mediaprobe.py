"""The media stage against real loopback peers: the simulator's agent, and a real sshd without one.

A small simulated fleet on its own 127.x addresses answers ``ccctl-media-probe`` with a real
aiortc peer; faults ``loss`` and ``bwcap`` must show as DEGRADED with the reason. The real
OpenSSH box has no media agent, so its shell answers 127 and the stage is an ERROR.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio

from ccctl.models import CheckState, Endpoint
from ccctl.rollcall.mediaprobe import MEDIA_COMMAND, PINGS, _answer, _ended, _NoProbe, media_probe
from ccctl.rollcall.pool import ConnectionPool
from ccctl.rollcall.runner import check_stages, run_rollcall
from ccctl.sim.endpoint import SimEndpointSpec, loopback_address
from ccctl.sim.faults import Fault
from ccctl.sim.fleet import Fleet
from ccctl.sim.mediaprobe import EchoShaper
from ccctl.sim.sshd import SshdServer, sshd_available

BASE = 240_000  # apart from tests/sim (200_000), test_fastssh (210_000) and any demo fleet
SITES: dict[str, Fault | None] = {
    "media-ok": None,
    "media-loss": Fault("loss", 30),
    "media-bwcap": Fault("bwcap", 100),
}
STAGES = ("tcp", "ssh", "media")


@pytest.fixture(scope="module")
def client_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest_asyncio.fixture
async def fleet(tmp_path: Path, client_key: asyncssh.SSHKey) -> AsyncIterator[Fleet]:
    specs = [SimEndpointSpec(site, loopback_address(BASE + i), 0, fault) for i, (site, fault) in enumerate(SITES.items())]
    public = client_key.export_public_key("openssh").decode().strip()
    async with Fleet(specs, public, tmp_path / "state") as running:
        yield running


def _endpoint(fleet: Fleet, site_id: str) -> Endpoint:
    host, port = fleet.address(site_id)
    return Endpoint(host, port, "ccctl", fleet.published_host_key(site_id), None)


@pytest.mark.asyncio
async def test_healthy_box_is_ok_with_media_facts(fleet: Fleet, client_key: asyncssh.SSHKey) -> None:
    [result] = await run_rollcall([("media-ok", _endpoint(fleet, "media-ok"))], stages=STAGES, timeout=5,
                                  client_key=client_key)
    assert (result.state, result.stage, result.reason) == (CheckState.OK, "media", "")
    facts = result.facts
    assert facts["media_loss_pct"] == 0.0
    assert 0 < facts["media_rtt_ms"] < 100
    assert facts["media_kbps"] > 1000  # loopback echoes megabits; the cap test shows the low end
    assert facts["camera"] is True and "ssh_exec_ms" in facts and "tcp_rtt_ms" in facts  # earlier stages kept
    assert fleet.stats().per_site["media-ok"]["commands"] == 2  # ccctl-diag + ccctl-media-probe


@pytest.mark.asyncio
async def test_lossy_box_is_degraded_with_loss(fleet: Fleet, client_key: asyncssh.SSHKey) -> None:
    [result] = await run_rollcall([("media-loss", _endpoint(fleet, "media-loss"))], stages=STAGES, timeout=5,
                                  client_key=client_key)
    assert result.state is CheckState.DEGRADED
    assert result.facts["media_loss_pct"] == pytest.approx(30, abs=100 / PINGS)
    assert "packet loss 30% > 2%" in result.reason


@pytest.mark.asyncio
async def test_capped_box_is_degraded_with_low_bandwidth_over_a_pool(fleet: Fleet,
                                                                     client_key: asyncssh.SSHKey) -> None:
    async with ConnectionPool() as pool:
        [result] = await run_rollcall([("media-bwcap", _endpoint(fleet, "media-bwcap"))], stages=STAGES,
                                      timeout=5, client_key=client_key, pool=pool)
        assert pool.opened == 1  # signalling rode the pooled connection of the ssh stage
    assert result.state is CheckState.DEGRADED
    assert result.facts["media_kbps"] == pytest.approx(100, rel=0.2)
    assert "bandwidth" in result.reason and "< 300 kbps" in result.reason


@pytest.mark.asyncio
async def test_timeout_bounds_the_probe(fleet: Fleet, client_key: asyncssh.SSHKey) -> None:
    started = time.perf_counter()
    outcome = await media_probe(_endpoint(fleet, "media-ok"), 0.3, client_key)
    elapsed = time.perf_counter() - started
    assert outcome.state is CheckState.TIMEOUT
    assert outcome.reason == "no media answer within 0.3 s"
    # A healthy box answers, so TIMEOUT alone shows the bound held; this upper limit only
    # catches a probe that overran it by far (loose: the machine may be loaded).
    assert elapsed < 5.0


@pytest.mark.asyncio
async def test_unreachable_box_is_classified_not_raised(client_key: asyncssh.SSHKey) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = await media_probe(Endpoint("127.0.0.1", port, "ccctl", None, None), 2, client_key)
    assert (outcome.state, outcome.reason) == (CheckState.UNREACHABLE, "connection refused")


@pytest.mark.skipif(sshd_available() is not None, reason=sshd_available() or "")
@pytest.mark.sshd
def test_box_without_media_agent_is_error(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp_path / "id_ed25519"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key("openssh"))
    public = key.export_public_key("openssh").decode().strip()
    with SshdServer(tmp_path / "state", [public], site_id="no-media") as server:
        endpoint = Endpoint(server.host, server.port, server.user, server.host_key, str(key_path))
        [result] = asyncio.run(run_rollcall([("no-media", endpoint)], stages=STAGES, timeout=5,
                                            client_key=str(key_path)))
    assert (result.state, result.stage, result.reason) == (CheckState.ERROR, "media", "box has no media probe")
    assert result.facts["camera"] is True  # the ssh stage's facts survive


@pytest.mark.skipif(sshd_available() is not None, reason=sshd_available() or "")
@pytest.mark.sshd
def test_box_that_ended_before_the_offer_is_judged_by_its_exit(tmp_path: Path) -> None:
    """The race of the test above, made certain: the box's shell has answered 127 and closed
    the channel before the offer is written. The refused write must not read as a network
    failure; the exit status and stderr decide, and a dead connection still reads as one."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key("openssh").decode().strip()

    async def run(server: SshdServer) -> tuple[str, str, str]:
        known = ([asyncssh.import_public_key(server.host_key)], [], [])
        async with asyncssh.connect(server.host, server.port, username=server.user, config=None,
                                    client_keys=[key], known_hosts=known) as conn:
            reasons = []
            for command in (MEDIA_COMMAND, "echo broken >&2; exit 3"):
                process = await conn.create_process(command, encoding="utf-8")
                await process.wait_closed()  # the box is done before we write
                with pytest.raises(BrokenPipeError):  # what the probe used to call UNREACHABLE
                    process.stdin.write("x")
                with pytest.raises(_NoProbe) as caught:
                    await _answer(conn, process, "v=0")
                reasons.append(str(caught.value))
            process = await conn.create_process("exec sleep 30", encoding="utf-8")
            conn.abort()
            await conn.wait_closed()
            lost = await _ended(conn, process)
            return reasons[0], reasons[1], type(lost).__name__

    with SshdServer(tmp_path / "state", [public], site_id="no-media") as server:
        no_probe, failed, lost = asyncio.run(run(server))
    assert no_probe == "box has no media probe"
    assert failed == f"{MEDIA_COMMAND} exited 3: broken"
    assert lost == "ConnectionLost"


def test_media_needs_ssh_before_it() -> None:
    check_stages(STAGES)
    for bad in (("tcp", "media"), ("media", "ssh")):
        with pytest.raises(ValueError, match="needs the ssh stage"):
            check_stages(bad)


def test_loss_is_the_exact_share_and_repeatable() -> None:
    def dropped(site: str) -> list[bool]:
        shaper = EchoShaper(site, Fault("loss", 30))
        return [shaper.drop() for _ in range(100)]

    assert sum(dropped("a")) == 30
    assert dropped("a") == dropped("a")
    assert not any(EchoShaper("a", None).drop() for _ in range(100))


def test_bandwidth_cap_paces_echoes() -> None:
    shaper = EchoShaper("a", Fault("bwcap", 8))  # 8 kbps: 1 KiB every 1.024 s
    assert [round(shaper.delay(0.0, 1024), 3) for _ in range(3)] == [1.024, 2.048, 3.072]
