"""``ccctl broadcast``: start, watch and stop the program fanned out to the sites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ccctl.cli import AppContext, say
from ccctl.commands.common import format_options, resolve_format, site_filter, site_filter_options
from ccctl.output import emit


def _client(obj: AppContext) -> Any:
    from ccctl.media.client import ControlClient

    return ControlClient(obj.config.home, obj.config.serve.listen)


@click.group()
def broadcast() -> None:
    """Broadcasts: one program to every site over WebRTC (WHEP out, WHIP in), and the floor."""


@broadcast.command("start")
@click.option("--source", default="testsrc", show_default=True, metavar="testsrc|file:PATH|whip",
              help="whip: the program waits (black, silent) for a WHIP publisher at /whip/program "
                   "with the control token (`links --program` prints both).")
@click.option("--title", default="Hội nghị trực tuyến", show_default=True)
@click.option("--record", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Also write the program as sent (best tier, H.264 + Opus) to FILE: .ts (MPEG-TS) or .mkv.")
@click.pass_obj
def start(obj: AppContext, source: str, title: str, record: str | None) -> None:
    """Start a broadcast (starting the server in the background if none answers)."""
    from ccctl.media.client import start_detached

    client = _client(obj)
    if not client.alive():
        pid = start_detached(obj.config.home, obj.config.serve.listen, obj.config.db_url)
        say(f"no server was running: started one in the background (pid {pid}, {client.base})")
    body = {"source": source, "title": title}
    if record is not None:
        body["record"] = str(Path(record).resolve())  # the server's working directory is not ours
    result = client.call("POST", "/api/broadcast", body)
    say(f"broadcast {result['id']} live: {result['title']} ({result['source']})")
    if result.get("record"):
        say(f"recording the program to {result['record']}")
    if result["source"] == "whip":
        say(f"waiting for the program at {client.base}/whip/program (`ccctl broadcast links --program` gives "
            "the URL and token to publish with)")


@broadcast.command("status")
@format_options
@click.pass_obj
def status(obj: AppContext, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Connected sites with their tier and link figures."""
    data = _client(obj).call("GET", "/api/broadcast")
    if not data["live"]:
        say("no live broadcast")
    else:
        floor = f", floor: {data['floor']}" if data.get("floor") else ""
        if data.get("floor") and data.get("on_air") != data["floor"]:
            floor += " (its uplink is not on air yet)"
        say(f"broadcast {data['id']}: {data['title']} ({data['source']}), {len(data['sessions'])} site(s) "
            f"connected{floor}")
    columns = ["site_id", "session_id", "tier", "state", "floor", "joined_at", "kbps", "packets_sent", "fraction_lost",
               "rtt_ms", "jitter_ms"]
    if any("worker" in row for row in data["sessions"]):
        columns.append("worker")  # serve --workers: which fan-out worker holds the site
    if any(row.get("edge") for row in data["sessions"]):
        columns.append("edge")  # sites played from a Janus edge (ccctl/edges)
    emit(data["sessions"], resolve_format(obj, fmt, as_json, as_csv), columns)


@broadcast.command("floor")
@click.argument("site_id", metavar="[SITE]", required=False)
@click.option("--release", is_flag=True, help="Take the floor back: the program returns to the main source.")
@click.pass_obj
def floor(obj: AppContext, site_id: str | None, release: bool) -> None:
    """Give SITE the floor: its join page sends its camera and microphone, which become the
    program for every site (within a second); `--release` returns to the main source."""
    from ccctl.errors import UsageError

    if (site_id is None) == (not release):
        raise UsageError("give either a SITE or --release")
    result = _client(obj).set_floor(None if release else site_id)
    if release:
        say(f"floor released (was {result['released']})" if result["released"] else "nobody held the floor")
    else:
        was = result.get("previous")
        say(f"{site_id} has the floor" + (f" (taken from {was})" if was and was != site_id else ""))


@broadcast.command("tier")
@click.argument("site_id", metavar="SITE")
@click.argument("tier", type=click.Choice(["high", "low", "audio"]))
@click.option("--save", is_flag=True, help="Also make TIER the site's registry tier (its next joins start there); "
                                           "for a site not connected now, use `sites edit --tier`.")
@click.pass_obj
def tier(obj: AppContext, site_id: str, tier: str, save: bool) -> None:
    """Move a connected SITE to TIER now (audio: sound only). Its own RTCP reports may still move
    it down, and back up to TIER but not above, for the rest of its session."""
    result = _client(obj).set_tier(site_id, tier)
    say(f"{site_id} moved to {tier}" + (f" (was {result['previous']})" if result["previous"] != tier else " (already)"))
    if save:
        from ccctl.registry.sites import edit_site

        edit_site(obj.db, site_id, {"tier": tier})
        say(f"{site_id}: registry tier is now {tier}")


@broadcast.command("stop")
@click.pass_obj
def stop(obj: AppContext) -> None:
    """End the live broadcast."""
    result = _client(obj).call("DELETE", "/api/broadcast")
    say(f"broadcast {result['id']} stopped")


@broadcast.command("links")
@site_filter_options
@click.option("--program", "program", is_flag=True,
              help="The control room's WHIP URL and token instead (to publish a `--source whip` program).")
@format_options
@click.pass_obj
def links(obj: AppContext, fmt: str | None, as_json: bool, as_csv: bool, program: bool, **kwargs: Any) -> None:
    """Each selected site's join URL with its token (give them to the sites, nobody else)."""
    from ccctl.media.client import site_base
    from ccctl.media.tokens import control_token, generation, load_secret, site_token
    from ccctl.registry.sites import select_sites

    secret = load_secret(obj.config.home)
    base = site_base(obj.config.home, obj.config.serve)  # https when the server runs with TLS
    if program:
        emit([{"name": "program", "whip_url": f"{base}/whip/program", "token": control_token(secret)}],
             resolve_format(obj, fmt, as_json, as_csv))
        return
    rows = []
    for site in select_sites(obj.db, site_filter(kwargs, enabled_only=True)):
        token = site_token(secret, site.id, generation(obj.db, site.id))
        rows.append({"site_id": site.id, "name": site.name, "tier": site.tier,
                     "join_url": f"{base}/join/{site.id}?t={token}", "whep_url": f"{base}/whep/{site.id}",
                     "whip_url": f"{base}/whip/{site.id}", "token": token})
    emit(rows, resolve_format(obj, fmt, as_json, as_csv))


@broadcast.command("revoke")
@click.argument("site_id")
@click.pass_obj
def revoke(obj: AppContext, site_id: str) -> None:
    """Invalidate a site's token: its old links stop working, every live session of it (what
    it watches and what it sends) is cut, and the floor is taken back if it holds it; `links`
    prints the new token."""
    from urllib.parse import quote

    from ccctl.media import state
    from ccctl.media.tokens import revoke as revoke_token
    from ccctl.registry.sites import get_site

    get_site(obj.db, site_id)
    gen = revoke_token(obj.db, site_id)
    say(f"revoked the tokens of {site_id}; generation is now {gen}")
    client = _client(obj)
    if client.alive():
        result = client.call("DELETE", f"/api/sites/{quote(site_id, safe='')}/session", {"why": "revoked"})
        released = result.get("floor_released", False)
        ended = result["sessions_ended"] + result.get("publishers_ended", 0)
    else:  # no server: a restarted one must not give the floor back to it
        live = state.live_broadcast(obj.db)
        released = bool(live and live["floor_site"] == site_id)
        if live and released:
            state.set_floor(obj.db, live["id"], None, "revoked")
        ended = 0
    if ended:
        say(f"ended {site_id}'s live session(s): {ended}")
    if released:
        say(f"took the floor back from {site_id}: the program is the main source again")


@broadcast.command("attendance")
@click.argument("ref", metavar="[BROADCAST]", required=False)
@click.option("--by", type=click.Choice(["site", "province"]), default="site")
@format_options
@click.pass_obj
def attendance(obj: AppContext, ref: str | None, by: str, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Who was connected, when, for how long and at what tier (default: the latest broadcast)."""
    from ccctl.media.state import attendance as compute
    from ccctl.media.state import resolve_broadcast

    rows = compute(obj.db, resolve_broadcast(obj.db, ref))
    if by == "province":
        names = {r[0]: (r[1], r[2]) for r in obj.db.query(
            "SELECT s.id, s.province_code, p.name FROM sites s LEFT JOIN units p ON p.scheme = s.scheme "
            "AND p.level = 'province' AND p.code = s.province_code")}
        grouped: dict[str, dict[str, Any]] = {}
        for r in rows:
            code, name = names.get(r["site_id"], ("", ""))
            g = grouped.setdefault(code, {"province_code": code, "province_name": name, "sites": 0,
                                          "connected_now": 0, "seconds": 0.0})
            g["sites"] += 1
            g["connected_now"] += int(r["connected"])
            g["seconds"] = round(g["seconds"] + r["seconds"], 1)
        rows = sorted(grouped.values(), key=lambda g: g["province_code"])
    emit(rows, resolve_format(obj, fmt, as_json, as_csv))
