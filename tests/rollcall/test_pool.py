"""ConnectionPool: warm rounds reuse logins and one serve session, dead links and sessions are
replaced, boxes without ``ccctl-diag --serve`` fall back to one command per probe, close()
closes all."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from ccctl.models import CheckResult, CheckState, Endpoint
from ccctl.rollcall.pool import ClientOptions, ConnectionPool
from ccctl.rollcall.probes import ssh_probe
from ccctl.rollcall.runner import run_command, run_rollcall
from ccctl.rollcall.shfacts import PROBE_COMMAND, SERVE_PROBE_COMMAND

from .conftest import BoxFactory, SiteBox

pytestmark = pytest.mark.asyncio


async def test_second_round_opens_no_connection(make_box: BoxFactory) -> None:
    boxes = [await make_box(f"s{i}") for i in range(3)]
    targets: list[tuple[str, Endpoint | None]] = [(b.site_id, b.endpoint()) for b in boxes]
    async with ConnectionPool(keepalive_interval=30) as pool:
        first = await run_rollcall(targets, stages=("ssh",), client_key=boxes[0].client_key_path, pool=pool)
        assert [b.connections for b in boxes] == [1, 1, 1]
        second = await run_rollcall(targets, stages=("ssh",), client_key=boxes[0].client_key_path, pool=pool)
        assert [b.connections for b in boxes] == [1, 1, 1]
        # One serve session per box carried both rounds: no command per probe.
        assert [b.commands for b in boxes] == [[SERVE_PROBE_COMMAND]] * 3
        assert [b.answers for b in boxes] == [2, 2, 2]
        assert (pool.opened, pool.reused, len(pool)) == (3, 3, 3)
        # ccctl exec shares the same logins.
        await run_command(targets, "echo hi", client_key=boxes[0].client_key_path, pool=pool)
        assert [b.logins for b in boxes] == [1, 1, 1]
    assert all(r.state is CheckState.OK for r in first + second)
    assert [r.facts["site_id"] for r in second] == ["s0", "s1", "s2"]


async def _rounds(box: SiteBox, pool: ConnectionPool, count: int, **kwargs: object) -> list[CheckResult]:
    """``count`` roll-call rounds (TCP then SSH) of one box over the pool."""
    results: list[CheckResult] = []
    for _ in range(count):
        results += await run_rollcall(
            [(box.site_id, box.endpoint())], client_key=box.client_key_path, pool=pool, **kwargs  # type: ignore[arg-type]
        )
    return results


async def test_warm_probe_keeps_fact_and_rtt_semantics(box: SiteBox) -> None:
    async with ConnectionPool() as pool:
        cold, warm = await _rounds(box, pool, 2)
    assert box.commands == [SERVE_PROBE_COMMAND] and box.answers == 2
    for result in (cold, warm):
        assert result.state is CheckState.OK, result.reason
        assert result.facts["camera"] is True and result.facts["site_id"] == "site-1"
        # The diag round trip is a fact; the result's RTT is the kernel's, of the last stage.
        assert result.facts["ssh_exec_ms"] > 0 and result.facts["tcp_rtt_ms"] > 0
        assert result.rtt_ms is not None and result.rtt_ms != result.facts["ssh_exec_ms"]


async def test_probes_sharing_a_connection_pipeline_on_one_session(box: SiteBox) -> None:
    async with ConnectionPool() as pool:
        outcomes = await asyncio.gather(*(ssh_probe(box.endpoint(), 5.0, box.client_key_path, pool) for _ in range(6)))
        again = await asyncio.gather(*(ssh_probe(box.endpoint(), 5.0, box.client_key_path, pool) for _ in range(6)))
    assert all(o.state is CheckState.OK for o in outcomes + again)
    assert (box.logins, box.commands, box.answers) == (1, [SERVE_PROBE_COMMAND], 12)


async def test_box_without_serve_falls_back_and_remembers(make_box: BoxFactory) -> None:
    box = await make_box(serve=False)
    async with ConnectionPool() as pool:
        results = await _rounds(box, pool, 3)
    assert [r.state for r in results] == [CheckState.OK] * 3
    assert all(r.facts["site_id"] == "site-1" and r.facts["ssh_exec_ms"] > 0 for r in results)
    # Tried once on the connection, then one command per probe.
    assert box.commands == [SERVE_PROBE_COMMAND, PROBE_COMMAND, PROBE_COMMAND, PROBE_COMMAND]
    assert (box.logins, box.answers) == (1, 0)


async def test_killed_serve_session_is_replaced(box: SiteBox) -> None:
    async with ConnectionPool() as pool:
        first = await _rounds(box, pool, 1)
        assert box.kill_serve() == 1
        after = await _rounds(box, pool, 2)
    assert [r.state for r in first + after] == [CheckState.OK] * 3, [r.reason for r in after]
    # The same login carried a fresh session, which then served on.
    assert (box.logins, box.commands, box.answers) == (1, [SERVE_PROBE_COMMAND, SERVE_PROBE_COMMAND], 3)


async def test_serve_session_that_keeps_dying_falls_back(box: SiteBox) -> None:
    async with ConnectionPool() as pool:
        for _ in range(4):
            assert (await _rounds(box, pool, 1))[0].state is CheckState.OK
            box.kill_serve()
        assert (await _rounds(box, pool, 1))[0].state is CheckState.OK
    assert box.commands == [SERVE_PROBE_COMMAND] * 3 + [PROBE_COMMAND] * 2
    assert box.logins == 1


async def test_faults_show_per_answer_on_one_session(box: SiteBox) -> None:
    async with ConnectionPool() as pool:
        healthy = await _rounds(box, pool, 1)
        box.facts["camera"] = False
        nocam = await _rounds(box, pool, 1)
        box.diag_output = "not json\n"
        garbled = await _rounds(box, pool, 1)
    assert box.commands == [SERVE_PROBE_COMMAND]
    assert healthy[0].state is CheckState.OK
    assert (nocam[0].state, nocam[0].reason) == (CheckState.DEGRADED, "no camera")
    assert garbled[0].state is CheckState.ERROR
    assert garbled[0].reason.startswith("diag output is not JSON")


async def test_silent_serve_session_times_out_and_is_dropped(box: SiteBox) -> None:
    async with ConnectionPool() as pool:
        assert (await ssh_probe(box.endpoint(), 5.0, box.client_key_path, pool)).state is CheckState.OK
        box.diag_delay = float("inf")  # the agent hangs on the next request
        hung = await ssh_probe(box.endpoint(), 0.3, box.client_key_path, pool)
        assert hung.state is CheckState.TIMEOUT
        assert len(pool) == 0  # the connection with the wedged session was dropped
        box.diag_delay = 0.0
        fresh = await ssh_probe(box.endpoint(), 5.0, box.client_key_path, pool)
    assert fresh.state is CheckState.OK, fresh.reason
    assert (box.logins, box.commands) == (2, [SERVE_PROBE_COMMAND, SERVE_PROBE_COMMAND])


async def test_pool_close_closes_connections(box: SiteBox) -> None:
    pool = ConnectionPool()
    conn, reused = await pool.acquire(box.endpoint(), timeout=5.0, client_key=box.client_key_path)
    assert not reused
    pool.release(box.endpoint(), conn)
    await pool.close()
    assert conn.is_closed()
    assert len(pool) == 0


async def test_dead_connection_is_replaced_once(box: SiteBox) -> None:
    async with ConnectionPool() as pool:
        ok = await ssh_probe(box.endpoint(), 5.0, box.client_key_path, pool)
        assert ok.state is CheckState.OK
        conn, _ = await pool.acquire(box.endpoint(), timeout=5.0, client_key=box.client_key_path)
        pool.release(box.endpoint(), conn)
        box.drop_connections()  # the box rebooted; the client has not noticed yet
        again = await ssh_probe(box.endpoint(), 5.0, box.client_key_path, pool)
        assert again.state is CheckState.OK, again.reason
        assert (box.logins, pool.opened) == (2, 2)
        assert box.commands == [SERVE_PROBE_COMMAND, SERVE_PROBE_COMMAND]


async def test_changed_host_key_forces_fresh_login(box: SiteBox) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    async with ConnectionPool() as pool:
        assert (await ssh_probe(box.endpoint(), 5.0, box.client_key_path, pool)).state is CheckState.OK
        changed = await ssh_probe(box.endpoint(host_key=other), 5.0, box.client_key_path, pool)
        assert changed.state is CheckState.HOSTKEY_MISMATCH
        assert len(pool) == 0


async def test_concurrent_acquires_share_one_login(box: SiteBox) -> None:
    async with ConnectionPool() as pool:
        outcomes = await asyncio.gather(
            *(ssh_probe(box.endpoint(), 5.0, box.client_key_path, pool) for _ in range(5))
        )
        assert all(o.state is CheckState.OK for o in outcomes)
        assert box.logins == 1 and box.commands == [SERVE_PROBE_COMMAND] and box.answers == 5


async def test_timed_out_connection_is_dropped(make_box: BoxFactory) -> None:
    box = await make_box(diag_delay=float("inf"))
    async with ConnectionPool() as pool:
        outcome = await ssh_probe(box.endpoint(), 0.5, box.client_key_path, pool)
        assert outcome.state is CheckState.TIMEOUT
        assert len(pool) == 0


async def test_options_are_built_once_per_key(make_box: BoxFactory) -> None:
    boxes = [await make_box(f"s{i}") for i in range(2)]
    cache = ClientOptions()
    async with ConnectionPool(options=cache) as pool:
        for b in boxes:
            assert (await ssh_probe(b.endpoint(), 5.0, b.client_key_path, pool)).state is CheckState.OK
    assert len(cache._options) == 1 and len(cache._keys) == 1  # noqa: SLF001
    assert len(cache._host_keys) == 2  # noqa: SLF001


async def test_max_size_evicts_idle_connections(make_box: BoxFactory) -> None:
    boxes = [await make_box(f"s{i}") for i in range(3)]
    async with ConnectionPool(max_size=2) as pool:
        for b in boxes:
            assert (await ssh_probe(b.endpoint(), 5.0, b.client_key_path, pool)).state is CheckState.OK
        assert len(pool) == 2
        assert ConnectionPool.key(boxes[0].endpoint()) not in pool._entries  # noqa: SLF001


async def test_reused_connection_failing_on_use_is_replaced(box: SiteBox) -> None:
    async with ConnectionPool() as pool:
        assert (await ssh_probe(box.endpoint(), 5.0, box.client_key_path, pool)).state is CheckState.OK
        conn, _ = await pool.acquire(box.endpoint(), timeout=5.0, client_key=box.client_key_path)
        pool.release(box.endpoint(), conn)
        conn.close()
        await conn.wait_closed()
        conn.is_closed = lambda: False  # type: ignore[method-assign]  # looks alive, is not
        again = await ssh_probe(box.endpoint(), 5.0, box.client_key_path, pool)
        assert again.state is CheckState.OK, again.reason
        assert (pool.opened, box.logins) == (2, 2)
