"""Running the simulated fleet in worker processes: plan, start, status, stop.

``sim up`` plans one endpoint per selected site (a distinct 127.x.y.z address, the sim port,
a seeded fault), splits the plan over N worker processes (``python -m ccctl.sim.worker``),
waits until each says it is listening, and returns the host keys each site publishes so the
caller can record them in the registry. State lives in ``$CCCTL_HOME/sim/``: the plan, one
directory per shard (its host keys, its log), and ``state.json`` with the workers' pids.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccctl.errors import Busy, CcctlError
from ccctl.sim.faults import FaultSpec

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PlannedEndpoint:
    """One simulated site: where it listens and what is wrong with it."""

    site_id: str
    host: str
    port: int
    fault: str | None


def plan_fleet(site_ids: list[str], faults: FaultSpec, port: int) -> list[PlannedEndpoint]:
    """Addresses in sorted-id order (stable across runs) and faults from the seeded spec."""
    from ccctl.sim.endpoint import loopback_address  # loads asyncssh: only when planning

    ordered = sorted(site_ids)
    assigned = faults.assign(ordered)
    return [PlannedEndpoint(sid, loopback_address(i), port, str(assigned[sid]) if sid in assigned else None)
            for i, sid in enumerate(ordered)]


def launch(db: Any, config: Any, site_ids: list[str], faults: FaultSpec,
           processes: int | None = None) -> list[PlannedEndpoint]:
    """Start a fleet for ``site_ids`` and record each site's simulated endpoint in the registry.

    ``config`` is a ``ccctl.config.Config``: its home, client key, sim port and SSH user.
    """
    from ccctl.keys import ensure_client_key
    from ccctl.registry.sites import update_endpoints

    key_path = config.client_key_path
    public = ensure_client_key(key_path)
    plan = plan_fleet(site_ids, faults, config.sim.port)
    keys = start_fleet(config.home, plan, public, processes or config.sim.processes, config.ssh.user)
    update_endpoints(db, {e.site_id: {"host": e.host, "ssh_port": e.port, "ssh_user": config.ssh.user,
                                      "host_key": keys[e.site_id], "key_path": str(key_path), "simulated": True}
                          for e in plan})
    return plan


def sim_dir(home: Path) -> Path:
    """Where the fleet keeps its state."""
    return home / "sim"


def _alive(pid: int) -> bool:
    """True while ``pid`` is one of our simulator workers (a reused pid is not)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return b"ccctl.sim.worker" in cmdline and status.split(") ", 1)[-1][:1] != "Z"


def read_state(home: Path) -> dict[str, Any] | None:
    """The running fleet's state, or None when no fleet was started."""
    path = sim_dir(home) / "state.json"
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    state["alive"] = [pid for pid in state["pids"] if _alive(pid)]
    return state


def start_fleet(home: Path, plan: list[PlannedEndpoint], authorized_key: str, processes: int,
                user: str = "ccctl") -> dict[str, str]:
    """Start the workers; return each site's published host key once all are listening."""
    existing = read_state(home)
    if existing and existing["alive"]:
        raise Busy(f"a simulated fleet is already running (pids {existing['alive']}); run: ccctl sim down")
    base = sim_dir(home)
    base.mkdir(parents=True, exist_ok=True)
    processes = max(1, min(processes, len(plan) or 1))
    shards: list[list[PlannedEndpoint]] = [plan[i::processes] for i in range(processes)]
    workers: list[tuple[subprocess.Popen[bytes], int, Path]] = []
    try:
        for index, shard in enumerate(shards):
            shard_dir = base / f"shard-{index}"
            shard_dir.mkdir(exist_ok=True)
            (shard_dir / "plan.json").write_text(json.dumps({
                "authorized_key": authorized_key, "user": user,
                "endpoints": [e.__dict__ for e in shard]}))
            read_fd, write_fd = os.pipe()
            log = open(shard_dir / "worker.log", "ab")
            proc = subprocess.Popen(
                [sys.executable, "-m", "ccctl.sim.worker", str(shard_dir), str(write_fd)],
                pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )
            log.close()
            os.close(write_fd)
            workers.append((proc, read_fd, shard_dir))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for proc, read_fd, shard_dir in workers:
            message = _read_line(read_fd, deadline)
            if message != "ready":
                raise CcctlError(f"simulator worker {proc.pid} failed: {message or 'no answer'}; see {shard_dir / 'worker.log'}")
    except BaseException:
        for proc, _, _ in workers:
            proc.terminate()
            proc.wait(STOP_TIMEOUT_S)
        raise
    finally:
        for _, read_fd, _ in workers:
            os.close(read_fd)
    (base / "state.json").write_text(json.dumps({
        "pids": [p.pid for p, _, _ in workers], "started_at": time.time(), "endpoints": len(plan),
        "faults": _fault_counts(plan)}))
    keys: dict[str, str] = {}
    for _, _, shard_dir in workers:
        keys.update(json.loads((shard_dir / "published.json").read_text()))
    return keys


def _read_line(fd: int, deadline: float) -> str:
    """One line from a worker's ready pipe, waiting at most until ``deadline``."""
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data.decode(errors="replace").strip() or "timed out"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _fault_counts(plan: list[PlannedEndpoint]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in plan:
        kind = (e.fault or "none").split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def stop_fleet(home: Path) -> int:
    """Stop every worker (SIGTERM, then SIGKILL after a grace period); return how many ran."""
    state = read_state(home)
    if not state:
        return 0
    alive = state["alive"]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for pid in alive:
        while _alive(pid) and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)  # polling another session's process: no handle to wait on
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    (sim_dir(home) / "state.json").unlink()
    return len(alive)
