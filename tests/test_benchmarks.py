"""Every benchmark's --quick mode runs in the suite, so none rots (figures are not asserted)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(name: str, timeout: float = 300) -> str:
    """Run ``benchmarks/<name>.py --quick``; its stdout, or a failure that shows its stderr."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick"],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"{name}.py --quick exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def test_registry_benchmark_quick() -> None:
    out = bench("registry", timeout=120)
    lines = out.splitlines()
    assert lines[0].split() == ["operation", "seconds", "target"]
    assert any(line.startswith("import 101 from CSV") for line in lines)
    assert any(line.startswith("ccctl --help") for line in lines)


def test_rollcall_benchmark_quick() -> None:
    out = bench("rollcall")
    assert "TCP stage, 60 sites ({'OK': 60})" in out
    assert "TCP+SSH+diag end to end, 60 sites ({'OK': 60})" in out
    # The real-sshd part runs where sshd can (CI installs it) and says why where it cannot.
    assert "20 logins to real sshd (20 ok)" in out or "real sshd part" in out


def test_fanout_benchmark_quick() -> None:
    out = bench("fanout")
    lines = out.splitlines()
    # First the send paths alone (benchmarks/sendpath.py), native beside Python where it is built.
    assert lines[0].startswith("send path alone") and "python" in lines[1] and "pkt/s/core" in lines[1]
    assert "native/python" in lines[1] or "  native: fan-out: Python send path" in out
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("N=   0 ")):]
    assert "ms CPU per program frame" in lines[0]
    # The native path's line where the extension is built (setup.py), else the reason it is not.
    assert lines[1].startswith("native  N=   3 ") and "sent 1.000" in lines[1] or "native path:" in lines[1]
    tight = next(line for line in lines if line.startswith("tight   N=   3 "))
    assert "us/pkt/sub" in tight and "pkt/s/core" in tight and "sent 1.000" in tight
    stock = next(i for i, line in enumerate(lines) if line.startswith("stock   N=   3 "))
    assert "us/pkt/sub" in lines[stock]
    assert lines[stock + 1].startswith("janus")  # Janus's line, or why it did not run
    assert "ratio N=3: tight/stock" in out


def test_floor_benchmark_quick() -> None:
    out = bench("floor")
    assert "floor switch (API call -> first viewer frame of the site), 2 rounds" in out


def test_joins_benchmark_quick() -> None:
    out = bench("joins")
    assert "admission: the " in out and " send path carried " in out  # the budget measured at start ("auto")
    assert "20 sites, audio tier (sound only): all 20 connected in " in out
    assert "4 sites, low tier (360p video + audio): all 4 connected in " in out
    assert "glass-to-glass" in out and " p95 " in out


def test_janus_benchmark_quick() -> None:
    out = bench("janus", timeout=120)
    lines = out.splitlines()
    if shutil.which("janus") is None:  # scripts/bench-setup.sh installs Debian's janus
        assert lines == ["janus: not installed (run scripts/bench-setup.sh)"]
    else:
        assert len(lines) == 1 and lines[0].startswith("janus N=   3 "), out
        assert "us/pkt/sub" in lines[0] and "delivered" in lines[0]


def test_crash_benchmark_quick() -> None:
    out = bench("crash")
    assert "roll-call SIGKILLed 5 times" in out
    assert "results in the registry before the kill, lost after it: 0 of " in out
    assert "server SIGKILLed 1 time with 4 sites joined" in out
    assert "every site back (new session, receiving) after the kill: p50 " in out


def test_feeds_benchmark_quick() -> None:
    out = bench("feeds")
    lines = out.splitlines()
    assert lines[0].split() == ["operation", "seconds", "target"]
    assert any(line.startswith("pull+parse+validate+join+store, 101 communes x 6 indicators (HTTP)") for line in lines)
    assert any(line.startswith("peer: pandas read_csv + merge on exact names (101 joined") for line in lines)
    assert any(line.startswith("feed show (in process), 63 provinces, 30 days, 11340 values") for line in lines)
    assert any(line.startswith("ccctl feed show history --format json (process") for line in lines)


def test_dashboard_benchmark_quick() -> None:
    out = bench("dashboard")
    lines = out.splitlines()
    assert lines[0].startswith("dashboard: 165 sites, 200 state changes/s")
    assert lines[1].split() == ["figure", "line-api", "datatable", "target"]
    for label in ("first full screen", "filter keypress p50/p95", "sort keypress p50/p95", "scroll keypress p50/p95",
                  "drill-down key p50/p95", "worst event-loop stall", "CPU while measured", "peak RSS"):
        assert any(line.startswith(label) for line in lines), label


def test_fuzz_benchmark_quick() -> None:
    out = bench("fuzz")
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["whep-offer", "whip-offer", "trickle-patch", "control-json",
                                                   "sites-import"], out
    imports = lines.pop()
    assert "cases     300 " in imports and " tracebacks   0 " in imports and " multi-line errors   0 " in imports, imports
    assert " round-trip mismatches   0 " in imports, imports
    for line in lines:
        assert "cases     300 " in line and " 5xx   0 " in line, line
        assert " tracebacks   0 " in line and "background errors" in line, line
