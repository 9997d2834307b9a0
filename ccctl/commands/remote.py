"""``ccctl exec`` (a command on many sites' boxes at once) and ``ccctl ssh`` (a shell on one).

``exec`` exits 0 when every site ran the command with status 0, 1 when any did not, and 2
on bad usage. ``ssh`` exits with the remote shell's status.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from ccctl.cli import AppContext, run_async, say
from ccctl.commands.common import acting_site_filter_options, format_options, resolve_format, site_filter
from ccctl.errors import UsageError
from ccctl.output import emit


@click.command("exec", context_settings={"ignore_unknown_options": False}, epilog=__doc__.split("\n\n", 1)[1])
@acting_site_filter_options
@click.option("--concurrency", type=click.IntRange(1, 5000), help="Sites at once (default: rollcall.concurrency).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 3600), default=30.0, help="Seconds per site.")
@click.option("--insecure", is_flag=True, help="Do not verify SSH host keys.")
@format_options
@click.argument("command", nargs=-1, required=True)
@click.pass_obj
def exec_cmd(obj: AppContext, concurrency: int | None, timeout_s: float, insecure: bool, fmt: str | None,
             as_json: bool, as_csv: bool, command: tuple[str, ...], **kwargs: Any) -> None:
    """Run COMMAND on the selected sites' boxes: ccctl exec --province 96 -- uptime"""
    from ccctl.registry.sites import select_sites
    from ccctl.rollcall.runner import run_command

    flt = site_filter(kwargs, enabled_only=True)
    sites = select_sites(obj.db, flt)
    if not sites:
        raise UsageError("no enabled site matches")
    config = obj.config
    verify = config.ssh.verify_host_keys and not insecure
    key = str(config.client_key_path) if config.client_key_path.exists() else None
    results = run_async(run_command([(s.id, s.endpoint(verify)) for s in sites], shlex.join(command),
                                    concurrency=concurrency or config.rollcall.concurrency, timeout=timeout_s,
                                    client_key=key))
    emit([{"site_id": r.site_id, "state": r.state.value, "exit_status": r.exit_status, "stdout": r.stdout.rstrip("\n"),
           "stderr": r.stderr.rstrip("\n"), "reason": r.reason, "duration_ms": r.duration_ms} for r in results],
         resolve_format(obj, fmt, as_json, as_csv))
    ok = sum(1 for r in results if r.exit_status == 0)
    say(f"exec: {ok}/{len(results)} sites exited 0")
    raise click.exceptions.Exit(0 if ok == len(results) else 1)


@click.command("ssh")
@click.argument("site_id")
@click.option("--insecure", is_flag=True, help="Do not verify the SSH host key.")
@click.argument("command", nargs=-1)
@click.pass_obj
def ssh_cmd(obj: AppContext, site_id: str, insecure: bool, command: tuple[str, ...]) -> None:
    """Open an interactive shell on one site's box, with the registry's host key and login key."""
    import os
    import subprocess
    import tempfile

    from ccctl.registry.sites import get_site

    site = get_site(obj.db, site_id)
    if not site.host:
        raise UsageError(f"site {site_id} has no endpoint")
    config = obj.config
    args = ["ssh", "-p", str(site.ssh_port), "-l", site.ssh_user]
    if not sys.stdin.isatty():
        args += ["-o", "BatchMode=yes"]  # never prompt when no one is at a terminal
    known_file: str | None = None
    key = site.key_path or (str(config.client_key_path) if config.client_key_path.exists() else None)
    if key:
        args += ["-i", key, "-o", "IdentitiesOnly=yes"]
    if insecure or not config.ssh.verify_host_keys:
        args += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    elif site.host_key and site.host_key.startswith("known_hosts:"):
        args += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={site.host_key[len('known_hosts:'):]}"]
    elif site.host_key:
        known = tempfile.NamedTemporaryFile("w", prefix="ccctl-known-", delete=False)
        host = site.host if site.ssh_port == 22 else f"[{site.host}]:{site.ssh_port}"
        known.write(f"{host} {site.host_key}\n")
        known.close()
        known_file = known.name
        args += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known.name}"]
    else:
        raise UsageError(f"site {site_id} has no host key in the registry; record one, or pass --insecure")
    args += [site.host, *command]
    try:
        status = subprocess.call(args)
    finally:
        if known_file:
            os.unlink(known_file)
    raise click.exceptions.Exit(status)
