"""Join figures: thousands of simulated sites joining a broadcast at once, and glass-to-glass latency.

    .venv/bin/python benchmarks/joins.py [--quick] [--sites N] [--video-sites M] [--steady S] [--workers W]
                                         [--budget PPS|auto] [--storm STAY,LEAVE] [--profile P [--profile-out FILE]]

The server runs in this process: the real aiohttp app and media core (``create_app``) on a free
loopback port, with a temp CCCTL_HOME and SQLite registry, a testsrc broadcast started through
the control API. Running it here lets the benchmark profile the server's event loop and know
the program's clock. The sites are ``ccctl sim join``'s receivers (``start_receivers``): worker
processes of a few hundred aiortc peers each, POSTing their WHEP offers with their tokens all
at once. Server CPU is this process's (its loop, encoder threads, and the status polling), and
with ``--workers W`` (``serve --workers``) its fan-out worker processes' too.

1. N sites (default 2,594) on the audio tier offering sound only (video for all would exceed
   this 2-core machine): join rate, time until all are connected, p50/p95 join time, failures
   by reason, then S seconds of steady state (default 5). Receivers count 1 RTP packet in 20 (kernel
   socket filter) so the receiving side stays cheap.
2. M sites (default 200) on the low tier with video, counted exactly; while they are joined, one
   more site decodes the video and reads the frame counter the test pattern draws: its arrival
   (time.monotonic, system-wide) minus when the program produced that frame (Program._t0 +
   index / fps on the loop clock) is the glass-to-glass latency on loopback.
3. ``--storm STAY,LEAVE``: STAY sites join, then LEAVE more (admitted as the budget allows),
   then all of those leave at once; the staying sites must not be cut (their connected count,
   rejoins, and share of the program's packets from before the joins to after the leave).
4. ``--profile P``: P sites join while cProfile watches the server's event loop; where its time
   goes, by layer (certificates, ICE, DTLS, SDP, HTTP, media sending, ...).

Admission (``ccctl.media.admission``): the core admits what its packets-per-second budget
carries (``--budget PPS|auto`` per fan-out process; default the ``[admission]`` configuration,
whose ``pps_budget`` is "auto" unless set: measured at start, ``ccctl.media.calibrate``) and
refuses the rest with 503 and Retry-After, which the receivers honour with jitter. Each phase
prints the connected count over time and its largest fall after first reached (target at
most 1 %), the share of the program's audio packets that the sites connected all through
the steady window received (target at least 97 %, of those made and of the nominal 50/s;
with sampling the counts are estimates), the refusals by HTTP status, the sessions left on
the server 35 s after the sites leave (target 0), and the capacity admitted.

Targets (the media issue): all of 2,594 connected in under 60 s; glass-to-glass under 400 ms.
``--quick``: small N, short windows, under 40 s (tests/test_benchmarks.py runs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import functools
import json
import os
import pstats
import random
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.cpu import process_cpu  # noqa: E402
from ccctl.media.net import pin_ice  # noqa: E402

JOIN_DEADLINE_S = 180.0  # bound of every join phase
SETTLE_S = 10.0  # the connected count unchanged this long, every other site refused: the join phase ends
LEAVE_BOUND_S = 35.0  # sessions must all be gone this long after the sites leave
TARGET_FALL = 0.01  # the connected count, once reached, never falls by more than this
TARGET_SHARE = 0.97  # of the program's packets, received by every admitted site
STALL_LIMIT_S = 30.0  # the server's loop not turning for this long aborts the run
TARGET_ALL_S = 60.0
TARGET_G2G_MS = 400.0


WORKER_PIDS: list[int] = []  # --workers: fan-out worker processes, whose CPU is the server's


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    total = r.ru_utime + r.ru_stime
    for pid in WORKER_PIDS:
        with contextlib.suppress(OSError):  # a worker restarted meanwhile: its CPU is lost
            total += process_cpu(pid)
    return total


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` (nearest rank); nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- the site that decodes (a child process) -----------------------------------------------------

async def g2g_client(whep_url: str, token: str, seconds: float) -> None:
    """Join by WHEP, decode video, print {"i": counter, "t": monotonic arrival} per frame."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from ccctl.media.program import read_counter
    from ccctl.sim.receiver import parse_retry_after, retry_delay

    pin_ice("127.0.0.1")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    done = asyncio.Event()

    async def pull(track: Any) -> None:
        while not done.is_set():
            try:
                frame = await track.recv()
            except Exception:
                return
            if track.kind == "video":
                arrived = time.monotonic()
                print(json.dumps({"i": read_counter(frame), "t": arrived}), flush=True)

    tasks: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(pull(track))))
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        for attempt in range(1, 21):  # bounded: a 503 (the core is full) is retried as told, with jitter
            async with http.post(whep_url, data=pc.localDescription.sdp, headers={
                    "Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}) as response:
                if response.status == 201:
                    answer, location = await response.text(), response.headers["Location"]
                    break
                if response.status != 503 or attempt == 20:
                    raise SystemExit(f"WHEP answered {response.status}: {await response.text()}")
                retry = retry_delay(attempt, parse_retry_after(response.headers.get("Retry-After")), random.Random())
            await asyncio.sleep(retry)  # what the server asked for: not a synchronisation
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.sleep(seconds)  # the measurement window
        done.set()
        base = whep_url.split("/whep/")[0]
        async with http.delete(base + location, headers={"Authorization": f"Bearer {token}"}):
            pass
    for task in tasks:
        task.cancel()
    await pc.close()


# -- the server side (this process) --------------------------------------------------------------

class Watchdog:
    """Aborts the run when the server's event loop stops turning: a stalled loop cannot time
    itself out, so a thread watches a heartbeat, prints where the loop is stuck, makes the
    simulated sites leave and exits."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.beat = time.monotonic()
        self.done = threading.Event()
        self.main = threading.get_ident()

    async def heartbeat(self) -> None:
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(0.5)

    def watch(self) -> None:
        while not self.done.wait(1.0):
            stalled = time.monotonic() - self.beat
            if stalled > STALL_LIMIT_S:
                frame = sys._current_frames().get(self.main)
                where = "".join(traceback.format_stack(frame)[-4:]) if frame else "?"
                print(f"ABORTED: the server's event loop has not turned for {stalled:.0f} s; it is in:\n{where}",
                      flush=True)
                from ccctl.sim.control import stop_receivers

                stop_receivers(self.home)
                shutil.rmtree(self.home, ignore_errors=True)
                os._exit(2)


class Bench:
    """A temp home and registry, the in-process server, and helpers to join sites."""

    def __init__(self, home: Path, workers: int = 0, budget: float | str | None = None) -> None:
        self.home = home
        self.workers = workers
        self.budget = budget
        self.db_url = f"sqlite:///{home / 'registry.db'}"
        self.runner: Any = None
        self.base = ""
        self.server: Any = None
        self.tokens: dict[str, str] = {}

    def add_sites(self, groups: dict[str, tuple[int, str]]) -> dict[str, list[Any]]:
        """``{prefix: (count, tier)}`` -> the registered Site objects per prefix."""
        from ccctl.media.tokens import load_secret, site_token
        from ccctl.registry import open_registry
        from ccctl.registry.sites import complete, insert_sites, select_sites
        from ccctl.registry.units import load_units

        secret = load_secret(self.home)
        out: dict[str, list[Any]] = {}
        with open_registry(self.db_url) as db:
            load_units(db, "2021")
            for prefix, (count, tier) in groups.items():
                insert_sites(db, [complete({"id": f"{prefix}-{i:05d}", "name": f"Điểm cầu {prefix} {i}",
                                            "unit_code": "26740", "tier": tier}) for i in range(count)])
            for site in select_sites(db):
                self.tokens[site.id] = site_token(secret, site.id, 1)
                out.setdefault(site.id.rsplit("-", 1)[0], []).append(site)
        return out

    async def start(self) -> None:
        """The real app on a free loopback port, media pinned to loopback, a testsrc broadcast."""
        import aiohttp
        from aiohttp import web

        from ccctl.media.server import SERVER_KEY, create_app
        from ccctl.media.tokens import control_token, load_secret

        pin_ice("127.0.0.1")
        factory = None
        if self.workers:
            from ccctl.media.shard import ShardedCore

            factory = functools.partial(ShardedCore, workers=self.workers)
        policy = None
        if self.budget is not None:
            import dataclasses

            from ccctl.config import load_config

            policy = dataclasses.replace(load_config().admission, pps_budget=self.budget)  # "auto" or a number
        app = create_app(self.db_url, self.home, factory, media_network="127.0.0.0/8", admission=policy)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        self.server = app[SERVER_KEY]
        headers = {"Authorization": f"Bearer {control_token(load_secret(self.home))}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(self.base + "/api/broadcast", json={"source": "testsrc", "title": "bench"},
                                 headers=headers) as response:
                assert response.status == 201, await response.text()
        if self.workers:
            WORKER_PIDS[:] = [w.proc.pid for w in self.server.core._workers if w.proc is not None]

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def join(self, sites: list[Any], *, audio_only: bool, sample: int, label: str,
                   steady: float, during: Any = None) -> dict[str, Any]:
        """Join ``sites`` at once through the sim's receivers; figures until all are connected,
        or the connected count has settled with every other site refused (503, retrying as
        told), then ``steady`` seconds of steady state (``during`` is awaited then, if given).
        The connected count is sampled all along, and the program's audio packets with it."""
        from ccctl.sim.control import plan_receivers, read_receivers, start_receivers, stop_receivers

        plan = plan_receivers(sites, audio_only=audio_only)
        n = len(plan)
        c0, t0, wall0 = cpu(), time.monotonic(), time.time()
        await asyncio.to_thread(start_receivers, self.home, plan, self.tokens, self.base,
                                sample=sample, media_timeout=30.0)
        spawned = time.monotonic() - t0
        series: list[tuple[float, int]] = []  # (seconds since the start, connected)
        made: list[tuple[float, int]] = []  # (time.time(), the program's audio packets so far)
        feed = self.server.core.program.audio_feed

        async def sample_state() -> dict[str, Any]:
            made.append((time.time(), feed.rtp_packets))
            state = await asyncio.to_thread(read_receivers, self.home) or {}
            made.append((time.time(), feed.rtp_packets))
            series.append((time.monotonic() - t0, state.get("states", {}).get("connected", 0)))
            return state

        state: dict[str, Any] = {}
        all_at = None
        progress = 0.0
        settled_since, last_count, settled = time.monotonic(), -1, False
        while time.monotonic() - t0 < JOIN_DEADLINE_S:  # bounded
            state = await sample_state()
            connected = state.get("states", {}).get("connected", 0)
            if connected + state.get("states", {}).get("refused", 0) >= n:
                all_at = time.monotonic() - t0
                break
            if connected != last_count:
                settled_since, last_count = time.monotonic(), connected
            refused = [r for r in state.get("sites", []) if r["state"] != "connected"
                       and (r["last_error"] or "").startswith("http_503")]
            if connected and connected + len(refused) >= n and time.monotonic() - settled_since > SETTLE_S:
                settled = True
                break  # the core is full: the rest are told to come back later
            if time.monotonic() - progress > 5:
                print(f"  [{label}] {time.monotonic() - t0:5.1f} s: {connected}/{n} connected", file=sys.stderr, flush=True)
                progress = time.monotonic()
            await asyncio.sleep(0.5)  # polling the workers' status files
        join_cpu = cpu() - c0
        c1, t1 = cpu(), time.monotonic()
        ticks0 = self.server.core.program_stats()["_program"]["audio_ticks"]
        first_rows = {r["site_id"]: r for r in state.get("sites", [])}
        first_at = state.get("site_updated", {})
        sampler = asyncio.ensure_future(self._keep_sampling(sample_state))
        extra = await during() if during is not None else None
        if steady > 0:
            await asyncio.sleep(max(0.0, steady - (time.monotonic() - t1)))  # the steady-state window
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        steady_s = max(1e-9, time.monotonic() - t1)
        steady_cpu = (cpu() - c1) / steady_s
        audio_fps = (self.server.core.program_stats()["_program"]["audio_ticks"] - ticks0) / steady_s
        state = await sample_state()
        rows = state.get("sites", [])
        share = _share(first_rows, first_at, {r["site_id"]: r for r in rows}, state.get("site_updated", {}), made)
        if all_at is not None:  # exact, from when each site connected (the status files lag up to 1 s)
            all_at = max((r["first_connected_at"] or wall0) - wall0 for r in rows) if rows else all_at
        first = [r["first_join_s"] for r in rows if r["first_join_s"] is not None]
        post = [r["last_join_s"] for r in rows if r["last_join_s"] is not None]
        server_sessions = sum(row["state"] == "connected" for row in await self.server.core.stats())
        admission = self.server.admission
        l0 = time.monotonic()
        await asyncio.to_thread(stop_receivers, self.home)
        left_sessions = len(self.server.core.sessions())
        while self.server.core.sessions() and time.monotonic() - l0 < LEAVE_BOUND_S:  # bounded
            await asyncio.sleep(0.2)  # sites whose DELETE timed out end by DTLS close or ICE consent
        drained = time.monotonic() - l0
        never: dict[str, int] = {}
        for r in rows:
            if r["state"] != "connected":
                never[r["state"]] = never.get(r["state"], 0) + 1
        return {"label": label, "n": n, "spawned_s": spawned, "all_s": all_at,
                "connected": state["states"].get("connected", 0), "receiving": state.get("receiving", 0),
                "server_connected": server_sessions,
                "p50": pct(first, 0.5), "p95": pct(first, 0.95), "max": max(first, default=float("nan")),
                "post_p50": pct(post, 0.5), "post_p95": pct(post, 0.95), "failures": state.get("failures", {}),
                "not_connected": never, "join_cpu": join_cpu, "steady_cpu": steady_cpu, "audio_fps": audio_fps,
                "steady_s": steady_s, "series": series, "share": share, "settled": settled,
                "capacity_pps": admission.capacity if admission is not None else 0.0,
                "decisions": dict(admission.counts) if admission is not None else {},
                "left_sessions": left_sessions, "drained_s": drained, "drained": not self.server.core.sessions(),
                "left_after_bound": len(self.server.core.sessions()),
                "packets": state.get("packets", {}), "extra": extra}

    @staticmethod
    async def _keep_sampling(sample_state: Any) -> None:
        while True:  # cancelled at the end of the steady window
            await sample_state()
            await asyncio.sleep(1.0)

    async def storm(self, stay: list[Any], leave: list[Any], sample: int) -> dict[str, Any]:
        """Sites that stay (receivers under a home of their own), then many more join and all
        of those leave at once: the stayers' connected count all along, their rejoins, and
        the share of the program's packets they received from before the join to after the
        leave. Receivers rejoin after 10 s without a packet, as ``sim join``'s do."""
        from ccctl.sim.control import plan_receivers, read_receivers, start_receivers, stop_receivers

        home2 = self.home / "stayers"
        home2.mkdir(exist_ok=True)
        feed = self.server.core.program.audio_feed
        made: list[tuple[float, int]] = []
        series: list[tuple[float, int]] = []
        t0 = time.monotonic()

        async def look(home: Path) -> dict[str, Any]:
            made.append((time.time(), feed.rtp_packets))
            state = await asyncio.to_thread(read_receivers, home) or {}
            made.append((time.time(), feed.rtp_packets))
            return state

        async def watch() -> None:
            while True:  # cancelled after the storm
                state = await look(home2)
                series.append((time.monotonic() - t0, state.get("states", {}).get("connected", 0)))
                await asyncio.sleep(0.5)

        await asyncio.to_thread(start_receivers, home2, plan_receivers(stay, audio_only=True), self.tokens, self.base,
                                sample=sample, media_timeout=10.0)
        before: dict[str, Any] = {}
        while time.monotonic() - t0 < JOIN_DEADLINE_S:  # bounded
            before = await look(home2)
            if before.get("states", {}).get("connected", 0) >= len(stay):
                break
            await asyncio.sleep(0.5)
        watcher = asyncio.ensure_future(watch())
        await asyncio.to_thread(start_receivers, self.home, plan_receivers(leave, audio_only=True), self.tokens,
                                self.base, sample=sample, media_timeout=10.0)
        t1, settled, last, joined = time.monotonic(), time.monotonic(), -1, 0
        while time.monotonic() - t1 < JOIN_DEADLINE_S:  # bounded
            state = await look(self.home)
            joined = state.get("states", {}).get("connected", 0)
            if joined != last:
                settled, last = time.monotonic(), joined
            out = sum(r["state"] != "connected" and (r["last_error"] or "").startswith("http_503")
                      for r in state.get("sites", []))
            if joined >= len(leave) or (joined + out >= len(leave) and time.monotonic() - settled > SETTLE_S):
                break
            await asyncio.sleep(0.5)
        refused = {k: v for k, v in state.get("failures", {}).items() if k.startswith("http_")}
        l0 = time.monotonic()
        await asyncio.to_thread(stop_receivers, self.home)  # the storm of leaves
        left_s = time.monotonic() - l0
        while len(self.server.core.sessions()) > len(stay) and time.monotonic() - l0 < LEAVE_BOUND_S:  # bounded
            await asyncio.sleep(0.2)
        leftover = len(self.server.core.sessions()) - len(stay)
        await asyncio.sleep(max(0.0, 10.0 - (time.monotonic() - l0)))  # the stayers watched 10 s past the storm
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        after = await look(home2)
        rows_after = {r["site_id"]: r for r in after.get("sites", [])}
        share = _share({r["site_id"]: r for r in before.get("sites", [])}, before.get("site_updated", {}),
                       rows_after, after.get("site_updated", {}), made)
        rejoins = sum(r["joins"] - 1 for r in rows_after.values() if r["joins"])
        await asyncio.to_thread(stop_receivers, home2)
        return {"stay": len(stay), "leave": len(leave), "joined": joined, "refused": refused, "left_s": left_s,
                "leftover": leftover, "series": series, "share": share, "rejoins": rejoins,
                "still": after.get("states", {}).get("connected", 0), "failures": after.get("failures", {})}

    async def glass_to_glass(self, site_id: str, seconds: float) -> dict[str, float]:
        """A decoding site in a child process; latency of each frame it shows after a warm-up."""
        program = self.server.core.program
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--g2g-client", f"{self.base}/whep/{site_id}", self.tokens[site_id], str(seconds),
            stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        lat: list[float] = []
        start = None
        async for line in proc.stdout:  # ends when the child exits (bounded by ``seconds``)
            sample = json.loads(line)
            start = start or sample["t"]
            if sample["t"] - start < 1.0:
                continue  # warm-up: the first keyframe and the decoder's start
            produced = program._t0 + (sample["i"] + _wraps(program, sample["i"], sample["t"])) / program.fps
            lat.append((sample["t"] - produced) * 1000)
        await proc.wait()
        return {"frames": len(lat), "p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "max": max(lat, default=float("nan")),
                "fps": len(lat) / max(1e-9, seconds - 1.0)}


def _share(before: dict[str, Any], before_at: dict[str, float], after: dict[str, Any], after_at: dict[str, float],
           made: list[tuple[float, int]]) -> dict[str, float]:
    """The share of the program's audio packets the sites connected all through the steady
    window received: their counted packets (scaled back when sampled) over what the program
    made between their shard's two status writes, and over the nominal 50 a second."""
    got = expected = nominal = 0.0
    sites = 0
    for site_id, row in after.items():
        old = before.get(site_id)
        if old is None or row["state"] != "connected" or old["state"] != "connected" or row["joins"] != old["joins"]:
            continue
        t_a, t_b = before_at.get(site_id), after_at.get(site_id)
        if t_a is None or t_b is None or t_b <= t_a:
            continue
        got += row["packets_audio"] - old["packets_audio"]
        expected += _made_at(made, t_b) - _made_at(made, t_a)
        nominal += (t_b - t_a) * 50
        sites += 1
    return {"sites": sites, "of_made": got / expected if expected else float("nan"),
            "of_nominal": got / nominal if nominal else float("nan")}


def _made_at(made: list[tuple[float, int]], at: float) -> float:
    """The program's audio packets made by ``at`` (time.time()), interpolated between samples."""
    for (ta, pa), (tb, pb) in zip(made, made[1:], strict=False):
        if ta <= at <= tb:
            return pa + (pb - pa) * ((at - ta) / (tb - ta) if tb > ta else 0.0)
    return float(made[-1][1] if at > made[-1][0] else made[0][1]) if made else 0.0


def largest_fall(series: list[tuple[float, int]]) -> tuple[float, int, int]:
    """The connected count's largest fall below its running maximum once it first connected
    anyone: (fraction of that maximum, the maximum, the count it fell to)."""
    worst, peak, low = 0.0, 0, 0
    top = 0
    for _, count in series:
        top = max(top, count)
        if top and (top - count) / top > worst:
            worst, peak, low = (top - count) / top, top, count
    return worst, peak, low


def _wraps(program: Any, counter: int, arrived: float) -> int:
    """Frames lost to the 16-bit counter's wrap-around, from the arrival time (65,536 frames)."""
    period = 1 << 16
    estimate = (arrived - program._t0) * program.fps
    return int((estimate - counter) // period) * period if estimate - counter > period / 2 else 0


JOIN_PATH = [  # (label, file substring, function): cumulative time of each step of a join
    ("WHEP handler (whole POST /whep)", "media/server.py", "whep_offer"),
    ("  token + tier checks (registry)", "media/tokens.py", "check_site"),
    ("  MediaCore.subscribe", "media/core.py", "subscribe"),
    ("    RTCPeerConnection() incl. DTLS cert", "rtcpeerconnection.py", "__init__"),
    ("      certificate generation", "rtcdtlstransport.py", "generateCertificate"),
    ("    setRemoteDescription (offer)", "rtcpeerconnection.py", "setRemoteDescription"),
    ("    createAnswer", "rtcpeerconnection.py", "createAnswer"),
    ("    setLocalDescription (ICE gathering)", "rtcpeerconnection.py", "setLocalDescription"),
    ("      ICE gathering (aioice)", "aioice/ice.py", "gather_candidates"),
    ("    SDP parsing (aiortc.sdp)", "aiortc/sdp.py", "parse"),
    ("connect: ICE checks + DTLS (__connect)", "rtcpeerconnection.py", "__connect"),
    ("  ICE connectivity checks", "aioice/ice.py", "connect"),
    ("  DTLS handshake", "rtcdtlstransport.py", "start"),
    ("session up: attach tracks/forwarders", "media/core.py", "_on_state"),
    ("join/leave events into the registry", "media/state.py", "record_event"),
    ("RTP/SRTP sending to joined sites", "media/fastpath.py", "push"),
    ("RTCP from the sites (receiver reports)", "rtcdtlstransport.py", "_handle_rtcp_data"),
    ("ICE consent / STUN traffic", "aioice/ice.py", "request_received"),
    ("waiting in epoll (idle: wall time, not CPU)", "~", "<method 'poll' of 'select.epoll' objects>"),
]


def join_path(stats: pstats.Stats) -> list[tuple[str, float, int]]:
    """Cumulative time and call count (coroutine resumptions count as calls) of each step."""
    out = []
    for label, where, name in JOIN_PATH:
        cum, calls = 0.0, 0
        for (filename, _, function), (_, nc, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
            if function == name and where in filename:
                cum, calls = cum + ct, calls + nc
        out.append((label, cum, calls))
    return out


def report(r: dict[str, Any], target: float | None) -> None:
    verdict = ""
    if target is not None and r["all_s"] is not None:
        verdict = f"  (target < {target:.0f} s: {'met' if r['all_s'] < target else 'NOT met'})"
    if r["all_s"] is not None:
        head = f"all {r['n']} connected in {r['all_s']:.1f} s{verdict}; join rate {r['n'] / r['all_s']:.0f}/s"
    elif r["settled"]:
        head = f"{r['connected']} admitted, the other {r['n'] - r['connected']} refused with 503 (retrying as told)"
    else:
        head = f"NOT all connected within {JOIN_DEADLINE_S:.0f} s"
    print(f"{r['label']}: {head}; workers up in {r['spawned_s']:.1f} s; {r['connected']} connected at the end",
          flush=True)
    print(f"  join time per site p50 {r['p50']:.2f} s  p95 {r['p95']:.2f} s  max {r['max']:.2f} s "
          f"(POST to connected p50 {r['post_p50']:.2f} s p95 {r['post_p95']:.2f} s)")
    print(f"  failures by reason (retried): {json.dumps(r['failures'], sort_keys=True) or '{}'}; "
          f"not connected at the end: {json.dumps(r['not_connected'], sort_keys=True)}")
    steady = (f"{r['steady_cpu']:.2f} core in steady state (audio frames {r['audio_fps']:.0f}/s of 50); "
              if r["steady_s"] > 0.5 else "")
    print(f"  server CPU {r['join_cpu']:.1f} s during the join ({r['join_cpu'] / max(1, r['n']) * 1000:.1f} ms per site), "
          f"{steady}{r['receiving']} receiving, {r['server_connected']} connected on the server; "
          f"after sim leave {r['left_sessions']} sessions were left on the server, "
          f"{'all gone' if r['drained'] else 'NOT all gone'} after {r['drained_s']:.1f} s", flush=True)
    fall, peak, low = largest_fall(r["series"])
    step = max(1, len(r["series"]) // 12)
    points = r["series"][::step] + ([r["series"][-1]] if r["series"] and len(r["series"]) % step != 1 else [])
    curve = " ".join(f"{t:.0f}s:{c}" for t, c in points)
    print(f"  connected over time: {curve}", flush=True)
    print(f"  largest fall of the connected count after first reached: {fall * 100:.1f} % ({peak} -> {low}) "
          f"(target <= {TARGET_FALL * 100:.0f} %: {'met' if fall <= TARGET_FALL else 'NOT met'})", flush=True)
    share = r["share"]
    ok = share["of_nominal"] >= TARGET_SHARE and share["of_made"] >= TARGET_SHARE
    print(f"  program audio packets received by the {share['sites']} sites connected all through the steady window: "
          f"{share['of_made'] * 100:.1f} % of those made, {share['of_nominal'] * 100:.1f} % of the nominal 50/s "
          f"(target >= {TARGET_SHARE * 100:.0f} %: {'met' if ok else 'NOT met'})", flush=True)
    refused = {k: v for k, v in r["failures"].items() if k.startswith("http_") or k == "no_broadcast"}
    print(f"  refused by status (each retry counted): {json.dumps(refused, sort_keys=True)}; admission capacity "
          f"{r['capacity_pps']:.0f} packets/s, decisions {json.dumps(r['decisions'], sort_keys=True)}", flush=True)
    print(f"  sessions left on the server {LEAVE_BOUND_S:.0f} s after leave: {r['left_after_bound']} "
          f"(target 0: {'met' if r['left_after_bound'] == 0 else 'NOT met'})", flush=True)


async def run(args: dict[str, Any]) -> None:
    from ccctl.limits import raise_nofile_limit

    raise_nofile_limit()  # a socket per site's peer, and per HTTP connection, in this process
    home = Path(tempfile.mkdtemp(prefix="ccctl-joins-"))
    os.environ["CCCTL_HOME"] = str(home)
    main_task = asyncio.current_task()
    assert main_task is not None
    # Killed (timeout, kill): unwind through the finally below, which stops the receivers'
    # processes; they are detached (as ``sim join``'s are) and would otherwise live on.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    bench = Bench(home, args["workers"], args["budget"])
    dog = Watchdog(home)
    beating = asyncio.create_task(dog.heartbeat())
    threading.Thread(target=dog.watch, daemon=True, name="watchdog").start()
    groups = {"ja": (args["sites"], "audio"), "jv": (args["video_sites"], "low"), "jg": (1, "low")}
    groups = {prefix: group for prefix, group in groups.items() if group[0]}
    if args["profile"]:
        groups["jp"] = (args["profile"], "audio")
    if args["storm"]:
        groups["js"], groups["jl"] = (args["storm"][0], "audio"), (args["storm"][1], "audio")
    sites = bench.add_sites(groups)
    await bench.start()
    workers = f" with {args['workers']} fan-out workers" if args["workers"] else ""
    admission = bench.server.admission
    measured = bench.server.calibration  # [admission] pps_budget "auto": the send path measured at start
    if measured is not None:
        print(measured.line(), flush=True)
    print(f"server {bench.base} (in-process{workers}), testsrc broadcast; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (shared: figures are indicative); admission budget "
          f"{admission.policy.pps_budget:.0f} packets/s per fan-out process, {admission.capacity:.0f} in all "
          f"(about {admission.capacity / admission.cost('audio'):.0f} audio sites)", flush=True)
    try:
        if args["sites"]:
            audio = await bench.join(sites["ja"], audio_only=True, sample=20 if args["sites"] > 200 else 1,
                                     label=f"{args['sites']} sites, audio tier (sound only)", steady=args["steady"])
            report(audio, TARGET_ALL_S)

        async def latency() -> dict[str, float]:
            return await bench.glass_to_glass(sites["jg"][0].id, args["g2g_s"])

        if args["video_sites"]:
            video = await bench.join(sites["jv"], audio_only=False, sample=1, during=latency, steady=args["steady"],
                                     label=f"{args['video_sites']} sites, low tier (360p video + audio)")
            report(video, None)
            g = video["extra"]
            ok = "met" if g["p95"] < TARGET_G2G_MS else "NOT met"
            if not g["frames"]:
                ok += ": no video reached the decoding site (admission may have moved it to audio)"
            print(f"glass-to-glass (testsrc counter -> decoded at a low-tier site, loopback, with {video['n']} video "
                  f"sites joined): p50 {g['p50']:.0f} ms  p95 {g['p95']:.0f} ms  max {g['max']:.0f} ms over "
                  f"{g['frames']} frames ({g['fps']:.1f} fps)  (target < {TARGET_G2G_MS:.0f} ms: {ok})", flush=True)
        if args["storm"]:
            r = await bench.storm(sites["js"], sites["jl"], sample=20 if args["storm"][1] > 200 else 1)
            fall, peak, low = largest_fall(r["series"])
            share = r["share"]
            print(f"leave storm: {r['stay']} sites in, {r['leave']} more joining ({r['joined']} admitted, refused "
                  f"{json.dumps(r['refused'], sort_keys=True)}), then those {r['joined']} left at once "
                  f"(sim leave took {r['left_s']:.1f} s)", flush=True)
            print(f"  the {r['stay']} staying sites: largest fall {fall * 100:.1f} % ({peak} -> {low}) "
                  f"(target <= {TARGET_FALL * 100:.0f} %: {'met' if fall <= TARGET_FALL else 'NOT met'}), "
                  f"{r['rejoins']} rejoins, {r['still']} connected at the end, failures "
                  f"{json.dumps(r['failures'], sort_keys=True)}", flush=True)
            print(f"  program audio packets they received from before the joins to 10 s after the leave: "
                  f"{share['of_made'] * 100:.1f} % of those made, {share['of_nominal'] * 100:.1f} % of the nominal "
                  f"50/s over {share['sites']} sites; leavers' sessions left {LEAVE_BOUND_S:.0f} s after: "
                  f"{r['leftover']}", flush=True)
        if args["profile"]:
            profiler = cProfile.Profile()
            profiler.enable()
            prof = await bench.join(sites["jp"], audio_only=True, sample=20, steady=0,
                                    label=f"{args['profile']} sites under cProfile")
            profiler.disable()
            report(prof, None)
            stats = pstats.Stats(profiler)
            if args["profile_out"]:
                stats.dump_stats(args["profile_out"])
            total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
            print(f"server event loop while {args['profile']} sites joined and then left (cProfile, main thread only, "
                  f"{total:.1f} s wall in all), cumulative time of each step:")
            for label, seconds, calls in join_path(stats):
                print(f"  {label:46s} {seconds:7.2f} s  {seconds / args['profile'] * 1000:6.2f} ms/site  {calls:7d} calls")
            print("top functions by own time:")
            ranked = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:args["top"]]  # type: ignore[attr-defined]
            for (filename, line, name), (_, nc, tt, ct, _) in ranked:
                short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
                print(f"  {tt:7.2f} s own {ct:7.2f} s cum {nc:8d} calls  {short}:{line} {name}")
    finally:
        from ccctl.sim.control import stop_receivers

        await asyncio.to_thread(stop_receivers, home)  # the server keeps answering their DELETEs
        await bench.close()
        dog.done.set()
        beating.cancel()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    if sys.argv[1:2] == ["--g2g-client"]:
        asyncio.run(g2g_client(sys.argv[2], sys.argv[3], float(sys.argv[4])))
        return
    argv = sys.argv[1:]
    quick = "--quick" in argv
    args: dict[str, Any] = {"sites": 20 if quick else 2594, "video_sites": 4 if quick else 200, "profile": 0,
                            "steady": 2.0 if quick else 10.0, "workers": 0, "g2g_s": 5.0 if quick else 12.0, "top": 25,
                            "budget": None, "storm": None}
    names = {"--sites": "sites", "--video-sites": "video_sites", "--profile": "profile", "--top": "top",
             "--steady": "steady", "--workers": "workers", "--budget": "budget"}
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return
    valued = {*names, "--profile-out", "--storm"}
    unknown = [a for i, a in enumerate(argv) if a not in valued | {"--quick"} and (i == 0 or argv[i - 1] not in valued)]
    if unknown:  # a mistyped option must not start a several-minute run with the defaults
        raise SystemExit(f"joins.py: unknown argument {unknown[0]!r} (see --help)")
    args["profile_out"] = argv[argv.index("--profile-out") + 1] if "--profile-out" in argv else None
    if "--storm" in argv:  # --storm STAY,LEAVE
        stay, leave = argv[argv.index("--storm") + 1].split(",")
        args["storm"] = (int(stay), int(leave))
    for i, arg in enumerate(argv):
        if arg in names:
            value = argv[i + 1]
            args[names[arg]] = value if arg == "--budget" and value == "auto" else \
                float(value) if arg in ("--steady", "--budget") else int(value)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
