"""ConnectionPool: warm rounds reuse logins, dead links are replaced, close() closes all."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from ccctl.models import CheckState, Endpoint
from ccctl.rollcall.pool import ClientOptions, ConnectionPool
from ccctl.rollcall.probes import ssh_probe
from ccctl.rollcall.runner import run_command, run_rollcall

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
        assert [b.commands for b in boxes] == [["ccctl-diag", "ccctl-diag"]] * 3
        assert (pool.opened, pool.reused, len(pool)) == (3, 3, 3)
        # ccctl exec shares the same logins.
        await run_command(targets, "echo hi", client_key=boxes[0].client_key_path, pool=pool)
        assert [b.logins for b in boxes] == [1, 1, 1]
    assert all(r.state is CheckState.OK for r in first + second)


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
        assert box.logins == 1 and len(box.commands) == 5


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
