"""``ccctl meeting``: plan a conference for a time and an audience, check every site before
it, start it, and report who was there.

Times are local to ``meetings.timezone`` (Asia/Ho_Chi_Minh unless configured) and kept in
UTC. Run ``ccctl meeting tick`` from cron every minute: it runs the pre-checks that are due
(each once, even when two ticks overlap) and says when one runs late.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ccctl.cli import AppContext, confirm, run_async, say
from ccctl.commands.common import format_options, resolve_format, site_filter, site_filter_options
from ccctl.errors import NotFound, UsageError
from ccctl.output import emit, emit_object

LIST_COLUMNS = ["id", "title", "starts_at_local", "status", "audience", "checks_done", "checks", "source", "record",
                "broadcast_id"]
CHECK_COLUMNS = ["check_id", "offset", "due_at", "status", "started_at", "late", "late_s", "run_id", "ready",
                 "not_ready", "note"]
TICK_COLUMNS = ["meeting_id", "check_id", "offset", "action", "run_id", "ready", "degraded", "down", "note"]


def _now(text: str | None, obj: AppContext) -> float:
    """The clock: real time, or ``--now`` read in the configured zone (tests, replays)."""
    from ccctl.meetings.times import parse_local

    return parse_local(text, obj.config.meetings.timezone) if text else time.time()


def _meeting_id(ref: str) -> int:
    try:
        return int(ref)
    except ValueError:
        raise NotFound(f"no meeting {ref!r} (give its number)") from None


@click.group()
def meeting() -> None:
    """Meetings: a conference planned for a time and an audience, checked before, reported after."""


@meeting.command("plan", epilog=__doc__.split("\n\n", 1)[1])
@click.option("--at", "at", required=True, metavar="'YYYY-MM-DD HH:MM'", help="Start, local time.")
@click.option("--title", required=True)
@site_filter_options
@click.option("--checks", metavar="LIST", help="Pre-check offsets before the start (default: meetings.checks, -60m,-15m).")
@click.option("--source", default="testsrc", show_default=True, metavar="testsrc|file:PATH|whip")
@click.option("--record", is_flag=True, help="Record the program when the meeting starts.")
@click.option("--tz", metavar="ZONE", help="Time zone of --at (default: meetings.timezone).")
@format_options
@click.pass_obj
def plan(obj: AppContext, at: str, title: str, checks: str | None, source: str, record: bool, tz: str | None,
         fmt: str | None, as_json: bool, as_csv: bool, **kwargs: Any) -> None:
    """Plan a meeting; its audience is the enabled sites the filters select now, kept with it."""
    from ccctl.meetings.plan import meeting_record, plan_meeting

    cfg = obj.config.meetings
    planned = plan_meeting(obj.db, title=title, at=at, tz=tz or cfg.timezone, flt=site_filter(kwargs),
                           checks=checks or cfg.checks, source=source, record=record, now=time.time())
    data = meeting_record(obj.db, planned.meeting_id)
    say(f"meeting {planned.meeting_id} planned for {data['starts_at_local']} ({data['tz']}): {planned.audience} site(s), "
        f"{len(data['checks'])} pre-check(s)")
    if planned.dropped:
        say(f"not scheduled, their time has passed: {', '.join(planned.dropped)}")
    emit_object(data, resolve_format(obj, fmt, as_json, as_csv))


@meeting.command("list")
@click.option("--since", metavar="'YYYY-MM-DD[ HH:MM]'", help="Only meetings starting then or later (local time).")
@format_options
@click.pass_obj
def list_cmd(obj: AppContext, since: str | None, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """Meetings, soonest first."""
    from ccctl.meetings.times import local_text, parse_local
    from ccctl.registry.meetings import list_meetings

    tz = obj.config.meetings.timezone
    rows = list_meetings(obj.db, parse_local(since, tz) if since else None)
    for r in rows:
        r["starts_at_local"] = local_text(r["starts_at"], r["tz"])
    emit(rows, resolve_format(obj, fmt, as_json, as_csv), LIST_COLUMNS)


@meeting.command("show")
@click.argument("ref", metavar="ID")
@click.option("--audience", is_flag=True, help="List the audience's sites instead.")
@format_options
@click.pass_obj
def show(obj: AppContext, ref: str, audience: bool, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """One meeting: time, status, source, audience size and its checks (or, --audience, its sites)."""
    from ccctl.meetings.plan import meeting_record
    from ccctl.registry.meetings import audience as members

    output = resolve_format(obj, fmt, as_json, as_csv)
    data = meeting_record(obj.db, _meeting_id(ref))
    if audience:
        emit(members(obj.db, data["id"]), output, ["site_id", "site_name", "province_code"])
    else:
        emit_object(data, output)


@meeting.command("checks")
@click.argument("ref", metavar="ID")
@format_options
@click.pass_obj
def checks_cmd(obj: AppContext, ref: str, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """A meeting's pre-checks: when due, when run (and how late), the roll-call run, counts."""
    from ccctl.meetings.plan import check_record
    from ccctl.registry.meetings import checks, get_meeting

    m = get_meeting(obj.db, _meeting_id(ref))
    emit([check_record(c, m["tz"]) for c in checks(obj.db, m["id"])], resolve_format(obj, fmt, as_json, as_csv),
         CHECK_COLUMNS)


@meeting.command("edit")
@click.argument("ref", metavar="ID")
@click.option("--title")
@click.option("--at", "at", metavar="'YYYY-MM-DD HH:MM'", help="New start, local time (reschedules the checks due).")
@click.option("--checks", metavar="LIST", help="New pre-check offsets (replace those still due).")
@click.option("--source", metavar="testsrc|file:PATH|whip")
@click.option("--record/--no-record", default=None)
@site_filter_options
@click.option("--remove-site", "remove", metavar="ID", multiple=True, help="Take a site out of the audience.")
@click.pass_obj
def edit(obj: AppContext, ref: str, title: str | None, at: str | None, checks: str | None, source: str | None,
         record: bool | None, remove: tuple[str, ...], **kwargs: Any) -> None:
    """Change a planned meeting; site filters ADD the sites they select to the audience."""
    from ccctl.meetings.plan import edit_meeting

    done = edit_meeting(obj.db, _meeting_id(ref), now=time.time(), title=title, at=at, checks=checks, source=source,
                        record=record, add=site_filter(kwargs), remove=remove)
    say(f"meeting {done.meeting_id} changed: {done.audience} site(s) in the audience")
    if done.dropped:
        say(f"not scheduled, their time has passed: {', '.join(done.dropped)}")


@meeting.command("cancel")
@click.argument("ref", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_context
def cancel(ctx: click.Context, ref: str, yes: bool) -> None:
    """Cancel a planned meeting and its pre-checks."""
    from ccctl.meetings.plan import cancel_meeting

    obj: AppContext = ctx.obj
    meeting_id = _meeting_id(ref)
    confirm(ctx, f"Cancel meeting {meeting_id}?", yes)
    n = cancel_meeting(obj.db, meeting_id, time.time())
    say(f"meeting {meeting_id} cancelled ({n} pre-check(s) will not run)")


@meeting.command("tick")
@click.option("--now", "now_text", hidden=True, metavar="'YYYY-MM-DD HH:MM:SS'", help="The clock, local (tests, replays).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when no check was due (for cron).")
@click.option("--start", "autostart", is_flag=True,
              help="Also start the broadcast of each meeting whose time has come (in the last 10 minutes).")
@format_options
@click.pass_obj
def tick_cmd(obj: AppContext, now_text: str | None, quiet: bool, autostart: bool, fmt: str | None, as_json: bool,
             as_csv: bool) -> None:
    """Run the pre-checks that are due (cron: every minute); each runs once, late ones say so."""
    from ccctl.meetings.scheduler import tick
    from ccctl.meetings.starting import start_meeting
    from ccctl.rollcall.session import options_from_config

    config = obj.config
    now = _now(now_text, obj)

    def starter(meeting_id: int) -> dict[str, Any]:
        return start_meeting(obj.db, meeting_id, _control(obj), config.home, now, claimed=True)

    actions = run_async(tick(obj.db, now, options_from_config(config), late_grace_s=config.meetings.late_grace_s,
                             start=starter if autostart else None))
    for a in actions:
        if a["action"] in ("ended", "started", "start failed", "start stuck", "start recovered"):
            say(f"meeting {a['meeting_id']} {a['action']}: {a['note']}")
        elif a["action"].startswith("ran"):
            say(f"meeting {a['meeting_id']}: check {a['offset']} {a['action']} (run {a['run_id']}): {a['ready']} ready, "
                f"{a['not_ready']} not ready" + (f"; {a['note']}" if a.get("note") else ""))
    if actions or not quiet:
        emit(actions, resolve_format(obj, fmt, as_json, as_csv), TICK_COLUMNS)


@meeting.command("watch")
@click.option("--interval", "interval_s", type=click.FloatRange(5, 3600), default=60.0, show_default=True)
@click.option("--start", "autostart", is_flag=True, help="Also start each meeting's broadcast at its time.")
@click.pass_obj
def watch(obj: AppContext, interval_s: float, autostart: bool) -> None:
    """Tick every minute in the foreground (instead of cron) until interrupted; what each tick
    does goes to stderr."""
    import asyncio

    from ccctl.meetings.loop import run_scheduler
    from ccctl.meetings.starting import start_meeting
    from ccctl.rollcall.session import options_from_config

    config = obj.config

    def starter(meeting_id: int) -> dict[str, Any]:
        return start_meeting(obj.db, meeting_id, _control(obj), config.home, time.time(), claimed=True)

    def report(actions: list[dict[str, Any]]) -> None:
        for a in actions:
            say(f"meeting {a['meeting_id']}: {a.get('offset', '')} {a['action']}"
                + (f" (run {a['run_id']})" if a.get("run_id") else "") + (f": {a['note']}" if a.get("note") else ""))

    async def main() -> int:
        return await run_scheduler(obj.db, options_from_config(config), asyncio.Event(), interval_s=interval_s,
                                   late_grace_s=config.meetings.late_grace_s,
                                   start=starter if autostart else None, on_actions=report,
                                   on_error=lambda error: say(f"tick failed: {error}"))

    say(f"ticking every {interval_s:.0f} s; Ctrl-C to stop")
    run_async(main())


@meeting.command("readiness")
@click.argument("ref", metavar="ID")
@click.option("--check", "check_ref", metavar="OFFSET|CHECK_ID", help="Which check (default: the latest that ran).")
@click.option("--by", type=click.Choice(["site", "province", "calls"]), default="calls", show_default=True,
              help="calls: the sites not ready with whom to call; site: every site; province: counts.")
@format_options
@click.pass_obj
def readiness(obj: AppContext, ref: str, check_ref: str | None, by: str, fmt: str | None, as_json: bool,
              as_csv: bool) -> None:
    """The readiness report of a pre-check: counts per province, sites not ready and whom to call."""
    from ccctl.meetings import readiness as core
    from ccctl.meetings.times import offset_text
    from ccctl.registry.meetings import checks, get_meeting

    m = get_meeting(obj.db, _meeting_id(ref))
    ran = [c for c in checks(obj.db, m["id"]) if c["run_id"] is not None]
    if check_ref:
        ran = [c for c in ran if check_ref in (str(c["id"]), offset_text(c["offset_s"]))]
    if not ran:
        raise NotFound(f"meeting {m['id']} has no check that ran" + (f" matching {check_ref!r}" if check_ref else ""))
    check = ran[-1]
    rows = core.site_readiness(obj.db, m["id"], check["run_id"])
    s = core.summary(rows)
    say(f"meeting {m['id']}, check {offset_text(check['offset_s'])} (run {check['run_id']}): {s['ready']}/{s['audience']} "
        f"ready, {s['degraded']} degraded, {s['down']} down, {s['not_checked']} not checked"
        + (f"; {check['note']}" if check["note"] else ""))
    output = resolve_format(obj, fmt, as_json, as_csv)
    if by == "province":
        emit(core.province_readiness(rows), output, core.PROVINCE_COLUMNS)
    else:
        emit(core.not_ready(rows) if by == "calls" else rows, output, core.SITE_COLUMNS)


def _control(obj: AppContext) -> Any:
    """The control client of the configured server, starting one in the background if none answers."""
    from ccctl.media.client import ControlClient, start_detached

    client = ControlClient(obj.config.home, obj.config.serve.listen)
    if not client.alive():
        pid = start_detached(obj.config.home, obj.config.serve.listen, obj.config.db_url,
                             config_file=obj.config_file)
        say(f"no server was running: started one in the background (pid {pid}, {client.base})")
    return client


@meeting.command("start")
@click.argument("ref", metavar="ID")
@click.pass_obj
def start(obj: AppContext, ref: str) -> None:
    """Start the meeting's broadcast now, with its title, source and audience (and recording)."""
    from ccctl.meetings.starting import start_meeting
    from ccctl.registry.meetings import get_meeting

    m = get_meeting(obj.db, _meeting_id(ref))
    if m["status"] not in ("planned", "failed"):
        raise UsageError(f"meeting {m['id']} is {m['status']}; only a planned meeting (or one that failed to start) "
                         "can start")
    result = start_meeting(obj.db, m["id"], _control(obj), obj.config.home, time.time())
    say(f"meeting {m['id']} live: broadcast {result['id']} ({result['source']}) to {result['sites']} site(s)")
    if result.get("record"):
        say(f"recording the program to {result['record']}")


@meeting.command("rehearse")
@click.argument("ref", metavar="ID")
@click.option("--seconds", type=click.FloatRange(5, 3600), default=120.0, show_default=True,
              help="Longest the test broadcast runs (it ends sooner once every site has reported back).")
@format_options
@click.pass_obj
def rehearse(obj: AppContext, ref: str, seconds: float, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """A short test broadcast (pattern with tone) to the audience: which sites received it,
    which joined without reporting back, which never came; with whom to call."""
    from ccctl.meetings import rehearsal
    from ccctl.meetings.readiness import site_directory
    from ccctl.registry import meetings as store

    m = store.get_meeting(obj.db, _meeting_id(ref))
    if m["status"] != "planned":
        raise UsageError(f"meeting {m['id']} is {m['status']}; rehearse a planned meeting")
    members = store.audience(obj.db, m["id"])
    wanted = {r["site_id"] for r in members}
    client = _control(obj)
    started = client.call("POST", "/api/broadcast", {"source": "testsrc", "title": f"Tổng duyệt: {m['title']}",
                                                     "sites": sorted(wanted)})
    say(f"rehearsal of meeting {m['id']}: test broadcast {started['id']} live for up to {seconds:.0f} s "
        "(the sites open their join links now)")
    seen = rehearsal.Observed()
    deadline = time.monotonic() + seconds
    try:
        while True:
            data = _live_broadcast(client, started["id"])
            if not data.get("live") or data.get("id") != started["id"]:
                say("the test broadcast was stopped from elsewhere")
                break
            seen.add([s for s in data["sessions"] if s["site_id"] in wanted])
            if wanted <= seen.received() or time.monotonic() >= deadline:
                break
            time.sleep(1.0)  # the polling cadence of a command an operator watches, not a synchronisation
    finally:
        live = _live_broadcast(client, started["id"])
        if live.get("live") and live.get("id") == started["id"]:
            client.call("DELETE", f"/api/broadcast?broadcast={started['id']}")
    rows = rehearsal.judge(members, site_directory(obj.db, sorted(wanted)), seen)
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in ("received", "joined, nothing reported back",
                                                                     "absent")}
    store.add_event(obj.db, m["id"], time.time(), "rehearsal", {"broadcast_id": started["id"], **counts,
                                                                "missing": [r["site_id"] for r in rows
                                                                            if r["verdict"] != "received"][:200]})
    say(f"{counts['received']}/{len(rows)} site(s) received the test broadcast, "
        f"{counts['joined, nothing reported back']} joined without reporting back, {counts['absent']} absent")
    emit(rows, resolve_format(obj, fmt, as_json, as_csv), rehearsal.COLUMNS)


def _live_broadcast(client: Any, broadcast_id: int | None) -> dict[str, Any]:
    """The server's status of broadcast ``broadcast_id`` (named: several may be live); not
    live: ``{"live": False}``."""
    if broadcast_id is None:
        return {"live": False}
    try:
        return dict(client.call("GET", f"/api/broadcast?broadcast={int(broadcast_id)}"))
    except NotFound:
        return {"live": False}


@meeting.command("stop")
@click.argument("ref", metavar="ID")
@click.pass_obj
def stop(obj: AppContext, ref: str) -> None:
    """End the meeting's broadcast (the server closes its attendance) and mark the meeting ended."""
    from ccctl.media.client import ControlClient
    from ccctl.registry import meetings as store

    m = store.get_meeting(obj.db, _meeting_id(ref))
    if m["status"] != "live":
        raise UsageError(f"meeting {m['id']} is {m['status']}; only a live meeting can stop")
    client = ControlClient(obj.config.home, obj.config.serve.listen)
    live = _live_broadcast(client, m["broadcast_id"])
    if live.get("live") and live.get("id") == m["broadcast_id"]:
        client.call("DELETE", f"/api/broadcast?broadcast={m['broadcast_id']}")
    now = time.time()
    with obj.db.transaction():
        store.update_meeting(obj.db, m["id"], {"status": "ended"}, now)
        store.add_event(obj.db, m["id"], now, "ended", {"broadcast_id": m["broadcast_id"]})
    say(f"meeting {m['id']} ended (broadcast {m['broadcast_id']})")


@meeting.command("events")
@click.argument("ref", metavar="ID")
@format_options
@click.pass_obj
def events_cmd(obj: AppContext, ref: str, fmt: str | None, as_json: bool, as_csv: bool) -> None:
    """What happened to a meeting: planned, edited, checks done, late or skipped, started, ended."""
    from ccctl.meetings.times import local_text
    from ccctl.registry import meetings as store

    m = store.get_meeting(obj.db, _meeting_id(ref))
    rows = [{"at": local_text(e["ts"], m["tz"]), "kind": e["kind"], "detail": e["detail"]}
            for e in store.events(obj.db, m["id"])]
    emit(rows, resolve_format(obj, fmt, as_json, as_csv), ["at", "kind", "detail"])


@meeting.command("report")
@click.argument("ref", metavar="ID")
@click.option("--by", type=click.Choice(["site", "province", "checks", "calls"]), default="site", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "xlsx"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Shorthand for --format json.")
@click.option("--csv", "as_csv", is_flag=True, help="Shorthand for --format csv.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File to write (xlsx needs one).")
@click.option("--html", "html", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the printable report (one self-contained HTML page) to this file.")
@click.pass_obj
def report(obj: AppContext, ref: str, by: str, fmt: str | None, as_json: bool, as_csv: bool, output: Path | None,
           html: Path | None) -> None:
    """Attendance against the audience (present, late, absent, left early, audio only), per site or
    province, with the pre-checks and whom to call; xlsx writes every table, one sheet each."""
    from ccctl.meetings import attendance as core
    from ccctl.meetings.plan import check_record
    from ccctl.registry.meetings import checks, get_meeting

    m = get_meeting(obj.db, _meeting_id(ref))
    cfg = obj.config.meetings
    now = time.time()
    sites = core.site_attendance(obj.db, m["id"], now, core.Tolerances(cfg.late_after_s, cfg.left_early_s))
    provinces = core.province_attendance(sites)
    check_rows = [check_record(c, m["tz"]) for c in checks(obj.db, m["id"])]
    calls = core.to_call(sites, m["broadcast_id"] is not None)
    if m["broadcast_id"] is None:
        say(f"meeting {m['id']} has not started: every site counts as absent; the pre-checks say who is ready")
    if html is not None:
        from ccctl.meetings.printable import write_report

        write_report(obj.db, m["id"], html, now, sites, provinces, check_rows)
        say(f"wrote the printable report of meeting {m['id']} to {html}")
    tables = {"site": (core.SITE_COLUMNS, sites), "province": (core.PROVINCE_COLUMNS, provinces),
              "checks": (CHECK_COLUMNS, check_rows), "calls": (core.SITE_COLUMNS, calls)}
    chosen = "json" if as_json else "csv" if as_csv else fmt or obj.config.output.format
    if chosen == "xlsx":
        from ccctl.meetings.sheets import write_workbook

        if output is None:
            raise UsageError("--format xlsx needs --output FILE")
        write_workbook(output, [(name.capitalize(), cols, rows) for name, (cols, rows) in tables.items()])
        say(f"wrote meeting {m['id']}'s report ({len(sites)} sites, {len(provinces)} provinces) to {output}")
        return
    columns, rows = tables[by]
    if html is not None and output is None and fmt is None and not (as_json or as_csv):
        return  # --html alone writes the page and prints nothing
    if output is not None:
        with output.open("w", encoding="utf-8", newline="") as fh:
            emit(rows, chosen, columns, fh)
        say(f"wrote {len(rows)} row(s) to {output}")
        return
    emit(rows, chosen, columns)
