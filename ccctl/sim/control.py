"""Running the simulated fleet in worker processes: plan, start, status, stop.

``sim up`` plans one endpoint per selected site (a distinct 127.x.y.z address, the sim port,
a seeded fault), splits the plan over N worker processes (``python -m ccctl.sim.worker``),
waits until each says it is listening, and returns the host keys each site publishes so the
caller can record them in the registry. State lives in ``$CCCTL_HOME/sim/``: the plan, one
directory per shard (its host keys, its log), and ``state.json`` with the workers' pids.

``sim join`` plans one WHEP receiver per selected site (``ccctl.sim.receiver``) and runs them
in worker processes of their own, a few hundred per process, under ``$CCCTL_HOME/sim/join/``:
joining is a phase of a drill with its own lifetime (``sim leave`` ends it and the SSH fleet
stays up), its own sizing, and it needs no SSH endpoint. Each receiver shard writes a
``status.json`` every second, which :func:`read_receivers` adds up for ``sim status``.
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
PEERS_PER_PROCESS = 400  # receivers per worker process
MAX_RECEIVER_PROCESSES = 16
STALE_STATUS_S = 5.0  # a receiver shard's status older than this is reported stale


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
    processes = max(1, min(processes, len(plan) or 1))
    shards: list[list[PlannedEndpoint]] = [plan[i::processes] for i in range(processes)]
    payloads = [{"authorized_key": authorized_key, "user": user, "endpoints": [e.__dict__ for e in shard]}
                for shard in shards]
    pids, shard_dirs = spawn_workers(base, payloads)
    (base / "state.json").write_text(json.dumps({
        "pids": pids, "started_at": time.time(), "endpoints": len(plan), "faults": _fault_counts(plan)}))
    keys: dict[str, str] = {}
    for shard_dir in shard_dirs:
        keys.update(json.loads((shard_dir / "published.json").read_text()))
    return keys


def spawn_workers(base: Path, payloads: list[dict[str, Any]], private: bool = False) -> tuple[list[int], list[Path]]:
    """One ``ccctl.sim.worker`` per payload (its ``plan.json``, mode 0600 when ``private``);
    the pids and shard directories once every worker said ``ready``. On any failure every
    worker started is stopped and CcctlError names the worker and its log."""
    base.mkdir(parents=True, exist_ok=True)
    workers: list[tuple[subprocess.Popen[bytes], int, Path]] = []
    try:
        for index, payload in enumerate(payloads):
            shard_dir = base / f"shard-{index}"
            shard_dir.mkdir(exist_ok=True)
            plan_path = shard_dir / "plan.json"
            plan_path.unlink(missing_ok=True)
            fd = os.open(plan_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
            with os.fdopen(fd, "w") as fh:
                json.dump(payload, fh)
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
    return [p.pid for p, _, _ in workers], [d for _, _, d in workers]


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


def _fault_counts(plan: list[PlannedEndpoint] | list[PlannedReceiver]) -> dict[str, int]:
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
    _stop_pids(alive)
    (sim_dir(home) / "state.json").unlink()
    return len(alive)


def _stop_pids(pids: list[int]) -> None:
    """SIGTERM each simulator worker, then SIGKILL those still running after the grace period."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for pid in pids:
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


# -- receivers: simulated sites joining a broadcast ------------------------------------------

@dataclass(frozen=True)
class PlannedReceiver:
    """One simulated site joining: its registry tier, the address its ICE uses, what it asks for."""

    site_id: str
    tier: str
    host: str
    kinds: tuple[str, ...]
    fault: str | None = None


def join_dir(home: Path) -> Path:
    """Where the joined receivers keep their state."""
    return sim_dir(home) / "join"


def plan_receivers(sites: list[Any], audio_only: bool = False, faults: FaultSpec | None = None) -> list[PlannedReceiver]:
    """One receiver per site (``ccctl.models.Site``), in sorted-id order.

    A simulated site gathers ICE on its own 127.x address (as its box would), any other on
    127.0.0.1. Every site offers what the join page offers, audio and video, and the server
    sends what its registry tier allows; ``audio_only`` offers sound only. Only the media
    faults (loss, bwcap) of ``faults`` apply.
    """
    ordered = sorted(sites, key=lambda s: s.id)
    assigned = faults.assign([s.id for s in ordered]) if faults else {}
    kinds = ("audio",) if audio_only else ("audio", "video")
    return [PlannedReceiver(s.id, s.tier, _loopback_host(s), kinds,
                            str(assigned[s.id]) if s.id in assigned else None) for s in ordered]


def _loopback_host(site: Any) -> str:
    host = str(site.host or "")
    if site.simulated and host.startswith("127.") and host.replace(".", "").isdigit():
        return host
    return "127.0.0.1"


def receiver_processes(count: int, processes: int | None = None) -> int:
    """Worker processes for ``count`` receivers: ``processes`` if given, else a few hundred each."""
    if processes:
        return max(1, min(processes, count or 1))
    return max(1, min(MAX_RECEIVER_PROCESSES, -(-count // PEERS_PER_PROCESS)))


def start_receivers(home: Path, plan: list[PlannedReceiver], tokens: dict[str, str], server: str, *,
                    processes: int | None = None, sample: int = 1, media_timeout: float | None = None,
                    trust: dict[str, str] | None = None) -> list[int]:
    """Start the receivers of ``plan`` in worker processes (they join at once); their pids.

    ``trust`` (a ``ServerTrust``'s fields) is how they check an https server's certificate.

    ``tokens`` maps each site to its token; the shards' plans holding them are mode 0600.
    Returns once every worker has started its receivers, not once they are connected:
    :func:`read_receivers` tells that.
    """
    existing = read_receivers(home)
    if existing and existing["alive"]:
        raise Busy(f"simulated sites have already joined (pids {existing['alive']}); run: ccctl sim leave")
    base = join_dir(home)
    if base.exists():
        for old in base.glob("shard-*/status.json"):
            old.unlink()
    count = receiver_processes(len(plan), processes)
    payloads = []
    for index in range(count):
        shard = plan[index::count]
        payload: dict[str, Any] = {"server": server, "sample": sample, "receivers": [
            {**r.__dict__, "kinds": list(r.kinds), "token": tokens[r.site_id]} for r in shard]}
        if media_timeout is not None:
            payload["media_timeout"] = media_timeout
        if trust:
            payload["trust"] = trust
        payloads.append(payload)
    pids, _ = spawn_workers(base, payloads, private=True)
    (base / "state.json").write_text(json.dumps({
        "pids": pids, "started_at": time.time(), "server": server, "receivers": len(plan), "sample": sample,
        "faults": _fault_counts(plan)}))
    return pids


def read_receivers(home: Path) -> dict[str, Any] | None:
    """The joined receivers: their state file, live pids and the shards' status added up
    (``states``, ``receiving``, ``joins``, ``packets``/``bytes`` per kind, ``failures``,
    ``sites`` rows, ``site_updated``: when each site's row was written); None when no
    ``sim join`` ran."""
    base = join_dir(home)
    path = base / "state.json"
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    state["alive"] = [pid for pid in state["pids"] if _alive(pid)]
    totals: dict[str, Any] = {"states": {}, "receiving": 0, "joins": 0, "packets": {"audio": 0, "video": 0},
                              "bytes": {"audio": 0, "video": 0}, "failures": {}, "sites": [], "stale": 0,
                              "site_updated": {}}
    now = time.time()
    for shard in sorted(base.glob("shard-*/status.json")):
        try:
            status = json.loads(shard.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now: the next read has it
        if status.get("pid") not in state["alive"]:
            continue  # left over from an earlier join, or its worker died: its figures are gone
        if now - status["updated_at"] > STALE_STATUS_S:
            totals["stale"] += 1
        for key in ("receiving", "joins"):
            totals[key] += status[key]
        for key in ("states", "failures", "packets", "bytes"):
            for name, n in status[key].items():
                totals[key][name] = totals[key].get(name, 0) + n
        totals["sites"] += status["sites"]
        totals["site_updated"].update({r["site_id"]: status["updated_at"] for r in status["sites"]})
    totals["sites"].sort(key=lambda r: r["site_id"])
    state.update(totals)
    return state


def stop_receivers(home: Path) -> int:
    """Every joined receiver leaves (its session is DELETEd) and its worker ends; how many workers ran."""
    state = read_receivers(home)
    if not state:
        return 0
    alive = state["alive"]
    _stop_pids(alive)
    base = join_dir(home)
    for plan in base.glob("shard-*/plan.json"):
        plan.unlink()  # it holds the sites' tokens: keep them no longer than needed
    (base / "state.json").unlink()
    return len(alive)
