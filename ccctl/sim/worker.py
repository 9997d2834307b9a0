"""One simulator worker process: serve a shard of the fleet, or of the joined receivers, until SIGTERM.

Started by ``ccctl.sim.control.spawn_workers`` as ``python -m ccctl.sim.worker SHARD_DIR FD``:
it reads ``SHARD_DIR/plan.json`` and, for a plan with ``endpoints``, starts the SSH endpoints
and writes each site's published host key to ``SHARD_DIR/published.json``; for a plan with
``receivers``, starts the WHEP receivers (``ccctl.sim.receiver``), which keep
``SHARD_DIR/status.json`` current. Then it writes ``ready`` (or the error) to the pipe FD.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def _report(ready_fd: int, message: str) -> None:
    os.write(ready_fd, f"{message}\n".encode())
    os.close(ready_fd)


async def serve(shard_dir: Path, ready_fd: int) -> None:
    """Run the shard until SIGTERM or SIGINT."""
    plan = json.loads((shard_dir / "plan.json").read_text())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if "receivers" in plan:
        await _serve_receivers(shard_dir, ready_fd, plan, stop)
    else:
        await _serve_endpoints(shard_dir, ready_fd, plan, stop)


async def _serve_endpoints(shard_dir: Path, ready_fd: int, plan: dict[str, Any], stop: asyncio.Event) -> None:
    from ccctl.sim.endpoint import SimEndpointSpec
    from ccctl.sim.faults import parse_fault
    from ccctl.sim.fleet import Fleet

    specs = [SimEndpointSpec(e["site_id"], e["host"], e["port"], parse_fault(e["fault"]) if e["fault"] else None)
             for e in plan["endpoints"]]
    try:
        fleet = Fleet(specs, plan["authorized_key"], shard_dir, user=plan["user"])
        await fleet.start()
    except Exception as exc:  # reported to the parent, which shows it as one line
        _report(ready_fd, f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
    try:
        published = {spec.site_id: fleet.published_host_key(spec.site_id) for spec in specs}
        tmp = shard_dir / "published.json.tmp"
        tmp.write_text(json.dumps(published))
        tmp.replace(shard_dir / "published.json")
        _report(ready_fd, "ready")
        await stop.wait()
    finally:
        await fleet.close()


async def _serve_receivers(shard_dir: Path, ready_fd: int, plan: dict[str, Any], stop: asyncio.Event) -> None:
    from ccctl.media import seam
    from ccctl.media.tls import ServerTrust
    from ccctl.sim.receiver import MEDIA_TIMEOUT_S, ReceiverPool, specs_from_plan

    try:
        seam.check()  # the receivers reach into aiortc as the server does
        trust = ServerTrust(**plan["trust"]) if plan.get("trust") else None  # an https server's certificate
        pool = ReceiverPool(specs_from_plan(plan), plan["server"], shard_dir / "status.json",
                            sample=int(plan.get("sample", 1)), media_timeout=float(plan.get("media_timeout", MEDIA_TIMEOUT_S)),
                            trust=trust)
        await pool.start()
    except Exception as exc:  # reported to the parent, which shows it as one line
        _report(ready_fd, f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
    try:
        pool.write_status()
        _report(ready_fd, "ready")
        await stop.wait()
    finally:
        await pool.close()


def main() -> None:
    """Entry point of the worker process."""
    asyncio.run(serve(Path(sys.argv[1]), int(sys.argv[2])))


if __name__ == "__main__":
    main()
