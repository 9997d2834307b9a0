"""Alerts on indicators (``new_cases>500``, ``province:risk_level>=3``) and when they fire.

An alert fires for a unit when its newest day crosses the threshold: the condition holds on
that day and did not on the unit's previous day (or there was none). ``LEVEL:`` evaluates on
values summed up to that level (risk levels: the worst of them).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from ccctl.errors import UsageError
from ccctl.feeds.spec import LEVELS

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}
_RULE = re.compile(r"^\s*(?:(province|district|commune)\s*:\s*)?([a-z0-9_]+)\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Alert:
    """One parsed alert rule."""

    indicator: str
    op: str
    threshold: float
    level: str | None = None

    def holds(self, value: float | None) -> bool:
        """Whether a value meets the condition (a missing value never does)."""
        return value is not None and _OPS[self.op](value, self.threshold)

    def text(self) -> str:
        """The rule as the operator writes it."""
        limit = int(self.threshold) if self.threshold.is_integer() else self.threshold
        return f"{self.level + ':' if self.level else ''}{self.indicator}{self.op}{limit}"


def parse_alert(text: str, feed_level: str) -> Alert:
    """One rule; UsageError when it is not ``[LEVEL:]INDICATOR OP NUMBER`` or below the feed."""
    m = _RULE.match(text)
    if not m:
        raise UsageError(f"bad alert {text!r}: use INDICATOR>NUMBER, e.g. new_cases>500 or province:risk_level>=3")
    level = m[1]
    if level and LEVELS.index(level) > LEVELS.index(feed_level):
        raise UsageError(f"alert {text!r}: a {feed_level} feed cannot be watched per {level}")
    return Alert(m[2], m[3], float(m[4]), None if level in (None, feed_level) else level)


def crossings(alert: Alert, series: dict[str, dict[str, float]]) -> list[tuple[str, str, float]]:
    """``(unit, day, value)`` for each unit whose newest day crosses the threshold.

    ``series`` is unit -> day -> value for the alert's indicator (history and new data).
    """
    out = []
    for unit, days in series.items():
        if not days:
            continue
        ordered = sorted(days)
        newest = ordered[-1]
        value = days[newest]
        before = days[ordered[-2]] if len(ordered) > 1 else None
        if alert.holds(value) and not alert.holds(before):
            out.append((unit, newest, value))
    return out
