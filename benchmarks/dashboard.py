"""The dashboard with the whole country: 10,599 sites while 2,000 states change each second.

Two apps run on the same registry, each in a process of its own (for a fair peak RSS), headless
through Textual's Pilot, with the same keys and the same flow of state changes: a writer process
records roll-call results into the registry at the rate (the real recorder), ``ccctl serve``
(another process) carries them on its change stream (``GET /api/events``), and each app takes
them from the stream with the same client (``--direct`` posts them to the apps instead):

- ``line``: ``ccctl dashboard`` (the Line-API site list over a plain list);
- ``datatable``: a plain Textual ``DataTable`` holding the same sites, its cells updated per
  change, rebuilt for a filter or a drill-down and sorted with ``sort``.

Figures: time to the first full screen, keypress-to-screen p50/p95 for filter (typing), sort,
scroll (page down) and drill-down (Enter then Esc), the event loop's worst stall (a 5 ms
ticker's lateness while keys and changes flow) and peak RSS, beside each other with the
target. ``--quick`` runs about 200 sites for the test suite. ``--only line`` measures one app
alone (its figures in both columns), ``--profile FILE`` writes a cProfile of each app.

    .venv/bin/python benchmarks/dashboard.py [--quick] [--only line|datatable] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = (160, 50)
TARGETS = {"first_screen_s": "< 1.5 s", "filter": "p95 < 50 ms", "sort": "p95 < 50 ms", "scroll": "p95 < 50 ms",
           "drill": "p95 < 50 ms", "stall_ms": "< 50 ms", "rss_mb": "< 300 MB"}
STATES = ["OK"] * 6 + ["DEGRADED", "UNREACHABLE", "TIMEOUT", "AUTH_FAILED"]


def build_registry(path: Path, quick: bool) -> int:
    """Units, one site per 2021 commune (two provinces with --quick), one recorded roll-call."""
    from ccctl.models import CheckResult, CheckState
    from ccctl.registry import open_registry
    from ccctl.registry.sites import generate_sites, select_sites
    from ccctl.registry.units import load_units
    from ccctl.rollcall.history import RunRecorder

    with open_registry(f"sqlite:///{path}") as db:
        load_units(db, "2021")
        provinces = ["95", "96"] if quick else [r[0] for r in db.query(
            "SELECT code FROM units WHERE scheme = '2021' AND level = 'province'")]
        generate_sites(db, "2021", provinces)
        ids = [s.id for s in select_sites(db)]
        rng = random.Random(2021)
        recorder = RunRecorder(db, {"stages": ["tcp"], "sites": len(ids)})
        now = time.time()
        for site_id in ids:
            recorder.add(CheckResult(site_id=site_id, state=CheckState(rng.choice(STATES)), stage="tcp",
                                     started_at=now - 60, duration_ms=20.0))
        recorder.finish("finished", {"sites": len(ids)})
        return len(ids)


def writer(db_url: str, rate: int, max_s: float = 300.0) -> None:
    """Write ``rate`` roll-call results a second into the registry, as a roll-call does (runs of
    every site in a random order, through the real recorder), until killed or ``max_s`` passed."""
    import signal

    from ccctl.models import CheckResult, CheckState
    from ccctl.registry import open_registry
    from ccctl.registry.overview import site_states
    from ccctl.rollcall.history import RunRecorder

    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    rng = random.Random(11)
    end = time.monotonic() + max_s  # bounded in time whatever happens to the parent
    with open_registry(db_url) as db:
        ids = [s["id"] for s in site_states(db)]
        while not stop and time.monotonic() < end:
            order = rng.sample(ids, len(ids))
            recorder = RunRecorder(db, {"stages": ["tcp"], "sites": len(ids), "bench": True})
            tick = time.monotonic()
            for i, site_id in enumerate(order):
                if stop or time.monotonic() > end:
                    break
                recorder.add(CheckResult(site_id=site_id, state=CheckState(rng.choice(STATES)), reason="bench",
                                         stage="tcp", started_at=time.time(), duration_ms=5.0))
                if i % max(rate // 20, 1) == 0:
                    tick += 0.05
                    pause = tick - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)  # the writer's cadence: rate results a second
            recorder.finish("finished", {"sites": len(ids)})


class Stalls:
    """A ticker that wakes every 5 ms and keeps the worst lateness: the event loop's longest stall."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.running = True

    async def run(self) -> None:
        period = 0.005
        last = time.perf_counter()
        while self.running:
            await asyncio.sleep(period)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - period)
            last = now


def changes(ids: list[str], count: int, rng: random.Random, run_id: int) -> list[dict[str, Any]]:
    """``count`` random state changes, shaped as the registry poll delivers them."""
    now = time.time()
    return [{"site_id": rng.choice(ids), "state": rng.choice(STATES), "reason": "bench", "stage": "tcp",
             "rtt_ms": 10.0, "run_id": run_id, "checked_at": now} for _ in range(count)]


async def feed_changes(app: Any, ids: list[str], rate: int, stop: asyncio.Event) -> int:
    """Post ``rate`` changes a second to the app, in ten batches a second, until ``stop``."""
    from ccctl.tui.messages import ResultsArrived

    rng = random.Random(7)
    sent = 0
    while not stop.is_set():
        app.post_message(ResultsArrived(changes(ids, rate // 10, rng, 10**9), "bench"))
        sent += rate // 10
        try:
            await asyncio.wait_for(stop.wait(), 0.1)  # the cadence of the feed, not a synchronisation
        except TimeoutError:
            pass
    return sent


class FrameClock:
    """Mixed into both apps: counts the frames the compositor hands to the driver, with the
    time of the last one (headless, the driver then drops them; the work is done)."""

    frames = 0
    last_frame = 0.0

    def _display(self, screen: Any, renderable: Any) -> None:
        if renderable is not None:
            self.frames += 1
            self.last_frame = time.perf_counter()
        super()._display(screen, renderable)  # type: ignore[misc]


_NAMED = {"/": ("slash", "/"), " ": ("space", " ")}


def send_key(app: Any, key: str) -> None:
    """The key as the terminal driver delivers it (no waiting, unlike Pilot.press)."""
    from textual import events

    name, char = _NAMED.get(key, (key, key if len(key) == 1 else None))
    event = events.Key(name, char)
    event.set_sender(app)
    app._driver.send_message(event)


async def timed(app: Any, pilot: Any, keys: list[str]) -> list[float]:
    """Milliseconds from each key's arrival to the first frame drawn after the app handled it."""
    out = []
    for key in keys:
        start = time.perf_counter()
        send_key(app, key)
        await pilot._wait_for_screen()  # every message queued so far (the key among them) handled
        mark = app.frames
        deadline = time.perf_counter() + 5.0
        while app.frames == mark and time.perf_counter() < deadline:  # bounded: the next frame
            await asyncio.sleep(0.0005)
        out.append((app.last_frame - start) * 1000 if app.frames != mark else 5000.0)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run_line(db_url: str, quick: bool, rate: int, listen: str | None) -> dict[str, Any]:
    """The dashboard itself; with ``listen``, it takes the changes from that server's stream."""
    from ccctl.tui.app import Dashboard

    home = Path(db_url[len("sqlite:///"):]).parent / "home"
    start = time.perf_counter()

    class Measured(FrameClock, Dashboard):
        pass

    app = Measured(db_url, home, listen or "127.0.0.1:9", poll_s=3600, server_poll_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.monotonic() + 120
        while not (app.loaded and app.rowlist.rows):  # bounded: the first read of the registry
            if time.monotonic() > deadline:
                raise SystemExit("the dashboard did not load within 120 s")
            await pilot.pause(0.005)
        await pilot._wait_for_screen()
        first = time.perf_counter() - start
        ids = list(app.fleet.sites)
        if listen is None:
            return await _measure(app, pilot, first, quick, "s", lambda stop: feed_changes(app, ids, rate, stop))
        deadline = time.monotonic() + 60
        while app.stream_state != "live":  # bounded: the dashboard's own stream worker connects
            if time.monotonic() > deadline:
                raise SystemExit(f"the dashboard did not follow the change stream: {app.stream_state}")
            await pilot.pause(0.01)
        taken = [0]
        merge = app.merge

        def counted(results: list[dict[str, Any]]) -> None:
            taken[0] += len(results)
            merge(results)

        app.merge = counted  # counts what the stream delivers

        async def delivered(stop: asyncio.Event) -> int:
            await stop.wait()
            return taken[0]

        return await _measure(app, pilot, first, quick, "s", delivered)


async def _measure(app: Any, pilot: Any, first: float, quick: bool, sites_key: str | None,
                   deliver: Callable[[asyncio.Event], Awaitable[int]]) -> dict[str, Any]:
    stalls = Stalls()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    stop = asyncio.Event()
    ticker = asyncio.create_task(stalls.run())
    feeder = asyncio.create_task(deliver(stop))
    rounds = 1 if quick else 3
    figures: dict[str, list[float]] = {"filter": [], "sort": [], "scroll": [], "drill": []}
    for _ in range(rounds):
        figures["drill"] += await timed(app, pilot, ["enter", "escape"])
        if sites_key:
            await timed(app, pilot, [sites_key])
        await timed(app, pilot, ["/"])
        figures["filter"] += await timed(app, pilot, list("xa t"))
        figures["filter"] += await timed(app, pilot, ["backspace"] * 4)
        await timed(app, pilot, ["enter"])
        figures["sort"] += await timed(app, pilot, ["N", "N", "C", "W"])
        figures["scroll"] += await timed(app, pilot, ["pagedown"] * (3 if quick else 20) + ["home"])
        if sites_key:
            await timed(app, pilot, ["escape"])
    stop.set()
    sent = await feeder
    stalls.running = False
    await ticker
    cpu_pct = (time.process_time() - cpu_start) * 100 / (time.perf_counter() - wall_start)
    out: dict[str, Any] = {"first_screen_s": first, "stall_ms": stalls.worst * 1000, "changes": sent, "cpu_pct": cpu_pct,
                           "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    for name, values in figures.items():
        out[name] = (_pct(values, 0.5), _pct(values, 0.95))
    return out


async def follow_into(app: Any, listen: str, home: Path, stop: asyncio.Event) -> int:
    """The DataTable's side of the stream: the same client (``follow``), its roll-call events
    posted to the app in batches a tenth of a second apart, as the dashboard merges them."""
    from ccctl.media.changes import follow
    from ccctl.media.tokens import control_token, load_secret
    from ccctl.tui.messages import ResultsArrived

    batch: list[dict[str, Any]] = []
    count = 0
    last = time.monotonic()

    async def consume() -> None:
        nonlocal batch, count, last
        async for _, name, data in follow(f"http://{listen}", control_token(load_secret(home))):
            if name == "rollcall":
                batch.append(data)
                count += 1
                if time.monotonic() - last >= 0.1:
                    app.post_message(ResultsArrived(batch, "stream"))
                    batch, last = [], time.monotonic()

    task = asyncio.create_task(consume())
    await stop.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return count


async def run_datatable(db_url: str, quick: bool, rate: int, listen: str | None) -> dict[str, Any]:
    """The peer: a plain DataTable with the same sites, changes, filter, sort and drill-down."""
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.widgets import DataTable, Input

    from ccctl.registry import open_registry
    from ccctl.registry.overview import site_states
    from ccctl.textfold import fold
    from ccctl.tui.messages import ResultsArrived

    columns = ("state", "site", "name", "province", "tier", "reason")

    class TableApp(FrameClock, App[None]):
        BINDINGS = [Binding("slash", "filter", "Filter"), Binding("N", "sort('name')"), Binding("C", "sort('site')"),
                    Binding("W", "sort('state')"), Binding("escape", "back")]
        CSS = "#prompt { height: 1; border: none; }"

        def __init__(self) -> None:
            super().__init__()
            self.sites: dict[str, dict[str, Any]] = {}
            self.province: str | None = None

        def compose(self) -> ComposeResult:
            yield DataTable(id="table")
            yield Input(id="prompt")

        def on_mount(self) -> None:
            with open_registry(db_url) as db:
                rows = site_states(db)
            self.sites = {r["id"]: r for r in rows}
            table = self.query_one(DataTable)
            for c in columns:
                table.add_column(c, key=c)
            self.fill("")
            table.focus()

        def fill(self, text: str) -> None:
            table = self.query_one(DataTable)
            table.clear()
            words = fold(text).split()
            table.add_rows(
                [(r["state"], r["id"], r["name"], r["province_name"], r["tier"], r["reason"])
                 for r in self.sites.values()
                 if all(w in r["fold"] for w in words) and (self.province is None or r["province_code"] == self.province)],
            )
            # add_rows gives generated keys; keep our own index for update_cell_at
            self.index = {table.get_row_at(i)[1]: i for i in range(table.row_count)}

        def on_results_arrived(self, message: ResultsArrived) -> None:
            table = self.query_one(DataTable)
            for change in message.results:
                if change["site_id"] not in self.sites:
                    continue
                self.sites[change["site_id"]]["state"] = change["state"]
                row = self.index.get(change["site_id"])
                if row is not None:
                    table.update_cell_at((row, 0), change["state"])

        def action_filter(self) -> None:
            self.query_one(Input).focus()

        def on_input_changed(self, event: Input.Changed) -> None:
            self.fill(event.value)

        def on_input_submitted(self, event: Input.Submitted) -> None:
            self.query_one(DataTable).focus()

        def action_sort(self, column: str) -> None:
            table = self.query_one(DataTable)
            table.sort(column)
            self.index = {table.get_row_at(i)[1]: i for i in range(table.row_count)}

        def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
            row = self.query_one(DataTable).get_row(event.row_key)
            self.province = self.sites[row[1]]["province_code"]  # drill into the site's province
            self.fill("")

        def action_back(self) -> None:
            self.province = None
            self.fill("")

    start = time.perf_counter()
    app = TableApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot._wait_for_screen()
        first = time.perf_counter() - start
        ids = list(app.sites)
        if listen is None:
            return await _measure(app, pilot, first, quick, None, lambda stop: feed_changes(app, ids, rate, stop))
        home = Path(db_url[len("sqlite:///"):]).parent / "home"
        return await _measure(app, pilot, first, quick, None, lambda stop: follow_into(app, listen, home, stop))


def start_server(tmp: Path, url: str) -> tuple[str, subprocess.Popen[bytes]]:
    """``ccctl serve`` on a free loopback port, its change stream on; (address, process) once it answers."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listen = f"127.0.0.1:{port}"
    env = {**os.environ, "CCCTL_HOME": str(tmp / "home"), "CCCTL_DB": url}
    proc = subprocess.Popen([sys.executable, "-m", "ccctl", "serve", "--listen", listen], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # bounded wait for the server to answer
        try:
            with opener.open(f"http://{listen}/healthz", timeout=2):
                return listen, proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"ccctl serve exited with {proc.returncode}") from None
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("ccctl serve did not answer within 60 s")


def child(args: argparse.Namespace) -> None:
    """One variant in this process; its figures as JSON on stdout."""
    runner = run_line if args.variant == "line" else run_datatable
    if args.profile:  # cProfile of the whole child, for finding where a keypress's time goes
        import cProfile

        with cProfile.Profile() as prof:
            figures = asyncio.run(runner(args.db, args.quick, args.rate, args.listen))
        prof.dump_stats(f"{args.profile}.{args.variant}")
    else:
        figures = asyncio.run(runner(args.db, args.quick, args.rate, args.listen))
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 200 sites (for the test suite)")
    parser.add_argument("--variant", choices=["line", "datatable"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=None, help="state changes per second (default 2000)")
    parser.add_argument("--direct", action="store_true",
                        help="post the changes to the apps directly instead of through a server's change stream")
    parser.add_argument("--listen", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["line", "datatable"], help="measure one app alone (no side by side)")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of each app to FILE.line, FILE.datatable")
    parser.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer(args.db, args.rate)
        return
    if args.variant:
        child(args)
        return
    rate = args.rate or (200 if args.quick else 2000)
    tmp = Path(tempfile.mkdtemp(prefix="ccctl-bench-dash-"))
    path = tmp / "registry.db"
    url = f"sqlite:///{path}"
    server: subprocess.Popen[bytes] | None = None
    try:
        sites = build_registry(path, args.quick)
        listen = None if args.direct else start_server(tmp, url)
        server = listen[1] if listen else None
        results = {}
        for variant in (args.only,) if args.only else ("line", "datatable"):
            cmd = [sys.executable, __file__, "--variant", variant, "--db", url, "--rate", str(rate)]
            if args.profile:
                cmd += ["--profile", str(Path(args.profile).resolve())]
            if listen:
                cmd += ["--listen", listen[0]]
            feeding = None if listen is None else subprocess.Popen(
                [sys.executable, __file__, "--writer", "--db", url, "--rate", str(rate)], cwd=ROOT)
            try:
                done = subprocess.run(cmd + (["--quick"] if args.quick else []), capture_output=True, text=True,
                                      timeout=1800, cwd=ROOT)
            finally:
                if feeding is not None:
                    feeding.terminate()
                    feeding.wait(timeout=60)
            if done.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
            results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.only:  # the one app measured, shown in both columns
        results.setdefault("line", results[args.only])
        results.setdefault("datatable", results[args.only])
        print(f"(--only {args.only}: one app measured, its figures in both columns)")
    line, table = results["line"], results["datatable"]
    load = os.getloadavg()[0]
    how = "posted to the apps" if args.direct else "written to the registry, through the change stream"
    print(f"dashboard: {sites:,} sites, {rate:,} state changes/s {how} (line {line['changes']:,}, "
          f"datatable {table['changes']:,} delivered); machine load {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'figure':<28} {'line-api':>16} {'datatable':>16}   target")
    print(f"{'first full screen':<28} {line['first_screen_s']:>14.2f} s {table['first_screen_s']:>14.2f} s   "
          f"{TARGETS['first_screen_s']}")
    for name, label in (("filter", "filter keypress p50/p95"), ("sort", "sort keypress p50/p95"),
                        ("scroll", "scroll keypress p50/p95"), ("drill", "drill-down key p50/p95")):
        a, b = line[name], table[name]
        print(f"{label:<28} {a[0]:>6.1f}/{a[1]:>6.1f} ms {b[0]:>6.1f}/{b[1]:>6.1f} ms   {TARGETS[name]}")
    print(f"{'worst event-loop stall':<28} {line['stall_ms']:>13.1f} ms {table['stall_ms']:>13.1f} ms   "
          f"{TARGETS['stall_ms']}")
    print(f"{'CPU while measured':<28} {line['cpu_pct']:>14.0f} % {table['cpu_pct']:>14.0f} %   (one core = 100 %)")
    print(f"{'peak RSS':<28} {line['rss_mb']:>13.0f} MB {table['rss_mb']:>13.0f} MB   {TARGETS['rss_mb']}")


if __name__ == "__main__":
    main()
