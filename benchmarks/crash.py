"""Crash figures: roll-calls and the server SIGKILLed at random moments, and what survives.

    .venv/bin/python benchmarks/crash.py [--quick] [--kills K] [--server-kills S] [--sites N] [--seed X]

Everything is the real CLI in child processes, on loopback, in a temp CCCTL_HOME with a SQLite
registry:

1. Roll-call. ``ccctl sim up`` serves Sóc Trăng's 109 communes (a few slow boxes and
   blackholes so a run lasts a few seconds); ``ccctl rollcall run`` is started K times
   (default 100) and SIGKILLed at a moment drawn uniformly over a whole run (start-up
   included; a first run without a kill measures it). Its stderr is a terminal (a pty), so
   it draws its progress line as it would for an operator. Right before each kill the
   results already in the registry are read; after it, those that are gone are **lost**
   (target 0; the exit status is 1 otherwise). Also counted: results the progress line had
   shown, or the JSON on stdout had printed, that never reached the registry (target 0
   too, printed with its verdict, not in the exit status: the history writes in batches of
   at most 0.25 s, so a SIGKILL may take the last one), the registry's integrity after each
   kill, and, after all kills and one more complete run, whether every result kept is still
   there and how the killed runs are marked (``running``, or ``interrupted`` once the next
   start marks them).
2. Server. ``ccctl serve`` with a live testsrc broadcast and N sites joined (``ccctl sim
   join --audio-only``: real aiortc receivers) is SIGKILLed S times (default 10) at a
   random moment 1-3 s after every site was receiving, and started again at once, as a
   supervisor would. Measured from the kill: the server answering ``/healthz`` again, and
   **every site back**: connected on a new session and receiving (target < 15 s; the sites
   notice the silence after ``sim join``'s media timeout, 10 s, and rejoin with backoff).

``--quick`` (tests/test_benchmarks.py): 5 roll-call kills, 1 server kill with 4 sites. Every
wait is bounded; a run that misses a bound says so and the benchmark goes on or stops with
exit 1. No peer tool: there is none to compare a crash with.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: ccctl comes from this tree
    sys.path.insert(0, str(ROOT))

from ccctl.registry import open_registry  # noqa: E402
from ccctl.rollcall.history import FLUSH_S, list_runs, run_results  # noqa: E402
from ccctl.sim.control import read_receivers  # noqa: E402

PROVINCE = "soc trang"  # 109 communes (2021)
FLEET_FAULTS = "slow=10%:600,blackhole=2%,seed=3"  # runs last a few seconds: time to be killed in
RUN_ARGS = ("--timeout", "2", "--retries", "0", "--concurrency", "16", "--format", "json")
RUN_LIMIT_S = 120.0  # a roll-call of ~100 sites that takes longer has hung
SITES_BACK_LIMIT_S = 90.0  # bound of every "all sites back" wait
TARGET_BACK_S = 15.0
PROGRESS = re.compile(rb"(\d+)/(\d+) ")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Home:
    """A temp CCCTL_HOME and SQLite registry, and the CLI run against them."""

    def __init__(self, serve_port: int, sim_port: int) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="ccctl-crash-"))
        self.db_url = f"sqlite:///{self.path / 'registry.db'}"
        self.listen = f"127.0.0.1:{serve_port}"
        self.env = {**os.environ, "CCCTL_HOME": str(self.path), "CCCTL_DB": self.db_url,
                    "CCCTL_SIM_PORT": str(sim_port), "CCCTL_SERVE_LISTEN": self.listen}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ccctl", *args]

    def run(self, *args: str, timeout: float = 180.0) -> str:
        """Run a command to its end; its stdout, or SystemExit with its stderr."""
        done = subprocess.run(self.argv(*args), env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise SystemExit(f"ccctl {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-800:]}")
        return done.stdout

    def close(self) -> None:
        with contextlib.suppress(Exception):
            subprocess.run(self.argv("sim", "down"), env=self.env, cwd=ROOT, capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        shutil.rmtree(self.path, ignore_errors=True)


# -- 1. roll-calls ---------------------------------------------------------------------------------


class Terminal:
    """A pty as the child's stderr; a thread keeps the highest ``done/total`` its progress drew."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.shown = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        tail = b""
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every writer has gone
                return
            if not chunk:
                return
            tail = (tail + chunk)[-4096:]
            for match in PROGRESS.finditer(tail):
                self.shown = max(self.shown, int(match.group(1)))

    def child_started(self) -> None:
        os.close(self.slave)  # the child holds its own copy; EOF comes when it is gone

    def finish(self) -> int:
        """Everything the child drew, once it has ended; the highest count shown."""
        self._thread.join(10)
        os.close(self.master)
        return self.shown


def newest_run(db_url: str) -> dict[str, Any] | None:
    with open_registry(db_url) as db:
        runs = list_runs(db, 1)
    return runs[0] if runs else None


def results_of(db_url: str, run_id: int) -> set[str]:
    with open_registry(db_url) as db:
        return {r["site_id"] for r in run_results(db, run_id)}


def integrity(db_url: str) -> str:
    with open_registry(db_url) as db:
        return str(db.query("PRAGMA quick_check")[0][0])


def one_run(home: Home, kill_after: float | None) -> dict[str, Any]:
    """One ``rollcall run``; SIGKILLed ``kill_after`` seconds after its start unless it ended first."""
    before = newest_run(home.db_url)
    before_id = before["run"] if before else 0
    term = Terminal()
    out_path = home.path / "run.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(home.argv("rollcall", "run", "--province", PROVINCE, *RUN_ARGS), env=home.env,
                                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=term.slave,
                                start_new_session=True)
    term.child_started()
    t0 = time.monotonic()
    killed = False
    kept: set[str] = set()
    run_id: int | None = None
    try:
        proc.wait(kill_after if kill_after is not None else RUN_LIMIT_S)  # the random moment, or its end
    except subprocess.TimeoutExpired:
        if kill_after is None:
            proc.kill()
            raise SystemExit(f"a roll-call without a kill did not end within {RUN_LIMIT_S:g} s") from None
        newest = newest_run(home.db_url)
        if newest and newest["run"] > before_id:
            run_id = newest["run"]
            kept = results_of(home.db_url, run_id)  # what the registry holds right before the kill
        os.kill(proc.pid, signal.SIGKILL)
        killed = True
        proc.wait(30)
    elapsed = time.monotonic() - t0
    shown = term.finish()
    newest = newest_run(home.db_url)
    if run_id is None and newest and newest["run"] > before_id:
        run_id = newest["run"]  # it made its run between the look and the kill
    after = results_of(home.db_url, run_id) if run_id is not None else set()
    printed: set[str] = set()
    with contextlib.suppress(ValueError, TypeError, KeyError):
        printed = {row["site_id"] for row in json.loads(out_path.read_text())}
    return {"killed": killed, "at": elapsed, "run_id": run_id, "kept": kept, "after": after,
            "lost": kept - after, "shown": shown, "shown_unwritten": max(0, shown - len(after)),
            "printed": len(printed), "printed_unwritten": len(printed - after), "exit": proc.returncode,
            "integrity": integrity(home.db_url) if killed else "ok"}


def rollcall_kills(kills: int, rng: random.Random) -> bool:
    """Part 1; True when no result was lost."""
    home = Home(free_port(), free_port())
    try:
        home.run("units", "load", "--scheme", "2021")
        home.run("sites", "generate", "--province", PROVINCE)
        home.run("sim", "up", "--detach", "--processes", "1", "--faults", FLEET_FAULTS, "--province", PROVINCE)
        full = one_run(home, None)
        span = full["at"]
        print(f"roll-call of {len(full['after'])} simulated sites, not killed: {span:.2f} s from start to exit "
              f"(kill moments drawn uniformly over 0-{span:.2f} s)", flush=True)
        done: list[dict[str, Any]] = []
        ended_first = 0
        attempts = 0
        while len(done) < kills and attempts < 3 * kills:  # bounded: runs that end before their moment are redrawn
            attempts += 1
            r = one_run(home, rng.uniform(0.0, span))
            if not r["killed"]:
                ended_first += 1
                continue
            done.append(r)
            if r["lost"] or r["integrity"] != "ok":
                print(f"  kill {len(done)} at {r['at']:.2f} s: run {r['run_id']} lost {sorted(r['lost'])[:5]}, "
                      f"integrity {r['integrity']}", file=sys.stderr, flush=True)
        final = one_run(home, None)  # the next start after the last kill, run to its end
        still = {r["run_id"]: results_of(home.db_url, r["run_id"]) for r in done if r["run_id"] is not None}
        later_lost = sum(len(r["kept"] - still.get(r["run_id"], set())) for r in done if r["run_id"] is not None)
        with open_registry(home.db_url) as db:
            statuses = {run["run"]: run["status"] for run in list_runs(db, len(done) + 10)}
    finally:
        home.close()
    kept = sum(len(r["kept"]) for r in done)
    lost = sum(len(r["lost"]) for r in done)
    shown = sum(r["shown"] for r in done)
    unwritten = sum(r["shown_unwritten"] for r in done)
    printed = sum(r["printed"] for r in done)
    printed_unwritten = sum(r["printed_unwritten"] for r in done)
    moments = [r["at"] for r in done]
    marks: dict[str, int] = {}
    for r in done:
        if r["run_id"] is not None:
            status = statuses.get(r["run_id"], "?")
            marks[status] = marks.get(status, 0) + 1
    no_run = sum(1 for r in done if r["run_id"] is None)
    bad = sum(1 for r in done if r["integrity"] != "ok")
    ok = lost == 0 and later_lost == 0 and bad == 0
    print(f"roll-call SIGKILLed {len(done)} times ({ended_first} more ended before their moment), "
          f"{min(moments, default=0):.2f}-{max(moments, default=0):.2f} s after start; {no_run} before making a run")
    print(f"  results in the registry before the kill, lost after it: {lost} of {kept}  (target 0: "
          f"{'met' if lost == 0 else 'NOT met'})")
    print(f"  still there after the last kill and one more run: {kept - later_lost} of {kept}; "
          f"registry integrity after each kill: {len(done) - bad}/{len(done)} ok")
    told = unwritten + printed_unwritten
    print(f"  shown to the operator before the kill but never written: {unwritten} of {shown} on the progress line, "
          f"{printed_unwritten} of {printed} printed on stdout  (target 0: {'met' if told == 0 else 'NOT met'}; "
          f"the history writes its buffer every {FLUSH_S:g} s and a SIGKILL takes what it holds)")
    print(f"  killed runs now marked: {json.dumps(marks, sort_keys=True)}; the run after: exit {final['exit']}, "
          f"{len(final['after'])} results in {final['at']:.2f} s", flush=True)
    return ok


# -- 2. the server ----------------------------------------------------------------------------------


class Server:
    """``ccctl serve`` in its own session, logging to a file; killed by its pid."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.home.path / "serve.out", "ab") as log:
            self.proc = subprocess.Popen(self.home.argv("serve"), env=self.home.env, cwd=ROOT,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def health(self) -> dict[str, Any] | None:
        """The open ``/healthz`` answer, or None while nothing answers."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.home.listen}/healthz", timeout=2) as response:
                return dict(json.loads(response.read()))
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return None

    def live(self) -> bool:
        """The server answers and has resumed the live broadcast."""
        return bool((self.health() or {}).get("broadcast"))


def _sites(home: Home) -> list[dict[str, Any]]:
    state = read_receivers(home.path)
    return list(state["sites"]) if state else []


def _wait(check: Any, limit: float, step: float = 0.1) -> float | None:
    """Seconds until ``check()`` is true, polled every ``step`` s; None after ``limit`` s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:  # bounded
        if check():
            return time.monotonic() - t0
        time.sleep(step)  # polling another process's state: nothing to wait on
    return None


def server_kills(kills: int, sites: int, rng: random.Random) -> bool:
    """Part 2; True when every site came back after every kill within the bound."""
    home = Home(free_port(), free_port())
    server = Server(home)
    healthz: list[float] = []
    back: list[float] = []
    missing = 0
    try:
        home.run("units", "load", "--scheme", "2021")
        home.run("sites", "generate", "--province", PROVINCE)
        server.start()
        if _wait(lambda: server.health() is not None or (server.proc is not None and server.proc.poll() is not None),
                 60) is None or server.health() is None:
            raise SystemExit(f"the server did not answer within 60 s: {(home.path / 'serve.out').read_text()[-800:]}")
        home.run("broadcast", "start")
        if not server.live():
            raise SystemExit(f"no live broadcast: {(home.path / 'serve.out').read_text()[-800:]}")
        home.run("sim", "join", "--province", PROVINCE, "--count", str(sites), "--audio-only", "--wait", "120")
        for k in range(kills):
            rows = _sites(home)
            if len(rows) < sites or not all(r["receiving"] for r in rows):
                if _wait(lambda: len(_sites(home)) >= sites and all(r["receiving"] for r in _sites(home)),
                         SITES_BACK_LIMIT_S) is None:
                    raise SystemExit("the sites were not all receiving before a kill")
            time.sleep(rng.uniform(1.0, 3.0))  # the random moment of the kill (not a synchronisation)
            joins = {r["site_id"]: r["joins"] for r in _sites(home)}
            t0 = time.monotonic()
            server.kill()
            server.start()

            def all_back(joins: dict[str, int] = joins) -> bool:
                rows = _sites(home)
                return len(rows) >= sites and all(r["joins"] > joins.get(r["site_id"], 0) and r["receiving"]
                                                  for r in rows)

            up = _wait(server.live, 60)
            if up is not None:
                healthz.append(time.monotonic() - t0)
            took = _wait(all_back, SITES_BACK_LIMIT_S)
            if took is None:
                rows = _sites(home)
                missing += sum(1 for r in rows if not (r["joins"] > joins.get(r["site_id"], 0) and r["receiving"]))
                print(f"  kill {k + 1}: not every site back within {SITES_BACK_LIMIT_S:g} s", file=sys.stderr,
                      flush=True)
                continue
            back.append(time.monotonic() - t0)
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(home.argv("sim", "leave"), env=home.env, cwd=ROOT, capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        server.stop()
        home.close()

    def spread(values: list[float]) -> str:
        if not values:
            return "n/a"
        return f"p50 {statistics.median(values):.1f} s, max {max(values):.1f} s"

    worst = max(back, default=float("inf"))
    ok = len(back) == kills and worst < SITES_BACK_LIMIT_S
    print(f"server SIGKILLed {kills} time{'s' if kills != 1 else ''} with {sites} sites joined (audio), restarted at once:")
    print(f"  server answering again, its broadcast resumed, after the kill: {spread(healthz)}")
    print(f"  every site back (new session, receiving) after the kill: {spread(back)} over {len(back)} of {kills} "
          f"kills  (target < {TARGET_BACK_S:g} s: {'met' if back and worst < TARGET_BACK_S else 'NOT met'})")
    print(f"  sites not back within {SITES_BACK_LIMIT_S:g} s: {missing}", flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 roll-call kills, 1 server kill, 4 sites (the suite)")
    parser.add_argument("--kills", type=int, help="roll-call kills (default 100)")
    parser.add_argument("--server-kills", type=int, help="server kills (default 10)")
    parser.add_argument("--sites", type=int, help="sites joined during the server kills (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    kills = args.kills if args.kills is not None else (5 if args.quick else 100)
    server = args.server_kills if args.server_kills is not None else (1 if args.quick else 10)
    sites = args.sites if args.sites is not None else (4 if args.quick else 20)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through every finally: the fleet, the sites and the server stop

    signal.signal(signal.SIGTERM, stop)
    ok = True
    if kills > 0:
        ok = rollcall_kills(kills, rng) and ok
    if server > 0:
        ok = server_kills(server, sites, rng) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
