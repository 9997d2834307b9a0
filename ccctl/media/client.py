"""The CLI's side of the control API: a few HTTP calls with the control token (stdlib only,
so ``ccctl broadcast status`` does not load aiohttp or aiortc)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ccctl.errors import CcctlError, NotFound
from ccctl.media.tokens import control_token, load_secret

READY_TIMEOUT_S = 30.0
# The control token must reach our server and nothing else: never through an HTTP proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerDown(CcctlError):
    """No ccctl server answers at the configured address."""

    exit_code = 9


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise CcctlError(f"bad listen address {listen!r} (host:port)") from None


class ControlClient:
    """Calls the control API of the server at ``listen`` with this installation's token."""

    def __init__(self, home: Path, listen: str) -> None:
        self.home = home
        self.base = "http://{}:{}".format(*parse_listen(listen))
        self.token = control_token(load_secret(home))

    @classmethod
    def remote(cls, base_url: str, token: str) -> ControlClient:
        """A client of a server this installation does not run, with a control token given to
        the operator (``dashboard --server URL --token-file F``); no local secret is read."""
        client = cls.__new__(cls)
        client.home = Path()
        client.base = base_url.rstrip("/")
        client.token = token
        return client

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
        """One JSON call; CcctlError with the server's one-line reason on failure."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            reason = exc.read().decode(errors="replace").strip().splitlines()
            error = NotFound if exc.code == 404 else CcctlError  # an unknown site or broadcast: exit 4
            raise error(f"server said {exc.code}: {reason[0] if reason else exc.reason}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            why = getattr(exc, "reason", exc)
            raise ServerDown(f"no ccctl server at {self.base} ({why}); start it: ccctl serve --detach") from None

    def set_floor(self, site_id: str | None) -> dict[str, Any]:
        """Give ``site_id`` the floor, or release it (None); the server's answer."""
        if site_id is None:
            return dict(self.call("DELETE", "/api/floor"))
        return dict(self.call("POST", "/api/floor", {"site": site_id}))

    def set_tier(self, site_id: str, tier: str) -> dict[str, Any]:
        """Move a connected site to ``tier`` now; the server's answer (with the previous tier)."""
        return dict(self.call("PUT", f"/api/sites/{urllib.parse.quote(site_id, safe='')}/tier", {"tier": tier}))

    def alive(self) -> bool:
        """True when the server answers /healthz."""
        try:
            with _OPENER.open(self.base + "/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False


def pidfile(home: Path) -> Path:
    """Where the detached server writes its pid."""
    return home / "serve.pid"


def start_detached(home: Path, listen: str, db_url: str, workers: int | None = None) -> int:
    """Start ``ccctl serve`` in the background (log in $CCCTL_HOME/serve.log); its pid once it answers."""
    client = ControlClient(home, listen)
    if client.alive():
        raise CcctlError(f"a server already answers at {client.base}")
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "serve.log", "ab")
    env = {**os.environ, "CCCTL_HOME": str(home), "CCCTL_DB": db_url}
    argv = [sys.executable, "-m", "ccctl", "serve", "--listen", listen]
    if workers is not None:
        argv += ["--workers", str(workers)]
    proc = subprocess.Popen(argv, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:  # bounded wait for the server to answer
        if proc.poll() is not None:
            raise CcctlError(f"the server exited with {proc.returncode}; see {home / 'serve.log'}")
        if client.alive():
            pidfile(home).write_text(f"{proc.pid}\n")
            return proc.pid
        time.sleep(0.1)
    proc.terminate()
    raise CcctlError(f"the server did not answer within {READY_TIMEOUT_S:.0f} s; see {home / 'serve.log'}")


def stop_detached(home: Path, timeout: float = 30.0) -> int | None:
    """Stop the detached server; its pid, or None when none ran."""
    path = pidfile(home)
    if not path.exists():
        return None
    pid = int(path.read_text().strip())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if b"ccctl" not in cmdline or b"serve" not in cmdline:  # gone, or the pid was reused
        path.unlink()
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink()
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # another session's process: poll until it is gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return pid
