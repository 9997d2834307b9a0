"""A real OpenSSH ``sshd`` on loopback that answers ``ccctl-diag`` like a site box.

The asyncssh simulator proves the roll-call against our own idea of SSH; real site boxes
run OpenSSH, whose key exchange, auth refusals, session limits and exec handling differ in
detail. ``SshdServer`` runs ``/usr/sbin/sshd -D -e -f <config>`` on 127.0.0.0/8 with its own
host key, authorized keys and a ``ForceCommand`` wrapper in a state directory, so tests and
benchmarks can run the unchanged client against the real thing. The wrapper's agent also
answers ``ccctl-diag --serve`` (a shell ``while read`` loop, one JSON line per line read),
the long-lived session a pooled roll-call keeps per connection. With ``agent=False`` the box is
a plain Linux machine with OpenSSH: no ``ccctl-diag`` anywhere, every command runs through
``/bin/sh``, and the roll-call reads this host's own ``/proc`` and ``df``. sshd needs root (privilege
separation), which is why ``sshd_available`` says whether this host can run it at all.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import asyncssh

from ccctl.sim.endpoint import DIAG_COMMAND, SERVE_FLAG, diagnostics

SSHD = "/usr/sbin/sshd"
#: sshd 9.x refuses to start without its privilege separation directory.
PRIVSEP_DIR = "/run/sshd"
PRIVSEP_USER = "sshd"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

_PORT_ATTEMPTS = 3  # a port picked by us may be taken before sshd binds it: pick again


class SshdError(RuntimeError):
    """sshd could not be started here, or died; the message carries sshd's own stderr."""


def sshd_available() -> str | None:
    """None when this host can run ``SshdServer``, else the reason it cannot (for a skip).

    sshd must be installed, we must be root (sshd's privilege separation forks an
    unprivileged child as the ``sshd`` user and chroots it into ``/run/sshd``), and that
    directory must exist; as root it is created when missing, as the Debian unit would.
    """
    if not os.access(SSHD, os.X_OK):
        return f"OpenSSH server not installed ({SSHD} missing)"
    if os.geteuid() != 0:
        return "sshd needs root to run privilege separation"
    try:
        pwd.getpwnam(PRIVSEP_USER)
    except KeyError:
        return f"privilege separation user {PRIVSEP_USER!r} does not exist"
    try:
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
    except OSError as exc:
        return f"cannot create privilege separation directory {PRIVSEP_DIR}: {exc.strerror}"
    return None


def _check_loopback(host: str) -> None:
    """Refuse any address outside 127.0.0.0/8: this server lets a test key log in as root."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"SshdServer listens on an IPv4 loopback address only, not {host!r}") from None
    if address not in LOOPBACK:
        raise ValueError(f"SshdServer listens on 127.0.0.0/8 only, not {host}")


def _free_port(host: str) -> int:
    """A port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only; sshd refuses host keys others can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def _process_tree(root: int) -> list[int]:
    """``root``'s descendants, parents before children, read from /proc.

    sshd's per-connection processes call ``setsid()``, so a process group cannot reach
    them; the parent links are the only way to find them.
    """
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's zombie may never be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def _signal(pids: Sequence[int], sig: int) -> None:
    """Send ``sig`` to each pid that still exists."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class SessionRecord(NamedTuple):
    """One session sshd ran: the client's address and port, the command's pid and the command."""

    address: str
    port: int
    pid: int
    command: str


class SshdServer:
    """One OpenSSH sshd on a loopback address whose ``ccctl-diag`` prints a site's JSON facts.

    ``authorized_keys`` are OpenSSH public key lines allowed to log in as the current
    user (root where sshd can run). ``port`` 0 picks a free port. ``facts`` override the
    simulator's stable diagnostics for ``site_id``. ``serve`` False makes the agent an old
    one that knows no ``--serve`` (it ignores its arguments, prints the facts once and
    exits), so a test can check the client's fallback. ``agent`` False leaves ``ccctl-diag`` out
    altogether (a plain box). The agent is on the PATH of every command, which runs through
    ``sh -c`` like a login shell's would, as on a real box. Every session is logged with its
    ``SSH_CONNECTION``, pid and command so a test can tell how many TCP connections and sessions carried its commands
    (``sessions()``, ``session_log()``).
    Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        authorized_keys: Sequence[str],
        *,
        site_id: str = "sshd",
        host: str = "127.0.0.1",
        port: int = 0,
        facts: Mapping[str, Any] | None = None,
        serve: bool = True,
        agent: bool = True,
        start_timeout: float = 10.0,
    ) -> None:
        _check_loopback(host)
        self.state_dir = Path(state_dir).resolve()
        self.site_id = site_id
        self._authorized_keys = [line.strip() for line in authorized_keys if line.strip()]
        self._host = host
        self._requested_port = port
        self._port = port
        self._facts = {**diagnostics(site_id), **(facts or {})}
        self._serve = serve
        self._agent = agent
        self._start_timeout = start_timeout
        self._user = pwd.getpwuid(os.geteuid()).pw_name
        self._host_key: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The loopback address sshd listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port sshd listens on (the chosen one once started)."""
        return self._port

    @property
    def user(self) -> str:
        """The login user: whoever runs sshd (root)."""
        return self._user

    @property
    def host_key(self) -> str:
        """The host's public key as an OpenSSH line, to record as the site's expected key."""
        if self._host_key is None:
            raise SshdError("sshd has no host key until start()")
        return self._host_key

    @property
    def pid(self) -> int | None:
        """The listening sshd's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    def processes(self) -> list[int]:
        """Pids of the listening sshd and everything it forked (connections, sessions)."""
        if self._proc is None:
            return []
        return [self._proc.pid, *_process_tree(self._proc.pid)]

    @property
    def log_path(self) -> Path:
        """Where sshd's stderr (``-e``, LogLevel ERROR) goes."""
        return self.state_dir / "sshd.log"

    def sessions(self) -> list[tuple[str, int]]:
        """(client address, client port) of every command run so far, oldest first.

        Two sessions with the same client port rode one TCP connection: this is how a
        test sees, from the server's side, that a pooled connection was reused.
        """
        return [(record.address, record.port) for record in self.session_log()]

    def session_log(self) -> list[SessionRecord]:
        """Every session sshd ran so far, oldest first, with its pid and command.

        The pid is that of the command itself (the wrapper ``exec``s it), so a test can
        kill one session, e.g. a ``ccctl-diag --serve`` loop, and leave the connection up.
        """
        path = self.state_dir / "sessions.log"
        if not path.exists():
            return []
        seen: list[SessionRecord] = []
        for line in path.read_text().splitlines():
            parts = line.split(" ", 5)
            if len(parts) >= 5:
                command = parts[5] if len(parts) > 5 else ""
                seen.append(SessionRecord(parts[0], int(parts[1]), int(parts[4]), command))
        return seen

    def _prepare(self) -> None:
        """Write the host key, authorized keys, command scripts and (per port) the config."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key_path = self.state_dir / "ssh_host_ed25519_key"
        if self._host_key is None:
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"ccctl-sshd-{self.site_id}")
            _write_private(key_path, key.export_private_key("openssh"))
            self._host_key = key.export_public_key("openssh").decode().strip()
        (self.state_dir / "authorized_keys").write_text("".join(f"{k}\n" for k in self._authorized_keys))
        bin_dir = self.state_dir / "bin"
        bin_dir.mkdir(exist_ok=True)
        diag = bin_dir / DIAG_COMMAND
        diag.unlink(missing_ok=True)
        facts = shlex.quote(json.dumps(self._facts))
        # The agent: facts as one JSON line; with --serve one such line per line read, until
        # EOF (printf and read are dash builtins: no fork per answer). The old agent ignores
        # its arguments like a pre-serve ccctl-diag would.
        serve = (
            f"if [ \"$1\" = {SERVE_FLAG} ]; then\n"
            f"  while read -r _; do printf '%s\\n' {facts}; done\n"
            "  exit 0\n"
            "fi\n"
        ) if self._serve else ""
        if self._agent:
            diag.write_text(f"#!/bin/sh\n{serve}printf '%s\\n' {facts}\n")
            diag.chmod(0o755)
        dispatch = self.state_dir / "force-command.sh"
        # ForceCommand runs for every session; it logs the connection, its pid and the
        # command, then runs the command through sh like a box's login shell would, with
        # the agent (if any) on the PATH. exec keeps the logged pid that of the command.
        path = f"PATH={shlex.quote(str(bin_dir))}:$PATH; export PATH\n" if self._agent else ""
        dispatch.write_text(
            "#!/bin/sh\n"
            f"echo \"$SSH_CONNECTION $$ $SSH_ORIGINAL_COMMAND\" >> {shlex.quote(str(self.state_dir / 'sessions.log'))}\n"
            f"{path}"
            "[ -n \"$SSH_ORIGINAL_COMMAND\" ] || exec /bin/sh\n"
            "exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n"
        )
        dispatch.chmod(0o755)
        d = self.state_dir
        (d / "sshd_config").write_text(
            f"ListenAddress {self._host}\n"
            f"Port {self._port}\n"
            f"HostKey {key_path}\n"
            f"PidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\n"
            "StrictModes no\n"  # the state dir is a world-traversable temp dir
            "UsePAM no\n"
            "MaxStartups 1000:30:2000\n"  # a benchmark opens hundreds of logins at once
            "MaxSessions 100\n"
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "UseDNS no\n"
            "LogLevel ERROR\n"
            # sshd runs ForceCommand through the user's shell; Debian's bash sources
            # ~/.bashrc when stdin is a socket unless nested, and a heavy .bashrc (pyenv
            # init) made every exec take 100+ ms. A site box's login shell has no such rc.
            "SetEnv SHLVL=1\n"
            f"ForceCommand {dispatch}\n"
        )

    def start(self) -> SshdServer:
        """Start sshd and return once its port accepts TCP connections.

        Raises ``SshdError`` with sshd's stderr if it cannot run here, exits, or does
        not listen within ``start_timeout`` seconds.
        """
        if self._proc is not None:
            raise SshdError("sshd is already running")
        reason = sshd_available()
        if reason is not None:
            raise SshdError(f"cannot run sshd: {reason}")
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if self._requested_port == 0:
                self._port = _free_port(self._host)
            self._prepare()
            try:
                self._launch()
                return self
            except SshdError as exc:
                retry = self._requested_port == 0 and "Address already in use" in str(exc)
                if not retry or attempt == _PORT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self) -> None:
        """Run sshd in the foreground (``-D``) with logs to a file, and wait for its port."""
        with open(self.log_path, "wb") as log:
            # sshd re-executes itself for every connection, so it must get an absolute path.
            self._proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.state_dir / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.state_dir,
                start_new_session=True,
            )
        deadline = time.monotonic() + self._start_timeout
        while True:
            status = self._proc.poll()
            if status is not None:
                self._proc = None
                raise SshdError(f"sshd exited with status {status}: {self._log_text()}")
            if self._answers_ssh():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise SshdError(
                    f"sshd did not listen on {self._host}:{self._port} within "
                    f"{self._start_timeout:g} s: {self._log_text()}"
                )
            time.sleep(0.02)  # polling a condition with a deadline, not waiting blind

    def _answers_ssh(self) -> bool:
        """True once the port accepts a connection and sshd sends its version banner.

        Sending our own version line before closing keeps sshd from logging an error
        about a client that vanished during identification.
        """
        try:
            with socket.create_connection((self._host, self._port), timeout=0.5) as sock:
                banner = sock.recv(256)
                sock.sendall(b"SSH-2.0-ccctl-ready\r\n")
        except OSError:
            return False
        return banner.startswith(b"SSH-")

    def _log_text(self) -> str:
        """sshd's stderr so far, on one line, or a note that it said nothing."""
        try:
            text = " ".join(self.log_path.read_text(errors="replace").split())
        except OSError:
            text = ""
        return text[-2000:] or "(no output)"

    def stop(self, grace: float = 5.0) -> None:
        """Stop sshd and every process it forked: SIGTERM, up to ``grace`` s, then SIGKILL.

        The listener is frozen first so it forks nothing new while its per-connection
        children (own sessions, out of reach of a process-group kill) are collected.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)
        tree = _process_tree(proc.pid)
        _signal(tree, signal.SIGSTOP)
        tree = list(dict.fromkeys(tree + _process_tree(proc.pid)))  # forked before they froze
        everyone = [proc.pid, *tree]
        _signal(everyone, signal.SIGTERM)
        _signal(everyone, signal.SIGCONT)
        deadline = time.monotonic() + grace
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        while any(_alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.01)  # bounded wait for processes that are not our children
        _signal([pid for pid in tree if _alive(pid)], signal.SIGKILL)

    def __enter__(self) -> SshdServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
