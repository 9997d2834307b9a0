"""Roll-call: check that every bridge point can take part before a conference.

Probes (TCP, SSH + ``ccctl-diag``) give one classified outcome per site, the runner
fans them out over the fleet with retries and SOFT/HARD/flapping, and the pool keeps
SSH logins warm between rounds. Results are plain ``ccctl.models.CheckResult`` data.
"""

from __future__ import annotations

from ccctl.rollcall.classify import DEFAULT_THRESHOLDS, Thresholds, classify
from ccctl.rollcall.pool import ClientOptions, ConnectionPool, connect_ssh, exec_command
from ccctl.rollcall.probes import DIAG_COMMAND, ProbeOutcome, ssh_probe, tcp_probe
from ccctl.rollcall.runner import ExecResult, run_command, run_rollcall
from ccctl.rollcall.state import StateDecision, StateTracker

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DIAG_COMMAND",
    "ClientOptions",
    "ConnectionPool",
    "ExecResult",
    "ProbeOutcome",
    "StateDecision",
    "StateTracker",
    "Thresholds",
    "classify",
    "connect_ssh",
    "exec_command",
    "run_command",
    "run_rollcall",
    "ssh_probe",
    "tcp_probe",
]
