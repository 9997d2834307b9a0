"""The site detail panel: endpoint, contact, unit, tier, the latest check and the history, and
the live media figures when the site is in the broadcast."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.widgets import Static

from ccctl.tui.style import STATE_STYLES


def quality(fraction_lost: float | None) -> str:
    """Loss per 20 s window: < 1 % good, < 3 % ok, < 10 % bad, else terrible."""
    if fraction_lost is None:
        return "-"
    pct = fraction_lost * 100
    return "good" if pct < 1 else "ok" if pct < 3 else "bad" if pct < 10 else "terrible"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "never"


def detail_text(site: dict[str, Any], record: dict[str, Any] | None, history: list[dict[str, Any]],
                session: dict[str, Any] | None) -> Text:
    """The panel's text for one site (``record`` and ``history`` None/empty while loading)."""
    t = Text()
    t.append(f"{site['name']}\n", style="bold")
    t.append(f"{site['id']}  ({site['scheme']})\n", style="dim")
    place = ", ".join(p for p in (site.get("unit_name"), site.get("district_name"), site.get("province_name")) if p)
    t.append(f"{place}\n\n")
    t.append("state    ")
    t.append(site["state"], style=STATE_STYLES.get(site["state"]))
    if site.get("reason"):
        t.append(f"  {site['reason']}")
    t.append(f"\nchecked  {_when(site.get('checked_at'))}")
    if site.get("rtt_ms") is not None:
        t.append(f"  rtt {site['rtt_ms']:.0f} ms")
    t.append(f"\ntier     {site['tier']}\n")
    if record is not None:
        host = record.get("host")
        endpoint = f"{record['ssh_user']}@{host}:{record['ssh_port']}" if host else "no endpoint"
        t.append(f"endpoint {endpoint}\n")
        contact = " ".join(x for x in (record.get("contact_name"), record.get("contact_phone")) if x)
        t.append(f"contact  {contact or '-'}\n")
        if record.get("tags"):
            t.append(f"tags     {', '.join(record['tags'])}\n")
    if session is not None:
        t.append("\nbroadcast ", style="bold")
        t.append(f"{session.get('state')} tier {session.get('tier')}\n")
        t.append(f"  {session.get('kbps') or 0:.0f} kbps  loss {(session.get('fraction_lost') or 0) * 100:.1f} % "
                 f"({quality(session.get('fraction_lost'))})  rtt {session.get('rtt_ms') or 0:.0f} ms  "
                 f"jitter {session.get('jitter_ms') or 0:.0f} ms\n")
    if history:
        t.append("\nlast checks (run, when, state, why)\n", style="bold")
        for h in history:  # one line each, to fit the panel
            t.append(f" {h['run_id']:>5} {time.strftime('%m-%d %H:%M', time.gmtime(h['started_at']))} ")
            t.append(f"{h['state']:<16}", style=STATE_STYLES.get(h["state"]))
            t.append(f" {h['reason'][:14]}\n" if h.get("reason") else "\n")
    return t


class Detail(Static):
    """Shows ``detail_text`` of the highlighted site; an unchanged text is not redrawn."""

    shown: Text | None = None

    def show(self, text: Text | None) -> None:
        """Show ``text`` (None: nothing)."""
        if text != self.shown:
            self.shown = text
            self.update(text or "")
