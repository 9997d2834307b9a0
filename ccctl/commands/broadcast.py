"""``ccctl broadcast``: start, watch and stop the program fanned out to the sites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ccctl.cli import AppContext, say
from ccctl.commands.common import format_options, resolve_format, site_filter, site_filter_options
from ccctl.output import emit, emit_object

#: ``--broadcast ID`` on every command acting on a live broadcast.
broadcast_option = click.option(
    "--broadcast", "broadcast_id", type=click.IntRange(min=1), metavar="ID",
    help="The live broadcast to act on (default: the only live one).")

STATUS_COLUMNS = ["site_id", "session_id", "tier", "state", "floor", "joined_at", "kbps", "packets_sent",
                  "fraction_lost", "rtt_ms", "jitter_ms"]


def _client(obj: AppContext) -> Any:
    from ccctl.media.client import ControlClient

    return ControlClient(obj.config.home, obj.config.serve.listen)


def _which(obj: AppContext, broadcast_id: int | None) -> str:
    """The query naming the broadcast a control call acts on ("": the only live one); none
    named while several are live is a usage error."""
    if broadcast_id is not None:
        return f"?broadcast={broadcast_id}"
    from ccctl.errors import UsageError
    from ccctl.registry.broadcasts import live_ids

    live = live_ids(obj.db)
    if len(live) > 1:
        raise UsageError(f"{len(live)} broadcasts are live ({', '.join(map(str, live))}): name one with --broadcast ID")
    return ""


@click.group()
def broadcast() -> None:
    """Broadcasts: one program to every site over WebRTC (WHEP out, WHIP in), and the floor."""


@broadcast.command("start")
@site_filter_options
@click.option("--source", default="testsrc", show_default=True, metavar="testsrc|file:PATH|whip",
              help="whip: the program waits (black, silent) for a WHIP publisher at /whip/program "
                   "with the control token (`links --program` prints both).")
@click.option("--title", default="Hội nghị trực tuyến", show_default=True)
@click.option("--record", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Also write the program as sent (best tier, H.264 + Opus) to FILE: .ts (MPEG-TS) or .mkv.")
@click.pass_obj
def start(obj: AppContext, source: str, title: str, record: str | None, **kwargs: Any) -> None:
    """Start a broadcast to the sites the filters select (none: every enabled site), starting
    the server in the background if none answers. Only its audience may join it."""
    from ccctl.errors import UsageError
    from ccctl.media.client import start_detached
    from ccctl.registry.sites import select_sites

    flt = site_filter(kwargs, enabled_only=True)
    sites = None if flt.is_empty() else [s.id for s in select_sites(obj.db, flt)]
    if sites == []:
        raise UsageError("no enabled site matches the filters")
    client = _client(obj)
    if not client.alive():
        pid = start_detached(obj.config.home, obj.config.serve.listen, obj.config.db_url,
                             config_file=obj.config_file)
        say(f"no server was running: started one in the background (pid {pid}, {client.base})")
    body: dict[str, Any] = {"source": source, "title": title}
    if sites is not None:
        body["sites"] = sites
    if record is not None:
        body["record"] = str(Path(record).resolve())  # the server's working directory is not ours
    result = client.call("POST", "/api/broadcast", body)
    audience = "every enabled site" if result.get("audience", "all") == "all" else f"{result['audience']} site(s)"
    say(f"broadcast {result['id']} live: {result['title']} ({result['source']}), audience: {audience}")
    if result.get("record"):
        say(f"recording the program to {result['record']}")
    if result["source"] == "whip":
        say(f"waiting for the program at {client.base}/whip/program?broadcast={result['id']} (`ccctl broadcast "
            f"links --program --broadcast {result['id']}` gives the URL and token to publish with)")


@broadcast.command("status")
@broadcast_option
@format_options
@click.pass_obj
def status(obj: AppContext, broadcast_id: int | None, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Connected sites with their tier and link figures. In JSON, one object: ``live``, the
    ``broadcast`` (id, title, source, audience, floor, counts; null when nothing is live) and its
    ``sessions``."""
    data = _client(obj).call("GET", "/api/broadcast" + _which(obj, broadcast_id))
    form = resolve_format(obj, fmt, as_json, as_csv)
    if not data["live"]:
        say("no live broadcast")
    else:
        floor = f", floor: {data['floor']}" if data.get("floor") else ""
        if data.get("floor") and data.get("on_air") != data["floor"]:
            floor += " (its uplink is not on air yet)"
        audience = "" if data.get("audience") is None else f" of {data['audience']}"
        say(f"broadcast {data['id']}: {data['title']} ({data['source']}), {len(data['sessions'])}{audience} site(s) "
            f"connected{floor}")
        if data.get("admission"):
            say(_admission_line(data["admission"], data.get("calibration")))
    if form == "json":
        emit_object(_status_object(data), "json")
        return
    columns = list(STATUS_COLUMNS)
    if any("worker" in row for row in data["sessions"]):
        columns.append("worker")  # serve --workers: which fan-out worker holds the site
    if any(row.get("edge") for row in data["sessions"]):
        columns.append("edge")  # sites played from a Janus edge (ccctl/edges)
    emit(data["sessions"], form, columns)


def _admission_line(admission: dict[str, Any], calibration: dict[str, Any] | None) -> str:
    """What the core carries: its capacity, the budget per fan-out process and where it came from."""
    if calibration is None:
        source = "configured"
    elif calibration.get("error"):
        source = f"the floor: the send path could not be measured ({calibration['error']})"
    else:
        source = (f"measured at start: the {calibration['path']} send path carried "
                  f"{calibration['measured_pps']:,.0f} packets/s per CPU second")
    budget = admission.get("budget_pps", 0)
    if not budget:
        return "admission: no packet budget (pps_budget 0)"
    return (f"admission: {admission['load_pps']:,.0f} of {admission['capacity_pps']:,.0f} packets/s in use "
            f"({budget:,.0f} per fan-out process, {source})")


def _status_object(data: dict[str, Any]) -> dict[str, Any]:
    """``broadcast status --format json``: whether anything is live, the broadcast, its sessions."""
    if not data["live"]:
        return {"live": False, "broadcast": None, "sessions": data["sessions"]}
    sessions = data["sessions"]
    by_tier: dict[str, int] = {}
    for row in sessions:
        by_tier[str(row.get("tier"))] = by_tier.get(str(row.get("tier")), 0) + 1
    connected = sum(1 for row in sessions if row.get("state") == "connected")
    audience = data.get("audience")
    return {"live": True, "broadcast": {
        "id": data["id"], "title": data["title"], "source": data["source"], "started_at": data["started_at"],
        "level": data.get("level"),
        "audience": "all" if data.get("audience_all") else audience, "audience_size": audience,
        "floor": data.get("floor"), "on_air": data.get("on_air"),
        "counts": {"sessions": len(sessions), "connected": connected, "by_tier": by_tier,
                   "publishers": len(data.get("publishers", []))},
        "admission": data.get("admission"), "calibration": data.get("calibration")},
        "sessions": sessions}


@broadcast.command("list")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=20, show_default=True,
              help="How many broadcasts: the live ones first, then the most recent.")
@format_options
@click.pass_obj
def list_(obj: AppContext, limit: int, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Live and recent broadcasts: title, source, when, audience (``all``: every enabled site), floor."""
    from ccctl.registry.broadcasts import LIST_COLUMNS, list_broadcasts

    emit(list_broadcasts(obj.db, limit), resolve_format(obj, fmt, as_json, as_csv), LIST_COLUMNS)


@broadcast.command("floor")
@click.argument("site_id", metavar="[SITE]", required=False)
@click.option("--release", is_flag=True, help="Take the floor back: the program returns to the main source.")
@broadcast_option
@click.pass_obj
def floor(obj: AppContext, site_id: str | None, release: bool, broadcast_id: int | None) -> None:
    """Give SITE the floor: its join page sends its camera and microphone, which become the
    program for every site (within a second); `--release` returns to the main source."""
    from ccctl.errors import UsageError

    if (site_id is None) == (not release):
        raise UsageError("give either a SITE or --release")
    client, which = _client(obj), _which(obj, broadcast_id)
    result = (client.call("DELETE", "/api/floor" + which) if release
              else client.call("POST", "/api/floor" + which, {"site": site_id}))
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
@broadcast_option
@click.pass_obj
def tier(obj: AppContext, site_id: str, tier: str, save: bool, broadcast_id: int | None) -> None:
    """Move a connected SITE to TIER now (audio: sound only). Its own RTCP reports may still move
    it down, and back up to TIER but not above, for the rest of its session."""
    from urllib.parse import quote

    result = _client(obj).call("PUT", f"/api/sites/{quote(site_id, safe='')}/tier{_which(obj, broadcast_id)}",
                               {"tier": tier})
    say(f"{site_id} moved to {tier}" + (f" (was {result['previous']})" if result["previous"] != tier else " (already)"))
    if save:
        from ccctl.registry.sites import edit_site

        edit_site(obj.db, site_id, {"tier": tier})
        say(f"{site_id}: registry tier is now {tier}")


@broadcast.command("stop")
@broadcast_option
@click.pass_obj
def stop(obj: AppContext, broadcast_id: int | None) -> None:
    """End the live broadcast."""
    result = _client(obj).call("DELETE", "/api/broadcast" + _which(obj, broadcast_id))
    say(f"broadcast {result['id']} stopped")


@broadcast.command("links")
@site_filter_options
@click.option("--program", "program", is_flag=True,
              help="The control room's WHIP URL and token instead (to publish a `--source whip` program).")
@broadcast_option
@format_options
@click.pass_obj
def links(obj: AppContext, fmt: str | None, as_json: bool, as_csv: bool, program: bool, broadcast_id: int | None,
          **kwargs: Any) -> None:
    """Each selected site's join URL with its token (give them to the sites, nobody else)."""
    from ccctl.media.client import site_base
    from ccctl.media.tokens import control_token, generation, load_secret, site_token
    from ccctl.registry.sites import select_sites

    secret = load_secret(obj.config.home)
    base = site_base(obj.config.home, obj.config.serve)  # https when the server runs with TLS
    if program:
        emit([{"name": "program", "whip_url": f"{base}/whip/program{_which(obj, broadcast_id)}",
               "token": control_token(secret)}],
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
@broadcast_option
@click.option("--by", type=click.Choice(["site", "province"]), default="site")
@format_options
@click.pass_obj
def attendance(obj: AppContext, ref: str | None, broadcast_id: int | None, by: str, fmt: str | None, as_json: bool,
               as_csv: bool) -> None:
    """Every site of the audience: present, late or absent, left early, audio only, when, for how
    long and at what tier (default: the latest broadcast; a number, latest or previous)."""
    import time

    from ccctl.errors import UsageError
    from ccctl.media.state import resolve_broadcast
    from ccctl.meetings.attendance import Tolerances, broadcast_attendance, province_attendance

    if ref is not None and broadcast_id is not None:
        raise UsageError("name the broadcast once: BROADCAST or --broadcast")
    if ref is None and broadcast_id is None:
        _which(obj, None)  # several live: name one
    cfg = obj.config.meetings
    bid = resolve_broadcast(obj.db, broadcast_id if broadcast_id is not None else ref)
    rows = broadcast_attendance(obj.db, bid, time.time(), Tolerances(cfg.late_after_s, cfg.left_early_s))
    if by == "province":
        names = {r[0]: r[1] for r in obj.db.query(
            "SELECT s.id, p.name FROM sites s LEFT JOIN units p ON p.scheme = s.scheme "
            "AND p.level = 'province' AND p.code = s.province_code")}
        emit(province_attendance([{**r, "province_name": names.get(r["site_id"])} for r in rows]),
             resolve_format(obj, fmt, as_json, as_csv), PROVINCE_COLUMNS)
        return
    emit(rows, resolve_format(obj, fmt, as_json, as_csv), ATTENDANCE_COLUMNS)


ATTENDANCE_COLUMNS = ["site_id", "site_name", "province_code", "status", "left_early", "audio_only", "first_join",
                      "last_leave", "joins", "seconds", "connected_pct", "tier", "connected", "edge", "in_audience"]
PROVINCE_COLUMNS = ["province_code", "province_name", "audience", "present", "late", "absent", "left_early",
                    "audio_only", "attended_pct"]
