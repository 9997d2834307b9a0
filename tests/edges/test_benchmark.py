"""benchmarks/edges.py --quick runs in the suite, so it does not rot (figures are not asserted)."""

from __future__ import annotations

from tests.test_benchmarks import bench


def test_edges_benchmark_quick() -> None:
    out = bench("edges")
    if out.startswith("edges: cannot run here"):  # no Janus or no root: it says why, and exits 0
        return
    lines = out.splitlines()
    assert lines[0].startswith("cascade E=1 N=   0  origin")
    assert any(line.startswith("cascade E=2 N=   4") and "delivered" in line for line in lines)
    assert any(line.startswith("ccctl alone  N=   4") for line in lines)
    assert any(line.startswith("srtp: ") and "us/packet" in line for line in lines)
    assert lines[-1].startswith("origin E=2:")
