"""Edges: the origin's CPU with E Janus edges and N sites, and the cascade beside ccctl alone.

The origin (this process): :class:`ccctl.media.program.Program` with fanout.py's tiers (``low``
640x360 at 630 kbps + the shared Opus, and ``audio``), feeding E real Janus edges
(:mod:`ccctl.edges.local`: each in its own network namespace) through
:class:`ccctl.edges.feed.EdgeFeed`: one mountpoint per tier per edge, each tier packetised
once. N sites (a child process: real aiortc peers signalled over Janus's HTTP protocol by
:class:`ccctl.edges.viewer.EdgeViewer`, counting RTP at the socket as fanout.py's receivers
do, benchmarks/receivers.py) are spread evenly over the edges, on the ``low`` tier.

Per E and N it prints the origin's CPU (this process: program, encoders, RTP out), the
edges' CPU (every Janus process) and ``delivered`` (packets the sites counted / packets the
origin sent to the edges' ``low`` mountpoints x sites per edge). The origin's CPU should
grow with edges x tiers, not with sites. Then ccctl alone at the same N, same clip and
receivers (fanout.py's tight path), and sites per core both ways: gross (every CPU second
of the origin and the edges, program included) and the serving cost alone (less the N=0
run's CPU). The edges get SRTP (their API is not on loopback: ccctl's default), so the
origin's figures include it; one line gives SRTP's own cost per packet beside plain RTP.

    .venv/bin/python benchmarks/edges.py [--quick] [N ...]   (default 50 150; E = 1 and 2)

Without Janus (or root for the namespaces) it prints one line saying why and exits 0.
Loopback and the edges' private namespaces only. Figures are indicative on a shared machine.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cpu import process_cpu  # noqa: E402

WARMUP, WINDOW = 4.0, 10.0
PACKETS_PER_TIER_S = 134  # fanout.py's low tier: ~0.66 Mbps of video and Opus
JOIN_S_PER_SITE = 1.0


def self_cpu() -> float:
    """This process's CPU seconds (every thread: the encoders run in worker threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def sites(plan: list[dict[str, Any]], addresses: list[str]) -> None:
    """The child: one viewer per plan entry; answers ``count`` with the RTP counted so far."""
    import aioice.ice

    from benchmarks.receivers import install
    from ccctl.edges.viewer import EdgeViewer

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: addresses  # the edges' veths only
    counts = install()
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    gate = asyncio.Semaphore(8)

    async def join(p: dict[str, Any]) -> EdgeViewer:
        async with gate:
            # RTP is counted and dropped at the socket, so the viewer's media watchdog is off.
            viewer = await EdgeViewer(p["url"], p["mount"], p["pin"], media_timeout=None).start()
        await asyncio.wait_for(viewer.connected.wait(), 60)
        return viewer

    results = await asyncio.gather(*(join(p) for p in plan), return_exceptions=True)
    viewers = [v for v in results if not isinstance(v, BaseException)]
    errors = [repr(e) for e in results if isinstance(e, BaseException)]
    print(json.dumps({"connected": len(viewers), "error": errors[0] if errors else ""}), flush=True)
    while True:
        line = (await reader.readline()).strip()
        if line == b"count":
            print(json.dumps(counts | {"up": sum(not v.hangup.is_set() for v in viewers)}), flush=True)
        elif line in (b"quit", b""):
            break
    await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)


async def cascade(n_edges: int, ns: list[int], source: str, warmup: float, window: float) -> list[dict[str, Any]]:
    """Measure the origin and E edges at each N; one result per N."""
    from benchmarks.fanout import TIERS
    from ccctl.edges.feed import EdgeFeed
    from ccctl.edges.local import JanusEdge
    from ccctl.media.program import Program
    from ccctl.registry.edges import Edge

    results = []
    with tempfile.TemporaryDirectory(prefix="ccctl-edges-bench-") as tmp:
        edges: list[JanusEdge] = []
        program = Program(source, TIERS)
        feeds: list[EdgeFeed] = []
        try:
            for i in range(n_edges):
                edges.append(JanusEdge(i, Path(tmp) / f"e{i}").open())
            await asyncio.gather(*(e.ready() for e in edges))
            await program.start()
            for e in edges:
                record = Edge(name=f"e{e.index}", api_url=e.url, admin_key_file=str(e.key_file))
                feeds.append(await EdgeFeed(record, program, broadcast_id=1).open())
            pids = [e.proc.pid for e in edges if e.proc is not None]
            for n in ns:
                plan = [{"url": edges[i % n_edges].url, "mount": feeds[i % n_edges].mounts["low"].id,
                         "pin": feeds[i % n_edges].mounts["low"].pin} for i in range(n)]
                results.append(await _measure(n_edges, n, plan, [e.local_addr for e in edges], feeds, pids,
                                              warmup, window))
        finally:
            for feed in feeds:
                await feed.close()
            await program.close()
            for e in edges:
                e.close()
    return results


async def _measure(n_edges: int, n: int, plan: list[dict[str, Any]], addresses: list[str], feeds: list[Any],
                   pids: list[int], warmup: float, window: float) -> dict[str, Any]:
    proc = None
    if n:
        proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--sites", json.dumps(plan),
                                                    json.dumps(addresses), stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
        assert proc.stdout and proc.stdin
        joined = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60 + JOIN_S_PER_SITE * n) or b"{}")
        if joined.get("connected", 0) < n:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"E={n_edges} N={n}: {joined.get('connected', 0)} sites connected: {joined.get('error')}")
    await asyncio.sleep(warmup)  # the measurement's warm-up, not a synchronisation

    def sent_low() -> int:  # packets sent into the edges' low mountpoints (audio and video)
        return sum(s.packets for f in feeds for s in f.tier_sinks["low"])

    async def sample() -> tuple[float, float, float, int, int]:
        got = 0
        if proc is not None:
            assert proc.stdin and proc.stdout
            proc.stdin.write(b"count\n")
            await proc.stdin.drain()
            got = json.loads(await proc.stdout.readline())["packets"]
        return time.monotonic(), self_cpu(), sum(process_cpu(p) for p in pids), sent_low(), got

    t0, o0, j0, s0, g0 = await sample()
    await asyncio.sleep(window)  # the measurement window
    t1, o1, j1, s1, g1 = await sample()
    if proc is not None:
        assert proc.stdin
        proc.stdin.write(b"quit\n")
        await proc.stdin.drain()
        await asyncio.wait_for(proc.wait(), 30)
    dt = t1 - t0
    per_edge = (s1 - s0) / n_edges  # packets each edge's low mountpoint got
    expected = per_edge * n  # every site gets its edge's low mountpoint
    return {"edges": n_edges, "n": n, "origin_cpu": (o1 - o0) / dt, "edges_cpu": (j1 - j0) / dt,
            "pkts_per_s": (g1 - g0) / dt, "delivered": (g1 - g0) / expected if expected else float("nan")}


def line(r: dict[str, Any]) -> str:
    """One result of :func:`cascade` as text."""
    text = f"cascade E={r['edges']} N={r['n']:4d}  origin {r['origin_cpu']:.3f} core  edges {r['edges_cpu']:.3f} core"
    if r["n"]:
        text += (f"  {r['pkts_per_s']:6.0f} pkt/s to sites ({r['pkts_per_s'] / r['n']:.0f}/site)  "
                 f"delivered {r['delivered']:.3f}")
    return text


def ccctl_alone(n: int, source: str, warmup: float, window: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """fanout.py's tight path at ``n`` sites and its N=0 run, same clip and tiers."""
    import benchmarks.fanout as fanout

    fanout.SOURCE, fanout.WARMUP, fanout.WINDOW = source, warmup, window
    base = asyncio.run(fanout.server(0, "tight"))
    result = asyncio.run(fanout.server(n, "tight"))
    return base, result


def srtp_cost(units: int = 2000, payload: int = 1100, per_unit: int = 3) -> dict[str, float]:
    """The origin's cost of SRTP to an edge: microseconds of CPU per RTP packet sent by an
    :class:`~ccctl.media.rtpout.RtpOut`, plain and SRTP-protected (pylibsrtp, what it uses),
    to a socket of this process on loopback (never read: the kernel drops what overflows)."""
    import os
    import socket

    from ccctl.media.fastpath import RtpUnit
    from ccctl.media.rtpout import SRTP_KEY_BYTES, RtpOut

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        unit = RtpUnit(tuple(os.urandom(payload) for _ in range(per_unit)), 0, True, payload * per_unit, 0)
        out = {}
        for name, key in (("plain", None), ("srtp", os.urandom(SRTP_KEY_BYTES))):
            rtp = RtpOut("video", sink.getsockname(), 96, srtp_key=key)
            try:
                start = self_cpu()
                for i in range(units):
                    rtp.push(RtpUnit(unit.payloads, i * 3000, True, unit.size, 0))
                out[name] = (self_cpu() - start) / (units * per_unit) * 1e6
            finally:
                rtp.stop()
        return out
    finally:
        sink.close()


def main() -> None:
    """``edges.py [--quick] [N ...]``; internal mode ``--sites PLAN ADDRESSES``."""
    args = sys.argv[1:]
    if args[:1] == ["--sites"]:
        asyncio.run(sites(json.loads(args[1]), json.loads(args[2])))
        return
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    if not all(a.isdigit() and int(a) > 0 for a in args):
        print("edges: usage: edges.py [--quick] [N ...] (whole numbers above 0)", file=sys.stderr)
        sys.exit(2)
    from ccctl.edges.local import why_unavailable

    reason = why_unavailable()
    if reason:
        print(f"edges: cannot run here: {reason}", flush=True)
        return
    warmup, window = (1.0, 2.0) if quick else (WARMUP, WINDOW)
    ns = [int(a) for a in args] or ([4] if quick else [50, 150])
    with tempfile.TemporaryDirectory(prefix="ccctl-edges-clip-") as tmp:
        source = "testsrc"
        if not quick:  # fanout.py's clip: the encoder runs at its cap (~0.66 Mbps)
            from benchmarks.fanout import make_clip

            clip = Path(tmp) / "clip.mp4"
            make_clip(clip)
            source = f"file:{clip}"
        cascades: dict[tuple[int, int], dict[str, Any]] = {}
        for n_edges in (1, 2):
            for r in asyncio.run(cascade(n_edges, [0, *ns], source, warmup, window)):
                cascades[(n_edges, r["n"])] = r
                print(line(r), flush=True)
        for n in ns:
            base, alone = ccctl_alone(n, source, warmup, window)
            serving = max(1e-9, alone["cpu_s_per_s"] - base["cpu_s_per_s"])
            print(f"ccctl alone  N={n:4d}  cpu {alone['cpu_s_per_s']:.3f} core (program alone {base['cpu_s_per_s']:.3f})"
                  f"  {n / alone['cpu_s_per_s']:.0f} sites/core gross, {n / serving:.0f} serving only"
                  f"  recv {alone['recv_ratio']:.3f}", flush=True)
            for n_edges in (1, 2):
                r, idle = cascades[(n_edges, n)], cascades[(n_edges, 0)]
                total = r["origin_cpu"] + r["edges_cpu"]
                net = max(1e-9, total - idle["origin_cpu"] - idle["edges_cpu"])
                print(f"cascade E={n_edges} N={n:4d}  cpu {total:.3f} core (origin {r['origin_cpu']:.3f}, idle "
                      f"{idle['origin_cpu'] + idle['edges_cpu']:.3f})  {n / total:.0f} sites/core gross, "
                      f"{n / net:.0f} serving only", flush=True)
        cost = srtp_cost(500 if quick else 5000)
        print(f"srtp: {cost['srtp']:.1f} us/packet protected and sent, {cost['plain']:.1f} plain "
              f"(origin, per edge: x {PACKETS_PER_TIER_S} pkt/s per tier)", flush=True)
        for n_edges in (1, 2):
            first, last = cascades[(n_edges, 0)], cascades[(n_edges, ns[-1])]
            print(f"origin E={n_edges}: {first['origin_cpu']:.3f} core at N=0, {last['origin_cpu']:.3f} at "
                  f"N={ns[-1]} (it should not grow with sites)", flush=True)


if __name__ == "__main__":
    main()
