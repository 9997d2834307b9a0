"""Roll-call against a real OpenSSH sshd on loopback, not only our asyncssh simulator.

Site boxes run OpenSSH; its refusals, host-key offer and exec handling are what the
classification must get right. Needs root and /usr/sbin/sshd (CI installs openssh-server);
elsewhere these tests skip with the reason ``sshd_available`` gives.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import asyncssh
import pytest
from click.testing import CliRunner

from ccctl.cli import AppContext, cli
from ccctl.keys import ensure_client_key
from ccctl.models import CheckResult, CheckState, Endpoint
from ccctl.rollcall.pool import ConnectionPool
from ccctl.rollcall.runner import run_command, run_rollcall
from ccctl.rollcall.shfacts import PROBE_COMMAND, SERVE_PROBE_COMMAND
from ccctl.sim.sshd import SshdError, SshdServer, sshd_available

F = TypeVar("F", bound=Callable[..., object])

UNAVAILABLE = sshd_available()
SITE = "2021-26740"


def needs_sshd(func: F) -> F:
    """Mark a test as running a real sshd; skip it, saying why, where sshd cannot run."""
    skip = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")
    return pytest.mark.sshd(skip(func))  # type: ignore[no-any-return]



def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie awaiting its reaper."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


class Box:
    """The running sshd and the key allowed to log in to it."""

    def __init__(self, server: SshdServer, key_path: Path) -> None:
        self.server = server
        self.key_path = key_path

    def endpoint(self, *, host_key: str | None = None, key_path: Path | None = None) -> Endpoint:
        """The site's endpoint, by default with the right host key and the authorized key."""
        return Endpoint(
            self.server.host,
            self.server.port,
            self.server.user,
            host_key=host_key or self.server.host_key,
            key_path=str(key_path or self.key_path),
        )


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """One real sshd for the module, answering ``ccctl-diag`` as site ``2021-26740``."""
    if UNAVAILABLE is not None:
        pytest.skip(UNAVAILABLE)
    base = tmp_path_factory.mktemp("sshd")
    key_path = base / "client_key"
    public = ensure_client_key(base / "client_key")
    with SshdServer(base / "state", [public], site_id=SITE) as server:
        yield Box(server, key_path)


def _rollcall(endpoint: Endpoint, key_path: Path, **kwargs: object) -> CheckResult:
    """One site's roll-call through the real runner, TCP then SSH."""
    results = asyncio.run(
        run_rollcall([(SITE, endpoint)], stages=("tcp", "ssh"), timeout=5, client_key=str(key_path), **kwargs)  # type: ignore[arg-type]
    )
    assert len(results) == 1
    return results[0]


@needs_sshd
def test_ok_with_facts_from_real_sshd(box: Box) -> None:
    result = _rollcall(box.endpoint(), box.key_path)
    assert result.state is CheckState.OK, result.reason
    assert result.stage == "ssh"
    assert result.facts["site_id"] == SITE
    assert result.facts["camera"] is True and result.facts["microphone"] is True
    assert result.facts["agent_version"] == "1.4.2"
    assert result.rtt_ms is not None


@needs_sshd
def test_unauthorized_key_is_auth_failed(box: Box, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    _public = ensure_client_key(tmp_path / "stranger")
    result = _rollcall(box.endpoint(key_path=stranger), stranger)
    assert result.state is CheckState.AUTH_FAILED, result.reason
    assert result.stage == "ssh" and not result.facts.get("site_id")


@needs_sshd
def test_wrong_host_key_is_hostkey_mismatch(box: Box) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    result = _rollcall(box.endpoint(host_key=impostor), box.key_path)
    assert result.state is CheckState.HOSTKEY_MISMATCH, result.reason
    assert "host key mismatch" in result.reason


@needs_sshd
def test_pool_reuses_one_tcp_connection_across_rounds(box: Box) -> None:
    """Seen from sshd's side: both rounds rode one TCP connection and one serve session.

    SSH stage only: the TCP stage opens a fresh probe connection every round by design.
    Without a pool the same check must see two exec sessions from two ports, so the
    assertion can fail.
    """
    targets = [(SITE, box.endpoint())]

    async def rounds(pool: ConnectionPool | None) -> list[CheckResult]:
        results = []
        for _ in range(2):
            results += await run_rollcall(targets, stages=("ssh",), timeout=5, pool=pool)
        return results

    async def pooled() -> tuple[list[CheckResult], int, int]:
        async with ConnectionPool() as pool:
            results = await rounds(pool)
            return results, pool.opened, pool.reused

    before = len(box.server.sessions())
    results, opened, reused = asyncio.run(pooled())
    assert [r.state for r in results] == [CheckState.OK, CheckState.OK]
    assert (opened, reused) == (1, 1)
    warm = box.server.session_log()[before:]
    assert [record.command for record in warm] == [SERVE_PROBE_COMMAND]
    assert [r.facts["site_id"] for r in results] == [SITE, SITE]

    before = len(box.server.sessions())
    assert [r.state for r in asyncio.run(rounds(None))] == [CheckState.OK, CheckState.OK]
    cold = box.server.session_log()[before:]
    assert [record.command for record in cold] == [PROBE_COMMAND, PROBE_COMMAND]
    assert cold[0].port != cold[1].port


def _pooled_rounds(endpoint: Endpoint, count: int, between: Callable[[], object] | None = None) -> list[CheckResult]:
    """``count`` TCP+SSH rounds of one site over one pool, calling ``between`` after the first."""

    async def run() -> list[CheckResult]:
        results: list[CheckResult] = []
        async with ConnectionPool() as pool:
            for index in range(count):
                results += await run_rollcall([(SITE, endpoint)], timeout=5, pool=pool)
                if index == 0 and between is not None:
                    between()
        return results

    return asyncio.run(run())


@needs_sshd
def test_killed_serve_session_is_replaced_on_the_same_connection(box: Box) -> None:
    before = len(box.server.session_log())

    def kill_serve() -> None:
        (serve,) = [r for r in box.server.session_log()[before:] if r.command == SERVE_PROBE_COMMAND]
        os.kill(serve.pid, signal.SIGKILL)

    results = _pooled_rounds(box.endpoint(), 3, kill_serve)
    assert [r.state for r in results] == [CheckState.OK] * 3, [r.reason for r in results]
    log = box.server.session_log()[before:]
    assert [r.command for r in log] == [SERVE_PROBE_COMMAND, SERVE_PROBE_COMMAND]
    assert log[0].port == log[1].port and log[0].pid != log[1].pid


@needs_sshd
def test_old_agent_without_serve_falls_back_to_exec(tmp_path: Path) -> None:
    key_path = tmp_path / "key"
    public = ensure_client_key(tmp_path / "key")
    with SshdServer(tmp_path / "state", [public], site_id=SITE, serve=False) as server:
        endpoint = Endpoint(server.host, server.port, server.user, server.host_key, str(key_path))
        results = _pooled_rounds(endpoint, 3)
        log = server.session_log()
    assert [r.state for r in results] == [CheckState.OK] * 3, [r.reason for r in results]
    assert all(r.facts["site_id"] == SITE for r in results)
    # The old agent ignored --serve, printed once and exited 0: tried once, then exec per
    # round. Its one line may or may not have answered the first round (it races the
    # request), so the first round is served either way but not always by exec.
    commands = [r.command for r in log]
    assert commands[0] == SERVE_PROBE_COMMAND and commands[1:] in ([PROBE_COMMAND] * 2, [PROBE_COMMAND] * 3)
    assert len({r.port for r in log}) == 1


@needs_sshd
def _host_facts() -> dict[str, object]:
    """What this host's own /proc, /dev and /sys say, read here in Python."""
    import glob

    def capture() -> bool:
        try:
            with open("/proc/asound/pcm") as pcm:
                return any("capture" in line for line in pcm)
        except OSError:
            return os.path.exists("/proc/asound/cards") and bool(open("/proc/asound/cards").read().strip())

    return {"camera": bool(glob.glob("/dev/video*") or glob.glob("/sys/class/video4linux/*")),
            "microphone": capture()}


@needs_sshd
@pytest.mark.parametrize("engine", ["asyncssh", "libssh2"])
def test_plain_box_without_agent_reports_facts_read_by_sh(tmp_path: Path, engine: str) -> None:
    """A plain OpenSSH box with no ccctl-diag: one exec per check reads its facts with sh."""
    key_path = tmp_path / "key"
    public = ensure_client_key(key_path)
    with SshdServer(tmp_path / "state", [public], site_id=SITE, agent=False) as server:
        endpoint = Endpoint(server.host, server.port, server.user, server.host_key, str(key_path))
        result = _rollcall(endpoint, key_path, engine=engine)
        plain = asyncio.run(run_command([(SITE, endpoint)], "ccctl-diag", timeout=5))[0]
        log = server.session_log()
    assert plain.exit_status == 127  # the box really has no agent
    assert [r.command for r in log] == [PROBE_COMMAND, "ccctl-diag"]
    facts = result.facts
    assert facts["facts_via"] == "sh" and "agent_version" not in facts
    with open("/proc/uptime") as uptime:
        assert 0 < facts["uptime_s"] <= float(uptime.read().split()[0])
    assert isinstance(facts["load1"], float) and 0 <= facts["disk_free_pct"] <= 100
    host = _host_facts()
    assert (facts["camera"], facts["microphone"]) == (host["camera"], host["microphone"])
    missing = [what for what in ("camera", "microphone") if not host[what]]
    expected = "; ".join(f"no {what}" for what in missing)
    assert (result.state, result.stage, result.reason) == (
        (CheckState.DEGRADED if missing else CheckState.OK), "ssh", expected)


@needs_sshd
def test_plain_box_keeps_a_warm_sh_session(tmp_path: Path) -> None:
    """Pooled rounds on a box without the agent: one connection, one sh session, every round."""
    key_path = tmp_path / "key"
    public = ensure_client_key(key_path)
    with SshdServer(tmp_path / "state", [public], site_id=SITE, agent=False) as server:
        endpoint = Endpoint(server.host, server.port, server.user, server.host_key, str(key_path))
        results = _pooled_rounds(endpoint, 3)
        log = server.session_log()
    assert [r.facts["facts_via"] for r in results] == ["sh"] * 3, [r.reason for r in results]
    assert [r.command for r in log] == [SERVE_PROBE_COMMAND] and results[2].facts["uptime_s"] > 0


@needs_sshd
def test_run_command_passes_other_commands_through(box: Box) -> None:
    targets = [(SITE, box.endpoint())]
    (hi,) = asyncio.run(run_command(targets, "echo hi", timeout=5))
    assert (hi.state, hi.exit_status, hi.stdout) == (CheckState.OK, 0, "hi\n")
    (bad,) = asyncio.run(run_command(targets, "echo oops >&2; exit 3", timeout=5))
    assert (bad.state, bad.exit_status, bad.stderr, bad.reason) == (CheckState.ERROR, 3, "oops\n", "exit status 3")


@needs_sshd
def test_rollcall_cli_against_real_sshd(box: Box, tmp_path: Path) -> None:
    env = {"CCCTL_HOME": str(tmp_path / "home"), "CCCTL_DB": f"sqlite:///{tmp_path / 'r.db'}"}

    def ccctl(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli, list(args), env=env, obj=AppContext())
        return result.exit_code, result.stdout, result.stderr

    code, _out, err = ccctl("units", "load", "--scheme", "2021")
    assert code == 0, err
    server = box.server
    code, out, err = ccctl(
        "sites", "add", "s1", "--name", "Điểm cầu thử", "--unit", "26740", "--host", server.host,
        "--ssh-port", str(server.port), "--ssh-user", server.user, "--host-key", server.host_key,
        "--key-path", str(box.key_path), "--format", "json",
    )
    assert code == 0, err
    assert json.loads(out)["name"] == "Điểm cầu thử"
    code, out, err = ccctl("rollcall", "run", "--site", "s1", "--format", "json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert (row["site_id"], row["state"]) == ("s1", "OK"), row


def test_refuses_addresses_outside_loopback(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "10.0.0.1", "::1", "localhost"):
        with pytest.raises(ValueError, match="127.0.0.0/8|loopback"):
            SshdServer(tmp_path, [], host=host)
    assert SshdServer(tmp_path, [], host="127.3.2.1").host == "127.3.2.1"


@needs_sshd
def test_start_failure_reports_sshd_stderr(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        server = SshdServer(tmp_path, [], port=taken.getsockname()[1])
        with pytest.raises(SshdError, match="Address already in use"):
            server.start()
    assert server.pid is None


@needs_sshd
def test_stop_ends_sshd_and_running_sessions(tmp_path: Path) -> None:
    key_path = tmp_path / "key"
    public = ensure_client_key(tmp_path / "key")
    server = SshdServer(tmp_path / "state", [public]).start()

    async def session_then_stop() -> list[int]:
        known = ([asyncssh.import_public_key(server.host_key)], [], [])
        async with asyncssh.connect(server.host, server.port, username=server.user, config=None,
                                    client_keys=[str(key_path)], known_hosts=known) as conn:
            process = await conn.create_process("echo started; exec sleep 60")
            assert await asyncio.wait_for(process.stdout.readline(), 5) == "started\n"
            pids = server.processes()
            server.stop()
            await asyncio.wait_for(conn.wait_closed(), 5)  # sshd's side of the session is gone
            return pids

    try:
        pids = asyncio.run(session_then_stop())
    finally:
        server.stop()
    assert len(pids) >= 3  # listener, the connection's sshd, the session's shell/sleep
    assert [pid for pid in pids if _alive(pid)] == []
    assert server.processes() == []
