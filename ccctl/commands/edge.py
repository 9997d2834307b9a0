"""``ccctl edge``: the media servers (Janus) ccctl feeds and drives as its edges."""

from __future__ import annotations

from typing import Any

import click

from ccctl.cli import AppContext, confirm, run_async, say
from ccctl.commands.common import format_options, resolve_format, site_filter, site_filter_options
from ccctl.edges.keys import check_key_file
from ccctl.output import emit
from ccctl.registry.edges import Edge, add_edge, get_edge, list_edges, region_of, remove_edge

COLUMNS = ["name", "kind", "api_url", "admin_url", "srtp", "region", "capacity", "admin_key_file"]
STATUS_COLUMNS = ["name", "up", "mountpoints", "viewers", "capacity", "room", "region", "error"]


@click.group()
def edge() -> None:
    """Edges: Janus servers fed each tier of a live broadcast, serving the sites of a region."""


@edge.command("add")
@click.argument("name")
@click.option("--api", "api_url", required=True, metavar="URL", help="Janus's HTTP API (http://HOST:8088/janus).")
@click.option("--admin-key-file", required=True, metavar="FILE",
              help="File holding the streaming plugin's admin_key (mode 600; read at use, never stored);"
                   " a second line, if any, is Janus's admin_secret (else the same key).")
@click.option("--admin-api", "admin_url", metavar="URL",
              help="Janus's admin API (http://HOST:7088/admin): ccctl reads who watches there (attendance, stats).")
@click.option("--srtp/--no-srtp", default=None,
              help="Send the edge SRTP (a key per mountpoint) or plain RTP; default: SRTP unless --api is loopback.")
@click.option("--capacity", type=int, metavar="N", help="Viewers this edge may serve (default: no limit).")
@site_filter_options
@format_options
@click.pass_obj
def add_cmd(obj: AppContext, name: str, api_url: str, admin_key_file: str, capacity: int | None,
            admin_url: str | None, srtp: bool | None, fmt: str | None, as_json: bool, as_csv: bool,
            **filters: Any) -> None:
    """Register edge NAME, serving the sites the filters select (its region; none: all)."""
    region = region_of(site_filter(filters))
    key_file = check_key_file(admin_key_file)
    added = add_edge(obj.db, Edge(name=name, api_url=api_url, admin_key_file=str(key_file), region=region,
                                  capacity=capacity, admin_url=admin_url, srtp=srtp))
    say(f"edge {added.name} added")
    emit([added.record()], resolve_format(obj, fmt, as_json, as_csv), COLUMNS)


@edge.command("list")
@format_options
@click.pass_obj
def list_cmd(obj: AppContext, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """The registered edges."""
    emit([e.record() for e in list_edges(obj.db)], resolve_format(obj, fmt, as_json, as_csv), COLUMNS)


@edge.command("status")
@click.argument("names", nargs=-1)
@format_options
@click.pass_obj
def status_cmd(obj: AppContext, names: tuple[str, ...], fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Ask each edge (or NAMES) whether it is up, and its mountpoints' viewers."""
    from ccctl.edges.status import probe_all

    edges = [get_edge(obj.db, n) for n in names] if names else list_edges(obj.db)
    emit(run_async(probe_all(edges)), resolve_format(obj, fmt, as_json, as_csv), STATUS_COLUMNS)


@edge.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def remove_cmd(obj: AppContext, name: str, yes: bool) -> None:
    """Forget edge NAME (a running server stops feeding it and moves its sites within seconds)."""
    get_edge(obj.db, name)
    confirm(click.get_current_context(), f"Remove edge {name}?", yes)
    remove_edge(obj.db, name)
    say(f"edge {name} removed")
