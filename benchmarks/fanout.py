"""Fan-out figures: server CPU per RTP packet per subscriber, ccctl's native and Python tight paths vs stock aiortc.

Server (this process, pinned to CPU 0): MediaCore playing a generated clip (moving noise and a
tone, hard enough to compress that the encoder runs at its cap; the test pattern alone compresses
to ~0.15 Mbps), every subscriber on one tier of 640x360 H.264 capped at 630 kbps + 32 kbps Opus
(about 0.66 Mbps and ~120 packets/s, the issue's reference rate).
Receivers (a child process pinned to CPU 1): N real aiortc peers that count RTP at the
socket (benchmarks/receivers.py: no decryption, no decoding). N=0 first measures the
program's own cost (source, scale, encode, Opus), which is subtracted to give the fan-out's.

    .venv/bin/python benchmarks/fanout.py [--quick] [--paths native,native-sockets,tight,stock,workers] [N ...]
    (default paths native,native-sockets,tight,stock; default N 100 300)

``native`` is the tight path with the native batched send (ccctl/media/native: header, libsrtp2
and sendmmsg in C, one call per unit and feed) and every site on one shared UDP port
(ccctl/media/udpmux: one ``sendmmsg`` carries the packets of many sites); ``native-sockets`` the
same with a socket per site (``CCCTL_UDPMUX=0``, aioice's way: ``sendmmsg`` batches within one
site only); ``tight`` the same path with the Python send (``CCCTL_NATIVE=0``), the reference,
on the shared port. Each reports packets/s per core of fan-out CPU, printed beside the
send-path table of issue 15 (72k Python path, 325k/541k native AES-CM/GCM, 685k plain send,
1.85M sendmmsg+GSO send only); the first lines measure the send paths alone the way that table
was made (benchmarks/sendpath.py).

``workers`` is the tight path in fan-out worker processes (``serve --workers``, here one
worker, pinned to the same CPU as the main process, whose CPU is counted with the main's):
it shows what feeding a worker over a local socket costs on top of the tight path.

Per path and N it prints: server CPU, packets/s, the fan-out's us per packet per subscriber,
subscribers per core at the measured rate (Janus, when installed, with the same feed and the
same receivers in the same run: benchmarks/janus.py, ``--no-janus`` to skip), and two checks: ``sent`` (packets the core sent /
packets it should have sent: every packet of the tier to every subscriber) and ``recv``
(packets the receivers counted / packets sent). Reference (the media issue): stock aiortc
31-54 us/pkt/sub; target at least 300 subscribers per core at 0.66 Mbps, goal 800 and at or
above Janus in the same run. Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cpu import pin_cpu, process_cpu  # noqa: E402
from ccctl.media.fastpath import packetize  # noqa: E402
from ccctl.media.net import pin_ice  # noqa: E402
from ccctl.media.tiers import EncodedUnit, TierSpec  # noqa: E402

pin_ice("127.0.0.1")  # both ends gather loopback candidates only

TIERS = {"low": TierSpec("low", 640, 360, 630_000), "audio": TierSpec("audio")}
FULL_RATE = 0.97  # share of the program's packet rate a run must deliver per site to count as full rate
WARMUP, WINDOW = 4.0, 10.0
JOIN_TIMEOUT = 180.0
SOURCE = "testsrc"  # main() replaces it with the generated clip


def make_clip(path: Path, seconds: int = 8, fps: int = 25) -> None:
    """A clip of moving noise over grey with a 440 Hz tone: the encoder cannot undercut its cap."""
    import av
    import numpy as np

    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        audio = out.add_stream("aac", rate=48_000)
        noise = rng.integers(16, 235, (360 * 3 // 2 * 2, 640), dtype=np.uint8)
        for i in range(seconds * fps):
            shift = (i * 7) % 360
            frame = av.VideoFrame.from_ndarray(noise[shift:shift + 540], format="yuv420p")
            out.mux(video.encode(frame))
        t = np.arange(seconds * 48_000) / 48_000
        tone = (np.sin(2 * np.pi * 440 * t) * 3000).astype(np.int16)
        for k in range(0, len(tone) - 1024, 1024):
            af = av.AudioFrame.from_ndarray(tone[k:k + 1024].reshape(1, -1), format="s16", layout="mono")
            af.sample_rate = 48_000
            out.mux(audio.encode(af))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


WORKER_PIDS: list[int] = []  # fan-out workers whose CPU counts as the server's


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime + sum(process_cpu(pid) for pid in WORKER_PIDS)


def cpu0() -> tuple[float, float]:
    """The server's CPU (the first this process may use: pin_cpu(0)): busy and softirq seconds,
    with the kernel work no process is charged for (user..steal; guest is inside user)."""
    line = f"\ncpu{min(os.sched_getaffinity(0))} "
    fields = [int(v) for v in Path("/proc/stat").read_text().split(line, 1)[1].split("\n", 1)[0].split()][:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / tick, fields[6] / tick


async def client(n: int) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from benchmarks.receivers import install

    pin_ice("127.0.0.1")
    counts = install()
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    from aiortc import RTCCertificate

    from ccctl.media.seam import lean_peers

    certificate = RTCCertificate.generateCertificate()  # one for all receivers, as the server does
    pcs = []
    for i in range(n):
        with lean_peers(certificate):  # RTP is dropped at the socket: no estimator needed either
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("audio", direction="recvonly")
            pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        print(json.dumps({"i": i, "sdp": pc.localDescription.sdp}), flush=True)
        answer = json.loads(await reader.readline())
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        pcs.append(pc)
    while True:
        line = (await reader.readline()).strip()
        if line == b"count":
            print(json.dumps(counts), flush=True)
        elif line in (b"quit", b""):
            break
    for pc in pcs:
        await pc.close()


async def sent_packets(core: Any) -> int:
    """RTP packets sent to all subscribers: the forwarders' counters, or aiortc's senders'."""
    if core.__class__.__name__ == "ShardedCore":
        return sum(row["packets_sent"] for row in await core.stats())
    total = 0
    for session in core.sessions():
        if session.forwarders is not None:
            total += sum(f.packets for f in session.forwarders.values())
            continue
        for transceiver in (session.audio, session.video):
            if transceiver is not None:
                total += transceiver.sender._RTCRtpSender__packet_count
    return total


def program_counts(core: Any) -> dict[str, int]:
    """The program's clocks and the tier's encoder: what it made, and what it skipped."""
    stats = core.program_stats()
    return {"video_ticks": stats["_program"]["video_ticks"], "audio_ticks": stats["_program"]["audio_ticks"],
            "encoded": stats["low"]["frames_encoded"], "skipped": stats["low"]["frames_skipped"]}


def made_packets(core: Any) -> int:
    """RTP packets the tight path made per subscriber (each should reach every subscriber)."""
    return int(core.program.feed("low").rtp_packets + core.program.audio_feed.rtp_packets)


async def server(n: int, fanout: str) -> dict[str, Any]:
    from ccctl.media import native, udpmux
    from ccctl.media.core import MediaCore
    from ccctl.media.shard import ShardedCore

    path = fanout
    os.environ[native.ENV] = "1" if path.startswith("native") else "0"  # read per forwarder (and by workers)
    os.environ[udpmux.ENV] = "0" if path.endswith("-sockets") else "1"  # read per subscription
    if path.startswith("native"):
        if native.unavailable() is not None:
            raise SystemExit(f"native path: {native.describe()}")
        fanout = "tight"
    # The receivers' one core joins hundreds of peers while counting the packets of those already
    # in: a session may take longer than the server's 20 s to connect, and is not ended for it.
    core: Any = (ShardedCore(SOURCE, tiers=TIERS, workers=1) if fanout == "workers"
                 else MediaCore(SOURCE, tiers=TIERS, fanout=fanout, connect_timeout=JOIN_TIMEOUT))
    await core.start()
    WORKER_PIDS[:] = [w.proc.pid for w in core._workers] if fanout == "workers" else []
    if n == 0:
        return await baseline(core)
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--client", str(n),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin and proc.stdout
    t_join = time.monotonic()
    for _ in range(n):
        offer = json.loads(await proc.stdout.readline())
        _, answer = await core.subscribe(f"site-{offer['i']}", offer["sdp"], "low")
        proc.stdin.write((json.dumps({"i": offer["i"], "sdp": answer}) + "\n").encode())
        await proc.stdin.drain()
    deadline = time.monotonic() + JOIN_TIMEOUT
    asked = n
    while (n := sum(r["state"] == "connected" for r in await core.stats())) < asked:  # bounded poll
        if time.monotonic() > deadline:  # measure those that made it; the line says how many did not
            break
        await asyncio.sleep(0.2)
    if n == 0:
        raise SystemExit(f"no peer connected within {JOIN_TIMEOUT:.0f} s")
    joined_s = time.monotonic() - t_join
    await asyncio.sleep(WARMUP)  # the measurement's warm-up, not a synchronisation

    async def sample() -> tuple[float, int, int, int, int]:
        proc.stdin.write(b"count\n")
        await proc.stdin.drain()
        got = json.loads(await proc.stdout.readline())
        sent = await sent_packets(core)
        return cpu(), sent, made_packets(core), got["packets"], got["bytes"], program_counts(core) | {"cpu0": cpu0()}

    if path.startswith(("native", "tight")):  # the run used the path it is named after, for every stream
        used, streams = native_streams(core)
        assert used == (streams if path.startswith("native") else 0), f"{path}: {used} of {streams} streams native"
        ports = send_sockets(core)
        assert (ports == 1) == (not path.endswith("-sockets")), f"{path}: sent from {ports} sockets"
    c0, s0, m0, r0, b0, p0 = await sample()
    t0 = time.monotonic()
    await asyncio.sleep(WINDOW)  # the measurement window
    c1, s1, m1, r1, b1, p1 = await sample()
    dt = time.monotonic() - t0
    proc.stdin.write(b"quit\n")
    await proc.stdin.drain()
    await proc.wait()
    mux = getattr(core, "udp_mux", None)
    port = {k: v for k, v in mux.counts().items() if v} if mux is not None and mux.ports else {}
    await core.close()
    sent = s1 - s0
    return {"n": n, "failed": asked - n, "path": path, "joined_s": joined_s, "cpu_s_per_s": (c1 - c0) / dt,
            "pkts_per_s": sent / dt,
            "mbps_per_sub": (b1 - b0) * 8 / dt / n / 1e6, "program": {k: (p1[k] - p0[k]) / dt for k in p1 if k != "cpu0"},
            "cpu0_busy": (p1["cpu0"][0] - p0["cpu0"][0]) / dt, "cpu0_softirq": (p1["cpu0"][1] - p0["cpu0"][1]) / dt,
            "sent_ratio": sent / ((m1 - m0) * n) if fanout != "stock" and m1 > m0 else None,
            "recv_ratio": (r1 - r0) / sent if sent else 0.0, "port": port}


async def baseline(core: Any) -> dict[str, Any]:
    """No peers: the program's own cost (testsrc, one encode, Opus) per second and per frame."""
    program = core.program
    tracks = [program.open_track("low", "video"), program.open_track("low", "audio")]

    units: list[tuple[str, Any]] = []  # the window's units, packetised after it (not in its CPU)

    async def drain(track: Any) -> None:
        while True:
            units.append((track.kind, await track.recv()))

    tasks = [asyncio.create_task(drain(t)) for t in tracks]
    await asyncio.sleep(WARMUP)  # warm-up, then the window: measurement, not synchronisation
    c0, e0, u0, t0 = cpu(), program.stats()["low"]["frames_encoded"], len(units), time.monotonic()
    await asyncio.sleep(WINDOW)
    c1, e1, u1, dt = cpu(), program.stats()["low"]["frames_encoded"], len(units), time.monotonic() - t0
    for t in tasks:
        t.cancel()
    await core.close()
    # RTP packets those units make: the rate every subscriber should get.
    made = sum(len(packetize(kind, EncodedUnit(p, bool(p.is_keyframe), p.size)).payloads) for kind, p in units[u0:u1])
    return {"n": 0, "cpu_s_per_s": (c1 - c0) / dt, "fps_encoded": (e1 - e0) / dt, "cpu_per_frame": (c1 - c0) / (e1 - e0),
            "pkts_per_s": made / dt}


def report(base: dict[str, Any], r: dict[str, Any]) -> dict[str, float]:
    """The fan-out's share of the server CPU, per packet per subscriber and per subscriber."""
    fanout = max(0.0, r["cpu_s_per_s"] - base["cpu_s_per_s"])
    us = fanout / r["pkts_per_s"] * 1e6 if r["pkts_per_s"] else float("nan")
    # Subscribers per core at the program's full rate (the N=0 run's), not at the rate this run
    # reached: a program that fell behind would otherwise look cheaper per subscriber.
    subs_per_core = 1e6 / (us * base["pkts_per_s"]) if us > 0 else float("inf")
    rate = r["pkts_per_s"] / r["n"] / base["pkts_per_s"]
    sent = f"{r['sent_ratio']:.3f}" if r["sent_ratio"] is not None else "  n/a"
    print(f"{r['path']:7s} N={r['n']:4d} joined in {r['joined_s']:5.1f} s  cpu={r['cpu_s_per_s']:.3f} core  "
          f"{r['pkts_per_s']:7.0f} pkt/s ({r['pkts_per_s'] / r['n']:.0f}/sub, {r['mbps_per_sub']:.2f} Mbps/sub)  "
          f"fan-out {us:5.1f} us/pkt/sub ({1e6 / us / 1e3 if us > 0 else float('inf'):5.0f}k pkt/s/core)  "
          f"{subs_per_core:5.0f} subs/core  sent {sent}  recv {r['recv_ratio']:.3f}"
          + f"  (server's CPU busy {r['cpu0_busy']:.2f}, softirq {r['cpu0_softirq']:.2f})"
          + (f"  ({r['failed']} peers did not connect)" if r["failed"] else "")
          + (f"  shared port: {r['port']}" if r.get("port") else "")
          + (f"  NOT FULL RATE: the core sent each site {rate:.2f} of the program's full rate (per second: "
             + ", ".join(f"{v:.1f} {k}" for k, v in r["program"].items()) + ")" if rate < FULL_RATE else ""),
          flush=True)
    return {"us": us, "subs_per_core": subs_per_core, "full_rate": rate >= FULL_RATE}


def send_sockets(core: Any) -> int:
    """How many sockets the core's forwarders send from (1: the shared port)."""
    return len({id(f._sock) for s in core.sessions() if s.forwarders for f in s.forwarders.values()})


def native_streams(core: Any) -> tuple[int, int]:
    """(native, all) forwarders of the core's sessions: which send path the run really used."""
    forwarders = [f for s in core.sessions() if s.forwarders for f in s.forwarders.values()]
    return sum(f._native is not None for f in forwarders), len(forwarders)


def janus(n: int) -> dict[str, float]:
    """Janus at ``n`` subscribers, same clip, tier and receivers; {} when it cannot run here."""
    from benchmarks.janus import JanusUnavailable, describe, run_janus

    try:
        r = asyncio.run(run_janus(n, WARMUP, WINDOW, source=SOURCE, tiers=TIERS))
    except JanusUnavailable as exc:
        print(exc, flush=True)
        return {}
    except RuntimeError as exc:  # e.g. its receivers did not all connect on a loaded machine: the rest still prints
        print(f"janus N={n}: no figures ({exc})", flush=True)
        return {}
    print(describe(r), flush=True)
    return {"us": r["us_per_pkt_per_sub"], "subs_per_core": r["subs_per_core"]} if r.get("held") else {}


def main() -> None:
    global WARMUP, WINDOW, SOURCE
    if sys.argv[1:2] == ["--client"]:
        pin_cpu(1)  # the server that started it is pinned to CPU 0
        asyncio.run(client(int(sys.argv[2])))
        return
    argv = sys.argv[1:]
    quick = "--quick" in argv
    paths = ["native", "native-sockets", "tight", "stock"]
    with_janus = "--no-janus" not in argv
    argv = [a for a in argv if a != "--no-janus"]
    if "--paths" in argv:
        paths = argv[argv.index("--paths") + 1].split(",")
        del argv[argv.index("--paths"):argv.index("--paths") + 2]
    ns = [int(a) for a in argv if a != "--quick"] or ([3] if quick else [100, 300])
    ns = [n for n in ns if n > 0]
    if quick:
        WARMUP, WINDOW = 1.0, 2.0
    pin_cpu(0)
    from benchmarks.sendpath import report as send_paths

    send_paths(quick)  # the send paths alone first (issue 15's table), then the full server runs
    tmp = tempfile.TemporaryDirectory(prefix="ccctl-fanout-")
    clip = Path(tmp.name) / "clip.mp4"
    make_clip(clip, seconds=4 if quick else 8)
    SOURCE = f"file:{clip}"
    base = asyncio.run(server(0, "tight"))
    print(f"N=   0 cpu={base['cpu_s_per_s']:.3f} core  enc {base['fps_encoded']:.1f} fps  "
          f"{base['cpu_per_frame'] * 1e3:.2f} ms CPU per program frame (decode+scale+encode+opus)  "
          f"{base['pkts_per_s']:.0f} RTP packets/s per subscriber at full rate", flush=True)
    figures: dict[tuple[str, int], dict[str, float]] = {}
    for n in ns:
        for path in paths:
            figures[(path, n)] = report(base, asyncio.run(server(n, path)))
        if with_janus:
            figures[("janus", n)] = janus(n)
    for n in ns:
        for ours, peers in (("native", ("native-sockets", "tight", "stock", "janus")),
                            ("native-sockets", ("tight", "janus")), ("tight", ("stock", "janus"))):
            t = figures.get((ours, n))
            for peer in peers:
                p = figures.get((peer, n))
                if not (t and p):
                    continue
                if p["us"] > 0:
                    print(f"ratio N={n}: {ours}/{peer} CPU per packet per subscriber {t['us'] / p['us']:.2f}x "
                          f"({t['subs_per_core']:.0f} vs {p['subs_per_core']:.0f} subscribers per core)")
                else:  # a loaded machine can measure more CPU at N=0 than with a few subscribers
                    print(f"ratio N={n}: {ours}/{peer} n/a ({peer}'s fan-out CPU was below the N=0 run's noise)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
