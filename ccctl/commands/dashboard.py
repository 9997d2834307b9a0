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
                   "needs --token-file. Re-check and revoke need the registry and are not offered.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="File holding the server's control token (`broadcast links --program` prints it).")
@click.pass_obj
def dashboard(obj: AppContext, readonly: bool, wall: bool, poll_s: float, server_url: str | None,
              token_file: Path | None) -> None:
    """The whole country on one screen: counts by state, provinces worst first, drill-down to
    every site, a filter, the map, the event log; re-check, floor, tier and revoke from it."""
    from ccctl.errors import UsageError

    if (server_url is None) != (token_file is None):
        raise UsageError("--server and --token-file go together")
    token = None
    if server_url and token_file:
        token = read_token(token_file)
        check_remote(server_url, token)
    run_dashboard(obj, readonly=readonly, wall=wall, poll_s=poll_s, server_url=server_url, token=token)


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
        raise


def run_dashboard(obj: AppContext, readonly: bool = False, wall: bool = False, poll_s: float = 2.0,
                  server_url: str | None = None, token: str | None = None) -> None:
    """Run the dashboard on this context's registry and server (or a remote server) until the
    operator quits."""
    from ccctl.rollcall.session import options_from_config
    from ccctl.tui.app import Dashboard

    config = obj.config
    app = Dashboard(config.db_url, config.home, config.serve.listen, readonly=readonly, wall=wall,
                    rollcall_options=options_from_config(config), poll_s=poll_s, server_url=server_url, token=token)
    app.run()
