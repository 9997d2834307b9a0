"""The libssh2 probe engine against a real OpenSSH sshd and against our asyncssh fleet.

Site boxes run OpenSSH, so its refusals and host-key offer are what the classification
must get right; the simulated fleet must keep working with whichever engine the roll-call
uses. The sshd tests need root and /usr/sbin/sshd and skip with ``sshd_available``'s reason
elsewhere; the whole module skips when ssh2-python is missing.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio

from ccctl.keys import ensure_client_key
from ccctl.models import CheckState, Endpoint
from ccctl.rollcall import fastssh
from ccctl.rollcall.fastssh import available, fast_ssh_probe, fast_tcp_ssh_probe
from ccctl.rollcall.probes import EXEC_FACT, ProbeOutcome
from ccctl.rollcall.runner import run_rollcall
from ccctl.sim.endpoint import SimEndpointSpec, loopback_address
from ccctl.sim.faults import Fault
from ccctl.sim.fleet import Fleet
from ccctl.sim.sshd import SshdServer, sshd_available

from .conftest import BoxFactory

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(available() is not None, reason=available() or ""),
]

NO_SSHD = sshd_available()
needs_sshd = pytest.mark.skipif(NO_SSHD is not None, reason=NO_SSHD or "")
SITE = "2021-26740"
FLEET_BASE = 210_000  # loopback addresses apart from tests/sim's fleet and any demo fleet



def _stranger_host_key() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class Sshd:
    """The running sshd, the endpoint that reaches it and a key it does not know."""

    server: SshdServer
    endpoint: Endpoint
    stranger_key: str


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One real sshd for the module, answering ``ccctl-diag`` as site ``2021-26740``."""
    if NO_SSHD is not None:
        pytest.skip(NO_SSHD)
    base = tmp_path_factory.mktemp("fastssh-sshd")
    key_path = str(base / "client_key")
    public = ensure_client_key(base / "client_key")
    stranger = str(base / "stranger_key")
    ensure_client_key(base / "stranger_key")
    with SshdServer(base / "state", [public], site_id=SITE) as server:
        endpoint = Endpoint(server.host, server.port, server.user, server.host_key, key_path)
        yield Sshd(server, endpoint, stranger)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener lets connections in (kernel backlog) but never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield int(listener.getsockname()[1])


@needs_sshd
async def test_ok_with_facts_and_timings(sshd: Sshd) -> None:
    before = len(sshd.server.sessions())
    outcome = await fast_ssh_probe(sshd.endpoint, 5.0)
    assert outcome.state is CheckState.OK, outcome.reason
    assert outcome.facts["site_id"] == SITE
    assert outcome.facts["camera"] is True and outcome.facts["agent_version"] == "1.4.2"
    assert outcome.rtt_ms is not None and outcome.rtt_ms > 0
    assert outcome.facts[EXEC_FACT] == round(outcome.rtt_ms, 3)
    assert outcome.net_rtt_ms is not None and outcome.net_rtt_ms > 0
    assert len(sshd.server.sessions()) == before + 1


@needs_sshd
async def test_client_key_argument_is_used_without_key_path(sshd: Sshd) -> None:
    endpoint = replace(sshd.endpoint, key_path=None)
    outcome = await fast_ssh_probe(endpoint, 5.0, sshd.endpoint.key_path)
    assert outcome.state is CheckState.OK, outcome.reason


@needs_sshd
async def test_unauthorized_key_is_auth_failed(sshd: Sshd) -> None:
    outcome = await fast_ssh_probe(replace(sshd.endpoint, key_path=sshd.stranger_key), 5.0)
    assert outcome.state is CheckState.AUTH_FAILED, outcome.reason
    assert "login refused" in outcome.reason and not outcome.facts


@needs_sshd
async def test_wrong_host_key_is_mismatch_and_nothing_runs(sshd: Sshd) -> None:
    before = len(sshd.server.sessions())
    outcome = await fast_ssh_probe(replace(sshd.endpoint, host_key=_stranger_host_key()), 5.0)
    assert outcome.state is CheckState.HOSTKEY_MISMATCH, outcome.reason
    assert "host key mismatch" in outcome.reason
    assert len(sshd.server.sessions()) == before


@needs_sshd
async def test_expected_key_of_a_type_the_box_lacks_is_mismatch(sshd: Sshd) -> None:
    ecdsa = asyncssh.generate_private_key("ecdsa-sha2-nistp256").export_public_key().decode().strip()
    outcome = await fast_ssh_probe(replace(sshd.endpoint, host_key=ecdsa), 5.0)
    assert outcome.state is CheckState.HOSTKEY_MISMATCH, outcome.reason
    assert "offers no ecdsa-sha2-nistp256" in outcome.reason


@needs_sshd
async def test_verification_off_accepts_any_key(sshd: Sshd) -> None:
    endpoint = replace(sshd.endpoint, host_key=_stranger_host_key(), verify_host_key=False)
    outcome = await fast_ssh_probe(endpoint, 5.0)
    assert outcome.state is CheckState.OK, outcome.reason


@needs_sshd
async def test_known_hosts_file(sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = sshd.server
    good = tmp_path / "known_hosts"
    good.write_text(f"[{server.host}]:{server.port} {server.host_key}\n")
    ok = await fast_ssh_probe(replace(sshd.endpoint, host_key=f"known_hosts:{good}"), 5.0)
    assert ok.state is CheckState.OK, ok.reason
    other = tmp_path / "other_known_hosts"
    other.write_text(f"[{server.host}]:{server.port} {_stranger_host_key()}\n")
    bad = await fast_ssh_probe(replace(sshd.endpoint, host_key=f"known_hosts:{other}"), 5.0)
    assert bad.state is CheckState.HOSTKEY_MISMATCH, bad.reason
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts to fall back on
    unknown = await fast_ssh_probe(replace(sshd.endpoint, host_key=None), 5.0)
    assert unknown.state is CheckState.HOSTKEY_MISMATCH
    assert "none recorded" in unknown.reason


@needs_sshd
async def test_local_mistakes_are_errors(sshd: Sshd, tmp_path: Path) -> None:
    missing = await fast_ssh_probe(replace(sshd.endpoint, key_path=str(tmp_path / "nope")), 5.0)
    assert missing.state is CheckState.ERROR
    assert "cannot read client key" in missing.reason
    garbage = await fast_ssh_probe(replace(sshd.endpoint, host_key="ssh-ed25519 not-base64!"), 5.0)
    assert garbage.state is CheckState.ERROR
    assert "bad expected host key" in garbage.reason


@needs_sshd
async def test_exit_status_stderr_and_bad_output(sshd: Sshd) -> None:
    failed = await fast_ssh_probe(sshd.endpoint, 5.0, command="echo oops >&2; exit 3")
    assert failed.state is CheckState.ERROR
    assert failed.reason == "echo oops >&2; exit 3 exited 3: oops"
    assert failed.rtt_ms is not None
    garbage = await fast_ssh_probe(sshd.endpoint, 5.0, command="echo not json")
    assert garbage.state is CheckState.ERROR and "not JSON" in garbage.reason


@needs_sshd
async def test_large_output_beside_chatty_stderr(sshd: Sshd) -> None:
    """More than a channel window of stderr and 300 kB of stdout: nothing may stall."""
    command = (
        "yes err | head -c 3000000 >&2; head -c 300000 /dev/zero | tr '\\0' x; echo; "
        "echo '{\"site_id\": \"big\"}'"
    )
    outcome = await fast_ssh_probe(sshd.endpoint, 10.0, command=command)
    assert outcome.state is CheckState.OK, outcome.reason
    assert outcome.facts["site_id"] == "big"


async def test_closed_port_is_unreachable(closed_port: int) -> None:
    outcome = await fast_ssh_probe(Endpoint("127.0.0.1", closed_port, host_key=_stranger_host_key()), 5.0)
    assert outcome.state is CheckState.UNREACHABLE
    assert outcome.reason == "connection refused"


async def test_silent_listener_times_out(silent_port: int) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    outcome = await fast_ssh_probe(Endpoint("127.0.0.1", silent_port, host_key=_stranger_host_key()), 0.3)
    assert outcome.state is CheckState.TIMEOUT
    assert outcome.reason == "no SSH answer within 0.3 s"
    assert loop.time() - t0 < 3.0


async def test_cancelled_probe_releases_its_socket(silent_port: int) -> None:
    endpoint = Endpoint("127.0.0.1", silent_port, host_key=_stranger_host_key())
    before = _open_fds()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(fast_ssh_probe(endpoint, 30.0), 0.2)
    assert _open_fds() == before


@needs_sshd
async def test_no_fd_leak_over_200_probes(sshd: Sshd, closed_port: int, silent_port: int) -> None:
    """200 probes, 25 at a time, over every exit path; the process ends with the fds it had."""
    endpoints = {
        CheckState.OK: sshd.endpoint,
        CheckState.AUTH_FAILED: replace(sshd.endpoint, key_path=sshd.stranger_key),
        CheckState.HOSTKEY_MISMATCH: replace(sshd.endpoint, host_key=_stranger_host_key()),
        CheckState.UNREACHABLE: replace(sshd.endpoint, port=closed_port),
        CheckState.TIMEOUT: replace(sshd.endpoint, host="127.0.0.1", port=silent_port),
    }
    plan = [CheckState.TIMEOUT] * 5 + [CheckState.AUTH_FAILED, CheckState.HOSTKEY_MISMATCH,
                                      CheckState.UNREACHABLE] * 15 + [CheckState.OK] * 150
    assert len(plan) == 200
    work = iter(plan)
    seen: list[tuple[CheckState, CheckState, str]] = []

    async def worker() -> None:
        for expected in work:
            timeout = 0.3 if expected is CheckState.TIMEOUT else 10.0
            outcome = await fast_ssh_probe(endpoints[expected], timeout)
            seen.append((expected, outcome.state, outcome.reason))

    before = _open_fds()
    await asyncio.gather(*(worker() for _ in range(25)))
    assert _open_fds() == before
    assert [s for s in seen if s[0] is not s[1]] == []
    assert len(seen) == 200


@needs_sshd
async def test_fused_tcp_and_ssh_stages(sshd: Sshd, closed_port: int) -> None:
    outcome, stage = await fast_tcp_ssh_probe(sshd.endpoint, 5.0)
    assert (outcome.state, stage) == (CheckState.OK, "ssh"), outcome.reason
    assert outcome.facts["site_id"] == SITE and outcome.facts["tcp_rtt_ms"] > 0
    refused, stage = await fast_tcp_ssh_probe(replace(sshd.endpoint, port=closed_port), 5.0)
    assert (refused.state, stage, refused.reason) == (CheckState.UNREACHABLE, "tcp", "connection refused")
    denied, stage = await fast_tcp_ssh_probe(replace(sshd.endpoint, key_path=sshd.stranger_key), 5.0)
    assert (denied.state, stage) == (CheckState.AUTH_FAILED, "ssh")
    assert "tcp_rtt_ms" in denied.facts


async def test_fused_silent_listener_is_an_ssh_timeout(silent_port: int) -> None:
    outcome, stage = await fast_tcp_ssh_probe(Endpoint("127.0.0.1", silent_port, host_key=_stranger_host_key()), 0.3)
    assert (outcome.state, stage) == (CheckState.TIMEOUT, "ssh")
    assert outcome.reason == "no SSH answer within 0.3 s"


# --- the reactor: one epoll set and one deadline heap per loop ----------------------------


async def test_deadlines_fire_in_order_and_never_early(silent_port: int) -> None:
    """Three waits in one reactor; the shortest, started last, still fires first, none early."""
    loop = asyncio.get_running_loop()
    endpoint = Endpoint("127.0.0.1", silent_port, host_key=_stranger_host_key())
    finished: list[tuple[float, float]] = []  # (timeout, elapsed), in the order they ended

    async def probe(timeout: float) -> ProbeOutcome:
        t0 = loop.time()
        outcome = await fast_ssh_probe(endpoint, timeout)
        finished.append((timeout, loop.time() - t0))
        return outcome

    outcomes = await asyncio.gather(probe(2.0), probe(1.1), probe(0.2))
    assert [o.reason for o in outcomes] == [f"no SSH answer within {t:g} s" for t in (2.0, 1.1, 0.2)]
    assert [t for t, _ in finished] == [0.2, 1.1, 2.0]
    # Never early; the upper bound is loose (a loaded machine delays the loop), the order above
    # is what shows the heap serves the earliest deadline first.
    assert all(t <= elapsed < t + 3.0 for t, elapsed in finished), finished


async def test_a_moved_deadline_replaces_the_old_one() -> None:
    """The fused check gives the login a fresh deadline once connected; the connect's is void."""
    loop = asyncio.get_running_loop()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        conn = fastssh._Connection(loop, socket.AF_INET)

        def steps() -> Generator[int, None, None]:
            yield from fastssh._connect_steps(conn.sock, listener.getsockname())
            yield fastssh._IN  # until the peer's first byte
            conn.sock.recv(1)
            conn.set_deadline(loop.time() + 1.5)
            yield fastssh._IN  # nothing more comes

        t0 = loop.time()
        run = conn.run(steps(), t0 + 0.6)
        peer, _ = await loop.sock_accept(listener)
        try:
            peer.send(b"x")
            with pytest.raises(TimeoutError):
                await run
            assert loop.time() - t0 >= 1.5
        finally:
            peer.close()
            conn.close()


async def test_finished_logins_leave_a_waiting_one_alone(make_box: BoxFactory, silent_port: int) -> None:
    """Deadlines of logins that already ended come due while another waits: it keeps its own."""
    box = await make_box()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    mute = asyncio.create_task(fast_ssh_probe(Endpoint("127.0.0.1", silent_port, host_key=_stranger_host_key()), 4.0))
    for _ in range(3):  # each login's 2 s deadline comes due while the mute one waits (loose for a loaded machine)
        ok = await fast_ssh_probe(box.endpoint(), 2.0, box.client_key_path)
        assert ok.state is CheckState.OK, ok.reason
    outcome = await mute
    assert (outcome.state, outcome.reason) == (CheckState.TIMEOUT, "no SSH answer within 4 s")
    assert loop.time() - t0 >= 4.0


async def test_reactor_exists_only_while_a_login_waits(silent_port: int) -> None:
    loop = asyncio.get_running_loop()
    before = _open_fds()
    task = asyncio.create_task(fast_ssh_probe(Endpoint("127.0.0.1", silent_port, host_key=_stranger_host_key()), 30.0))
    for _ in range(1000):  # bounded: the probe registers within a few loop iterations
        if fastssh._reactors.get(loop) is not None:
            break
        await asyncio.sleep(0)
    assert fastssh._reactors.get(loop) is not None
    assert _open_fds() == before + 2  # the login's socket and the reactor's epoll set
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fastssh._reactors.get(loop) is None
    assert _open_fds() == before


async def test_rollcall_fused_check_bounds_each_stage(silent_port: int) -> None:
    """Without an asyncio scope per site, the libssh2 tcp+ssh check still ends at its stage
    deadline; a site timeout shorter than the stages is still the one that ends it."""
    endpoint = Endpoint("127.0.0.1", silent_port, host_key=_stranger_host_key())
    [own] = await run_rollcall([("mute", endpoint)], engine="libssh2", timeout=0.3)
    assert (own.state, own.stage, own.reason) == (CheckState.TIMEOUT, "ssh", "no SSH answer within 0.3 s")
    assert own.facts["tcp_rtt_ms"] >= 0
    [site] = await run_rollcall([("mute", endpoint)], engine="libssh2", timeout=5.0, site_timeout=0.3)
    assert (site.state, site.reason) == (CheckState.TIMEOUT, "site check exceeded 0.3 s")


# --- the asyncssh simulator fleet -------------------------------------------------------

FLEET_SITES: dict[str, Fault | None] = {
    "ok-1": None,
    "hostkey-1": Fault("hostkey"),
    "authfail-1": Fault("authfail"),
    "down-1": Fault("down"),
    "blackhole-1": Fault("blackhole"),
}


@dataclass
class SimFleet:
    """A running simulated fleet and the login key it accepts."""

    fleet: Fleet
    key_path: str

    def endpoint(self, site_id: str) -> Endpoint:
        host, port = self.fleet.address(site_id)
        return Endpoint(host, port, "ccctl", self.fleet.published_host_key(site_id), self.key_path)


@pytest_asyncio.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimFleet]:
    """A small fleet on its own loopback addresses, closed after the test."""
    key_path = str(tmp_path / "client_key")
    public = ensure_client_key(tmp_path / "client_key")
    specs = [SimEndpointSpec(site, loopback_address(FLEET_BASE + i), 0, fault)
             for i, (site, fault) in enumerate(FLEET_SITES.items())]
    async with Fleet(specs, public, tmp_path / "fleet") as fleet:
        yield SimFleet(fleet, key_path)


async def test_fleet_ok_site_answers(sim: SimFleet) -> None:
    outcome = await fast_ssh_probe(sim.endpoint("ok-1"), 5.0)
    assert outcome.state is CheckState.OK, outcome.reason
    assert outcome.facts["site_id"] == "ok-1"
    assert outcome.facts[EXEC_FACT] > 0


async def test_fleet_faults_are_classified(sim: SimFleet) -> None:
    hostkey = await fast_ssh_probe(sim.endpoint("hostkey-1"), 5.0)
    assert hostkey.state is CheckState.HOSTKEY_MISMATCH, hostkey.reason
    authfail = await fast_ssh_probe(sim.endpoint("authfail-1"), 5.0)
    assert authfail.state is CheckState.AUTH_FAILED, authfail.reason
    down = await fast_ssh_probe(sim.endpoint("down-1"), 5.0)
    assert down.state is CheckState.UNREACHABLE, down.reason


async def test_fleet_fused_stages(sim: SimFleet) -> None:
    ok, stage = await fast_tcp_ssh_probe(sim.endpoint("ok-1"), 5.0)
    assert (ok.state, stage) == (CheckState.OK, "ssh"), ok.reason
    blackhole, stage = await fast_tcp_ssh_probe(sim.endpoint("blackhole-1"), 0.3)
    assert (blackhole.state, stage) == (CheckState.TIMEOUT, "tcp")
    assert blackhole.reason == "no TCP answer within 0.3 s"
    # The tcp stage's own bound, shorter than the login's.
    blackhole, stage = await fast_tcp_ssh_probe(sim.endpoint("blackhole-1"), 60.0, tcp_timeout=0.3)
    assert (blackhole.state, stage, blackhole.reason) == (CheckState.TIMEOUT, "tcp", "no TCP answer within 0.3 s")
