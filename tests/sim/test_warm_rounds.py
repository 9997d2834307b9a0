"""Warm roll-call rounds over the simulated fleet: no new TCP or SSH connection after the first."""

from __future__ import annotations

import asyncssh
import pytest

from ccctl.models import CheckState, Endpoint
from ccctl.rollcall.pool import ConnectionPool
from ccctl.rollcall.runner import run_rollcall
from ccctl.sim.fleet import Fleet

pytestmark = pytest.mark.asyncio


async def test_warm_round_opens_no_connection(fleet: Fleet, client_key: asyncssh.SSHKey) -> None:
    site = "ok-1"
    host, port = fleet.address(site)
    target = [(site, Endpoint(host, port, "ccctl", fleet.published_host_key(site)))]

    def connections() -> int:
        return fleet.stats().per_site[site]["connections"]

    async with ConnectionPool() as pool:
        first = await run_rollcall(target, client_key=client_key, pool=pool, timeout=5)
        after_first = connections()
        assert first[0].state is CheckState.OK and after_first == 2  # the tcp probe, then the SSH login
        second = await run_rollcall(target, client_key=client_key, pool=pool, timeout=5)
        assert second[0].state is CheckState.OK and "tcp_rtt_ms" in second[0].facts
        assert connections() == after_first  # reachability came from the open SSH connection
    cold = await run_rollcall(target, client_key=client_key, timeout=5)
    assert cold[0].state is CheckState.OK and connections() == after_first + 2
