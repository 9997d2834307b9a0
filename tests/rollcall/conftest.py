"""A real asyncssh site box on 127.0.0.1 for roll-call tests (after asyncssh tests/server.py).

The box has a host key made in tmp_path, accepts one client key, answers ``ccctl-diag``
(and the roll-call's command line, ``shfacts.PROBE_COMMAND``, as a box with the agent would)
with one line of JSON, ``ccctl-diag --serve`` (``SERVE_PROBE_COMMAND``) with one such line per line read (unless
``serve`` is off: then it is an old agent that rejects the flag) and a few shell-like
commands for ``run_command``. Attributes on ``SiteBox`` switch it into failure modes
(refuse logins, no camera, slow or silent diagnostics) and count the SSH connections,
commands and serve answers it saw.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import pytest_asyncio

from ccctl.models import Endpoint
from ccctl.rollcall.shfacts import PROBE_COMMAND, SERVE_PROBE_COMMAND


def default_facts(site_id: str) -> dict[str, Any]:
    """What a healthy box reports."""
    return {
        "agent_version": "1.4.2",
        "uptime_s": 12345,
        "camera": True,
        "microphone": True,
        "disk_free_pct": 63.5,
        "load1": 0.12,
        "site_id": site_id,
    }


@dataclass
class SiteBox:
    """One simulated site: its address, keys, failure modes and counters."""

    site_id: str
    host: str
    port: int
    host_key_line: str
    client_key_path: str
    server: asyncssh.SSHAcceptor | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    refuse_auth: bool = False
    diag_delay: float = 0.0  # seconds before answering ccctl-diag; inf = never
    diag_output: str | None = None  # raw stdout instead of the facts
    diag_exit: int = 0
    fail_first: int = 0  # answer this many ccctl-diag calls with exit 1 first
    serve: bool = True  # knows ccctl-diag --serve
    connections: int = 0
    logins: int = 0
    commands: list[str] = field(default_factory=list)
    answers: int = 0  # lines answered by serve sessions
    open_conns: list[asyncssh.SSHServerConnection] = field(default_factory=list)
    serving: list[asyncssh.SSHServerProcess[str]] = field(default_factory=list)

    def endpoint(self, **changes: Any) -> Endpoint:
        """The Endpoint a registry would hold for this box."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": "ccctl",
            "host_key": self.host_key_line,
            "key_path": None,
        }
        values.update(changes)
        return Endpoint(**values)

    def drop_connections(self) -> None:
        """Cut every open SSH connection from the server side, as a reboot would."""
        for conn in self.open_conns:
            conn.abort()
        self.open_conns.clear()

    def kill_serve(self) -> int:
        """End every serve session as a killed agent would (exit signal), connections kept up."""
        killed = list(self.serving)
        for process in killed:
            process.exit_with_signal("KILL")
        return len(killed)


class _BoxServer(asyncssh.SSHServer):
    """Accepts the one authorised key unless the box refuses logins."""

    def __init__(self, box: SiteBox, authorized: asyncssh.SSHKey) -> None:
        self._box = box
        self._authorized = authorized

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._box.connections += 1
        self._box.open_conns.append(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return not self._box.refuse_auth and key.public_data == self._authorized.public_data

    def auth_completed(self) -> None:
        self._box.logins += 1


async def _handle(box: SiteBox, process: asyncssh.SSHServerProcess[str]) -> None:
    """The box's shell: ccctl-diag, echo, exit N, stderr MSG."""
    command = process.command or ""
    box.commands.append(command)
    if command in (SERVE_PROBE_COMMAND, "ccctl-diag --serve"):
        await _serve(box, process)
    elif command in (PROBE_COMMAND, "ccctl-diag"):
        if box.diag_delay == float("inf"):
            await process.channel.wait_closed()  # silent until the client gives up
            return
        if box.diag_delay:
            await asyncio.sleep(box.diag_delay)  # simulated slow box, not synchronisation
        if box.fail_first > 0:
            box.fail_first -= 1
            process.stderr.write("camera daemon restarting\n")
            process.exit(1)
            return
        out = box.diag_output if box.diag_output is not None else json.dumps(box.facts) + "\n"
        process.stdout.write(out)
        process.exit(box.diag_exit)
    elif command.startswith("echo "):
        process.stdout.write(command[5:] + "\n")
        process.exit(0)
    elif command.startswith("exit "):
        process.exit(int(command[5:]))
    elif command.startswith("stderr "):
        process.stderr.write(command[7:] + "\n")
        process.exit(2)
    else:
        process.stderr.write(f"{command}: command not found\n")
        process.exit(127)


async def _serve(box: SiteBox, process: asyncssh.SSHServerProcess[str]) -> None:
    """``ccctl-diag --serve``: the facts (or ``diag_output``) for every line read, until EOF."""
    if not box.serve:
        process.stderr.write("ccctl-diag: unknown option --serve\n")
        process.exit(2)
        return
    box.serving.append(process)
    try:
        while await process.stdin.readline():
            if box.diag_delay == float("inf"):
                await process.channel.wait_closed()  # silent until the client gives up
                return
            if box.diag_delay:
                await asyncio.sleep(box.diag_delay)  # simulated slow box, not synchronisation
            process.stdout.write(box.diag_output if box.diag_output is not None else json.dumps(box.facts) + "\n")
            box.answers += 1
        process.exit(0)
    except (BrokenPipeError, ConnectionError, asyncssh.Error):
        pass  # killed or cut off
    finally:
        box.serving.remove(process)


BoxFactory = Callable[..., Awaitable[SiteBox]]


@pytest_asyncio.fixture
async def make_box(tmp_path: Path) -> AsyncIterator[BoxFactory]:
    """Factory of site boxes sharing one client key; all are closed after the test."""
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key_path = tmp_path / "client_ed25519"
    client_key.write_private_key(str(client_key_path))
    boxes: list[SiteBox] = []

    async def factory(site_id: str = "site-1", **modes: Any) -> SiteBox:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        box = SiteBox(
            site_id=site_id,
            host="127.0.0.1",
            port=0,
            host_key_line=host_key.export_public_key().decode().strip(),
            client_key_path=str(client_key_path),
            facts=default_facts(site_id),
            **modes,
        )
        box.server = await asyncssh.create_server(
            lambda: _BoxServer(box, client_key),
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            process_factory=lambda process: _handle(box, process),
            encoding="utf-8",
            keepalive_interval=0,
        )
        box.port = box.server.sockets[0].getsockname()[1]
        boxes.append(box)
        return box

    yield factory
    for box in boxes:
        assert box.server is not None
        box.server.close()
        box.drop_connections()
        await box.server.wait_closed()


@pytest_asyncio.fixture
async def box(make_box: BoxFactory) -> SiteBox:
    """One healthy site box."""
    return await make_box()


@pytest.fixture
def closed_port() -> int:
    """A loopback port that nothing listens on: bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
