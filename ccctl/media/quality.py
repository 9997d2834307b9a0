"""A connected site's link quality: its packet loss over a sliding 20 s window and its class
(< 1 % good, < 3 % ok, < 10 % bad, else terrible).

The media core's figures are cumulative (RTP packets sent to the site, packets its receiver
reports say it lost); :class:`LossWindow` keeps a few samples per site and gives the loss
between the oldest sample still inside the window and the newest. The change stream
(:mod:`ccctl.media.changes`) and the dashboard use the same class.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 20.0
CLASSES = ("good", "ok", "bad", "terrible")


def quality_class(loss: float | None) -> str | None:
    """The class of a loss fraction (0..1); None when there is no figure yet."""
    if loss is None:
        return None
    pct = loss * 100
    return "good" if pct < 1 else "ok" if pct < 3 else "bad" if pct < 10 else "terrible"


class LossWindow:
    """Per site, (time, packets sent, packets lost) samples covering the last ``window_s``
    seconds: one sample at or before the window's start is kept as its base, so memory per
    site is bounded by the number of samples taken in a window."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: dict[str, deque[tuple[float, int, int]]] = {}

    def observe(self, site_id: str, now: float, sent: int | None, lost: int | None) -> float | None:
        """Take one sample; the loss fraction over the window (None before a receiver report,
        or while nothing was sent since the window's base)."""
        if sent is None or lost is None:
            return None
        kept = self.samples.setdefault(site_id, deque())
        if kept and (sent < kept[-1][1] or lost < kept[-1][2]):
            kept.clear()  # counters went back: a new session of the site, start afresh
        kept.append((now, sent, lost))
        while len(kept) > 2 and kept[1][0] <= now - self.window_s:
            kept.popleft()
        base = kept[0]
        sent_since = sent - base[1]
        if sent_since <= 0:
            return None
        return min(1.0, max(0.0, (lost - base[2]) / sent_since))

    def keep_only(self, site_ids: set[str]) -> None:
        """Forget the sites not in ``site_ids`` (they left)."""
        for gone in [s for s in self.samples if s not in site_ids]:
            del self.samples[gone]
