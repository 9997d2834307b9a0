"""The meetings' scheduler: ``tick(db, now, options)`` runs every pre-check that is due.

Cron runs ``ccctl meeting tick`` each minute (or ``serve`` calls it); each call is idempotent
and safe to run twice at once. A due check is taken with a conditional UPDATE on its row
(``registry.meetings.claim_check``), so of two ticks only one runs it, whatever the backend.
A check found more than ``late_grace_s`` after its time (cron was down, the machine slept)
runs late and says so in its row and in a ``check_late`` event; of several missed checks of
one meeting only the latest runs (the others are skipped as superseded), and none runs once
the meeting has started. A tick whose process died while holding a check gives it back.
A meeting left ``starting`` longer than ``start_lease_s`` (its tick died between claiming
the start and recording the server's answer) is settled by the next tick: live, if the server
did start its broadcast; else planned again and retried while its start window lasts; else
failed (``start_failed`` event), for an operator to start by hand.
A live meeting whose broadcast has ended is marked ended. The clock is the ``now`` argument:
nothing here sleeps or reads the time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import groupby
from typing import Any

from ccctl.errors import CcctlError
from ccctl.meetings.readiness import not_ready, site_readiness, summary
from ccctl.meetings.times import offset_text
from ccctl.models import Site
from ccctl.registry import meetings as store
from ccctl.registry.db import Database
from ccctl.registry.sites import SiteFilter, select_sites
from ccctl.rollcall.history import owner_alive, run_owner
from ccctl.rollcall.session import RollcallOptions, rollcall

EVENT_SITES = 200  # not-ready sites named in a check_done event; the full list is in the report
START_LEASE_S = 300.0  # a start claimed longer ago than this is stuck (the control call's timeout is 60 s)
CLOCK_SKEW_S = 60.0  # the server's clock (broadcast start) may be behind the ticking machine's (claim)


def audience_sites(db: Database, meeting_id: int) -> list[Site]:
    """The meeting's audience as registry sites (those since removed from the registry are left out)."""
    ids = [r["site_id"] for r in store.audience(db, meeting_id)]
    sites: list[Site] = []
    for i in range(0, len(ids), 500):
        sites += select_sites(db, SiteFilter(ids=tuple(ids[i:i + 500])))
    return sites


def _release_dead(db: Database, now: float) -> list[dict[str, Any]]:
    """Checks claimed by a tick whose process is provably gone go back to due."""
    actions = []
    for check in store.running_checks(db):
        try:
            owner = json.loads(check["claimed_by"] or "null")
        except ValueError:
            owner = None
        if owner_alive(owner) is False and store.release_check(db, check["id"], check["claimed_by"],
                                                               "its tick died; given back"):
            store.add_event(db, check["meeting_id"], now, "check_released",
                            {"check_id": check["id"], "offset": offset_text(check["offset_s"]), "owner": owner})
            actions.append({"meeting_id": check["meeting_id"], "check_id": check["id"],
                            "offset": offset_text(check["offset_s"]), "action": "released", "note": "its tick died"})
    return actions


def _recover_starts(db: Database, now: float, start_window_s: float, lease_s: float) -> list[dict[str, Any]]:
    """Settle the meetings stuck in ``starting`` (claimed more than ``lease_s`` ago)."""
    actions = []
    for m in store.stuck_starts(db, now - lease_s):
        claimed_at, stuck_s = m["updated_at"], round(now - m["updated_at"], 1)
        audience = sorted(r["site_id"] for r in store.audience(db, m["id"]))
        live = [b for b in store.live_broadcasts_since(db, claimed_at - CLOCK_SKEW_S)
                if b["title"] == m["title"] and sorted(b["sites"]) == audience]
        action: dict[str, Any] = {"meeting_id": m["id"]}
        with db.transaction():
            if live:  # the server started it; the tick died before writing so
                if not store.settle_start(db, m["id"], claimed_at, "live", now, live[0]["id"]):
                    continue
                store.cancel_checks(db, m["id"], "meeting started", now)
                store.add_event(db, m["id"], now, "started", {"broadcast_id": live[0]["id"], "by": "tick (recovered)",
                                                              "stuck_s": stuck_s})
                action.update(action="start recovered",
                              note=f"its tick died after the server started broadcast {live[0]['id']}")
            elif now - m["starts_at"] < start_window_s:
                if not store.settle_start(db, m["id"], claimed_at, "planned", now):
                    continue
                store.add_event(db, m["id"], now, "start_stuck", {"stuck_s": stuck_s, "then": "retry"})
                action.update(action="start stuck", note=f"its tick died {stuck_s:.0f} s ago while starting it; retrying")
            else:
                why = (f"its tick died {stuck_s:.0f} s ago while starting it, too late to start on its own; "
                       f"start it by hand: ccctl meeting start {m['id']}")
                if not store.settle_start(db, m["id"], claimed_at, "failed", now):
                    continue
                store.cancel_checks(db, m["id"], "meeting failed to start", now)
                store.add_event(db, m["id"], now, "start_failed", {"error": why, "stuck_s": stuck_s})
                action.update(action="start failed", note=why)
        actions.append(action)
    return actions


async def tick(db: Database, now: float, options: RollcallOptions, *, late_grace_s: float = 90.0,
               start: Callable[[int], dict[str, Any]] | None = None,
               start_window_s: float = 600.0, start_lease_s: float = START_LEASE_S) -> list[dict[str, Any]]:
    """Run the checks due by ``now``; return what this tick did, one dict per check (or meeting) it touched.

    With ``start`` (called with a meeting id, ``starting.start_meeting`` behind it), a planned
    meeting whose time came in the last ``start_window_s`` is started, by one tick only; one
    older than that waits for an operator (``meeting start``) rather than starting hours late.
    Every tick first settles the starts stuck longer than ``start_lease_s`` (see above); one
    put back to planned is started again by this tick, when it starts meetings.
    """
    actions = _release_dead(db, now)
    actions += _recover_starts(db, now, start_window_s, start_lease_s)
    if start is not None:
        for meeting_id in store.claim_start(db, now, start_window_s):
            try:
                result = start(meeting_id)
            except CcctlError as exc:
                actions.append({"meeting_id": meeting_id, "action": "start failed", "note": str(exc)})
            else:
                actions.append({"meeting_id": meeting_id, "action": "started",
                                "note": f"broadcast {result['id']} to {result['sites']} site(s)"})
    for meeting_id in store.settle_ended(db, now):
        actions.append({"meeting_id": meeting_id, "action": "ended", "note": "its broadcast has ended"})
    for _meeting, group in groupby(store.due_checks(db, now), key=lambda r: r["meeting_id"]):
        rows = list(group)
        if now >= rows[0]["starts_at"]:
            for r in rows:
                actions += _skip(db, r, now, "missed: the meeting had started before the check could run")
            continue
        latest = rows[-1]
        for r in rows[:-1]:
            actions += _skip(db, r, now, f"missed: superseded by the {offset_text(latest['offset_s'])} check")
        actions.append(await _run(db, latest, now, options, late_grace_s))
    return actions


def _skip(db: Database, row: dict[str, Any], now: float, note: str) -> list[dict[str, Any]]:
    if not store.skip_check(db, row["id"], note, now):
        return []  # another tick got there first
    store.add_event(db, row["meeting_id"], now, "check_skipped",
                    {"check_id": row["id"], "offset": offset_text(row["offset_s"]), "note": note})
    return [{"meeting_id": row["meeting_id"], "check_id": row["id"], "offset": offset_text(row["offset_s"]),
             "action": "skipped", "note": note}]


async def _run(db: Database, row: dict[str, Any], now: float, options: RollcallOptions,
               late_grace_s: float) -> dict[str, Any]:
    """Claim one check and, if this tick won it, run the roll-call of the audience."""
    meeting_id, check_id, offset = row["meeting_id"], row["id"], offset_text(row["offset_s"])
    action: dict[str, Any] = {"meeting_id": meeting_id, "check_id": check_id, "offset": offset}
    late = now - row["due_at"]
    late_s = late if late > late_grace_s else None
    if not store.claim_check(db, check_id, run_owner(), now, late_s):
        return {**action, "action": "taken", "note": "another tick is running it"}
    note = f"ran {late_s:.0f} s late (due at {offset})" if late_s else None
    if late_s:
        store.add_event(db, meeting_id, now, "check_late", {"check_id": check_id, "offset": offset,
                                                            "late_s": round(late_s, 1)})
    sites = audience_sites(db, meeting_id)
    if not sites:
        why = "no site of the audience is left in the registry"
        store.finish_check(db, check_id, "failed", now, None, None, why)
        store.add_event(db, meeting_id, now, "check_failed", {"check_id": check_id, "offset": offset, "note": why})
        return {**action, "action": "failed", "note": why}
    try:
        outcomes = await rollcall(db, sites, options)
    except BaseException as exc:
        why = f"interrupted: {type(exc).__name__}"
        store.finish_check(db, check_id, "failed", now, None, None, why)
        store.add_event(db, meeting_id, now, "check_failed", {"check_id": check_id, "offset": offset, "note": why})
        raise
    outcome = outcomes[0]
    rows = site_readiness(db, meeting_id, outcome.run_id)
    counts = summary(rows)
    store.finish_check(db, check_id, "done", now + outcome.seconds, outcome.run_id, counts, note)
    calls = [{k: r[k] for k in ("site_id", "site_name", "readiness", "reason", "contact_name", "contact_phone")}
             for r in not_ready(rows)]
    store.add_event(db, meeting_id, now + outcome.seconds, "check_done",
                    {"check_id": check_id, "offset": offset, "run_id": outcome.run_id, "late_s": late_s, **counts,
                     "to_call": calls[:EVENT_SITES], "to_call_total": len(calls)})
    return {**action, "action": "ran late" if late_s else "ran", "run_id": outcome.run_id, "note": note, **counts}
