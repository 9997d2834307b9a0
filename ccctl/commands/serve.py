"""``ccctl serve``: run the media and control server (foreground, or --detach / --stop), over
plain http or https (``--tls self-signed``, or ``--tls-cert F --tls-key F``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ccctl.cli import AppContext, run_async, say

if TYPE_CHECKING:
    from pathlib import Path

    from ccctl.config import ServeConfig
    from ccctl.media.tls import ServerTLS


@click.command("serve")
@click.option("--listen", metavar="HOST:PORT", help="Address to bind (default: serve.listen, loopback).")
@click.option("--workers", type=click.IntRange(0, 64), metavar="N",
              help="Fan-out worker processes for the sites' connections (default: serve.workers; 0: none).")
@click.option("--tls", "tls", type=click.Choice(["self-signed", "off"]),
              help="https with a certificate ccctl makes once and keeps in $CCCTL_HOME/tls/ (its fingerprint is "
                   "printed), or off: plain http whatever the config says (default: serve.tls).")
@click.option("--tls-cert", metavar="FILE", type=click.Path(dir_okay=False),
              help="https with this PEM certificate (then its chain); needs --tls-key (default: serve.tls_cert).")
@click.option("--tls-key", metavar="FILE", type=click.Path(dir_okay=False),
              help="The certificate's PEM private key, unencrypted (default: serve.tls_key).")
@click.option("--detach", is_flag=True, help="Run in the background (pidfile and log under $CCCTL_HOME).")
@click.option("--stop", "stop_", is_flag=True, help="Stop the background server.")
@click.pass_obj
def serve(obj: AppContext, listen: str | None, workers: int | None, tls: str | None, tls_cert: str | None,
          tls_key: str | None, detach: bool, stop_: bool) -> None:
    """The long-running server: media core, control API, WHEP endpoints, join pages, /metrics.

    Over https, the CLI on this machine pins the server's own certificate (it reads it from
    $CCCTL_HOME/serve.json, which the running server writes); give the fingerprint printed at
    start to whoever checks the server from elsewhere."""
    from ccctl.errors import UsageError
    from ccctl.media.client import parse_listen, start_detached, stop_detached

    config = obj.config
    address = listen or config.serve.listen
    if stop_:
        pid = stop_detached(config.home)
        say(f"stopped server {pid}" if pid else "no background server was running")
        return
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if tls_cert and tls:
        raise UsageError("--tls and --tls-cert/--tls-key exclude each other")
    host, port = parse_listen(address)
    server_tls = _server_tls(config.home, config.serve, host, tls, tls_cert, tls_key)
    scheme = "https" if server_tls else "http"
    if detach:
        args: tuple[str, ...] = ("--tls", "off")
        if server_tls is not None:
            args = ("--tls-cert", str(server_tls.cert), "--tls-key", str(server_tls.key))
        pid = start_detached(config.home, address, config.db_url, workers, args, obj.config_file)
        say(f"server {pid} listening on {scheme}://{address} (log: {config.home / 'serve.log'})")
        return
    from ccctl.media import calibrate
    from ccctl.media.server import serve as run_server
    from ccctl.media.tls import remove_card, write_card

    count = config.serve.workers if workers is None else workers
    if calibrate.is_auto(config.admission):  # measured once, here: the server takes this figure
        say(calibrate.calibration(config.admission).line())

    def ready() -> None:
        write_card(config.home, address, server_tls)
        say(f"listening on {scheme}://{host}:{port}" + (f" ({count} fan-out workers)" if count else ""))

    try:
        run_async(run_server(config.db_url, config.home, host, port, workers=count, ready=ready,
                             ssl_context=server_tls.context() if server_tls else None, config=config))
    finally:
        remove_card(config.home)


def _server_tls(home: Path, serve: ServeConfig, host: str, tls: str | None, cert: str | None,
                key: str | None) -> ServerTLS | None:
    """The certificate to serve with (options first, then the config), its fingerprint said
    on stderr; None for plain http."""
    from ccctl.media import tls as tlsmod

    if tls == "off":
        return None
    if cert and key:
        chosen = tlsmod.files(cert, key)
        say(f"TLS certificate {chosen.cert}: SHA256 {chosen.fingerprint}")
        return chosen
    if tls == "self-signed" or (tls is None and serve.tls == "self-signed"):
        chosen, what = tlsmod.self_signed(home, tlsmod.names_for(host, serve.public_url))
        say(f"TLS self-signed certificate ({what}, {chosen.cert}): SHA256 {chosen.fingerprint}")
        return chosen
    if tls is None and serve.tls_cert:
        chosen = tlsmod.files(serve.tls_cert, serve.tls_key)
        say(f"TLS certificate {chosen.cert}: SHA256 {chosen.fingerprint}")
        return chosen
    return None
