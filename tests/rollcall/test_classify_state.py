"""Pure rules: diag parsing, error mapping, DEGRADED thresholds, SOFT/HARD and flapping."""

from __future__ import annotations

import errno

import asyncssh
import pytest

from ccctl.models import CheckState
from ccctl.rollcall.classify import Thresholds, classify
from ccctl.rollcall.probes import ProbeOutcome, describe_error, parse_diag
from ccctl.rollcall.state import StateTracker, transitions

OK, DEG, DOWN, TO = "OK", "DEGRADED", "UNREACHABLE", "TIMEOUT"


def healthy() -> dict[str, object]:
    return {"camera": True, "microphone": True, "disk_free_pct": 63.5}


def test_parse_diag_takes_last_line_and_wants_object() -> None:
    assert parse_diag('banner\n{"camera": false}\n') == {"camera": False, "facts_via": "agent"}
    with pytest.raises(ValueError, match="JSON object"):
        parse_diag("[1, 2]")
    with pytest.raises(ValueError, match="empty"):
        parse_diag("\n \n")


def test_describe_error_maps_exceptions() -> None:
    assert describe_error(RuntimeError("boom"), 1.0) == (CheckState.ERROR, "RuntimeError: boom")
    assert describe_error(asyncssh.ConnectionLost("gone"), 1.0)[0] is CheckState.UNREACHABLE
    assert describe_error(asyncssh.PermissionDenied("no"), 1.0)[0] is CheckState.AUTH_FAILED
    assert describe_error(asyncssh.HostKeyNotVerifiable("x"), 1.0)[0] is CheckState.HOSTKEY_MISMATCH
    assert describe_error(TimeoutError(), 2.0) == (CheckState.TIMEOUT, "no SSH answer within 2 s")
    assert describe_error(ConnectionRefusedError(), 1.0) == (CheckState.UNREACHABLE, "connection refused")
    reset = ConnectionResetError(errno.ECONNRESET, "reset")
    assert describe_error(reset, 1.0) == (CheckState.UNREACHABLE, "connection reset by peer")
    # A full fd table is this host's fault, not the site's.
    local = OSError(errno.EMFILE, "Too many open files")
    assert describe_error(local, 1.0) == (CheckState.ERROR, "local: too many open files")


def test_classify_ok_and_failures_pass_through() -> None:
    assert classify(ProbeOutcome(CheckState.OK, "", 12.0, healthy())) == (CheckState.OK, "")
    down = ProbeOutcome(CheckState.AUTH_FAILED, "login refused")
    assert classify(down) == (CheckState.AUTH_FAILED, "login refused")


@pytest.mark.parametrize(
    ("change", "rtt", "expected"),
    [
        ({"camera": False}, 10.0, "no camera"),
        ({"microphone": False}, 10.0, "no microphone"),
        ({"disk_free_pct": 3.2}, 10.0, "disk nearly full (3.2% free)"),
        ({}, 450.0, "slow link: rtt 450 ms > 300 ms"),
        ({"loss_pct": 7}, 10.0, "packet loss 7% > 2%"),
    ],
)
def test_classify_degraded_reasons(change: dict[str, object], rtt: float, expected: str) -> None:
    state, reason = classify(ProbeOutcome(CheckState.OK, "", rtt, {**healthy(), **change}))
    assert state is CheckState.DEGRADED
    assert reason == expected


def test_classify_joins_reasons_and_honours_thresholds() -> None:
    facts = {**healthy(), "camera": False, "disk_free_pct": 1, "bandwidth_kbps": 300}
    state, reason = classify(ProbeOutcome(CheckState.OK, "", 500.0, facts), Thresholds(min_bandwidth_kbps=512))
    assert state is CheckState.DEGRADED
    assert reason.split("; ") == [
        "slow link: rtt 500 ms > 300 ms",
        "no camera",
        "disk nearly full (1% free)",
        "bandwidth 300 kbps < 512 kbps",
    ]
    relaxed = Thresholds(rtt_warn_ms=1000, require_camera=False, disk_min_free_pct=0.5)
    assert classify(ProbeOutcome(CheckState.OK, "", 500.0, {**healthy(), "camera": False}), relaxed)[0] is CheckState.OK


def test_classify_judges_link_on_kernel_rtt_when_known() -> None:
    # Exec round trip 450 ms (box or our loop busy), network RTT 20 ms: the link is fine.
    lagged = ProbeOutcome(CheckState.OK, "", 450.0, healthy(), net_rtt_ms=20.0)
    assert classify(lagged) == (CheckState.OK, "")
    slow = ProbeOutcome(CheckState.OK, "", 450.0, healthy(), net_rtt_ms=420.0)
    assert classify(slow) == (CheckState.DEGRADED, "slow link: rtt 420 ms > 300 ms")
    busy = ProbeOutcome(CheckState.OK, "", 2500.0, {**healthy(), "ssh_exec_ms": 2500.0}, net_rtt_ms=20.0)
    assert classify(busy) == (CheckState.DEGRADED, "slow box: diag took 2500 ms > 2000 ms")


def test_classify_missing_facts_are_not_held_against_site() -> None:
    assert classify(ProbeOutcome(CheckState.OK, "", 5.0, {}))[0] is CheckState.OK
    assert classify(ProbeOutcome(CheckState.OK, "", 5.0, {"disk_free_pct": True}))[0] is CheckState.OK


def test_up_states_are_hard() -> None:
    tracker = StateTracker(retries=3)
    assert tracker.decide([DOWN, DOWN], CheckState.OK).hard
    assert tracker.decide([], CheckState.DEGRADED).hard


def test_failure_hard_when_in_run_retries_exhausted() -> None:
    tracker = StateTracker(retries=2)
    assert tracker.decide([], CheckState.TIMEOUT, attempts=3).hard
    assert not tracker.decide([], CheckState.TIMEOUT, attempts=2).hard


def test_failure_soft_until_consecutive_failures_across_runs() -> None:
    tracker = StateTracker(retries=0, max_check_attempts=3)
    assert not tracker.decide([OK], CheckState.UNREACHABLE).hard
    assert not tracker.decide([OK, DOWN], CheckState.UNREACHABLE).hard
    third = tracker.decide([OK, DOWN, TO], CheckState.UNREACHABLE)
    assert third.hard and third.consecutive_failures == 3
    # An up result in between resets the count.
    assert not tracker.decide([DOWN, DOWN, OK], CheckState.UNREACHABLE).hard


def test_retries_zero_means_every_failure_is_hard() -> None:
    assert StateTracker().decide([OK, OK], CheckState.ERROR).hard


def test_flapping_over_window_threshold() -> None:
    tracker = StateTracker()
    alternating = [OK, DOWN] * 5
    assert tracker.decide(alternating, CheckState.OK).flapping
    steady = [OK] * 9
    assert not tracker.decide(steady, CheckState.UNREACHABLE).flapping
    # 3 changes in 9 pairs = 33 % >= 30 %
    three = [OK, OK, DOWN, DOWN, OK, OK, OK, OK, OK]
    assert transitions([*three, DOWN]) == 3
    assert tracker.decide(three, CheckState.UNREACHABLE).flapping
    # 2 changes in 9 pairs = 22 %
    two = [OK, OK, OK, OK, OK, OK, OK, OK, DOWN]
    assert not tracker.decide(two, CheckState.OK).flapping


def test_flapping_only_looks_at_last_ten_and_needs_samples() -> None:
    tracker = StateTracker()
    old_flaps = [OK, DOWN] * 10 + [OK] * 9
    assert not tracker.decide(old_flaps, CheckState.OK).flapping
    assert not tracker.decide([OK, DOWN, OK], CheckState.UNREACHABLE).flapping
    decision = tracker.decide([OK], CheckState.UNREACHABLE)
    assert decision.changed and not decision.flapping
