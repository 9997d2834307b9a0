"""CPU placement and accounting shared by the media benchmarks (fanout, janus, joins)."""

from __future__ import annotations

import contextlib
import os


def pin_cpu(index: int) -> None:
    """Run on the ``index``-th CPU where there are two or more: servers on the first, receivers
    on the second. A pinning inherited from the parent (a server pinned to CPU 0 starts its
    receivers) is undone first."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[index]})


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
