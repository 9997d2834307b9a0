"""Fan-out figures: server CPU per RTP packet per subscriber of the media core.

Server (this process, pinned to CPU 0): MediaCore, testsrc, subscribers on the ``low`` tier
(640x360 H.264 ~300 kbps + Opus). Clients (a child process pinned to CPU 1): N aiortc peers
whose receivers only count RTP packets (no jitter buffer, no decode). N=0 first measures the
program's own cost, which is subtracted to give the fan-out's share.

    .venv/bin/python benchmarks/fanout.py [--quick] [N ...]     (default 0 20 100)

Reference figures (the media issue): stock aiortc pass-through 31-54 us per packet per
subscriber; target at least 300 subscribers per core at 0.66 Mbps. Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time

from ccctl.media.net import pin_ice

pin_ice("127.0.0.1")  # both ends gather loopback candidates only

WARMUP, WINDOW = 4.0, 10.0


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def client(n: int) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    pin_ice("127.0.0.1")
    counted = {"audio": 0, "video": 0}

    async def count_only(self: RTCRtpReceiver, packet: object, arrival_time_ms: int) -> None:
        counted[self._RTCRtpReceiver__kind] += 1  # type: ignore[attr-defined]

    RTCRtpReceiver._handle_rtp_packet = count_only  # type: ignore[method-assign]
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pcs = []
    for i in range(n):
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
            print(json.dumps(counted), flush=True)
        elif line in (b"quit", b""):
            break
    for pc in pcs:
        await pc.close()


async def server(n: int) -> dict[str, float]:
    from ccctl.media.core import MediaCore

    core = MediaCore("testsrc")
    await core.start()
    if n == 0:
        return await baseline(core)
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--client", str(n),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin and proc.stdout
    for _ in range(n):
        offer = json.loads(await proc.stdout.readline())
        sid, answer = await core.subscribe(f"site-{offer['i']}", offer["sdp"], "low")
        proc.stdin.write((json.dumps({"i": offer["i"], "sdp": answer}) + "\n").encode())
        await proc.stdin.drain()
    deadline = time.monotonic() + 60
    while any(r["state"] != "connected" for r in await core.stats()):  # bounded poll
        if time.monotonic() > deadline:
            raise SystemExit("peers did not connect within 60 s")
        await asyncio.sleep(0.2)
    await asyncio.sleep(WARMUP)  # the measurement's warm-up, not a synchronisation

    async def sample() -> tuple[float, int, int, dict[str, int]]:
        rows = await core.stats()
        proc.stdin.write(b"count\n")
        await proc.stdin.drain()
        got = json.loads(await proc.stdout.readline())
        return cpu(), sum(r["packets_sent"] for r in rows), core.program_stats()["low"]["frames_encoded"], got

    c0, p0, e0, g0 = await sample()
    t0 = time.monotonic()
    await asyncio.sleep(WINDOW)  # the measurement window
    c1, p1, e1, g1 = await sample()
    dt = time.monotonic() - t0
    proc.stdin.write(b"quit\n")
    await proc.stdin.drain()
    await proc.wait()
    await core.close()
    packets = p1 - p0
    received = sum(g1.values()) - sum(g0.values())
    return {"n": n, "cpu_s_per_s": (c1 - c0) / dt, "pkts_per_s": packets / dt,
            "pkts_per_s_per_sub": packets / dt / n, "us_per_pkt": (c1 - c0) / packets * 1e6,
            "fps_encoded": (e1 - e0) / dt, "delivered_ratio": received / packets if packets else 0.0}


async def baseline(core: object) -> dict[str, float]:
    """No peers: the program's own cost (testsrc 720p, scale, one low encode, Opus) per frame."""
    program = core.program  # type: ignore[attr-defined]
    tracks = [program.open_track("low", "video"), program.open_track("low", "audio")]

    async def drain(track: object) -> None:
        while True:
            await track.recv()  # type: ignore[attr-defined]

    tasks = [asyncio.create_task(drain(t)) for t in tracks]
    await asyncio.sleep(WARMUP)
    c0, e0, t0 = cpu(), program.stats()["low"]["frames_encoded"], time.monotonic()
    await asyncio.sleep(WINDOW)
    c1, e1, dt = cpu(), program.stats()["low"]["frames_encoded"], time.monotonic() - t0
    for t in tasks:
        t.cancel()
    await core.close()  # type: ignore[attr-defined]
    return {"n": 0, "cpu_s_per_s": (c1 - c0) / dt, "fps_encoded": (e1 - e0) / dt,
            "cpu_per_frame": (c1 - c0) / (e1 - e0)}


def main() -> None:
    global WARMUP, WINDOW
    two_cpus = len(os.sched_getaffinity(0)) >= 2
    if sys.argv[1:2] == ["--client"]:
        if two_cpus:
            os.sched_setaffinity(0, {1})
        asyncio.run(client(int(sys.argv[2])))
        return
    args = [a for a in sys.argv[1:] if a != "--quick"]
    quick = "--quick" in sys.argv[1:]
    if quick:
        WARMUP, WINDOW = 1.0, 2.0
    ns = [int(a) for a in args] or ([0, 3] if quick else [0, 20, 100])
    if ns[0] != 0:
        ns.insert(0, 0)  # the program's own cost comes first, to subtract
    if two_cpus:
        os.sched_setaffinity(0, {0})
    results = [asyncio.run(server(n)) for n in ns]
    base = results[0]
    print(f"N=   0 cpu={base['cpu_s_per_s']:.3f} core  enc {base['fps_encoded']:.1f} fps  "
          f"{base['cpu_per_frame'] * 1e3:.2f} ms CPU per program frame (source+scale+encode+opus)")
    for r in results[1:]:
        fanout = r["cpu_s_per_s"] - r["fps_encoded"] * base["cpu_per_frame"]
        us = fanout / r["pkts_per_s"] * 1e6 if r["pkts_per_s"] else float("nan")
        per_sub = fanout / r["n"]
        print(f"N={r['n']:4d} cpu={r['cpu_s_per_s']:.3f} core  {r['pkts_per_s']:.0f} pkt/s "
              f"({r['pkts_per_s_per_sub']:.1f}/sub)  enc {r['fps_encoded']:.1f} fps  delivered {r['delivered_ratio']:.3f}  "
              f"total {r['us_per_pkt']:.1f} us/pkt; fan-out {us:.1f} us/pkt/sub, "
              f"{per_sub * 1e3:.2f} ms CPU/s per sub", flush=True)


if __name__ == "__main__":
    main()
