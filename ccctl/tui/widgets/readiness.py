"""The meeting panel (``M``): the meeting on now or next, its time and audience, its latest
pre-check's counts (ready, degraded, down, not checked) and the sites not ready with whom to
call, as ``ccctl meeting readiness`` reports them."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from ccctl.meetings.times import local_text, offset_text
from ccctl.tui.widgets.header import age_text
from ccctl.tui.widgets.textpanel import TextPanel

LEVEL_STYLES = {"ready": "green", "degraded": "yellow", "down": "bold red", "not_checked": "grey62"}
CALL_COLUMNS = (("site_id", "site", 12), ("site_name", "name", 28), ("province_name", "province", 14),
                ("readiness", "readiness", 11), ("reason", "reason", 30), ("contact_name", "contact", 22),
                ("contact_phone", "phone", 16))


def _clock(ts: float | None, tz: str, with_day: bool = False) -> str:
    text = local_text(ts, tz)
    if text is None:
        return "-"
    return text[:16] if with_day else text[11:16]


def _when(starts_at: float, now: float) -> str:
    delta = starts_at - now
    return f"in {age_text(delta)}" if delta > 0 else f"started {age_text(-delta)} ago"


def _cells(values: list[tuple[str, int]], style: str = "") -> Text:
    line = Text()
    for value, width in values:
        cell = value if len(value) <= width else value[: width - 1] + "…"
        line.append(cell.ljust(width) + " ", style=style)
    return line


def readiness_text(read: dict[str, Any] | None, now: float, remote: bool = False, loaded: bool = True) -> Text:
    """The panel's text for one read of ``ccctl.tui.feeds.meeting_readiness``."""
    text = Text.assemble(("Meeting", "bold"), " · ")
    if remote:
        return text.append("not served to a remote console yet", style="dim")
    if not loaded:
        return text.append("reading...", style="dim")
    if read is None:
        return text.append("none on now or planned (ccctl meeting plan)", style="dim")
    m = read["meeting"]
    tz = m["tz"]
    text.append(f"{m['id']} {m['title']}", style="bold cyan")
    text.append(f" · {_clock(m['starts_at'], tz, True)} ({tz}) · ")
    text.append(_when(m["starts_at"], now), style="bold")
    text.append(f" · {m['status']} · audience {m['audience']:,}")
    pending = read["next_check"]
    if pending is not None:
        state = "running" if pending["status"] == "running" else f"at {_clock(pending['due_at'], tz)}"
        text.append(f" · next check {offset_text(pending['offset_s'])} {state}", style="dim")
    text.append("\n")
    check, counts = read["check"], read["summary"]
    if check is None or counts is None:
        return text.append("no pre-check has run yet", style="yellow")
    text.append(f"check {offset_text(check['offset_s'])} (run {check['run_id']}, "
                f"{_clock(check['finished_at'], tz)}): ")
    for level, label in (("ready", "ready"), ("degraded", "degraded"), ("down", "down"),
                         ("not_checked", "not checked")):
        text.append(f"{counts[level]:,} {label}", style=LEVEL_STYLES[level] if counts[level] else "dim")
        text.append("  ")
    if check.get("note"):
        text.append(check["note"], style="yellow")
    text.append("\n")
    total = read["calls_total"]
    if not total:
        return text.append("every site of the audience is ready", style="green")
    shown = read["calls"]
    text.append(f"not ready, whom to call ({total:,}" + (f", first {len(shown)} listed" if len(shown) < total else "")
                + "):\n", style="bold")
    text.append_text(_cells([(title, width) for _, title, width in CALL_COLUMNS], "underline"))
    for row in shown:
        text.append("\n")
        values = [(str(row.get(key) or "").replace("_", " ") if key == "readiness" else str(row.get(key) or ""), width)
                  for key, _, width in CALL_COLUMNS]
        text.append_text(_cells(values, LEVEL_STYLES.get(row["readiness"], "")))
    return text


class ReadinessPanel(TextPanel):
    """Shows what the app hands it; redrawn when a read changes it (and each second for the time)."""
