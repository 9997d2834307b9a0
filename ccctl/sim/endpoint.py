"""One simulated bridge-point box: its address, its SSH behaviour and its diagnostics.

A real site runs an SSH server that answers ``ccctl-diag`` with one line of JSON (and
``ccctl-diag --serve`` with one such line per line read, for pooled roll-calls), or, without
the agent (fault ``noagent``), the roll-call's ``sh`` fallback line; the simulator
reproduces that (recognising the roll-call's own command lines, which a box runs through
``sh``) on loopback so roll-calls, the demo and benchmarks exercise the real
client code. Thousands of these live in one process, so the per-endpoint state is a few small
slotted objects and all endpoints share one ``SSHServer`` subclass and one process handler.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
from dataclasses import dataclass
from typing import Any

import asyncssh

from ccctl.rollcall.shfacts import PROBE_COMMAND, SERVE_PROBE_COMMAND, sh_line
from ccctl.sim.faults import AUTHFAIL, DISKFULL, FLAP, NOAGENT, NOCAM, NOMIC, Fault
from ccctl.sim.mediaprobe import answer_media_probe

AGENT_VERSION = "1.4.2"
DIAG_COMMAND = "ccctl-diag"
#: The agent's WebRTC side of the roll-call's media stage (see ``ccctl.sim.mediaprobe``).
MEDIA_COMMAND = "ccctl-media-probe"
#: The agent's long-lived form: one JSON line of facts per line read from stdin, until EOF.
SERVE_FLAG = "--serve"
MAX_SLEEP_S = 30.0
DEFAULT_PORT = 2222

_LAST_OCTETS = 254  # .1 to .254: .0 and .255 are skipped
_MAX_INDEX = 255 * 256 * _LAST_OCTETS  # 127.1.0.1 .. 127.255.255.254


def loopback_address(index: int) -> str:
    """The loopback address of the ``index``-th simulated site: 0 -> 127.1.0.1, 1 -> 127.1.0.2.

    Every site gets its own address (Linux routes all of 127/8 to ``lo``), so all can listen
    on the same port like real boxes do. 127.0.0.x is left to the host; last octets 0 and 255
    are skipped. Raises ValueError outside 0 .. 16,581,119.
    """
    if not 0 <= index < _MAX_INDEX:
        raise ValueError(f"loopback index {index} out of range 0..{_MAX_INDEX - 1}")
    rest, last = divmod(index, _LAST_OCTETS)
    second, third = divmod(rest, 256)
    return f"127.{second + 1}.{third}.{last + 1}"


@dataclass(frozen=True)
class SimEndpointSpec:
    """What to simulate for one site: where it listens and how it misbehaves (if at all).

    ``port`` 0 lets the OS choose; ``Fleet.address`` then tells the bound port.
    """

    site_id: str
    host: str
    port: int = DEFAULT_PORT
    fault: Fault | None = None


class EndpointStats:
    """Counters of one endpoint, read by ``Fleet.stats`` for ``sim status``."""

    __slots__ = ("connections", "dropped", "open", "auth_ok", "auth_failed", "commands")

    def __init__(self) -> None:
        self.connections = 0
        self.dropped = 0
        self.open = 0
        self.auth_ok = 0
        self.auth_failed = 0
        self.commands = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict with stable snake_case keys."""
        return {name: getattr(self, name) for name in self.__slots__}


class ServerSettings:
    """What every endpoint of a fleet shares: the accepted login and the open connections."""

    __slots__ = ("client_key", "user", "connections")

    def __init__(self, client_key: asyncssh.SSHKey, user: str | None) -> None:
        self.client_key = client_key
        self.user = user
        self.connections: set[asyncssh.SSHServerConnection] = set()


class SimEndpoint:
    """The live state of one endpoint: its spec, counters, flap toggle and serve sessions.

    ``serving`` holds the running ``ccctl-diag --serve`` sessions and ``answers`` counts the
    lines they answered, so a test can see a pooled roll-call reuse one session
    (``stats.commands`` counts sessions, not answers) and can kill a session.
    """

    __slots__ = ("spec", "settings", "stats", "accepted", "serving", "answers")

    def __init__(self, spec: SimEndpointSpec, settings: ServerSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.stats = EndpointStats()
        self.accepted = 0
        self.serving: set[asyncssh.SSHServerProcess[str]] = set()
        self.answers = 0

    def kill_serve_sessions(self) -> int:
        """End every serve session as if its agent was killed (exit signal KILL); how many."""
        killed = list(self.serving)
        for process in killed:
            process.exit_with_signal("KILL")
        return len(killed)

    @property
    def fault_kind(self) -> str | None:
        """The kind of the endpoint's fault, or None when healthy."""
        return self.spec.fault.kind if self.spec.fault else None

    @property
    def slow_s(self) -> float:
        """Seconds to hold back auth and diagnostics answers (0 unless ``slow``)."""
        return self.spec.fault.slow_ms / 1000 if self.spec.fault else 0.0


class SimServer(asyncssh.SSHServer):
    """The SSH server side of one connection to a simulated endpoint.

    Public-key auth only; ``flap`` endpoints drop every odd-numbered connection (the 1st,
    3rd, ...) right after accepting it, so a first try fails and a retry succeeds.
    """

    def __init__(self, endpoint: SimEndpoint) -> None:
        self.endpoint = endpoint
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        """Count and track the connection; drop it at once when the endpoint flaps."""
        endpoint = self.endpoint
        self._conn = conn
        endpoint.stats.connections += 1
        endpoint.stats.open += 1
        endpoint.settings.connections.add(conn)
        if endpoint.fault_kind == FLAP:
            endpoint.accepted += 1
            if endpoint.accepted % 2 == 1:
                endpoint.stats.dropped += 1
                # After connection_made returns, so asyncssh is done setting the connection up.
                asyncio.get_running_loop().call_soon(conn.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        if self._conn is not None:
            self.endpoint.settings.connections.discard(self._conn)
            self.endpoint.stats.open -= 1
            self._conn = None

    async def begin_auth(self, username: str) -> bool:
        """Require auth for every user; a ``slow`` endpoint answers late."""
        if self.endpoint.slow_s:
            await asyncio.sleep(self.endpoint.slow_s)
        return True

    def password_auth_supported(self) -> bool:
        """Passwords are never accepted."""
        return False

    def public_key_auth_supported(self) -> bool:
        """Keys are the only way in."""
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Accept the fleet's client key for the configured user, unless ``authfail``."""
        settings = self.endpoint.settings
        ok = (
            self.endpoint.fault_kind != AUTHFAIL
            and (settings.user is None or username == settings.user)
            and key.public_data == settings.client_key.public_data
        )
        if not ok:
            self.endpoint.stats.auth_failed += 1
        return ok

    def auth_completed(self) -> None:
        """Count a successful login."""
        self.endpoint.stats.auth_ok += 1


def diagnostics(site_id: str, fault: Fault | None = None) -> dict[str, Any]:
    """The ``ccctl-diag`` answer of a site: stable values derived from its id, bent by faults."""
    digest = hashlib.sha256(site_id.encode()).digest()
    kind = fault.kind if fault else None
    disk = round(20 + digest[4] / 255 * 70, 1)
    if kind == DISKFULL:
        disk = round(0.5 + digest[6] / 255 * 4, 1)
    return {
        "agent_version": AGENT_VERSION,
        "uptime_s": 3600 + int.from_bytes(digest[:4], "big") % (60 * 86400),
        "camera": kind != NOCAM,
        "microphone": kind != NOMIC,
        "disk_free_pct": disk,
        "load1": round(0.05 + digest[5] / 255 * 1.5, 2),
        "site_id": site_id,
    }


async def handle_process(process: asyncssh.SSHServerProcess[str]) -> None:
    """Run one exec request or shell session on a simulated endpoint (shared by all)."""
    conn = process.get_extra_info("connection")
    server = conn.get_owner()
    assert isinstance(server, SimServer)
    endpoint = server.endpoint
    endpoint.stats.commands += 1
    try:
        if process.command is None:
            status = await _shell(process, endpoint)
        else:
            status = await _exec(process, endpoint, process.command)
        process.exit(status)
    except (BrokenPipeError, ConnectionError, asyncssh.Error):
        process.close()


async def _exec(process: asyncssh.SSHServerProcess[str], endpoint: SimEndpoint,
                command: str) -> int:
    """Run the tiny command set of a simulated box and return its exit status."""
    agent = endpoint.fault_kind != NOAGENT
    # The roll-call's own command lines first, by exact text: no parse on the hot path.
    if command == SERVE_PROBE_COMMAND or (agent and command == f"{DIAG_COMMAND} {SERVE_FLAG}"):
        return await _serve(process, endpoint)
    if command == PROBE_COMMAND or (agent and command == DIAG_COMMAND):
        if endpoint.slow_s and not await _pause(process, endpoint.slow_s):
            return 0
        process.stdout.write(_facts_line(endpoint))
        return 0
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        process.stderr.write(f"sim: {exc}\n")
        return 2
    if not argv:
        return 0
    name, args = argv[0], argv[1:]
    site_id = endpoint.spec.site_id
    if name == MEDIA_COMMAND and agent:
        return await answer_media_probe(process, site_id, endpoint.spec.host, endpoint.spec.fault)
    if name == "echo":
        process.stdout.write(" ".join(args) + "\n")
        return 0
    if name in ("true", "false"):
        return 0 if name == "true" else 1
    if name == "hostname":
        process.stdout.write(site_id + "\n")
        return 0
    if name == "sleep":
        try:
            seconds = float(args[0]) if len(args) == 1 else -1.0
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < float("inf"):
            process.stderr.write(f"sleep: invalid time interval {' '.join(args)!r}\n")
            return 1
        await _pause(process, min(seconds, MAX_SLEEP_S))
        return 0
    process.stderr.write(f"sim: command not found: {name}\n")
    return 127


def _facts_line(endpoint: SimEndpoint) -> str:
    """The box's facts answer: the agent's JSON line, or the ``sh`` line without the agent."""
    facts = diagnostics(endpoint.spec.site_id, endpoint.spec.fault)
    if endpoint.fault_kind == NOAGENT:
        return sh_line(facts) + "\n"
    return json.dumps(facts) + "\n"


async def _serve(process: asyncssh.SSHServerProcess[str], endpoint: SimEndpoint) -> int:
    """``ccctl-diag --serve``: answer each line read with the facts, until EOF.

    The facts and the ``slow`` delay are taken afresh for every answer, so faults show per
    answer exactly as they do for one ``ccctl-diag`` per exec.
    """
    endpoint.serving.add(process)
    try:
        while True:
            line = await process.stdin.readline()
            if not line:
                return 0
            if endpoint.slow_s and not await _pause(process, endpoint.slow_s):
                return 0
            process.stdout.write(_facts_line(endpoint))
            endpoint.answers += 1
    finally:
        endpoint.serving.discard(process)


async def _shell(process: asyncssh.SSHServerProcess[str], endpoint: SimEndpoint) -> int:
    """A toy interactive shell: a banner with the site id, then echo each line until EOF."""
    process.stdout.write(f"ccctl sim bridge point {endpoint.spec.site_id}\n")
    while True:
        try:
            line = await process.stdin.readline()
        except asyncssh.TerminalSizeChanged:
            continue
        except (asyncssh.BreakReceived, asyncssh.SignalReceived):
            return 130
        if not line:
            return 0
        process.stdout.write(line)


async def _pause(process: asyncssh.SSHServerProcess[str], seconds: float) -> bool:
    """Wait ``seconds`` unless the channel closes first; True if the full time passed."""
    try:
        await asyncio.wait_for(process.channel.wait_closed(), seconds)
    except TimeoutError:
        return True
    return False
