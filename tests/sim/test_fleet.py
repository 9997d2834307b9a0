"""Real asyncssh clients against a small simulated fleet on loopback."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path

import asyncssh
import pytest

from ccctl.sim.endpoint import diagnostics
from ccctl.sim.faults import Fault
from ccctl.sim.fleet import HOST_KEYS_FILE, Fleet

from .conftest import SITES, Connector, make_specs

pytestmark = pytest.mark.asyncio


async def test_ok_endpoint_answers_diagnostics(fleet: Fleet, connect: Connector) -> None:
    async with await connect("ok-1") as conn:
        result = await conn.run("ccctl-diag", check=True)
    assert result.exit_status == 0
    assert isinstance(result.stdout, str)
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == diagnostics("ok-1")


async def test_exec_commands(fleet: Fleet, connect: Connector) -> None:
    async with await connect("ok-2") as conn:
        echo = await conn.run("echo hello 'big world'")
        true, false = await conn.run("true"), await conn.run("false")
        hostname = await conn.run("hostname")
        sleep = await conn.run("sleep 0")
        bad_sleep = await conn.run("sleep soon")
        missing = await conn.run("rm -rf /")
    assert (echo.stdout, echo.exit_status) == ("hello big world\n", 0)
    assert (true.exit_status, false.exit_status) == (0, 1)
    assert hostname.stdout == "ok-2\n"
    assert sleep.exit_status == 0
    assert bad_sleep.exit_status == 1
    assert missing.exit_status == 127
    assert missing.stdout == ""
    assert missing.stderr == "sim: command not found: rm\n"


async def test_interactive_shell_echoes_until_eof(fleet: Fleet, connect: Connector) -> None:
    async with await connect("ok-1") as conn:
        process = await conn.create_process()
        banner = await process.stdout.readline()
        process.stdin.write("hello\n")
        echoed = await process.stdout.readline()
        process.stdin.write_eof()
        completed = await process.wait()
    assert banner == "ccctl sim bridge point ok-1\n"
    assert echoed == "hello\n"
    assert completed.exit_status == 0


async def test_nocam_reports_camera_absent(fleet: Fleet, connect: Connector) -> None:
    async with await connect("nocam-1") as conn:
        result = await conn.run("ccctl-diag", check=True)
    facts = json.loads(str(result.stdout))
    assert facts["camera"] is False
    assert facts["microphone"] is True
    assert facts["site_id"] == "nocam-1"


async def test_slow_delays_auth_and_diagnostics(fleet: Fleet, connect: Connector) -> None:
    started = time.monotonic()
    async with await connect("slow-1") as conn:
        logged_in = time.monotonic()
        result = await conn.run("ccctl-diag", check=True)
        answered = time.monotonic()
    assert logged_in - started >= 0.3
    assert answered - logged_in >= 0.3
    assert json.loads(str(result.stdout))["site_id"] == "slow-1"


async def test_authfail_refuses_the_key(fleet: Fleet, connect: Connector) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await connect("authfail-1")
    assert fleet.stats().per_site["authfail-1"]["auth_failed"] >= 1


async def test_wrong_user_is_refused(fleet: Fleet, connect: Connector) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await connect("ok-1", username="root")


async def test_hostkey_serves_a_key_other_than_published(fleet: Fleet,
                                                        connect: Connector) -> None:
    assert fleet.published_host_key("hostkey-1") != fleet.served_host_key("hostkey-1")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await connect("hostkey-1")
    served = asyncssh.import_public_key(fleet.served_host_key("hostkey-1"))
    async with await connect("hostkey-1", known_hosts=([served], [], [])) as conn:
        assert (await conn.run("hostname")).stdout == "hostkey-1\n"


async def test_published_key_of_healthy_site_is_the_served_one(fleet: Fleet) -> None:
    assert fleet.published_host_key("ok-1") == fleet.served_host_key("ok-1")
    assert fleet.published_host_key("ok-1").startswith("ssh-ed25519 ")
    assert fleet.published_host_key("ok-1") != fleet.published_host_key("ok-2")


async def test_down_refuses(fleet: Fleet) -> None:
    host, port = fleet.address("down-1")
    assert port > 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(host, port)


async def test_blackhole_connect_times_out(fleet: Fleet) -> None:
    host, port = fleet.address("blackhole-1")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)


async def test_flap_alternates(fleet: Fleet, connect: Connector) -> None:
    outcomes = []
    for _ in range(4):
        try:
            async with await connect("flap-1") as conn:
                outcomes.append((await conn.run("hostname")).stdout)
        except (asyncssh.Error, ConnectionError):
            outcomes.append("dropped")
    assert outcomes == ["dropped", "flap-1\n", "dropped", "flap-1\n"]
    assert fleet.stats().per_site["flap-1"]["dropped"] == 2


async def test_stats_count_connections_auths_and_commands(fleet: Fleet,
                                                          connect: Connector) -> None:
    async with await connect("ok-2") as conn:
        await conn.run("true")
        await conn.run("ccctl-diag")
        assert fleet.stats().open == 1
    with pytest.raises(asyncssh.PermissionDenied):
        await connect("authfail-1")
    stats = fleet.stats()
    assert stats.endpoints == len(SITES)
    assert stats.listening == len(SITES) - 2  # down and blackhole have no SSH listener
    ok2 = stats.per_site["ok-2"]
    # "open" is left out: the server may see the client's close a loop turn later.
    assert {name: ok2[name] for name in ("connections", "dropped", "auth_ok", "auth_failed",
                                         "commands")} == {
        "connections": 1, "dropped": 0, "auth_ok": 1, "auth_failed": 0, "commands": 2}
    assert (stats.connections, stats.auth_ok, stats.commands) == (2, 1, 2)


async def test_close_drops_open_connections(tmp_path: Path, client_public: str,
                                            client_key: asyncssh.SSHKey) -> None:
    fleet = Fleet(make_specs({"a": None}, base=210_000), client_public, tmp_path)
    await fleet.start()
    host, port = fleet.address("a")
    conn = await asyncssh.connect(host, port, username="ccctl", client_keys=[client_key],
                                  known_hosts=None, agent_path=None, config=None)
    process = await conn.create_process("sleep 30")
    await fleet.close()
    await asyncio.wait_for(conn.wait_closed(), 5)
    await asyncio.wait_for(process.wait_closed(), 5)
    assert process.exit_status is None  # dropped, not finished
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(host, port)


async def test_host_keys_persist_across_restart(tmp_path: Path, client_public: str) -> None:
    sites: dict[str, Fault | None] = {"a": None, "b": Fault("hostkey"), "c": None}
    specs = make_specs(sites, base=220_000)
    async with Fleet(specs, client_public, tmp_path) as first:
        served = {site: first.served_host_key(site) for site in sites}
        published = {site: first.published_host_key(site) for site in sites}
    key_file = tmp_path / HOST_KEYS_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(set(served.values())) == 3
    async with Fleet(specs, client_public, tmp_path) as second:
        assert {site: second.served_host_key(site) for site in sites} == served
        assert {site: second.published_host_key(site) for site in sites} == published
        host, port = second.address("a")
        served_key = await asyncssh.get_server_host_key(host, port)
        assert served_key is not None
        assert served_key.export_public_key().decode().split()[:2] == served["a"].split()
    key_file.chmod(0o644)
    async with Fleet(specs, client_public, tmp_path):
        pass
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


async def test_duplicate_site_ids_rejected(tmp_path: Path, client_public: str) -> None:
    specs = make_specs({"a": None}) * 2
    with pytest.raises(ValueError, match="duplicate"):
        Fleet(specs, client_public, tmp_path)


async def test_keys_read_before_start_are_the_ones_served(tmp_path: Path,
                                                          client_public: str) -> None:
    specs = make_specs({"a": None, "b": Fault("hostkey")}, base=230_000)
    published = Fleet(specs, client_public, tmp_path).published_host_key("b")
    served = Fleet(specs, client_public, tmp_path).served_host_key("a")
    async with Fleet(specs, client_public, tmp_path) as fleet:
        assert fleet.published_host_key("b") == published
        host, port = fleet.address("a")
        key = await asyncssh.get_server_host_key(host, port)
        assert key is not None
        assert " ".join(key.export_public_key().decode().split()[:2]) == served
