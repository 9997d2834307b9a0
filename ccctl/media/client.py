"""The CLI's side of the control API: a few HTTP calls with the control token (stdlib only,
so ``ccctl broadcast status`` does not load aiohttp or aiortc).

Over https the server's certificate is always checked (:class:`~ccctl.media.tls.ServerTrust`):
the local server's own fingerprint, read from the card it writes in ``$CCCTL_HOME``, is
pinned; a remote server is checked with the trust its caller gives (a pinned fingerprint or a
CA file; the system's store by default). A certificate refused is CertificateRefused (exit 12).
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ccctl.errors import CcctlError, CertificateRefused, NotFound, error_class
from ccctl.media.tls import ServerTrust, read_card, refused
from ccctl.media.tokens import control_token, load_secret

READY_TIMEOUT_S = 30.0
# The control token must reach our server and nothing else: never through an HTTP proxy.
_NO_PROXY = urllib.request.ProxyHandler({})


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


def local_endpoint(home: Path, listen: str) -> tuple[str, ServerTrust | None]:
    """(base URL, trust) of this installation's server at ``listen``: https with its own
    certificate's fingerprint pinned when its card says it speaks https, else plain http."""
    host, port = parse_listen(listen)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    card = read_card(home, listen)
    if card is not None and card.get("scheme") == "https" and card.get("fingerprint"):
        return f"https://{where}", ServerTrust(fingerprint=str(card["fingerprint"]))
    return f"http://{where}", None


def site_base(home: Path, serve: Any) -> str:
    """The base of the sites' join links (``serve`` is the config's ServeConfig): its
    ``public_url``, else https on the listen address when the server running there speaks
    https (``serve --tls ...`` given on its command line), else what the configuration says."""
    if not serve.public_url and local_endpoint(home, serve.listen)[0].startswith("https://"):
        return f"https://{serve.listen}"
    return str(serve.site_base())


class _PinnedConnection(http.client.HTTPSConnection):
    """An https connection that refuses the server before sending anything unless its
    certificate is the pinned one."""

    def __init__(self, *args: Any, trust: ServerTrust, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trust = trust

    def connect(self) -> None:
        super().connect()
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self._trust.check(self.sock.getpeercert(binary_form=True), f"the server at {self.host}:{self.port}")
        except CertificateRefused:
            self.close()
            raise


class _TrustHandler(urllib.request.HTTPSHandler):
    """urllib's https with a :class:`ServerTrust`."""

    def __init__(self, trust: ServerTrust) -> None:
        super().__init__(context=trust.context())
        self._trust = trust

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_PinnedConnection, trust=self._trust)
        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined, no-any-return]


def opener(trust: ServerTrust | None) -> urllib.request.OpenerDirector:
    """A urllib opener that never uses a proxy and checks https servers with ``trust`` (the
    system's store when None)."""
    return urllib.request.build_opener(_NO_PROXY, _TrustHandler(trust or ServerTrust()))


class ControlClient:
    """Calls the control API of the server at ``listen`` with this installation's token."""

    def __init__(self, home: Path, listen: str) -> None:
        self.home = home
        self.base, trust = local_endpoint(home, listen)
        self.token = control_token(load_secret(home))
        self._opener = opener(trust)

    @classmethod
    def remote(cls, base_url: str, token: str, trust: ServerTrust | None = None) -> ControlClient:
        """A client of a server this installation does not run, with a control token given to
        the operator (``dashboard --server URL --token-file F``); no local secret is read. An
        https server is checked with ``trust`` (the system's store when None)."""
        client = cls.__new__(cls)
        client.home = Path()
        client.base = base_url.rstrip("/")
        client.token = token
        client._opener = opener(trust)
        return client

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
        """One JSON call; on failure the server's one-line reason in the error it names
        (``Ccctl-Error``: a MediaError exits 11 as it would in this process), NotFound for a
        404, CcctlError otherwise; ServerDown when nothing answers, CertificateRefused when
        the server's certificate is not the trusted one."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with self._open(request, timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            reason = exc.read().decode(errors="replace").strip().splitlines()
            error = error_class(exc.headers.get("Ccctl-Error", ""))
            if error is CcctlError and exc.code == 404:
                error = NotFound  # an unknown site or broadcast: exit 4
            raise error(f"server said {exc.code}: {reason[0] if reason else exc.reason}") from None
        except (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError) as exc:  # cut while read
            raise self._down(exc) from None

    def _open(self, request: urllib.request.Request | str, timeout: float) -> http.client.HTTPResponse:
        """Open ``request``; ServerDown or CertificateRefused (one line) when it cannot."""
        try:
            response: http.client.HTTPResponse = self._opener.open(request, timeout=timeout)
            return response
        except urllib.error.HTTPError:
            raise
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise refused(f"the server at {self.base}", exc.reason) from None
            raise self._down(exc.reason) from None
        except (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError) as exc:
            raise self._down(exc) from None

    def _down(self, why: object) -> ServerDown:
        hint = ""
        cut = isinstance(why, (http.client.HTTPException, ConnectionError)) and not isinstance(why, ConnectionRefusedError)
        if self.base.startswith("http://") and cut:  # something answered, then hung up: a TLS port?
            hint = "; does it speak https?"
        why = why or type(why).__name__
        return ServerDown(f"no ccctl server at {self.base} ({why}{hint}); start it: ccctl serve --detach")

    def set_floor(self, site_id: str | None) -> dict[str, Any]:
        """Give ``site_id`` the floor, or release it (None); the server's answer."""
        if site_id is None:
            return dict(self.call("DELETE", "/api/floor"))
        return dict(self.call("POST", "/api/floor", {"site": site_id}))

    def set_tier(self, site_id: str, tier: str) -> dict[str, Any]:
        """Move a connected site to ``tier`` now; the server's answer (with the previous tier)."""
        return dict(self.call("PUT", f"/api/sites/{urllib.parse.quote(site_id, safe='')}/tier", {"tier": tier}))

    def alive(self) -> bool:
        """True when the server answers /healthz (CertificateRefused when it is not the trusted one)."""
        try:
            with self._open(self.base + "/healthz", 2) as response:
                return bool(response.status == 200)
        except (ServerDown, urllib.error.HTTPError):
            return False


def pidfile(home: Path) -> Path:
    """Where the detached server writes its pid."""
    return home / "serve.pid"


def start_detached(home: Path, listen: str, db_url: str, workers: int | None = None,
                   tls_args: tuple[str, ...] = (), config_file: str | Path | None = None) -> int:
    """Start ``ccctl serve`` in the background (log in $CCCTL_HOME/serve.log); its pid once it
    answers. ``tls_args`` are its TLS options (``--tls self-signed`` ...); ``config_file`` the
    ``--config`` file this command was given, which the server reads too.

    A server that exits before it answers (a port in use, a TLS file it cannot use, a changed
    library) raises :class:`ServerStartFailed`: its own reason and its exit code."""
    client = ControlClient(home, listen)
    if client.alive():
        raise CcctlError(f"a server already answers at {client.base}")
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "serve.log", "ab")
    start = log.seek(0, os.SEEK_END)  # what this server writes begins here
    env = {**os.environ, "CCCTL_HOME": str(home), "CCCTL_DB": db_url}
    config = ("--config", str(Path(config_file).resolve())) if config_file else ()
    argv = [sys.executable, "-m", "ccctl", *config, "serve", "--listen", listen, *tls_args]
    if workers is not None:
        argv += ["--workers", str(workers)]
    proc = subprocess.Popen(argv, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:  # bounded wait for the server to answer
        if proc.poll() is not None:
            raise ServerStartFailed(proc.returncode, start_failure(home / "serve.log", start, proc.returncode))
        client = ControlClient(home, listen)  # reads the card the new server writes (https or not)
        if client.alive():
            pidfile(home).write_text(f"{proc.pid}\n")
            return proc.pid
        time.sleep(0.1)
    proc.terminate()
    raise CcctlError(f"the server did not answer within {READY_TIMEOUT_S:.0f} s; see {home / 'serve.log'}")


class ServerStartFailed(CcctlError):
    """A detached server exited before it answered; the CLI exits with the server's own code
    (1 when the server was killed by a signal or claimed success)."""

    def __init__(self, returncode: int, reason: str) -> None:
        super().__init__(reason)
        self.exit_code = returncode if returncode > 0 else 1


#: Most of the log's end read for a failed start's reason (a traceback fits many times over).
FAILURE_TAIL_BYTES = 64 * 1024


def start_failure(log: Path, start: int, returncode: int) -> str:
    """The one line a server that failed to start gave as its reason, read from what it wrote to
    its log after ``start``: its last ``Error:`` line (the CLI's own report of a CcctlError),
    else the last line of an uncaught traceback; with where the rest is.

    The log is the detached server's only stdout and stderr for its whole life, so it is where
    the reason is: a pipe would break the server's output once this parent exits, and a status
    file would need the child to know about it. Only the tail written since ``start`` is read
    (bounded), so an older server's lines in the same log are never taken for this one's."""
    try:
        with open(log, "rb") as f:
            f.seek(max(start, f.seek(0, os.SEEK_END) - FAILURE_TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    if errors:
        reason = errors[-1].removeprefix("Error: ")
    elif lines and not lines[-1].startswith(("Traceback", "File ")):
        reason = f"the server exited with {returncode}: {lines[-1]}"
    else:
        reason = f"the server exited with {returncode}"
    return f"{reason[:300]} (see {log})"


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
