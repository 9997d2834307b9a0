"""``ccctl serve``: run the media and control server (foreground, or --detach / --stop)."""

from __future__ import annotations

import click

from ccctl.cli import AppContext, run_async, say


@click.command("serve")
@click.option("--listen", metavar="HOST:PORT", help="Address to bind (default: serve.listen, loopback).")
@click.option("--workers", type=click.IntRange(0, 64), metavar="N",
              help="Fan-out worker processes for the sites' connections (default: serve.workers; 0: none).")
@click.option("--detach", is_flag=True, help="Run in the background (pidfile and log under $CCCTL_HOME).")
@click.option("--stop", "stop_", is_flag=True, help="Stop the background server.")
@click.pass_obj
def serve(obj: AppContext, listen: str | None, workers: int | None, detach: bool, stop_: bool) -> None:
    """The long-running server: media core, control API, WHEP endpoints, join pages, /metrics."""
    from ccctl.media.client import parse_listen, start_detached, stop_detached

    config = obj.config
    address = listen or config.serve.listen
    if stop_:
        pid = stop_detached(config.home)
        say(f"stopped server {pid}" if pid else "no background server was running")
        return
    if detach:
        pid = start_detached(config.home, address, config.db_url, workers)
        say(f"server {pid} listening on http://{address} (log: {config.home / 'serve.log'})")
        return
    from ccctl.media.server import serve as run_server

    host, port = parse_listen(address)
    count = config.serve.workers if workers is None else workers
    run_async(run_server(config.db_url, config.home, host, port, workers=count,
                         ready=lambda: say(f"listening on http://{host}:{port}"
                                           + (f" ({count} fan-out workers)" if count else ""))))
