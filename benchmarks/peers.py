"""One roll-call tool against the sshd of benchmarks/rollcall.py, in a process of its own.

    python benchmarks/peers.py TOOL PARAMS.json     (prints one JSON line)

Each tool logs in M times and runs ``ccctl-diag``; in-process tools report the CPU time of
their own work (imports and interpreter start excluded), so the figures compare the
per-login cost; ccctl's figures include classification and persisting every result.
Every in-process tool first makes ``warmup`` logins (default 10) the same way, outside
the measurement, so one-time costs (OpenSSL and libssh2 initialisation, key parsing,
resolver threads, first SQL statements) weigh on no tool's per-login figure.

TOOL: ccctl-cold (the product's cold engine, libssh2), ccctl-cold-asyncssh, ccctl-warm,
asyncssh, parallel-ssh. All logins go to one sshd, so ccctl-warm's pooled sites share one
connection; benchmarks/rollcall.py also measures warm rounds with one connection per site.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from pathlib import Path
from typing import Any


def _warmup(p: dict[str, Any]) -> int:
    """Logins made before the measurement starts."""
    return int(p.get("warmup", 10))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _ccctl(p: dict[str, Any], warm: bool, engine: str = "asyncssh") -> tuple[float, int]:
    import tempfile

    from ccctl.models import Endpoint
    from ccctl.registry import open_registry
    from ccctl.rollcall.history import RunRecorder
    from ccctl.rollcall.pool import ConnectionPool
    from ccctl.rollcall.runner import run_rollcall

    if "boxes" in p:  # one sshd per site: every site gets its own pooled connection
        targets = [(f"s{i}", Endpoint(b["host"], b["port"], p["user"], b["host_key"], p["key"]))
                   for i, b in enumerate(p["boxes"])]
    else:
        targets = [(f"s{i}", Endpoint(p["host"], p["port"], p["user"], p["host_key"], p["key"])) for i in range(p["n"])]
    pool = ConnectionPool() if warm else None
    # Persisted as a real run is: results streamed into a SQLite registry's history.
    home = tempfile.TemporaryDirectory(prefix="ccctl-peer-")
    db = open_registry(f"sqlite:///{home.name}/registry.db")
    if warm:  # the first round opens the pooled connections; the second is the figure
        await run_rollcall(targets, stages=("ssh",), concurrency=p["concurrency"], timeout=30, pool=pool)
    else:  # the same kind of run over a few sites, recorded as its own run
        warmup = targets[:_warmup(p)]
        recorder = RunRecorder(db, {"benchmark": True, "warmup": True})
        await run_rollcall(warmup, stages=("tcp", "ssh"), concurrency=p["concurrency"], timeout=30, engine=engine,
                           on_result=recorder.add)
        recorder.finish("finished", {})
    cpu0 = _cpu()
    recorder = RunRecorder(db, {"benchmark": True})
    results = await run_rollcall(targets, stages=("tcp", "ssh"), concurrency=p["concurrency"], timeout=30, pool=pool,
                                 engine=engine, on_result=recorder.add)
    recorder.finish("finished", {})
    cpu = _cpu() - cpu0
    db.close()
    home.cleanup()
    if pool is not None:
        await pool.close()
    return cpu, sum(1 for r in results if r.state.value in ("OK", "DEGRADED"))


async def _asyncssh(p: dict[str, Any]) -> tuple[float, int]:
    import asyncssh

    key = asyncssh.read_private_key(p["key"])
    known: tuple[list[Any], list[Any], list[Any]] = ([asyncssh.import_public_key(p["host_key"])], [], [])
    sem = asyncio.Semaphore(p["concurrency"])

    async def one() -> bool:
        async with sem:
            async with asyncssh.connect(p["host"], p["port"], username=p["user"], client_keys=[key],
                                        known_hosts=known, config=None) as conn:
                return (await conn.run("ccctl-diag")).exit_status == 0

    await asyncio.gather(*(one() for _ in range(_warmup(p))), return_exceptions=True)
    cpu0 = _cpu()
    done = await asyncio.gather(*(one() for _ in range(p["n"])), return_exceptions=True)
    return _cpu() - cpu0, sum(1 for d in done if d is True)


def _parallel_ssh(p: dict[str, Any]) -> tuple[float, int]:
    from pssh.clients import ParallelSSHClient

    def client(n: int) -> ParallelSSHClient:
        return ParallelSSHClient([p["host"]] * n, user=p["user"], port=p["port"], pkey=p["key"],
                                 pool_size=p["concurrency"], num_retries=0, timeout=30)

    warmup = client(_warmup(p))
    warmup.join(warmup.run_command("ccctl-diag", stop_on_errors=False))
    measured = client(p["n"])
    cpu0 = _cpu()
    output = measured.run_command("ccctl-diag", stop_on_errors=False)
    measured.join(output)
    ok = sum(1 for o in output if o.exception is None and o.exit_code == 0 and list(o.stdout))
    return _cpu() - cpu0, ok


def main() -> None:
    tool, params = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    if tool == "ccctl-cold":
        cpu, ok = asyncio.run(_ccctl(params, warm=False, engine="libssh2"))
    elif tool == "ccctl-cold-asyncssh":
        cpu, ok = asyncio.run(_ccctl(params, warm=False))
    elif tool in ("ccctl-warm", "ccctl-warm-boxes"):
        cpu, ok = asyncio.run(_ccctl(params, warm=True))
    elif tool == "asyncssh":
        cpu, ok = asyncio.run(_asyncssh(params))
    elif tool == "parallel-ssh":
        cpu, ok = _parallel_ssh(params)
    else:
        raise SystemExit(f"unknown tool {tool}")
    print(json.dumps({"cpu": cpu, "ok": ok}))


if __name__ == "__main__":
    main()
