"""The simulated fleet of bridge points used by the demo, tests and benchmarks.

Real asyncssh servers on loopback addresses, one per simulated site, with faults chosen
from a seeded spec, so the roll-call code runs unchanged against thousands of fake boxes.
"""

from __future__ import annotations

from ccctl.sim.endpoint import SimEndpointSpec, diagnostics, loopback_address
from ccctl.sim.faults import Fault, FaultSpec, parse_fault_spec
from ccctl.sim.fleet import Fleet, FleetStats

__all__ = [
    "Fault",
    "FaultSpec",
    "Fleet",
    "FleetStats",
    "SimEndpointSpec",
    "diagnostics",
    "loopback_address",
    "parse_fault_spec",
]
