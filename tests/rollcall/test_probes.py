"""TCP and SSH probes against a real loopback asyncssh box and closed ports."""

from __future__ import annotations

import asyncio
import socket

import asyncssh
import pytest

from ccctl.models import CheckState, Endpoint
from ccctl.rollcall.probes import ssh_probe, tcp_probe
from ccctl.rollcall.shfacts import PROBE_COMMAND

from .conftest import BoxFactory, SiteBox

pytestmark = pytest.mark.asyncio


async def test_tcp_probe_ok_measures_rtt(box: SiteBox) -> None:
    outcome = await tcp_probe(box.endpoint(), timeout=2.0)
    assert outcome.state is CheckState.OK
    assert outcome.rtt_ms is not None and 0 < outcome.rtt_ms < 1000


async def test_tcp_probe_refused_is_unreachable(closed_port: int) -> None:
    outcome = await tcp_probe(Endpoint("127.0.0.1", closed_port), timeout=2.0)
    assert outcome.state is CheckState.UNREACHABLE
    assert outcome.reason == "connection refused"
    assert outcome.rtt_ms is None


async def test_tcp_probe_timeout() -> None:
    # A listener whose backlog is full drops further SYNs, so connect() hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                fillers.append(s)
            outcome = await tcp_probe(Endpoint("127.0.0.1", port), timeout=0.3)
        finally:
            for s in fillers:
                s.close()
    assert outcome.state is CheckState.TIMEOUT
    assert "0.3" in outcome.reason


async def test_ssh_probe_ok_returns_facts(box: SiteBox) -> None:
    outcome = await ssh_probe(box.endpoint(), 5.0, box.client_key_path)
    assert outcome.state is CheckState.OK, outcome.reason
    assert outcome.facts["site_id"] == "site-1"
    assert outcome.facts["camera"] is True
    assert outcome.rtt_ms is not None and outcome.rtt_ms > 0
    assert box.commands == [PROBE_COMMAND]
    assert box.logins == 1


async def test_ssh_probe_uses_endpoint_key_path(box: SiteBox) -> None:
    outcome = await ssh_probe(box.endpoint(key_path=box.client_key_path), 5.0, None)
    assert outcome.state is CheckState.OK, outcome.reason


async def test_ssh_probe_wrong_host_key_is_mismatch(box: SiteBox) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    outcome = await ssh_probe(box.endpoint(host_key=other), 5.0, box.client_key_path)
    assert outcome.state is CheckState.HOSTKEY_MISMATCH
    assert box.commands == []


async def test_ssh_probe_known_hosts_file(box: SiteBox, tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "known_hosts"
    good.write_text(f"[127.0.0.1]:{box.port} {box.host_key_line}\n")
    ok = await ssh_probe(box.endpoint(host_key=f"known_hosts:{good}"), 5.0, box.client_key_path)
    assert ok.state is CheckState.OK, ok.reason
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    bad = await ssh_probe(box.endpoint(host_key=f"known_hosts:{empty}"), 5.0, box.client_key_path)
    assert bad.state is CheckState.HOSTKEY_MISMATCH


async def test_ssh_probe_without_verification(box: SiteBox) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    endpoint = box.endpoint(host_key=other, verify_host_key=False)
    outcome = await ssh_probe(endpoint, 5.0, box.client_key_path)
    assert outcome.state is CheckState.OK, outcome.reason


async def test_ssh_probe_auth_refused(make_box: BoxFactory) -> None:
    box = await make_box(refuse_auth=True)
    outcome = await ssh_probe(box.endpoint(), 5.0, box.client_key_path)
    assert outcome.state is CheckState.AUTH_FAILED
    assert "login refused" in outcome.reason


async def test_ssh_probe_closed_port_unreachable(box: SiteBox, closed_port: int) -> None:
    outcome = await ssh_probe(box.endpoint(port=closed_port), 5.0, box.client_key_path)
    assert outcome.state is CheckState.UNREACHABLE
    assert "refused" in outcome.reason


async def test_ssh_probe_silent_diag_times_out(make_box: BoxFactory) -> None:
    box = await make_box(diag_delay=float("inf"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    outcome = await ssh_probe(box.endpoint(), 0.5, box.client_key_path)
    assert outcome.state is CheckState.TIMEOUT
    assert loop.time() - t0 < 3.0
    assert box.commands == [PROBE_COMMAND]


async def test_ssh_probe_bad_json_and_exit_status(make_box: BoxFactory) -> None:
    box = await make_box(diag_output="not json\n")
    bad = await ssh_probe(box.endpoint(), 5.0, box.client_key_path)
    assert bad.state is CheckState.ERROR
    assert "not JSON" in bad.reason
    box.diag_output = None
    box.diag_exit = 3
    failed = await ssh_probe(box.endpoint(), 5.0, box.client_key_path)
    assert failed.state is CheckState.ERROR
    assert "exited 3" in failed.reason


async def test_ssh_probe_missing_key_is_error_not_raise(box: SiteBox, tmp_path) -> None:  # type: ignore[no-untyped-def]
    outcome = await ssh_probe(box.endpoint(), 5.0, str(tmp_path / "nope"))
    assert outcome.state is CheckState.ERROR
    assert "cannot read client key" in outcome.reason


async def test_ssh_probe_expected_key_of_other_type_is_mismatch(box: SiteBox) -> None:
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048).export_public_key().decode()
    outcome = await ssh_probe(box.endpoint(host_key=rsa), 5.0, box.client_key_path)
    assert outcome.state is CheckState.HOSTKEY_MISMATCH, outcome.reason


async def test_ssh_probe_garbage_expected_key_is_error(box: SiteBox) -> None:
    outcome = await ssh_probe(box.endpoint(host_key="ssh-ed25519 not-base64!"), 5.0, box.client_key_path)
    assert outcome.state is CheckState.ERROR
    assert "bad expected host key" in outcome.reason


async def test_ssh_probe_no_recorded_host_key(box: SiteBox, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts to fall back on
    outcome = await ssh_probe(box.endpoint(host_key=None), 5.0, box.client_key_path)
    assert outcome.state is CheckState.HOSTKEY_MISMATCH
    assert "none recorded" in outcome.reason
