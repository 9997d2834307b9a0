"""One simulator worker process: serve a shard of the fleet until SIGTERM.

Started by ``ccctl.sim.control.start_fleet`` as ``python -m ccctl.sim.worker SHARD_DIR FD``:
it reads ``SHARD_DIR/plan.json``, starts the endpoints, writes each site's published host key
to ``SHARD_DIR/published.json``, then writes ``ready`` (or the error) to the pipe FD.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from ccctl.sim.endpoint import SimEndpointSpec
from ccctl.sim.faults import parse_fault
from ccctl.sim.fleet import Fleet


async def serve(shard_dir: Path, ready_fd: int) -> None:
    """Run the shard's endpoints until SIGTERM or SIGINT."""
    plan = json.loads((shard_dir / "plan.json").read_text())
    specs = [SimEndpointSpec(e["site_id"], e["host"], e["port"], parse_fault(e["fault"]) if e["fault"] else None)
             for e in plan["endpoints"]]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        fleet = Fleet(specs, plan["authorized_key"], shard_dir, user=plan["user"])
        await fleet.start()
    except Exception as exc:  # reported to the parent, which shows it as one line
        os.write(ready_fd, f"{type(exc).__name__}: {exc}\n".encode())
        os.close(ready_fd)
        raise SystemExit(1) from None
    try:
        published = {spec.site_id: fleet.published_host_key(spec.site_id) for spec in specs}
        tmp = shard_dir / "published.json.tmp"
        tmp.write_text(json.dumps(published))
        tmp.replace(shard_dir / "published.json")
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
        await stop.wait()
    finally:
        await fleet.close()


def main() -> None:
    """Entry point of the worker process."""
    asyncio.run(serve(Path(sys.argv[1]), int(sys.argv[2])))


if __name__ == "__main__":
    main()
