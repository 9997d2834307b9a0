"""Registry figures for the whole country: 10,599 sites (one per 2021 commune).

Prints, side by side with its target: generate, export to CSV, import from CSV into an empty
registry, ``ccctl sites list --format json`` of all, a filtered list, and the process time of
``ccctl --help``. ``--quick`` does the same on one province so the test suite keeps it alive.

    .venv/bin/python benchmarks/registry.py [--quick] [--db URL]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ccctl.registry import open_registry
from ccctl.registry.files import export_sites, import_sites
from ccctl.registry.sites import SiteFilter, generate_sites, remove_sites, select_sites
from ccctl.registry.units import load_units

CCCTL = [sys.executable, "-m", "ccctl"]


def _cli_seconds(args: list[str], env: dict[str, str], repeat: int) -> tuple[float, int]:
    """Median wall time of a ccctl process, and the size of its stdout."""
    times = []
    size = 0
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run(CCCTL + args, env=env, capture_output=True, check=True).stdout
        times.append(time.perf_counter() - start)
        size = len(out)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one province, one repeat (for the test suite)")
    parser.add_argument("--db", help="registry URL (default: a SQLite file in a temp dir)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ccctl-bench-"))
    url = args.db or f"sqlite:///{tmp / 'registry.db'}"
    env = {**os.environ, "CCCTL_HOME": str(tmp / "home"), "CCCTL_DB": url}
    repeat = 1 if args.quick else 5
    rows: list[tuple[str, float, str]] = []
    try:
        with open_registry(url) as db:
            load_units(db, "2021")
            provinces = ["96"] if args.quick else [r[0] for r in db.query(
                "SELECT code FROM units WHERE scheme = '2021' AND level = 'province'")]
            start = time.perf_counter()
            created, _ = generate_sites(db, "2021", provinces)
            rows.append((f"generate {created} sites", time.perf_counter() - start, ""))
            csv_path = tmp / "sites.csv"
            start = time.perf_counter()
            export_sites(db, csv_path)
            rows.append((f"export {created} to CSV", time.perf_counter() - start, ""))
            remove_sites(db, [s.id for s in select_sites(db)])
            start = time.perf_counter()
            imported = import_sites(db, csv_path)
            rows.append((f"import {imported} from CSV", time.perf_counter() - start, "< 3 s"))
            start = time.perf_counter()
            chosen = select_sites(db, SiteFilter(province="ca mau", search="xa"))
            rows.append((f"filtered select ({len(chosen)} sites, in process)", time.perf_counter() - start, ""))
        seconds, size = _cli_seconds(["sites", "list", "--format", "json"], env, repeat)
        rows.append((f"ccctl sites list --format json (all, {size // 1024} KiB)", seconds, ""))
        seconds, size = _cli_seconds(["sites", "list", "--province", "ca mau", "--search", "xa", "--json"], env, repeat)
        rows.append(("ccctl sites list --province 'ca mau' --search xa", seconds, "< 0.3 s"))
        seconds, _ = _cli_seconds(["--help"], env, repeat)
        rows.append(("ccctl --help", seconds, "< 0.3 s"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  {'seconds':>8}  target")
    for name, seconds, target in rows:
        print(f"{name:<{width}}  {seconds:8.3f}  {target}")


if __name__ == "__main__":
    main()
