"""run_rollcall and run_command over several real loopback boxes."""

from __future__ import annotations

import asyncio

import pytest

from ccctl.models import CheckResult, CheckState, Endpoint
from ccctl.rollcall.classify import Thresholds
from ccctl.rollcall.runner import ExecResult, run_command, run_rollcall
from ccctl.rollcall.shfacts import PROBE_COMMAND
from ccctl.rollcall.state import StateTracker

from .conftest import BoxFactory

pytestmark = pytest.mark.asyncio


async def test_rollcall_mixed_fleet_streams_results(make_box: BoxFactory, closed_port: int) -> None:
    good = await make_box("good")
    blind = await make_box("blind")
    blind.facts["camera"] = False
    locked = await make_box("locked", refuse_auth=True)
    targets: list[tuple[str, Endpoint | None]] = [
        ("good", good.endpoint()),
        ("blind", blind.endpoint()),
        ("locked", locked.endpoint()),
        ("gone", Endpoint("127.0.0.1", closed_port)),
        ("new", None),
    ]
    seen: list[CheckResult] = []
    results = await run_rollcall(
        targets, client_key=good.client_key_path, timeout=5.0, on_result=seen.append
    )
    assert [r.site_id for r in results] == ["good", "blind", "locked", "gone", "new"]
    assert sorted(r.site_id for r in seen) == sorted(r.site_id for r in results)
    by_id = {r.site_id: r for r in results}
    assert by_id["good"].state is CheckState.OK
    assert by_id["good"].stage == "ssh"
    assert by_id["good"].facts["site_id"] == "good"
    assert by_id["good"].facts["tcp_rtt_ms"] > 0 and by_id["good"].rtt_ms
    assert (by_id["blind"].state, by_id["blind"].reason) == (CheckState.DEGRADED, "no camera")
    assert by_id["locked"].state is CheckState.AUTH_FAILED
    assert (by_id["gone"].state, by_id["gone"].stage) == (CheckState.UNREACHABLE, "tcp")
    assert (by_id["new"].state, by_id["new"].reason) == (CheckState.ERROR, "no endpoint configured")
    assert all(r.hard and r.attempts == 1 for r in results)
    assert all(r.started_at > 0 and r.duration_ms >= 0 for r in results)


async def test_rollcall_tcp_only(make_box: BoxFactory) -> None:
    box = await make_box()
    [result] = await run_rollcall([("site-1", box.endpoint())], stages=("tcp",))
    assert (result.state, result.stage) == (CheckState.OK, "tcp")
    assert box.logins == 0 and box.commands == []


async def test_rollcall_slow_box_is_degraded_but_link_is_not_slow(make_box: BoxFactory) -> None:
    box = await make_box(diag_delay=0.15)
    thresholds = Thresholds(rtt_warn_ms=100, exec_warn_ms=100)
    [result] = await run_rollcall([("slow", box.endpoint())], client_key=box.client_key_path, thresholds=thresholds)
    assert result.state is CheckState.DEGRADED
    # The box took 150 ms to answer, but the loopback link itself is fast.
    assert result.reason.startswith("slow box: diag took")
    assert "slow link" not in result.reason
    assert result.facts["ssh_exec_ms"] >= 150
    assert result.rtt_ms is not None and result.rtt_ms < 100


async def test_rollcall_retries_until_success(make_box: BoxFactory) -> None:
    box = await make_box(fail_first=1)
    [result] = await run_rollcall([("s", box.endpoint())], client_key=box.client_key_path, retries=2)
    assert result.state is CheckState.OK
    assert result.attempts == 2
    assert box.commands == [PROBE_COMMAND, PROBE_COMMAND]


async def test_rollcall_retries_exhausted_is_hard(closed_port: int) -> None:
    target = [("gone", Endpoint("127.0.0.1", closed_port))]
    [result] = await run_rollcall(target, retries=2, retry_backoff=0.001)
    assert (result.state, result.attempts, result.hard) == (CheckState.UNREACHABLE, 3, True)
    soft = StateTracker(retries=2, max_check_attempts=5)
    [result] = await run_rollcall(target, retries=2, retry_backoff=0.001, tracker=soft)
    assert result.hard is False
    [result] = await run_rollcall(
        target, retries=2, retry_backoff=0.001, tracker=soft, history={"gone": ["OK", "TIMEOUT", "UNREACHABLE"]}
    )
    assert result.hard is True


async def test_rollcall_history_flapping(closed_port: int) -> None:
    history = {"gone": ["OK", "UNREACHABLE"] * 5, "calm": ["UNREACHABLE"] * 10}
    targets: list[tuple[str, Endpoint | None]] = [
        ("gone", Endpoint("127.0.0.1", closed_port)),
        ("calm", Endpoint("127.0.0.1", closed_port)),
    ]
    results = await run_rollcall(targets, stages=("tcp",), history=history)
    assert [r.flapping for r in results] == [True, False]
    assert history["gone"] == ["OK", "UNREACHABLE"] * 5  # not modified


async def test_rollcall_site_timeout(make_box: BoxFactory) -> None:
    box = await make_box(diag_delay=float("inf"))
    [result] = await run_rollcall(
        [("mute", box.endpoint())], client_key=box.client_key_path, timeout=5.0, site_timeout=0.5
    )
    assert result.state is CheckState.TIMEOUT
    assert "0.5" in result.reason


async def test_rollcall_cancel_keeps_delivered_results(make_box: BoxFactory) -> None:
    fast = await make_box("fast")
    mute = await make_box("mute", diag_delay=float("inf"))
    delivered: list[CheckResult] = []
    first = asyncio.Event()

    def on_result(result: CheckResult) -> None:
        delivered.append(result)
        first.set()

    run = asyncio.create_task(
        run_rollcall(
            [("mute", mute.endpoint()), ("fast", fast.endpoint())],
            client_key=fast.client_key_path,
            timeout=30.0,
            on_result=on_result,
        )
    )
    await first.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert [r.site_id for r in delivered] == ["fast"]


async def test_rollcall_rejects_unknown_stage() -> None:
    with pytest.raises(ValueError, match="media"):
        await run_rollcall([], stages=("tcp", "media"))


async def test_run_command_outputs_and_exit_codes(make_box: BoxFactory, closed_port: int) -> None:
    box = await make_box()
    ep = box.endpoint()
    gone_ep = Endpoint("127.0.0.1", closed_port)
    targets: list[tuple[str, Endpoint | None]] = [("a", ep), ("gone", gone_ep), ("new", None)]
    seen: list[ExecResult] = []
    results = await run_command(
        targets, "echo hello", client_key=box.client_key_path, timeout=5.0, on_result=seen.append
    )
    assert len(seen) == 3
    a, gone, new = results
    assert (a.state, a.exit_status, a.stdout, a.stderr) == (CheckState.OK, 0, "hello\n", "")
    assert (gone.state, gone.exit_status) == (CheckState.UNREACHABLE, None)
    assert (new.state, new.reason) == (CheckState.ERROR, "no endpoint configured")
    [failed] = await run_command([("a", ep)], "exit 3", client_key=box.client_key_path)
    assert (failed.state, failed.exit_status, failed.reason) == (CheckState.ERROR, 3, "exit status 3")
    [noisy] = await run_command([("a", ep)], "stderr disk on fire", client_key=box.client_key_path)
    assert (noisy.exit_status, noisy.stderr) == (2, "disk on fire\n")

