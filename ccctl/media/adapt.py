"""Live tier choice from a site's RTCP receiver reports, with hysteresis.

A site starts at its registry tier, which is also its ceiling: an operator who marked a
commune ``low`` knows its link. Every receiver report (about one a second per stream)
gives the fraction of packets lost since the previous one and the round-trip time. The
governor steps one tier down after ``down_after`` bad reports in a row (loss or RTT over
the *down* thresholds), and one tier up, never above the ceiling, after ``up_after`` good
reports in a row (loss and RTT under the much lower *up* thresholds) and at least ``hold_s``
after the last change. The gap between the thresholds and the longer wait to go up are the
hysteresis: a link at the edge settles on the lower tier instead of flapping, and audio
(shared by every tier) goes on whatever the video does.
"""

from __future__ import annotations

from collections.abc import Sequence

from ccctl.config import AdaptConfig

#: Thresholds and counts of the tier governor (see the module doc): the configuration's
#: ``[adapt]`` section itself.
AdaptPolicy = AdaptConfig

DEFAULT_ADAPT = AdaptPolicy()


class TierGovernor:
    """One site's tier decisions; ``order`` lists the tiers best first, audio-only last."""

    def __init__(self, order: Sequence[str], ceiling: str, policy: AdaptPolicy | None = None,
                 now: float = 0.0) -> None:
        self.order = list(order)
        self.ceiling = self.order.index(ceiling)
        self.policy = policy or AdaptPolicy()
        self.bad = 0
        self.good = 0
        self.changed_at = now

    def observe(self, tier: str, fraction_lost: float, rtt_ms: float | None, now: float) -> str | None:
        """One receiver report for a site on ``tier``: the tier to move to, or None to stay."""
        p = self.policy
        rtt = rtt_ms if rtt_ms is not None else 0.0
        index = self.order.index(tier)
        if fraction_lost > p.down_loss or rtt > p.down_rtt_ms:
            self.bad, self.good = self.bad + 1, 0
            if self.bad >= p.down_after and index + 1 < len(self.order):
                return self._move(index + 1, now)
            return None
        self.bad = 0
        if fraction_lost <= p.up_loss and rtt <= p.up_rtt_ms:
            self.good += 1
            if self.good >= p.up_after and index > self.ceiling and now - self.changed_at >= p.hold_s:
                return self._move(index - 1, now)
        else:
            self.good = 0
        return None

    def cap(self, tier: str, now: float) -> None:
        """An operator put the site on ``tier``: it is the new ceiling (up or down), and the
        reports start counting afresh from there."""
        self.ceiling = self.order.index(tier)
        self.bad = self.good = 0
        self.changed_at = now

    def _move(self, index: int, now: float) -> str:
        self.bad = self.good = 0
        self.changed_at = now
        return self.order[index]
