"""``ccctl dashboard``: the live Textual monitor (the TUI is imported only when it runs)."""

from __future__ import annotations

from pathlib import Path

import click

from ccctl.cli import AppContext


@click.command()
@click.option("--readonly", is_flag=True, help="Watch only: no action exists (keys and palette entries gone).")
@click.option("--wall", is_flag=True, help="For a wall screen: read-only, high contrast, cycles through the "
                                           "provinces with sites down.")
@click.option("--poll", "poll_s", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True,
              help="Seconds between reads of the registry (each read starts after the last one ended).")
@click.option("--server", "server_url", metavar="URL",
              help="Watch the ccctl server at URL (e.g. http://10.0.0.5:8080) instead of this machine's registry; "
                   "needs --token-file. Re-check, revoke, diagnostics and the shell need the registry "
                   "and are not offered.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="File holding the server's control token (`broadcast links --program` prints it).")
@click.option("--serve", is_flag=True, help="Serve the dashboard to browsers (the room's wall screens) instead of "
                                            "this terminal; --wall unless --readonly or --serve-actions is given.")
@click.option("--listen", metavar="HOST:PORT", help="Where --serve listens (default 127.0.0.1:8765: loopback).")
@click.option("--serve-actions", is_flag=True, help="With --serve: the browsers may act (re-check, floor, tier, "
                                                     "revoke), as the control token allows. Off by default.")
@click.option("--sessions", "max_sessions", type=click.IntRange(1, 64), default=8, show_default=True,
              help="With --serve: dashboards running at once (one per browser); more wait (503).")
@click.pass_obj
def dashboard(obj: AppContext, readonly: bool, wall: bool, poll_s: float, server_url: str | None,
              token_file: Path | None, serve: bool, listen: str | None, serve_actions: bool, max_sessions: int) -> None:
    """The whole country on one screen: counts by state, provinces worst first, drill-down to
    every site, a filter, the map, the event log; re-check, floor, tier, revoke, a site's
    diagnostics and an SSH shell on its box from it.

    With --serve, browsers show it: open http://HOST:PORT/ once with ?token=CONTROL_TOKEN (a
    kiosk's start URL) or type the token into the page; the browser keeps a cookie derived from
    it. The page starts the dashboard without a click and reconnects by itself; ?fontsize=24
    (8 to 64) enlarges the type."""
    from ccctl.errors import UsageError

    if (server_url is None) != (token_file is None):
        raise UsageError("--server and --token-file go together")
    if not serve and (listen or serve_actions):
        raise UsageError("--listen and --serve-actions go with --serve")
    if serve_actions and (readonly or wall):
        raise UsageError("--serve-actions cannot go with --readonly or --wall")
    token = None
    if server_url and token_file:
        token = read_token(token_file)
        check_remote(server_url, token)
    if serve:
        mode = "actions" if serve_actions else "readonly" if readonly and not wall else "wall"
        serve_dashboard(obj, listen or DEFAULT_SERVE_LISTEN, mode, poll_s, server_url, token_file, token, max_sessions)
        return
    run_dashboard(obj, readonly=readonly, wall=wall, poll_s=poll_s, server_url=server_url, token=token)


DEFAULT_SERVE_LISTEN = "127.0.0.1:8765"


def serve_dashboard(obj: AppContext, listen: str, mode: str, poll_s: float, server_url: str | None,
                    token_file: Path | None, token: str | None, max_sessions: int) -> None:
    """Serve the dashboard in ``mode`` (wall, readonly or actions) until interrupted; the page
    asks for the control token (of the remote server with --server, else this installation's)."""
    import ipaddress
    import os
    import shlex
    import sys

    from ccctl.cli import run_async, say
    from ccctl.media.client import parse_listen
    from ccctl.media.tokens import control_token, load_secret
    from ccctl.tui.serve import serve_dashboard as serve_forever

    config = obj.config
    host, port = parse_listen(listen)
    # Each browser's dashboard is a child process; it finds this registry and home through the
    # environment (not its command line, where `ps` would show a database password).
    os.environ["CCCTL_HOME"] = str(config.home)
    os.environ["CCCTL_DB"] = config.db_url
    args = [sys.executable, "-m", "ccctl", *(["--config", obj.config_file] if obj.config_file else []), "dashboard",
            "--poll", f"{poll_s:g}"]
    args += {"wall": ["--wall"], "readonly": ["--readonly"], "actions": []}[mode]
    if server_url and token_file:
        args += ["--server", server_url, "--token-file", str(token_file.resolve())]
    page_token = token or control_token(load_secret(config.home))
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"

    def ready(url: str) -> None:
        say(f"dashboard ({mode}) served on {url}: open it once with ?token=<control token>, or type the token "
            "into the page" + ("" if loopback else "; not loopback: plain http, use it on the room's network only"))

    try:
        run_async(serve_forever(shlex.join(args), host, port, page_token, max_sessions=max_sessions, ready=ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        from ccctl.errors import CcctlError

        raise CcctlError(f"cannot listen on {listen}: {exc.strerror or exc}") from None


def read_token(path: Path) -> str:
    """The control token in ``path`` (its first line); UsageError when it holds none."""
    from ccctl.errors import UsageError

    lines = path.read_text(encoding="utf-8").strip().splitlines()
    if not lines or not lines[0].strip():
        raise UsageError(f"{path} holds no token")
    return lines[0].strip()


def check_remote(server_url: str, token: str) -> None:
    """Refuse to start unless the server answers and takes the token (one clear line if not)."""
    from ccctl.errors import CcctlError
    from ccctl.media.client import ControlClient

    if not server_url.startswith(("http://", "https://")):
        raise CcctlError(f"bad --server {server_url!r} (http://HOST:PORT)")
    try:
        ControlClient.remote(server_url, token).call("GET", "/api/broadcast", timeout=10)
    except CcctlError as exc:
        if "401" in str(exc):
            raise CcctlError(f"{server_url} refused the control token") from None
        if "409" not in str(exc):  # 409: several broadcasts live and none named, the token was taken
            raise


def run_dashboard(obj: AppContext, readonly: bool = False, wall: bool = False, poll_s: float = 2.0,
                  server_url: str | None = None, token: str | None = None) -> None:
    """Run the dashboard on this context's registry and server (or a remote server) until the
    operator quits."""
    from ccctl.rollcall.session import options_from_config
    from ccctl.tui.app import Dashboard

    config = obj.config
    app = Dashboard(config.db_url, config.home, config.serve.listen, readonly=readonly, wall=wall,
                    rollcall_options=options_from_config(config), poll_s=poll_s, server_url=server_url, token=token,
                    config_file=obj.config_file)
    app.run()
