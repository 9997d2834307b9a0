"""The site detail panel: endpoint, contact, unit, tier, the latest check and the history, and
the live media figures when the site is in the broadcast (from the change stream's ``stats``
events; the server's status poll when the stream is down), with the edge serving it."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.geometry import Size
from textual.widgets import Static

from ccctl.media.quality import quality_class
from ccctl.tui.style import STATE_STYLES
from ccctl.tui.widgets.rowlist import set_virtual_size

QUALITY_STYLES = {"good": "green", "ok": "yellow", "bad": "bold dark_orange", "terrible": "bold red"}


def quality(loss: float | None) -> str:
    """The class of a loss fraction (``ccctl.media.quality``): good, ok, bad, terrible; ``-``
    without a figure."""
    return quality_class(loss) or "-"


def _figure(value: float | None, unit: str, scale: float = 1.0, digits: int = 0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f} {unit}"


def live_text(t: Text, figures: dict[str, Any], loss_key: str) -> None:
    """The broadcast lines of the panel from a site's live figures (``loss_key``: ``loss``
    over the 20 s window from the stream, ``fraction_lost`` of the last report from a poll)."""
    loss = figures.get(loss_key)
    edge = figures.get("edge")
    t.append("\nbroadcast ", style="bold")
    t.append(f"{figures.get('state')} tier {figures.get('tier')}  served by {f'edge {edge}' if edge else 'ccctl'}\n")
    t.append(f"  {_figure(figures.get('kbps'), 'kbps')}  loss {_figure(loss, '%', 100, 1)} ")
    t.append(quality(loss), style=QUALITY_STYLES.get(quality(loss), "dim"))
    t.append(f"  rtt {_figure(figures.get('rtt_ms'), 'ms')}  jitter {_figure(figures.get('jitter_ms'), 'ms')}\n")


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "never"


def detail_text(site: dict[str, Any], record: dict[str, Any] | None, history: list[dict[str, Any]],
                session: dict[str, Any] | None, live: dict[str, Any] | None = None) -> Text:
    """The panel's text for one site (``record`` and ``history`` None/empty while loading);
    ``live``: its figures from the change stream, else ``session``: from the status poll."""
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
    if live is not None:
        live_text(t, live, "loss")
    elif session is not None:
        live_text(t, session, "fraction_lost")
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
            # the panel's size is set by the screen: no layout of the whole screen for a new text
            # (one per cursor move and per figure changing); its scrolling is sized afresh
            self.shown = text
            self.update(text or "", layout=False)
            self.call_after_refresh(self._size_scrolling)

    def _size_scrolling(self) -> None:
        """The panel's scrollable height for its new text, without a layout of the screen."""
        height = self.get_content_height(self.container_size, self.app.size, self.container_size.width)
        set_virtual_size(self, Size(self.container_size.width, height))
