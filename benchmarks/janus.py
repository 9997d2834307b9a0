"""Janus side by side: subscribers per core for Debian's ``janus`` fed ccctl's own program.

Janus (the streaming plugin, an RTP mountpoint: H.264 packetization-mode 1 profile 42e01f,
and Opus) is fed the ``low`` tier of :class:`ccctl.media.program.Program`, the same program
as benchmarks/fanout.py (its generated clip and 630 kbps tier: ~0.66 Mbps, ~120 packets/s),
packetized once with aiortc's own packers (``H264Encoder.pack``/``OpusEncoder.pack``) and
sent as plain RTP over UDP. N receivers in a child process are aiortc peers signalled over
Janus's HTTP API (create, attach, ``watch``, answer with ``start``, keepalives) that count
RTP at the socket (benchmarks/receivers.py), as fanout.py's do. Only Janus's CPU is
counted (``/proc/<pid>/stat``, all threads), less its idle cost with the feed running and
nobody watching, measured first in the same run.

Janus never gathers ICE candidates on a loopback interface (its ``ice.c`` skips
``IFF_LOOPBACK`` before it looks at ``ice_enforce_list``), so the Janus side runs in a
private network namespace (``unshare --net``) holding only ``lo`` and a veth pair of its
own that carries 127.0.0.2 (Janus's only candidate, by ``ice_enforce_list``) and 127.0.0.3
(the receivers'; libnice binds its sockets to the candidate's interface, so the peer's
address must sit on the same one). The HTTP API and the RTP feed use 127.0.0.1; nothing in
the namespace can reach any other network. Pinning as in fanout.py: Janus and the feeding
program on CPU 0, the receivers on CPU 1.

    .venv/bin/python benchmarks/janus.py [--quick] [--testsrc] [--loops K] [N ...]   (default 20 100 300)

Per N it prints Janus's CPU, packets/s, us per packet per subscriber, subscribers per core at
the feed's rate and scaled to 121 packets/s, and ``delivered`` (packets the receivers counted
/ packets Janus should have sent: the feed's packets x receivers); on stderr, what limited the
run (feed rate, CPU waits, UDP drops, peers lost). Janus gets one shared event loop
(EVENT_LOOPS; ``--loops 0``: its stock thread per viewer). ``--testsrc`` feeds the test
pattern instead of fanout.py's clip (``--quick`` does too, to stay fast).

``run_janus(n, warmup, window, source=..., tiers=...)`` is what benchmarks/fanout.py imports
to print both servers in one run. Without ``janus`` installed it prints one line and exits 0
(``scripts/bench-setup.sh`` installs it). Figures are indicative on a shared machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ccctl.media.tiers import TierSpec

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: ccctl comes from this tree
    sys.path.insert(0, str(ROOT))

from benchmarks.cpu import pin_cpu, process_cpu  # noqa: E402
from ccctl.edges.local import janus_binary, janus_module_dirs  # noqa: E402
from ccctl.sim.netns import NetnsError, ip_binary, veth  # noqa: E402

WARMUP, WINDOW = 4.0, 10.0
#: The issue's reference stream: H.264 + Opus at 0.66 Mbps is about 121 RTP packets a second.
PKTS_PER_S_AT_0_66_MBPS = 121.0
JANUS_HOST = "127.0.0.2"  # Janus's ICE address inside the namespace (not on ``lo``: see above)
RECEIVER_HOST = "127.0.0.3"  # the receivers' ICE address, on the same veth as Janus's
PEER_HOST = "127.0.0.1"  # the HTTP API and the RTP feed, on lo
MOUNTPOINT = 1
VIDEO_PT, AUDIO_PT = 96, 111
#: Janus's media threads. Stock Janus runs one thread per viewer; pinned to one core, 300 of
#: them starve each other (joins time out, peers drop, ~30% delivered, measured here), so the
#: comparison uses Janus's own remedy for many handles, one shared event loop per core
#: (``event_loops`` in janus.jcfg). ``--loops 0`` measures the stock threading.
EVENT_LOOPS = 1
KEEPALIVE_S = 15.0  # Janus drops a session after 60 s without a request
HELD_RATIO = 0.98  # delivered share under which a run did not hold (window skew is ~1%)
MIN_CONNECTED = 0.95  # measure when at least this share of the receivers connected
JOIN_S_PER_PEER = 1.0  # join budget per receiver (generous: the machine is shared)
NOT_INSTALLED = "janus: not installed (run scripts/bench-setup.sh)"


class JanusUnavailable(RuntimeError):
    """Janus cannot be measured on this machine (not installed, or no private network)."""


# ---------------------------------------------------------------- the caller's side


async def run_janus(n: int, warmup: float = WARMUP, window: float = WINDOW, *, source: str = "testsrc",
                    tiers: Mapping[str, TierSpec] | None = None, event_loops: int = EVENT_LOOPS) -> dict[str, Any]:
    """Measure Janus with ``n`` receivers fed ``Program(source, tiers)``'s ``low`` tier.

    Returns ``n``; ``cpu_s_per_s`` (Janus, gross) and ``idle_cpu_s_per_s`` (feed on, no
    viewers); ``pkts_per_s`` (RTP the receivers got) and ``expected_pkts_per_s`` (feed rate x
    n); net of idle: ``us_per_pkt_per_sub``, ``subs_per_core`` (at the feed's rate) and
    ``subs_per_core_at_0_66mbps`` (scaled to 121 packets/s); ``delivered_ratio`` (received /
    expected); ``feed_pkts_per_s``, ``feed_mbps``, ``mbps_per_sub``, ``joined_s``, ``watching``
    (receivers that connected: at least 95% of ``n``, and the per-subscriber figures are per
    watching receiver), ``connected`` (still connected at the end) and ``held`` (delivered >=
    98% and no receiver lost: only then do the per-subscriber figures count). ``event_loops``: Janus's
    shared media loop threads (0: its stock thread per viewer, see EVENT_LOOPS).
    Raises :class:`JanusUnavailable` where Janus or a private network namespace is missing,
    RuntimeError when the run fails.
    """
    if janus_binary() is None or janus_module_dirs() is None:
        raise JanusUnavailable(NOT_INSTALLED)
    unshare = shutil.which("unshare")
    if unshare is None or ip_binary() is None:
        raise JanusUnavailable("janus: cannot run here: needs unshare (util-linux) and ip (iproute2)")
    # A private network namespace; a user namespace too unless we are root already.
    cmd = [unshare, "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    probe = await asyncio.create_subprocess_exec(*cmd, "true", stdin=asyncio.subprocess.DEVNULL,
                                                 stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(probe.communicate(), 30)
    if probe.returncode != 0:
        raise JanusUnavailable(f"janus: cannot run here: {' '.join(cmd)}: {err.decode(errors='replace').strip()}")
    params = {"n": n, "warmup": warmup, "window": window, "source": source, "event_loops": event_loops,
              "tiers": [[t.name, t.width, t.height, t.video_bitrate] for t in tiers.values()] if tiers else None}
    cmd += [sys.executable, str(Path(__file__).resolve()), "--inside", json.dumps(params)]
    limit = 90 + 3 * (warmup + window) + JOIN_S_PER_PEER * n  # setup, two windows, joins, teardown
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                start_new_session=True, cwd=str(ROOT))
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        raise RuntimeError(f"janus benchmark N={n} did not finish within {limit:.0f} s") from None
    finally:
        # Everything the run started (Janus, the receivers) is in this process group: TERM lets
        # the run clean up (its temp dir), KILL ends whatever is left.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), 20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await proc.wait()
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        if proc.returncode == 3 and lines:
            raise JanusUnavailable(lines[-1])
        raise RuntimeError(f"janus benchmark N={n} failed (exit {proc.returncode}); see its stderr above")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


# ---------------------------------------------------------------- inside the namespace


def _private_network() -> None:
    """Bring up ``lo`` and put Janus's and the receivers' ICE addresses on a private veth."""
    try:
        veth("ccj0", "ccj1", addresses=[f"{JANUS_HOST}/32", f"{RECEIVER_HOST}/32"])
    except NetnsError as exc:
        raise JanusUnavailable(f"janus: cannot run here: {exc}") from None


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((PEER_HOST, 0))
        return int(s.getsockname()[1])


def _write_config(folder: Path, http_port: int, audio_port: int, video_port: int, event_loops: int) -> Path:
    """janus.jcfg, the streaming plugin and the HTTP transport; nothing else is loaded."""
    plugins, transports = janus_module_dirs() or (Path(), Path())
    conf, mods = folder / "conf", folder / "modules"
    for sub in ("plugins", "transports", "none"):
        (mods / sub).mkdir(parents=True)
    conf.mkdir()
    # Private module folders holding only what the benchmark uses: every other plugin,
    # transport, logger and event handler stays unloaded.
    (mods / "plugins" / "libjanus_streaming.so").symlink_to(plugins / "libjanus_streaming.so")
    (mods / "transports" / "libjanus_http.so").symlink_to(transports / "libjanus_http.so")
    loops = f"\n\tevent_loops = {event_loops}" if event_loops > 0 else ""
    (conf / "janus.jcfg").write_text(f"""general: {{
\tconfigs_folder = "{conf}"
\tplugins_folder = "{mods / 'plugins'}"
\ttransports_folder = "{mods / 'transports'}"
\tevents_folder = "{mods / 'none'}"
\tloggers_folder = "{mods / 'none'}"
\tdebug_level = 4
\tsession_timeout = 60
\tserver_name = "ccctl-bench"{loops}
}}
certificates: {{
}}
media: {{
}}
nat: {{
\tnice_debug = false
\tice_enforce_list = "{JANUS_HOST}"
\tignore_mdns = true
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
\tbroadcast = false
}}
""")
    (conf / "janus.transport.http.jcfg").write_text(f"""general: {{
\tjson = "plain"
\tbase_path = "/janus"
\thttp = true
\tport = {http_port}
\tip = "{PEER_HOST}"
\thttps = false
}}
admin: {{
\tadmin_http = false
\tadmin_https = false
}}
cors: {{
}}
""")
    (conf / "janus.plugin.streaming.jcfg").write_text(f"""general: {{
\tevents = false
}}
ccctl-low: {{
\ttype = "rtp"
\tid = {MOUNTPOINT}
\tdescription = "ccctl low tier (H.264 + Opus)"
\tmedia = (
\t\t{{ type = "audio" mid = "a" port = {audio_port} iface = "{PEER_HOST}" pt = {AUDIO_PT} codec = "opus" }},
\t\t{{ type = "video" mid = "v" port = {video_port} iface = "{PEER_HOST}" pt = {VIDEO_PT} codec = "h264"
\t\t  fmtp = "profile-level-id=42e01f;packetization-mode=1" }}
\t)
}}
""")
    return conf


def _udp_errors() -> dict[str, int]:
    """This network namespace's UDP drops: receive buffers full at the receivers' sockets and
    at Janus's (its ICE sockets and the feed's ports), and send buffers full (all sockets)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    counters = dict(zip(rows[0][1:], (int(v) for v in rows[1][1:]), strict=False))
    drops = {"receivers": 0, "janus": 0, "sndbuf": counters.get("SndbufErrors", 0)}
    receivers = socket.inet_aton(RECEIVER_HOST)[::-1].hex().upper()  # /proc/net/udp's little-endian hex
    with open("/proc/net/udp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            drops["receivers" if fields[1].startswith(receivers) else "janus"] += int(fields[-1])
    return drops


def _runq_wait(pid: int) -> float:
    """Seconds the threads of ``pid`` spent runnable but waiting for a CPU (live threads only)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError), open(path) as f:
            total += int(f.read().split()[1])
    return total / 1e9


class Feeder:
    """The program's ``low`` video and the shared Opus, packetized once, sent to Janus by UDP."""

    def __init__(self, program: Any, audio_port: int, video_port: int) -> None:
        self.program = program
        self.ports = {"audio": audio_port, "video": video_port}
        self.packets = 0
        self.bytes = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.dropped = 0  # the feed's own socket buffer full (counted, never waited on)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        from aiortc.codecs import get_encoder
        from aiortc.rtcrtpparameters import RTCRtpCodecParameters

        codecs = {"video": RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=VIDEO_PT),
                  "audio": RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=AUDIO_PT)}
        for kind, codec in codecs.items():
            track = self.program.open_track("low", kind)
            self.tasks.append(asyncio.create_task(self._run(kind, track, get_encoder(codec), codec.payloadType or 0)))

    async def _run(self, kind: str, track: Any, encoder: Any, pt: int) -> None:
        from aiortc.rtp import RtpPacket

        seq, ts0, ssrc = random.randrange(1 << 16), random.randrange(1 << 32), random.randrange(1, 1 << 32)
        dest = (PEER_HOST, self.ports[kind])
        while True:  # ends when stop() cancels it
            payloads, timestamp = encoder.pack(await track.recv())
            for i, payload in enumerate(payloads):
                packet = RtpPacket(payload_type=pt, marker=int(i == len(payloads) - 1), sequence_number=seq,
                                   timestamp=(ts0 + timestamp) & 0xFFFFFFFF, ssrc=ssrc, payload=payload)
                data = packet.serialize()
                seq = (seq + 1) & 0xFFFF
                try:
                    self.sock.sendto(data, dest)
                except BlockingIOError:
                    self.dropped += 1
                    continue
                self.packets += 1
                self.bytes += len(data)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.sock.close()


async def _wait_http(url: str, janus: asyncio.subprocess.Process, seconds: float) -> None:
    import aiohttp

    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:  # bounded poll: Janus has no readiness signal
            if janus.returncode is not None:
                raise RuntimeError(f"janus exited with {janus.returncode} at startup")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{url}/info") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"janus did not answer on {url} within {seconds:.0f} s")


async def inside(p: dict[str, Any]) -> dict[str, Any]:
    """The whole Janus run, in the private namespace: Janus, feed, idle window, receivers, window."""
    from ccctl.media.program import Program
    from ccctl.media.tiers import TierSpec

    n, warmup, window, event_loops = int(p["n"]), float(p["warmup"]), float(p["window"]), int(p["event_loops"])
    tiers = {t[0]: TierSpec(*t) for t in p["tiers"]} if p.get("tiers") else None
    _private_network()
    pin_cpu(0)  # Janus inherits it at fork, all its threads included
    binary = janus_binary()
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="ccctl-janus-") as tmp:
        http_port, audio_port, video_port = (_free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM),
                                             _free_port(socket.SOCK_DGRAM))
        conf = _write_config(Path(tmp), http_port, audio_port, video_port, event_loops)
        log = Path(tmp) / "janus.log"
        url = f"http://{PEER_HOST}:{http_port}/janus"
        janus = await asyncio.create_subprocess_exec(binary, "-C", str(conf / "janus.jcfg"), "-F", str(conf), "-o", "-N",
                                                     "-L", str(log), stdin=asyncio.subprocess.DEVNULL,
                                                     stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        program, feeder, receivers = None, None, None
        try:
            await _wait_http(url, janus, 20)
            program = Program(p["source"], tiers)
            await program.start()
            feeder = Feeder(program, audio_port, video_port)
            feeder.start()
            await asyncio.sleep(warmup)  # the measurement's warm-up, not a synchronisation
            c0, t0, f0, b0 = process_cpu(janus.pid), time.monotonic(), feeder.packets, feeder.bytes
            await asyncio.sleep(max(1.0, window / 2))  # Janus's idle window: feed on, nobody watching
            dt = time.monotonic() - t0
            idle = (process_cpu(janus.pid) - c0) / dt
            result: dict[str, Any] = {"n": n, "idle_cpu_s_per_s": idle, "event_loops": event_loops,
                                      "feed_pkts_per_s": (feeder.packets - f0) / dt,
                                      "feed_mbps": (feeder.bytes - b0) * 8 / dt / 1e6}
            if n == 0:
                nan = float("nan")
                return result | {"cpu_s_per_s": idle, "pkts_per_s": 0.0, "us_per_pkt_per_sub": nan, "subs_per_core": nan,
                                 "subs_per_core_at_0_66mbps": nan, "delivered_ratio": nan}
            lifetime = 90 + JOIN_S_PER_PEER * n + 3 * (warmup + window)
            receivers = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), "--receivers", str(n), url, str(lifetime),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            assert receivers.stdin and receivers.stdout
            joined = json.loads(await asyncio.wait_for(receivers.stdout.readline(), 60 + JOIN_S_PER_PEER * n) or b"{}")
            watching = int(joined.get("connected", 0))  # a few may time out on a loaded machine
            if watching < max(1, MIN_CONNECTED * n):
                raise RuntimeError(f"janus: {watching} of {n} receivers connected: {joined.get('error', 'no report')}")
            if watching < n:
                print(f"janus N={n}: {watching} receivers connected ({joined.get('error')}); figures are per "
                      f"connected receiver", file=sys.stderr)
            await asyncio.sleep(warmup)  # the measurement's warm-up, not a synchronisation

            async def sample() -> tuple[float, float, int, int, dict[str, int], list[float]]:
                assert receivers and receivers.stdin and receivers.stdout and feeder
                receivers.stdin.write(b"count\n")
                await receivers.stdin.drain()
                got = json.loads(await asyncio.wait_for(receivers.stdout.readline(), 10))
                udp = _udp_errors()
                # Diagnostics: who could not keep up (the receivers' CPU, Janus waiting for its
                # CPU, full socket buffers) when fewer packets arrive than should.
                extra = [process_cpu(receivers.pid), _runq_wait(janus.pid), udp["receivers"], udp["sndbuf"],
                         _runq_wait(receivers.pid), udp["janus"]]
                return process_cpu(janus.pid), time.monotonic(), feeder.packets, feeder.bytes, got, extra

            c0, t0, f0, b0, g0, x0 = await sample()
            await asyncio.sleep(window)  # the measurement window
            c1, t1, f1, b1, g1, x1 = await sample()
            dt = t1 - t0
            result |= {"receivers_cpu_s_per_s": (x1[0] - x0[0]) / dt, "janus_runq_wait_s_per_s": (x1[1] - x0[1]) / dt,
                       "receivers_drops_per_s": (x1[2] - x0[2]) / dt, "sndbuf_drops_per_s": (x1[3] - x0[3]) / dt,
                       "receivers_runq_wait_s_per_s": (x1[4] - x0[4]) / dt, "janus_drops_per_s": (x1[5] - x0[5]) / dt}
            cpu, feed_rate = (c1 - c0) / dt, (f1 - f0) / dt
            got = (g1["packets"] - g0["packets"]) / dt
            per_sub = max(0.0, cpu - idle) / watching  # Janus CPU seconds per second per viewer
            per_pkt = per_sub * n / got if got else float("nan")
            return result | {
                "cpu_s_per_s": cpu, "pkts_per_s": got, "expected_pkts_per_s": feed_rate * watching,
                "us_per_pkt_per_sub": per_pkt * 1e6,
                "subs_per_core": 1 / per_sub if per_sub > 0 else float("inf"),
                "subs_per_core_at_0_66mbps": 1 / (per_pkt * PKTS_PER_S_AT_0_66_MBPS) if per_pkt > 0 else float("inf"),
                "delivered_ratio": got / (feed_rate * watching) if feed_rate else 0.0,
                "feed_pkts_per_s": feed_rate, "feed_mbps": (b1 - b0) * 8 / dt / 1e6,
                "mbps_per_sub": (g1["bytes"] - g0["bytes"]) * 8 / dt / watching / 1e6, "watching": watching,
                "connected": g1.get("connected", 0), "joined_s": joined.get("seconds", 0.0),
                "janus_hangups": log.read_text(errors="replace").count("Hanging up PeerConnection"),
                # The per-subscriber figures count only when Janus kept up: every packet delivered
                # (2% for window skew) to every receiver, none of them lost.
                "held": got >= HELD_RATIO * feed_rate * watching and g1.get("connected", 0) == watching}
        except BaseException:
            with contextlib.suppress(OSError):  # the log goes with the temp dir: show its end
                tail = log.read_text(errors="replace").splitlines()[-25:]
                print("janus log (last lines):\n  " + "\n  ".join(tail), file=sys.stderr)
            raise
        finally:
            if receivers is not None and receivers.returncode is None:
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    assert receivers.stdin
                    receivers.stdin.write(b"quit\n")
                    await receivers.stdin.drain()
                    await asyncio.wait_for(receivers.wait(), 20)
                if receivers.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        receivers.kill()
                    await receivers.wait()
            if feeder is not None:
                await feeder.stop()
            if program is not None:
                await program.close()
            if janus.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    janus.terminate()
                try:
                    await asyncio.wait_for(janus.wait(), 10)
                except TimeoutError:
                    janus.kill()
                    await janus.wait()


# ---------------------------------------------------------------- the receivers


class JanusSession:
    """One Janus API session over HTTP: requests, a long poll for events, keepalives."""

    def __init__(self, http: Any, url: str) -> None:
        self.http, self.url = http, url
        self.session = 0
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.hangups = 0
        self._count = 0

    def _tx(self) -> str:
        self._count += 1
        return f"t{self._count}"

    async def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(f"{self.url}{path}", json=body | {"transaction": body.get("transaction", self._tx())}) as r:
            reply: dict[str, Any] = await r.json(content_type=None)
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus: {reply.get('error')}")
        return reply

    async def create(self) -> None:
        self.session = (await self.request("", {"janus": "create"}))["data"]["id"]

    async def attach(self) -> int:
        reply = await self.request(f"/{self.session}", {"janus": "attach", "plugin": "janus.plugin.streaming"})
        return int(reply["data"]["id"])

    async def message(self, handle: int, body: dict[str, Any], jsep: dict[str, str] | None = None,
                      timeout: float = 30) -> dict[str, Any]:
        """Send a plugin message and wait for the asynchronous event that answers it."""
        tx = self._tx()
        future = self.waiting[tx] = asyncio.get_running_loop().create_future()
        try:
            msg: dict[str, Any] = {"janus": "message", "body": body, "transaction": tx}
            if jsep is not None:
                msg["jsep"] = jsep
            reply = await self.request(f"/{self.session}/{handle}", msg)
            if reply.get("janus") == "event":  # answered synchronously
                return reply
            return await asyncio.wait_for(future, timeout)
        finally:
            self.waiting.pop(tx, None)

    async def poll(self, until: float) -> None:
        """Long-poll the session's events until ``until`` (monotonic); route them to waiters."""
        while time.monotonic() < until:
            try:
                async with self.http.get(f"{self.url}/{self.session}", params={"maxev": "50"}) as r:
                    events = await r.json(content_type=None)
            except (TimeoutError, OSError, ValueError) as exc:
                print(f"janus receivers: long poll failed: {exc}", file=sys.stderr)
                await asyncio.sleep(1)
                continue
            for event in events if isinstance(events, list) else [events]:
                if event.get("janus") == "hangup":
                    self.hangups += 1
                waiter = self.waiting.get(str(event.get("transaction")))
                if waiter is not None and not waiter.done() and event.get("janus") == "event":
                    data = event.get("plugindata", {}).get("data", {})
                    if "error" in data:
                        waiter.set_exception(RuntimeError(f"janus: {data['error']}"))
                    else:
                        waiter.set_result(event)

    async def keepalive(self, until: float) -> None:
        """Keep the session alive (Janus drops it after 60 s without a request)."""
        while time.monotonic() < until:
            await asyncio.sleep(KEEPALIVE_S)
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                await self.request(f"/{self.session}", {"janus": "keepalive"})


async def receivers(n: int, url: str, lifetime: float) -> None:
    """N aiortc peers watching the mountpoint; RTP is counted at the socket (as fanout.py's)."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from benchmarks.receivers import install
    from ccctl.media.net import pin_ice

    pin_ice(RECEIVER_HOST)
    counts = install()
    until = time.monotonic() + lifetime  # every loop below ends by then
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pcs: list[RTCPeerConnection] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=45),
                                     connector=aiohttp.TCPConnector(limit=64)) as http:
        janus = JanusSession(http, url)
        await janus.create()
        tasks = [asyncio.create_task(janus.poll(until)), asyncio.create_task(janus.keepalive(until))]
        gate = asyncio.Semaphore(16)

        async def join() -> None:
            async with gate:
                handle = await janus.attach()
                offer = (await janus.message(handle, {"request": "watch", "id": MOUNTPOINT}))["jsep"]
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pcs.append(pc)
                done = asyncio.Event()

                @pc.on("connectionstatechange")
                def changed() -> None:
                    if pc.connectionState in ("connected", "failed", "closed"):
                        done.set()

                await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await janus.message(handle, {"request": "start"}, {"type": "answer", "sdp": pc.localDescription.sdp})
            await asyncio.wait_for(done.wait(), 30)
            if pc.connectionState != "connected":
                raise RuntimeError(f"peer {pc.connectionState}")

        t0 = time.monotonic()
        results = await asyncio.gather(*(join() for _ in range(n)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        report: dict[str, Any] = {"connected": n - len(errors), "seconds": time.monotonic() - t0}
        if errors:
            report["error"] = f"{len(errors)} failed, first: {errors[0]!r}"
        print(json.dumps(report), flush=True)
        while time.monotonic() < until:
            try:
                line = (await asyncio.wait_for(reader.readline(), max(0.1, until - time.monotonic()))).strip()
            except TimeoutError:
                break
            if line == b"count":
                up = sum(pc.connectionState == "connected" for pc in pcs)
                print(json.dumps(counts | {"connected": up, "hangups": janus.hangups}), flush=True)
            elif line in (b"quit", b""):
                break
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(asyncio.wait_for(pc.close(), 10) for pc in pcs), return_exceptions=True)


# ---------------------------------------------------------------- command line


async def _until_terminated(run: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """``run``, cancelled on SIGTERM so that its cleanup (children, temp dir) still happens."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run


def describe(r: dict[str, Any]) -> str:
    """One line of figures for a result of :func:`run_janus`."""
    if r["n"] == 0:
        return (f"janus N=   0 cpu={r['cpu_s_per_s']:.3f} core  (feed on, no viewers: "
                f"{r['feed_pkts_per_s']:.0f} pkt/s, {r['feed_mbps']:.2f} Mbps)")
    return (f"janus N={r['n']:4d} joined in {r['joined_s']:5.1f} s  cpu={r['cpu_s_per_s']:.3f} core "
            f"(idle {r['idle_cpu_s_per_s']:.3f})  {r['pkts_per_s']:7.0f} pkt/s ({r['pkts_per_s'] / r['watching']:.0f}/sub, "
            f"{r['mbps_per_sub']:.2f} Mbps/sub)  {r['us_per_pkt_per_sub']:5.1f} us/pkt/sub  "
            f"{r['subs_per_core']:5.0f} subs/core ({r['subs_per_core_at_0_66mbps']:.0f} at 121 pkt/s)  "
            f"delivered {r['delivered_ratio']:.3f}  [{_loops(r['event_loops'])}]"
            + ("" if r.get("held") else "  NOT HELD: figures invalid, see stderr"))


def _loops(event_loops: int) -> str:
    return "a thread per viewer" if event_loops == 0 else f"{event_loops} event loop{'s' if event_loops > 1 else ''}"


def diagnose(r: dict[str, Any]) -> str:
    """One line on what limited a run: feed rate, receivers' CPU, Janus's CPU wait, UDP drops."""
    return (f"janus N={r['n']:4d} feed {r['feed_pkts_per_s']:.0f} pkt/s {r['feed_mbps']:.2f} Mbps; receivers "
            f"{r.get('receivers_cpu_s_per_s', 0):.2f} core, waited {r.get('receivers_runq_wait_s_per_s', 0):.2f} s/s "
            f"for a CPU; janus threads waited {r.get('janus_runq_wait_s_per_s', 0):.2f} s/s; "
            f"UDP drops/s: receivers' sockets {r.get('receivers_drops_per_s', 0):.0f}, "
            f"janus's {r.get('janus_drops_per_s', 0):.0f}, send buffers {r.get('sndbuf_drops_per_s', 0):.0f}; "
            f"{r.get('connected', 0)} of {r.get('watching', 0)} still connected, janus hung up {r.get('janus_hangups', 0)}")


def main() -> None:
    """``janus.py [--quick] [--testsrc] [--loops K] [N ...]``; internal modes ``--inside``, ``--receivers``."""
    args = sys.argv[1:]
    if args[:1] == ["--inside"]:
        try:
            print(json.dumps(asyncio.run(_until_terminated(inside(json.loads(args[1]))))), flush=True)
        except JanusUnavailable as exc:
            print(str(exc), flush=True)
            sys.exit(3)
        except asyncio.CancelledError:
            print("janus: run stopped (SIGTERM)", file=sys.stderr)
            sys.exit(1)
        return
    if args[:1] == ["--receivers"]:
        pin_cpu(1)
        asyncio.run(receivers(int(args[1]), args[2], float(args[3])))
        return
    quick, testsrc = "--quick" in args, "--testsrc" in args
    args = [a for a in args if a not in ("--quick", "--testsrc")]
    loops = EVENT_LOOPS
    if "--loops" in args:
        i = args.index("--loops")
        loops = int(args[i + 1]) if i + 1 < len(args) and args[i + 1].isdigit() else -1
        del args[i:i + 2]
    if loops < 0 or not all(a.isdigit() for a in args):
        print("janus: usage: janus.py [--quick] [--testsrc] [--loops K] [N ...] (whole numbers)", file=sys.stderr)
        sys.exit(2)
    if janus_binary() is None or janus_module_dirs() is None:
        print(NOT_INSTALLED, flush=True)
        return
    warmup, window = (1.0, 2.0) if quick else (WARMUP, WINDOW)
    ns = [int(a) for a in args] or ([3] if quick else [20, 100, 300])
    with tempfile.TemporaryDirectory(prefix="ccctl-janus-clip-") as tmp:
        source, tiers = "testsrc", None
        if not (testsrc or quick):  # fanout.py's program: its clip and tier, ~0.66 Mbps (--quick: testsrc, fast)
            from benchmarks.fanout import TIERS, make_clip

            clip = Path(tmp) / "clip.mp4"
            make_clip(clip, seconds=4 if quick else 8)
            source, tiers = f"file:{clip}", TIERS
        for n in ns:
            try:
                result = asyncio.run(run_janus(n, warmup, window, source=source, tiers=tiers, event_loops=loops))
            except JanusUnavailable as exc:
                print(str(exc), flush=True)
                return
            except RuntimeError as exc:
                print(f"janus N={n}: {exc}", file=sys.stderr)
                sys.exit(1)
            print(describe(result), flush=True)
            if n:
                print(diagnose(result), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
