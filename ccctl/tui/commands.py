"""The ``:`` command line of the dashboard: a verb (with aliases) and its argument.

``:prov 96`` goes to a province, ``:state UNREACHABLE`` lists the sites in a state, ``:tier
audio`` the sites of a tier; the action verbs exist only outside read-only mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ccctl.models import TIERS
from ccctl.reports import STATES
from ccctl.tui.fleet import SORTS

if TYPE_CHECKING:
    from ccctl.tui.app import Dashboard

ALIASES = {
    "prov": "province", "p": "province", "province": "province", "tinh": "province",
    "state": "state", "st": "state",
    "tier": "tier", "t": "tier",
    "filter": "filter", "f": "filter", "find": "filter",
    "sites": "sites", "units": "units", "top": "top", "country": "top", "home": "top",
    "sort": "sort", "map": "map", "log": "log", "help": "help", "h": "help",
    "q": "quit", "quit": "quit",
    "check": "recheck", "recheck": "recheck", "floor": "floor", "release": "release",
    "move": "move", "revoke": "revoke", "diag": "diag", "diagnose": "diag", "d": "diag",
    "shell": "shell", "ssh": "shell",
}
ACTION_VERBS = {"recheck", "floor", "release", "move", "revoke", "diag", "shell"}


def run_command(app: Dashboard, line: str) -> str:
    """Carry out one command; the line of feedback for the status bar."""
    words = line.strip().lstrip(":").split(maxsplit=1)
    if not words:
        return ""
    verb = ALIASES.get(words[0].lower())
    arg = words[1].strip() if len(words) > 1 else ""
    if verb is None or (verb in ACTION_VERBS and not app.check_action("tier" if verb == "move" else verb, ())):
        return f"unknown command {words[0]!r} (? for help)"
    fleet = app.fleet
    if verb == "province":
        if not arg:
            return "which province? :prov CODE or NAME"
        place = fleet.go_province(arg)
        if place is None:
            return f"no province matches {arg!r}"
        app.repaint(keep_cursor=False)
        return f"{place.name} ({place.scheme})"
    if verb == "state":
        wanted = {s.strip().upper() for s in arg.replace(",", " ").split() if s.strip()}
        wanted |= {"UNREACHABLE", "TIMEOUT", "ERROR", "AUTH_FAILED", "HOSTKEY_MISMATCH"} if "DOWN" in wanted else set()
        wanted.discard("DOWN")
        bad = wanted - set(STATES)
        if bad:
            return f"unknown state {', '.join(sorted(bad))} ({', '.join(STATES)}, DOWN)"
        fleet.query.states = frozenset(wanted)
        fleet.flat = fleet.flat or bool(wanted)
        app.repaint(keep_cursor=False)
        return f"state {', '.join(sorted(wanted))}" if wanted else "state filter cleared"
    if verb == "tier":
        if arg and arg.lower() not in TIERS:
            return f"unknown tier {arg!r} ({', '.join(TIERS)})"
        fleet.query.tier = arg.lower() or None
        fleet.flat = fleet.flat or bool(arg)
        app.repaint(keep_cursor=False)
        return f"tier {arg.lower()}" if arg else "tier filter cleared"
    if verb == "filter":
        fleet.query.text = arg
        app.repaint(keep_cursor=False)
        return f"filter {arg!r}" if arg else "filter cleared"
    if verb in ("sites", "units"):
        if fleet.here.level != "commune":
            fleet.flat = verb == "sites"
            app.repaint(keep_cursor=False)
        return verb
    if verb == "top":
        del fleet.path[1:]
        fleet.flat = False
        app.repaint(keep_cursor=False)
        return "Việt Nam"
    if verb == "sort":
        if arg not in SORTS:
            return f"sort by {', '.join(SORTS)}"
        fleet.set_sort(arg)
        app.repaint()
        return f"sorted by {arg}"
    if verb == "move":
        if arg.lower() not in TIERS:
            return f"move to which tier? ({', '.join(TIERS)})"
        app.action_tier(arg.lower())
        return f"moving to {arg.lower()}"
    if verb == "log":
        return _log_command(app, arg.lower())
    if verb == "quit":
        app.exit()
        return ""
    getattr(app, f"action_{verb}")()
    return verb


def _log_command(app: Dashboard, arg: str) -> str:
    """``:log`` shows or hides the event log; ``:log pause|follow`` and ``:log info|warning|error``."""
    from ccctl.tui.widgets.eventlog import LEVELS

    level = {"warn": "warning", "alert": "error", "errors": "error", "all": "info"}.get(arg, arg)
    if not arg:
        app.action_toggle_log()
        return "log"
    if arg in ("pause", "follow"):
        app.action_log_pause(arg == "pause")
        return f"event log: {arg}"
    if level in LEVELS:
        app.action_log_level(level)
        return f"event log: {level}" + (" and worse" if level == "warning" else "")
    return f"log pause|follow|{'|'.join(LEVELS)}"
