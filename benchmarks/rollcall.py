"""Roll-call figures: the TCP stage and end-to-end runs over the simulated fleet, and client
CPU per site against a real OpenSSH sshd, side by side with the peer tools.

    .venv/bin/python benchmarks/rollcall.py [--quick] [--sites N] [--sshd-sites N] [--no-peers]
                                            [--repeats R] [--sshd-only]

Parts, each printed with its target:
1. TCP stage alone over N simulated sites (default 10,599; target < 1.5 s).
2. TCP + SSH + diagnostics over the same N simulated sites, end to end (target < 60 s).
3. Client CPU per site against one real sshd on loopback, M logins (default 300): ccctl cold,
   ccctl warm (second round over pooled connections), a bare asyncssh loop, and, when
   installed (the ``bench`` extra / Debian ``openssh-client``), parallel-ssh, OpenSSH ``ssh``
   via ``xargs -P``, and ``ansible -m raw``; with ratios to parallel-ssh (targets: cold at most
   0.5x, warm at most 0.1x).
   ccctl cold and parallel-ssh, the pair the cold target compares, run ``--repeats`` times
   (default 5) in alternating order against the same sshd, each time after the same
   warm-up; their figures are the medians, and the ratio is the median of the rounds'
   own ratios (each round's two runs are next to each other in time, so load from other
   work on the machine weighs on both alike), printed with its range.
Everything listens and connects on 127.0.0.0/8 only, every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ccctl.keys import ensure_client_key
from ccctl.models import Endpoint
from ccctl.rollcall.pool import ConnectionPool
from ccctl.rollcall.runner import run_rollcall
from ccctl.sim.control import plan_fleet, start_fleet, stop_fleet
from ccctl.sim.faults import FaultSpec

Row = tuple[str, str, str]


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _fmt(seconds: float) -> str:
    return f"{seconds:.3f} s"


async def _timed_rollcall(targets: list[tuple[str, Endpoint | None]], stages: tuple[str, ...], key: str,
                          concurrency: int, pool: ConnectionPool | None = None,
                          engine: str = "libssh2") -> tuple[float, float, dict[str, int]]:
    wall0, cpu0 = time.perf_counter(), _cpu()
    results = await run_rollcall(targets, stages=stages, concurrency=concurrency, timeout=10.0, retries=0,
                                 client_key=key, pool=pool, engine=engine)
    wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
    states: dict[str, int] = {}
    for r in results:
        states[r.state.value] = states.get(r.state.value, 0) + 1
    return wall, cpu, states


def simulated_fleet(n: int, processes: int, rows: list[Row]) -> None:
    """Parts 1 and 2: the simulated fleet, N sites on distinct 127.x addresses."""
    home = Path(tempfile.mkdtemp(prefix="ccctl-bench-sim-"))
    try:
        key_path = home / "keys" / "id_ed25519"
        public = ensure_client_key(key_path)
        ids = [f"s{i:05d}" for i in range(n)]
        plan = plan_fleet(ids, FaultSpec(), 22022)
        t0 = time.perf_counter()
        keys = start_fleet(home, plan, public, processes)
        rows.append((f"start simulated fleet ({n} sites, {processes} processes)", _fmt(time.perf_counter() - t0), ""))
        targets: list[tuple[str, Endpoint | None]] = [
            (e.site_id, Endpoint(e.host, e.port, "ccctl", keys[e.site_id], str(key_path))) for e in plan]
        wall, cpu, states = asyncio.run(_timed_rollcall(targets, ("tcp",), str(key_path), 1000))
        rows.append((f"TCP stage, {n} sites ({states})", _fmt(wall), "< 1.5 s" if n >= 10599 else ""))
        wall, cpu, states = asyncio.run(_timed_rollcall(targets, ("tcp", "ssh"), str(key_path), 64))
        rows.append((f"TCP+SSH+diag end to end, {n} sites ({states})", _fmt(wall), "< 60 s" if n >= 10599 else ""))
        rows.append(("  client CPU per site, cold (servers share the 2 cores)", f"{cpu / n * 1000:.2f} ms", ""))

        async def warm() -> tuple[float, float, dict[str, int]]:
            async with ConnectionPool() as pool:
                await _timed_rollcall(targets, ("tcp", "ssh"), str(key_path), 64, pool, "asyncssh")
                return await _timed_rollcall(targets, ("tcp", "ssh"), str(key_path), 64, pool, "asyncssh")

        wall, cpu, states = asyncio.run(warm())
        rows.append((f"warm round, one pooled connection per site, {n} sites ({states})", _fmt(wall), ""))
        rows.append(("  client CPU per site, warm", f"{cpu / n * 1000:.2f} ms", ""))
    finally:
        stop_fleet(home)
        shutil.rmtree(home, ignore_errors=True)


PEERS = Path(__file__).resolve().parent / "peers.py"


def _children_cpu() -> float:
    return _cpu(resource.RUSAGE_CHILDREN)


def _peer(tool: str, params_file: Path) -> tuple[float, int] | str:
    """Run one in-process tool in its own process; its CPU for the logins, or why it did not run."""
    proc = subprocess.run([sys.executable, str(PEERS), tool, str(params_file)], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return data["cpu"], data["ok"]


def _openssh_xargs(params: dict[str, Any], tmp: Path) -> tuple[float, int] | str:
    """OpenSSH's client, one process per login, fanned out by xargs -P (client CPU = children)."""
    if not shutil.which("ssh") or not shutil.which("xargs"):
        return "ssh or xargs not installed"
    known = tmp / "known_hosts"
    known.write_text(f"[{params['host']}]:{params['port']} {params['host_key']}\n")
    script = (f"ssh -q -o BatchMode=yes -o IdentitiesOnly=yes -o UserKnownHostsFile={known} "
              f"-o StrictHostKeyChecking=yes -i {params['key']} -p {params['port']} "
              f"{params['user']}@{params['host']} ccctl-diag")
    lines = "\n".join(str(i) for i in range(params["n"])) + "\n"
    cpu0 = _children_cpu()
    proc = subprocess.run(["xargs", "-P", str(min(params["concurrency"], 64)), "-I{}", "sh", "-c", script],
                          input=lines, capture_output=True, text=True, timeout=600)
    cpu = _children_cpu() - cpu0
    return cpu, proc.stdout.count("agent_version")


def _ansible_raw(params: dict[str, Any], tmp: Path) -> tuple[float, int] | str:
    """ansible -m raw, the lightest Ansible module (no Python on the box), forks = concurrency."""
    if not shutil.which("ansible", path=str(Path(sys.executable).parent)) and not shutil.which("ansible"):
        return "ansible-core not installed (pip install -e '.[bench]')"
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or "ansible"
    inventory = tmp / "inventory.ini"
    known = tmp / "known_hosts_ansible"
    known.write_text(f"[{params['host']}]:{params['port']} {params['host_key']}\n")
    inventory.write_text("[sites]\n" + "".join(
        f"s{i} ansible_host={params['host']} ansible_port={params['port']} ansible_user={params['user']}\n"
        for i in range(params["n"])))
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_SSH_ARGS":
           f"-o UserKnownHostsFile={known} -o IdentitiesOnly=yes -o ControlMaster=no",
           "ANSIBLE_PRIVATE_KEY_FILE": params["key"], "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
           "ANSIBLE_HOME": str(tmp / "ansible-home")}
    cpu0 = _children_cpu()
    proc = subprocess.run([ansible, "sites", "-i", str(inventory), "-m", "raw", "-a", "ccctl-diag",
                           "-f", str(min(params["concurrency"], 64)), "-o"], capture_output=True, text=True,
                          env=env, timeout=900)
    cpu = _children_cpu() - cpu0
    return cpu, proc.stdout.count("agent_version")


def _warm_one_sshd_per_site(boxes: int, tmp: Path, public: str,
                            params: dict[str, Any]) -> tuple[float, int, int] | None:
    """Warm rounds where every site is its own sshd (own pooled connection and serve session)."""
    from contextlib import ExitStack

    from ccctl.sim.sshd import SshdServer

    with ExitStack() as stack:
        servers = [stack.enter_context(SshdServer(tmp / f"box{i}", [public], site_id=f"box{i}")) for i in range(boxes)]
        multi = {**params, "boxes": [{"host": s.host, "port": s.port, "host_key": s.host_key} for s in servers]}
        multi_file = tmp / "params-boxes.json"
        multi_file.write_text(json.dumps(multi))
        outcome = _peer("ccctl-warm-boxes", multi_file)
    if isinstance(outcome, str):
        return None
    return outcome[0], outcome[1], boxes


COLD = "ccctl cold (tcp+ssh+diag+classify)"
PSSH = "parallel-ssh"


def _paired_cold(n: int, repeats: int, peers: bool, params_file: Path,
                 rows: list[Row], figures: dict[str, float]) -> None:
    """ccctl cold and parallel-ssh, ``repeats`` rounds in alternating order: medians and paired ratio."""
    tools = [(COLD, "ccctl-cold")] + ([(PSSH, "parallel-ssh")] if peers else [])
    runs: dict[str, list[float]] = {name: [] for name, _ in tools}
    oks: dict[str, list[int]] = {name: [] for name, _ in tools}
    failed: dict[str, str] = {}
    for round_no in range(repeats):
        for name, tool in tools if round_no % 2 == 0 else tools[::-1]:
            if name in failed:
                continue
            outcome = _peer(tool, params_file)
            if isinstance(outcome, str):
                failed[name] = outcome
                continue
            runs[name].append(outcome[0] / n * 1000)
            oks[name].append(outcome[1])
    for name, _tool in tools:
        if name in failed:
            rows.append((f"{name}, {n} logins to real sshd", "n/a", failed[name]))
            continue
        figures[name] = statistics.median(runs[name])
        spread = f"{min(runs[name]):.2f}-{max(runs[name]):.2f}"
        rows.append((f"{name}, {n} logins to real sshd ({min(oks[name])} ok), median of {len(runs[name])}",
                     f"{figures[name]:.2f} ms", f"client CPU/site (runs {spread})"))
    if COLD in figures and PSSH in figures:
        ratios = [c / p for c, p in zip(runs[COLD], runs[PSSH], strict=True)]
        rows.append((f"  ratio {COLD} / {PSSH}, median of {len(ratios)} paired rounds",
                     f"{statistics.median(ratios):.2f}x",
                     f"<= 0.5x (rounds {min(ratios):.2f}-{max(ratios):.2f}x)"))


def against_sshd(n: int, peers: bool, rows: list[Row], repeats: int = 5) -> None:
    """Part 3: client CPU per login against one real sshd, ccctl beside the peer tools."""
    from ccctl.sim.sshd import SshdServer, sshd_available

    reason = sshd_available()
    if reason:
        rows.append(("real sshd part", "skipped", reason))
        return
    tmp = Path(tempfile.mkdtemp(prefix="ccctl-bench-sshd-"))
    try:
        key_path = tmp / "id_ed25519"
        public = ensure_client_key(key_path)
        with SshdServer(tmp / "sshd", [public]) as sshd:
            params = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "host_key": sshd.host_key,
                      "key": str(key_path), "n": n, "concurrency": 32, "warmup": min(10, n)}
            params_file = tmp / "params.json"
            params_file.write_text(json.dumps(params))
            load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
            rows.append((f"machine load (1/5/15 min) before the real-sshd part, {os.cpu_count()} cores", load, ""))
            figures: dict[str, float] = {}
            _paired_cold(n, max(1, repeats), peers, params_file, rows, figures)
            tools: list[tuple[str, Any]] = [
                ("ccctl cold, asyncssh engine", lambda: _peer("ccctl-cold-asyncssh", params_file)),
                ("ccctl warm (pooled, one shared connection)", lambda: _peer("ccctl-warm", params_file)),
                ("bare asyncssh loop", lambda: _peer("asyncssh", params_file))]
            if peers:
                tools += [("OpenSSH ssh via xargs -P", lambda: _openssh_xargs(params, tmp)),
                          ("ansible -m raw", lambda: _ansible_raw(params, tmp))]
            for name, run in tools:
                if name == "ccctl warm (pooled, one shared connection)":
                    per_box = _warm_one_sshd_per_site(min(n, 100), tmp, public, params)
                    if per_box is not None:
                        cpu, ok, boxes = per_box
                        figures["ccctl warm, one sshd per site"] = cpu / boxes * 1000
                        rows.append((f"ccctl warm, one sshd per site, {boxes} sites ({ok} ok)",
                                     f"{cpu / boxes * 1000:.2f} ms", "client CPU/site"))
                outcome = run()
                if isinstance(outcome, str):
                    rows.append((f"{name}, {n} logins to real sshd", "n/a", outcome))
                    continue
                cpu, ok = outcome
                figures[name] = cpu / n * 1000
                rows.append((f"{name}, {n} logins to real sshd ({ok} ok)", f"{figures[name]:.2f} ms", "client CPU/site"))
            pssh = figures.get(PSSH)
            if pssh:
                for name, target in (("ccctl cold, asyncssh engine", ""),
                                     ("ccctl warm (pooled, one shared connection)", "<= 0.1x"),
                                     ("ccctl warm, one sshd per site", "<= 0.1x"),
                                     ("bare asyncssh loop", ""), ("OpenSSH ssh via xargs -P", ""),
                                     ("ansible -m raw", "")):
                    if name in figures:
                        rows.append((f"  ratio {name} / parallel-ssh", f"{figures[name] / pssh:.2f}x", target))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, no peers (for the test suite)")
    parser.add_argument("--sites", type=int, default=10599)
    parser.add_argument("--sshd-sites", type=int, default=300)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--repeats", type=int, default=5,
                        help="rounds of ccctl cold against parallel-ssh (medians and paired ratio)")
    parser.add_argument("--sshd-only", action="store_true", help="only part 3, the real-sshd comparison")
    args = parser.parse_args()
    n = 60 if args.quick else args.sites
    rows: list[Row] = []
    if not args.sshd_only:
        simulated_fleet(n, 1 if args.quick else args.processes, rows)
    against_sshd(20 if args.quick else args.sshd_sites, not (args.quick or args.no_peers), rows,
                 1 if args.quick else args.repeats)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'figure':>12}  target")
    for name, figure, target in rows:
        print(f"{name:<{width}}  {figure:>12}  {target}")


if __name__ == "__main__":
    main()
