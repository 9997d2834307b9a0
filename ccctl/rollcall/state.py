"""SOFT/HARD states and flap detection for roll-call results, in the manner of Icinga.

One failed check is often a blip (a lost packet, a box rebooting for an update); an
operator should be called only once a failure is confirmed (HARD), and a site that
keeps changing state should be shown as flapping rather than raise an alarm each time.
Pure functions on the list of recent states, no I/O, so the rules are easy to test.

Rules
-----
* An up state (OK, DEGRADED) is always HARD: good news needs no confirmation.
* A down state is SOFT until ``max_check_attempts`` consecutive failed checks, then
  HARD. Failed checks are this run's attempts (every attempt failed, or the state
  would be up) plus the down states at the end of the history. ``max_check_attempts``
  defaults to ``retries + 1``, so a run that used up its in-run retries is HARD at
  once, and with ``retries=0`` every failure is HARD (the ``CheckResult`` default).
* Flapping: over the last ``flap_window`` (10) results including the new one, the
  share of consecutive pairs whose state differs is at least ``flap_threshold``
  (30 %). Any change counts, OK<->DEGRADED too. Nothing is called flapping before
  ``flap_min_samples`` (5) results exist, so one early change is not a flap. There is
  no hysteresis (Icinga's separate low threshold): the window is short enough that
  the flag clears after a few stable rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ccctl.models import CheckState


def is_down_state(state: str | CheckState) -> bool:
    """Whether a stored state string means the site is down; unknown strings do not count."""
    try:
        return CheckState(state).is_down
    except ValueError:
        return False


def transitions(states: Sequence[str | CheckState]) -> int:
    """How many consecutive pairs in ``states`` differ."""
    values = [CheckState(s).value if isinstance(s, CheckState) else str(s) for s in states]
    return sum(1 for a, b in zip(values, values[1:], strict=False) if a != b)


@dataclass(frozen=True)
class StateDecision:
    """The SOFT/HARD and flapping verdict on one new result."""

    hard: bool
    flapping: bool
    consecutive_failures: int
    change_share: float
    changed: bool  # differs from the previous result (False when there is none)


@dataclass(frozen=True)
class StateTracker:
    """Decides ``hard`` and ``flapping`` for a new result given a site's recent states."""

    retries: int = 0
    max_check_attempts: int | None = None
    flap_window: int = 10
    flap_threshold: float = 0.30
    flap_min_samples: int = 5

    @property
    def attempts_for_hard(self) -> int:
        """Consecutive failed checks after which a failure is HARD."""
        if self.max_check_attempts is not None:
            return max(1, self.max_check_attempts)
        return max(1, self.retries + 1)

    def decide(
        self, history: Sequence[str | CheckState], state: CheckState, attempts: int = 1
    ) -> StateDecision:
        """SOFT/HARD and flapping for ``state`` after ``attempts`` tries, given ``history`` (newest last)."""
        if state.is_down:
            past = 0
            for previous in reversed(history):
                if not is_down_state(previous):
                    break
                past += 1
            consecutive = max(1, attempts) + past
            hard = consecutive >= self.attempts_for_hard
        else:
            consecutive = 0
            hard = True
        window = [*history, state][-self.flap_window :]
        share = transitions(window) / (len(window) - 1) if len(window) > 1 else 0.0
        flapping = len(window) >= self.flap_min_samples and share >= self.flap_threshold
        changed = bool(history) and transitions([history[-1], state]) == 1
        return StateDecision(hard, flapping, consecutive, share, changed)
