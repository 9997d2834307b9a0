"""Turn a successful probe into OK or DEGRADED, saying why a site is not fit for a conference.

A site that answers but has no camera, a full disk or a slow link can still join, so it
is DEGRADED rather than down; the reason tells the operator what to ring about. Pure
functions on plain data so the thresholds can be tested without a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ccctl.models import CheckState

if TYPE_CHECKING:
    from ccctl.rollcall.probes import ProbeOutcome


@dataclass(frozen=True)
class Thresholds:
    """Limits beyond which an answering site is DEGRADED.

    ``rtt_warn_ms`` applies to the network RTT (see ``link_rtt_ms``); ``exec_warn_ms``
    to how long ``ccctl-diag`` took (the ``ssh_exec_ms`` fact), which is loose by
    default because it also holds our own event loop's lag under load.
    ``loss_warn_pct`` and ``min_bandwidth_kbps`` apply to the media stage's
    ``media_loss_pct`` and ``media_kbps`` facts (or plain ``loss_pct`` and
    ``bandwidth_kbps``); 300 kbps is about the least one low-tier stream needs. None
    disables a check.
    """

    rtt_warn_ms: float = 300.0
    exec_warn_ms: float | None = 2000.0
    disk_min_free_pct: float = 5.0
    loss_warn_pct: float | None = 2.0
    min_bandwidth_kbps: float | None = 300.0
    require_camera: bool = True
    require_microphone: bool = True


DEFAULT_THRESHOLDS = Thresholds()


def _number(value: Any) -> float | None:
    """A fact as a float, or None when absent or not numeric (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def degradations(facts: dict[str, Any], rtt_ms: float | None, thresholds: Thresholds) -> list[str]:
    """Every reason the facts and round trip fall short, in a stable order; empty when fine.

    Missing facts are not held against a site (a TCP-only roll-call has none); a fact
    must be explicitly false or out of range to count.
    """
    reasons: list[str] = []
    if rtt_ms is not None and rtt_ms > thresholds.rtt_warn_ms:
        reasons.append(f"slow link: rtt {rtt_ms:.0f} ms > {thresholds.rtt_warn_ms:g} ms")
    exec_ms = _number(facts.get("ssh_exec_ms"))
    if thresholds.exec_warn_ms is not None and exec_ms is not None and exec_ms > thresholds.exec_warn_ms:
        reasons.append(f"slow box: diag took {exec_ms:.0f} ms > {thresholds.exec_warn_ms:g} ms")
    if thresholds.require_camera and facts.get("camera") is False:
        reasons.append("no camera")
    if thresholds.require_microphone and facts.get("microphone") is False:
        reasons.append("no microphone")
    disk = _number(facts.get("disk_free_pct"))
    if disk is not None and disk < thresholds.disk_min_free_pct:
        reasons.append(f"disk nearly full ({disk:g}% free)")
    loss = _number(facts.get("media_loss_pct", facts.get("loss_pct")))
    if thresholds.loss_warn_pct is not None and loss is not None and loss > thresholds.loss_warn_pct:
        reasons.append(f"packet loss {loss:g}% > {thresholds.loss_warn_pct:g}%")
    bandwidth = _number(facts.get("media_kbps", facts.get("bandwidth_kbps")))
    if (
        thresholds.min_bandwidth_kbps is not None
        and bandwidth is not None
        and bandwidth < thresholds.min_bandwidth_kbps
    ):
        reasons.append(f"bandwidth {bandwidth:g} kbps < {thresholds.min_bandwidth_kbps:g} kbps")
    return reasons


def link_rtt_ms(outcome: ProbeOutcome) -> float | None:
    """The RTT that says whether the link is slow: the kernel's, else the probe's timer.

    The SSH exec round trip also holds the box's command time and, with hundreds of
    probes in flight, our own event loop's lag (measured at 350 ms on loopback at
    concurrency 500), so judging the link on it would flag healthy sites.
    """
    return outcome.net_rtt_ms if outcome.net_rtt_ms is not None else outcome.rtt_ms


def classify(outcome: ProbeOutcome, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> tuple[CheckState, str]:
    """The final state and reason of a probe: failures pass through, OK may become DEGRADED."""
    if outcome.state is not CheckState.OK:
        return outcome.state, outcome.reason
    reasons = degradations(outcome.facts, link_rtt_ms(outcome), thresholds)
    if reasons:
        return CheckState.DEGRADED, "; ".join(reasons)
    return CheckState.OK, ""
