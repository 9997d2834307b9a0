"""Feed figures: a commune-level feed for the whole country, and a year of history.

1. pull + parse + validate + join + store a commune feed of 10,599 rows x 6 indicators
   (communes named as sheets write them: province, district and commune names, joined by
   folded name), served over HTTP by an aiohttp server on loopback. Target < 1 s. Peer in
   the same run: plain pandas ``read_csv`` + ``merge`` on exact names of the same bytes
   (no folding, no validation, nothing stored).
   On PostgreSQL, the store step alone too: ccctl's (COPY + one merge) beside the former
   one (one INSERT over arrays), new values, every value changed, and unchanged.
   Each pull's CPU time too (ccctl's, plus its PostgreSQL server process's), which a
   machine loaded by other work inflates much less than wall time.
   Then the next day's pull (new values only, the daily case), and the history of one
   indicator summed up to provinces over 30 days of the commune feed (what the data panel's
   sparklines read), grouped by the database beside the former grouping in Python.
2. ``feed show`` of a year's daily history for 63 provinces x 6 indicators: in process, and
   the ``ccctl feed show`` process end to end. Target < 0.3 s. Peer: the newest day's rows in
   one query, pivoted by pandas, on the same registry.

``--quick`` does one province (Cà Mau, 101 communes) and 30 days so the test suite keeps
it alive.

    .venv/bin/python benchmarks/feeds.py [--quick] [--db postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from ccctl.feeds import views
from ccctl.feeds.pull import pull_feed
from ccctl.feeds.spec import FeedSpec
from ccctl.registry import Database, open_registry
from ccctl.registry import feeds as store
from ccctl.registry.units import load_units, units_2021

INDICATORS = ("new_cases", "total_cases", "deaths", "recovered", "active", "risk_level")


def commune_csv(provinces: set[str] | None, day: str, seed: int = 7) -> tuple[bytes, int]:
    """A wide commune table: Tỉnh, Huyện, Xã by name, a date and 6 indicators (made-up numbers)."""
    rnd = random.Random(seed)
    rows = units_2021()
    names = {(r[1], r[2]): r[4] for r in rows if r[1] != "commune"}
    out = ["Tỉnh,Huyện,Xã,Ngày," + ",".join(INDICATORS)]
    count = 0
    for r in rows:
        if r[1] != "commune" or (provinces and r[7] not in provinces):
            continue
        total = rnd.randint(0, 5000)
        dead = rnd.randint(0, total // 50 + 1)
        rec = rnd.randint(0, max(0, total - dead))
        out.append(f"{names['province', r[7]]},{names['district', r[6]]},{r[4]},{day},{rnd.randint(0, 50)},"
                   f"{total},{dead},{rec},{total - dead - rec},{rnd.randint(1, 4)}")
        count += 1
    return ("\n".join(out) + "\n").encode(), count


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of ``fn`` over ``repeat`` runs, and its last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def cpu_seconds(db: Database) -> float:
    """CPU seconds used so far by this process and, on PostgreSQL, by the server process
    serving ``db`` (read from /proc: the server runs on this machine). On a machine other
    work loads, CPU time says what a pull costs where wall time says mostly how busy it was."""
    own = time.process_time()
    if db.dialect != "postgresql":
        return own
    pid = db.query("SELECT pg_backend_pid()")[0][0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")  # a server elsewhere: no figure rather than a wrong one
    return own + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_pull(db: Database, body: bytes, repeat: int, next_day: bytes) -> list[tuple[float, float]]:
    """(seconds, CPU seconds) of each pull of the commune feed from a loopback HTTP server
    (``repeat`` times), then of one pull of the next day's."""
    bodies = [body]
    app = web.Application()
    app.router.add_get("/communes.csv", lambda request: web.Response(body=bodies[0], content_type="text/csv"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/communes.csv"
    store.add_feed(db, FeedSpec("communes", url, level="commune"))
    times: list[tuple[float, float]] = []
    try:
        for n in range(repeat + 1):
            if n == repeat:
                bodies[0] = next_day
            start, cpu = time.perf_counter(), cpu_seconds(db)
            result = await pull_feed(db, "communes")
            times.append((time.perf_counter() - start, cpu_seconds(db) - cpu))
            assert result.status == "ok", result
        assert result.newest_day == "2021-10-16", result
    finally:
        await runner.cleanup()
    return times


def commune_frame() -> Any:
    """The units as the peer merges them: province, district and commune full names, code."""
    import pandas as pd

    rows = units_2021()
    names = {(r[1], r[2]): r[4] for r in rows if r[1] != "commune"}
    return pd.DataFrame([(names["province", r[7]], names["district", r[6]], r[4], r[2]) for r in rows
                         if r[1] == "commune"], columns=["Tỉnh", "Huyện", "Xã", "code"])


def pandas_merge(body: bytes, units: Any) -> int:
    """The peer: pandas reads the same bytes and merges them to the units on exact names
    (pandas imported and the units' frame built beforehand, outside the timing)."""
    import pandas as pd

    frame = pd.read_csv(io.BytesIO(body))
    joined = frame.merge(units, on=["Tỉnh", "Huyện", "Xã"], how="left")
    return int(joined["code"].notna().sum())


def fill_history(db: Database, days: int, seed: int = 11) -> int:
    """A province feed with ``days`` days of daily values for 63 provinces x 6 indicators."""
    rnd = random.Random(seed)
    store.add_feed(db, FeedSpec("history", "/dev/null", keep_days=days + 1))
    provinces = [r[0] for r in db.query("SELECT code FROM units WHERE scheme = '2021' AND level = 'province'")]
    newest = dt.date(2021, 12, 31)
    values = []
    for n in range(days):
        day = (newest - dt.timedelta(days=n)).isoformat()
        for p in provinces:
            for ind in INDICATORS:
                values.append((ind, p, day, float(rnd.randint(1, 4) if ind == "risk_level" else rnd.randint(0, 9999))))
    store.store_pull(db, "history", values, newest.isoformat(), days + 1, None, None, None, [], len(values))
    return len(values)


def fill_commune_history(db: Database, provinces: set[str] | None, days: int, seed: int = 13) -> int:
    """A commune feed with ``days`` days of new cases (one indicator), stored day by day."""
    rnd = random.Random(seed)
    store.add_feed(db, FeedSpec("commune-days", "/dev/null", level="commune", keep_days=days + 1))
    communes = [r[2] for r in units_2021() if r[1] == "commune" and (not provinces or r[7] in provinces)]
    newest = dt.date(2021, 12, 31)
    for n in reversed(range(days)):
        day = (newest - dt.timedelta(days=n)).isoformat()
        values = [("new_cases", c, day, float(rnd.randint(0, 50))) for c in communes]
        store.store_pull(db, "commune-days", values, day, days + 1, None, None, None, [], len(values))
    return days * len(communes)


def history_in_python(db: Database, feed: str, indicator: str, since: str) -> dict[str, list[tuple[str, float]]]:
    """The peer: ``views.history`` as it was, every commune's values read, summed in Python."""
    places = store.unit_places(db, "2021", "commune")
    target = {code: place[1] for code, place in places.items()}
    grouped: dict[tuple[str, str], float] = {}
    for unit, day, value in store.series(db, feed, indicator, since):
        key = (target.get(unit, unit), day)
        grouped[key] = grouped.get(key, 0.0) + value
    out: dict[str, list[tuple[str, float]]] = {}
    for (unit, day), value in sorted(grouped.items()):
        out.setdefault(unit, []).append((day, value))
    return out


def pandas_show(url: str) -> int:
    """The peer of ``feed show``: the newest day's rows in one query, pivoted by pandas."""
    import pandas as pd

    with open_registry(url) as db:
        rows = db.query("SELECT unit_code, indicator, value FROM feed_values WHERE feed = 'history' AND day = "
                        "(SELECT MAX(day) FROM feed_values WHERE feed = 'history')")
    frame = pd.DataFrame(rows, columns=["unit_code", "indicator", "value"])
    return len(frame.pivot(index="unit_code", columns="indicator", values="value"))


UNNEST = ("INSERT INTO feed_values (feed, indicator, unit_code, day, value) SELECT ?, i, u, d, v FROM "
          "unnest(?::text[], ?::text[], ?::text[], ?::double precision[]) AS t (i, u, d, v) "
          "ON CONFLICT (feed, indicator, unit_code, day) DO UPDATE SET value = excluded.value")


def store_figures(db: Database, repeat: int) -> list[tuple[str, float, str]]:
    """PostgreSQL only: the store step alone, ccctl's (COPY into a temporary table, one merge
    that leaves unchanged values alone) beside the one it replaced (one INSERT over four
    arrays, every row rewritten), on the same values, interleaved so both meet the same load."""
    values = [(i, u, d, float(v)) for i, u, d, v in db.query(
        "SELECT indicator, unit_code, day, value FROM feed_values WHERE feed = 'communes'")]
    changed = [(i, u, d, v + 1) for i, u, d, v in values]
    day = values[0][2]
    for name in ("bulk-ccctl", "bulk-arrays"):
        store.add_feed(db, FeedSpec(name, "/dev/null"))

    def ours(rows: list[tuple[str, str, str, float]]) -> None:
        store.store_pull(db, "bulk-ccctl", rows, day, 400, None, None, None, [], len(rows))

    def arrays(rows: list[tuple[str, str, str, float]]) -> None:
        with db.transaction():
            db.execute(UNNEST, ["bulk-arrays", *[list(c) for c in zip(*rows, strict=True)]])

    times: dict[tuple[str, str], list[float]] = {}
    plan = [("new", values)] + [("every value changed", changed if n % 2 == 0 else values) for n in range(repeat)]
    plan += [("unchanged", changed if repeat % 2 else values) for _ in range(repeat)]
    for case, rows in plan:
        for who, fn in (("ccctl", ours), ("arrays", arrays)):
            start = time.perf_counter()
            fn(rows)
            times.setdefault((who, case), []).append(time.perf_counter() - start)
    out = []
    for case in ("new", "every value changed", "unchanged"):
        out.append((f"store {len(values)} values (COPY + one merge), {case}", statistics.median(times["ccctl", case]), ""))
        out.append((f"peer: one INSERT over arrays (the former path), {case}", statistics.median(times["arrays", case]),
                    ""))
    return out


@contextmanager
def registry_url(tmp: Path, base: str | None) -> Iterator[str]:
    """A SQLite file in ``tmp``, or a fresh schema (dropped afterwards) of the PostgreSQL ``base``."""
    if not base:
        yield f"sqlite:///{tmp / 'registry.db'}"
        return
    import psycopg

    schema = f"bench_feeds_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def measure(url: str, tmp: Path, quick: bool, repeat: int) -> list[tuple[str, float, str]]:
    """Every figure as (operation, seconds, target)."""
    rows: list[tuple[str, float, str]] = []
    with open_registry(url) as db:
        load_units(db, "2021")
        provinces = {"96"} if quick else None
        body, count = commune_csv(provinces, "15/10/2021")
        next_day, _ = commune_csv(provinces, "16/10/2021", seed=8)
        times = asyncio.run(bench_pull(db, body, repeat, next_day))
        label = f"pull+parse+validate+join+store, {count} communes x {len(INDICATORS)} indicators (HTTP)"
        who = "ccctl + its PostgreSQL server process" if db.dialect == "postgresql" else "ccctl"
        cases = [("first", [times[0]]), ("again (median)", times[1:-1]), ("the next day", [times[-1]])]
        for case, got in cases:
            if got:
                rows.append((f"{label}, {case}", statistics.median(t for t, _ in got), "< 1 s"))
                rows.append((f"  the same, CPU seconds ({who})", statistics.median(c for _, c in got), ""))
        if db.dialect == "postgresql":
            rows += store_figures(db, repeat)
        units = commune_frame()
        seconds, joined = best(lambda: pandas_merge(body, units), repeat)
        rows.append((f"peer: pandas read_csv + merge on exact names ({joined} joined, nothing checked)", seconds, ""))
        stored = fill_commune_history(db, provinces, 30)
        since = "2021-12-02"
        seconds, grouped = best(lambda: views.history(db, "commune-days", "new_cases", by="province", since=since),
                                repeat)
        label = f"feed history by province of a commune feed, 30 days, {stored} values"
        rows.append((f"{label} (grouped by the database)", seconds, ""))
        seconds, by_hand = best(lambda: history_in_python(db, "commune-days", "new_cases", since), repeat)
        assert by_hand == grouped
        rows.append((f"peer: {label} (grouped in Python, the former path)", seconds, ""))
        days = 30 if quick else 365
        stored = fill_history(db, days)
        seconds, _ = best(lambda: views.wide_rows(db, "history"), repeat)
        rows.append((f"feed show (in process), 63 provinces, {days} days, {stored} values", seconds, "< 0.3 s"))
    env = {**os.environ, "CCCTL_HOME": str(tmp / "home"), "CCCTL_DB": url}
    cmd = [sys.executable, "-m", "ccctl", "feed", "show", "history", "--format", "json"]
    seconds, done = best(lambda: subprocess.run(cmd, env=env, capture_output=True, check=True), repeat)
    rows.append((f"ccctl feed show history --format json (process, {len(done.stdout) // 1024} KiB)", seconds, "< 0.3 s"))
    seconds, pivoted = best(lambda: pandas_show(url), repeat)
    rows.append((f"peer: one query + pandas pivot of the newest day ({pivoted} rows)", seconds, ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one province, 30 days (for the test suite)")
    parser.add_argument("--db", metavar="URL", help="a PostgreSQL server to measure on (default: a SQLite file)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ccctl-bench-feeds-"))
    try:
        with registry_url(tmp, args.db) as url:
            rows = measure(url, tmp, args.quick, 1 if args.quick else 5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  {'seconds':>8}  target")
    for name, seconds, target in rows:
        print(f"{name:<{width}}  {seconds:8.3f}  {target}")


if __name__ == "__main__":
    main()
