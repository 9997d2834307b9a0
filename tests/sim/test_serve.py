"""``ccctl-diag --serve`` on the simulated fleet: the raw protocol and pooled roll-calls over it."""

from __future__ import annotations

import json

import asyncssh
import pytest

from ccctl.models import CheckResult, CheckState, Endpoint
from ccctl.rollcall.pool import ConnectionPool
from ccctl.rollcall.probes import SERVE_COMMAND
from ccctl.rollcall.runner import run_rollcall
from ccctl.sim.endpoint import diagnostics
from ccctl.sim.faults import Fault
from ccctl.sim.fleet import Fleet

from .conftest import Connector

pytestmark = pytest.mark.asyncio


def _endpoint(fleet: Fleet, site_id: str) -> Endpoint:
    host, port = fleet.address(site_id)
    return Endpoint(host, port, "ccctl", fleet.published_host_key(site_id))


async def _round(fleet: Fleet, sites: list[str], key: asyncssh.SSHKey, pool: ConnectionPool) -> list[CheckResult]:
    targets: list[tuple[str, Endpoint | None]] = [(site, _endpoint(fleet, site)) for site in sites]
    return await run_rollcall(targets, timeout=5, client_key=key, pool=pool)


async def test_serve_answers_each_line_until_eof(fleet: Fleet, connect: Connector) -> None:
    async with await connect("nocam-1") as conn:
        process = await conn.create_process(SERVE_COMMAND)
        answers = []
        for _ in range(3):
            process.stdin.write("\n")
            answers.append(json.loads(await process.stdout.readline()))
        process.stdin.write_eof()
        completed = await process.wait()
    assert answers == [diagnostics("nocam-1", Fault("nocam"))] * 3
    assert answers[0]["camera"] is False
    assert completed.exit_status == 0
    assert fleet.stats().per_site["nocam-1"]["commands"] == 1
    assert fleet._endpoints["nocam-1"].answers == 3  # noqa: SLF001


async def test_pooled_rounds_use_one_session_per_site_with_faults_per_answer(
    fleet: Fleet, client_key: asyncssh.SSHKey
) -> None:
    sites = ["ok-1", "nocam-1", "slow-1"]
    async with ConnectionPool() as pool:
        first = await _round(fleet, sites, client_key, pool)
        second = await _round(fleet, sites, client_key, pool)
    per_site = fleet.stats().per_site
    assert [per_site[s]["commands"] for s in sites] == [1, 1, 1]
    assert [per_site[s]["auth_ok"] for s in sites] == [1, 1, 1]
    for results in (first, second):
        ok, nocam, slow = results
        assert ok.state is CheckState.OK, ok.reason
        assert (nocam.state, nocam.reason) == (CheckState.DEGRADED, "no camera")
        assert slow.state is CheckState.OK, slow.reason
        assert slow.facts["ssh_exec_ms"] >= 300  # the slow fault delays every answer
        assert slow.facts["site_id"] == "slow-1"


async def test_killed_session_is_replaced_on_the_same_login(fleet: Fleet, client_key: asyncssh.SSHKey) -> None:
    async with ConnectionPool() as pool:
        first = await _round(fleet, ["ok-2"], client_key, pool)
        assert fleet._endpoints["ok-2"].kill_serve_sessions() == 1  # noqa: SLF001
        second = await _round(fleet, ["ok-2"], client_key, pool)
    assert [r.state for r in first + second] == [CheckState.OK, CheckState.OK], second[0].reason
    stats = fleet.stats().per_site["ok-2"]
    # One login, two serve sessions (the killed one and its replacement), both answering.
    assert (stats["auth_ok"], stats["commands"]) == (1, 2)
    assert fleet._endpoints["ok-2"].answers == 2  # noqa: SLF001
