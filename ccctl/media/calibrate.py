"""Admission's budget measured at start (``[admission] pps_budget = "auto"``).

How many RTP packets a second one fan-out process may send is a property of the machine and
of the send path built on it (the native sender is about twice as fast as the Python path),
so a fixed figure is wrong somewhere. At ``serve`` start, before any site is connected, this
module sends through the real tight path (:class:`~ccctl.media.fastpath.Forwarder` fed by a
:class:`~ccctl.media.tiers.Feed`, the native sender when it is built and on, else the Python
path, with SRTP sessions keyed as aiortc keys them) to UDP sinks on 127.0.0.1 for a bounded
fraction of a second (0.1 s of its CPU, at most 0.4 s), and takes the packets it carried per
second of CPU. CPU time, not wall time: on a machine shared with other work the wall-time rate
of a fraction of a second is whatever the neighbours left at that moment (42k-108k packets/s
in three runs in a row here), while the rate per CPU second is the send path's own (within
5 %); what sharing takes at run time is admission's lag check (``min_clock_share``).

The send path is only part of what a site costs the server (ICE consent, DTLS, RTCP, the
program's encoders and the event loop take the rest), so the budget is that figure times
``pps_headroom``, clamped between ``pps_floor`` and ``pps_ceiling``
(:func:`budget_of`). The measurement runs once per process (:func:`calibration`); the
figure is logged once and shown in ``/metrics`` (:func:`metrics_lines`) and ``broadcast
status``. A measurement that fails (a changed library, no sockets left) gives the floor,
with a warning: the server starts, conservatively.

Loopback only; every loop is bounded in count and in time.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ccctl.config import AdmissionConfig

if TYPE_CHECKING:
    from ccctl.media.fastpath import Forwarder

log = logging.getLogger(__name__)

AUTO = "auto"
PT = 102  # the payload type of the calibration's streams (any dynamic one)
PAYLOAD_BYTES = 1_100  # a video packet's payload (admission.PACKET_BYTES): the dearer case
DESTINATIONS = 64  # sinks, a socket pair each (as each site has its own ICE socket)
CPU_S = 0.1  # CPU time measured (after one warm-up round) ...
WALL_S = 0.4  # ... or at most this long on a busy machine
MAX_ROUNDS = 10_000  # bound on rounds whatever the clock says
KEY_BYTES = 30  # master key + salt of AES-CM + HMAC-SHA1-80 (slower than GCM: the budget errs low)


@dataclass(frozen=True)
class Calibration:
    """One measurement of this process's send path, and the budget made from it."""

    path: str  # "native" or "python"
    measured_pps: float  # packets a second the send path carried per second of CPU
    cpu_share: float  # CPU seconds this process had per wall second during the run (< 1: shared)
    seconds: float  # how long the run took, warm-up included
    budget_pps: float  # measured_pps * headroom, clamped
    error: str | None = None  # why the measurement failed (then budget_pps is the floor)

    def line(self) -> str:
        """The one line logged at start."""
        if self.error is not None:
            return (f"admission: the send path could not be measured ({self.error}); budget {self.budget_pps:,.0f} "
                    "packets/s per fan-out process (pps_floor)")
        return (f"admission: the {self.path} send path carried {self.measured_pps:,.0f} packets/s per CPU second "
                f"here ({self.seconds * 1000:.0f} ms, {self.cpu_share * 100:.0f} % of a core meanwhile); budget "
                f"{self.budget_pps:,.0f} packets/s per fan-out process")

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for ``broadcast status``."""
        return dataclasses.asdict(self)


def is_auto(policy: AdmissionConfig) -> bool:
    """Whether ``policy``'s budget is to be measured."""
    return isinstance(policy.pps_budget, str)


def budget_of(policy: AdmissionConfig) -> float:
    """``policy``'s budget per fan-out process in packets a second (0: no limit), measuring
    this process's send path the first time an ``"auto"`` budget is asked for."""
    if isinstance(policy.pps_budget, str):
        return calibration(policy).budget_pps
    return float(policy.pps_budget)


def resolve(policy: AdmissionConfig) -> AdmissionConfig:
    """``policy`` with an ``"auto"`` budget replaced by the measured one (else itself)."""
    if not is_auto(policy):
        return policy
    return dataclasses.replace(policy, pps_budget=calibration(policy).budget_pps)


_done: Calibration | None = None


def calibration(policy: AdmissionConfig | None = None) -> Calibration:
    """This process's calibration, measured (and logged) on the first call only."""
    global _done
    if _done is None:
        policy = policy or AdmissionConfig()
        _done = calibrate(policy.pps_headroom, policy.pps_floor, policy.pps_ceiling)
        (log.info if _done.error is None else log.warning)("%s", _done.line())
    return _done


def measured() -> Calibration | None:
    """This process's calibration if it ran, else None (a configured budget)."""
    return _done


def calibrate(headroom: float, floor: float, ceiling: float) -> Calibration:
    """Measure the send path and make a budget of it (see the module doc)."""
    from ccctl.media import native

    path = "native" if native.unavailable() is None else "python"
    started = time.monotonic()
    try:
        pps, cpu_share = measure(path == "native")
    except Exception as exc:  # whatever broke, the server starts on the floor, and says why
        return Calibration(path, 0.0, 0.0, time.monotonic() - started, floor, f"{type(exc).__name__}: {exc}")
    budget = min(max(pps * headroom, floor), ceiling)
    return Calibration(path, pps, cpu_share, time.monotonic() - started, budget)


def measure(use_native: bool, cpu_s: float = CPU_S, destinations: int = DESTINATIONS) -> tuple[float, float]:
    """Packets a second per CPU second (and the share of a core this process had meanwhile)
    sending one-packet units of ``PAYLOAD_BYTES`` to ``destinations`` loopback sinks through
    the real fan-out."""
    from pylibsrtp import Policy

    from ccctl.media.fastpath import RtpUnit
    from ccctl.media.tiers import Feed

    socks: list[socket.socket] = []
    forwarders: list[Forwarder] = []
    try:
        feed = Feed("calibration", "audio")
        for i in range(destinations):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(rx)
            rx.bind(("127.0.0.1", 0))
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # never read: the kernel drops, no memory
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(tx)
            tx.bind(("127.0.0.1", 0))
            tx.setblocking(False)
            key = bytes((i * 7 + k) % 256 for k in range(KEY_BYTES))
            forwarder = standalone_forwarder("audio", 0x5EED0000 + i, i, i * 960, Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
                                             key, tx, rx.getsockname(), use_native)
            forwarder.attach(feed)
            forwarders.append(forwarder)
        payload = bytes(PAYLOAD_BYTES)
        units = [RtpUnit((payload,), 960 * k, False, PAYLOAD_BYTES, 0) for k in range(16)]
        for unit in units:  # warm-up: first sends, caches, the sockets' first buffers
            feed.publish_rtp(unit)
        before = sum(f.packets for f in forwarders)
        rounds = 0
        c0, t0 = time.process_time(), time.monotonic()
        while rounds < MAX_ROUNDS:  # until CPU_S of this process's CPU, or WALL_S of wall time
            for unit in units:
                feed.publish_rtp(unit)
            rounds += 1
            if time.process_time() - c0 >= cpu_s or time.monotonic() - t0 >= WALL_S:
                break
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
        sent = sum(f.packets for f in forwarders) - before  # protected and sent, as the forwarders count them
        if cpu <= 0 or wall <= 0 or sent <= 0:
            raise RuntimeError(f"nothing measured ({sent} packets in {cpu:.3f} s of CPU)")
        return sent / cpu, min(cpu / wall, 1.0)
    finally:
        for forwarder in forwarders:
            forwarder.close()
        for s in socks:
            s.close()


def standalone_forwarder(kind: str, ssrc: int, seq: int, offset: int, profile: int, key: bytes,
                         sock: socket.socket, addr: tuple[str, int], use_native: bool) -> Forwarder:
    """A forwarder of either path with what ``Forwarder.__init__`` takes from aiortc's sender,
    DTLS session and ICE pair given directly (real SRTP sessions and sockets, no peer): the
    calibration's, and benchmarks/sendpath.py's and the native tests' too."""
    from pylibsrtp import Policy, Session

    from ccctl.media import native
    from ccctl.media.fastpath import Forwarder
    from ccctl.media.seam import lean_srtp

    header = header_template()
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)  # as aiortc makes its own
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    session = Session(policy)
    f: Any = Forwarder.__new__(Forwarder)  # its __init__ reads these from an aiortc peer
    f.kind, f.feed, f.pending, f.sender = kind, None, None, None
    f._delivered = f._dropped = f._packets = f._octets = f._last_ts = f._last_ntp = 0
    f._b0, f._ext, f._pt, f._ssrc, f._seq, f._ts_offset = header[0], header[12:], PT, ssrc, seq, offset
    f._protect, f._protect_rtcp = session.protect, session.protect_rtcp
    f._sock, f._fallback, f._addr = sock, sock.sendto, addr
    f._lean = lean_srtp(session)
    f._need_keyframe, f._closed, f._on_dead = kind == "video", False, None
    f._native = native._fanout.Sender(sock, addr[0], addr[1], native.stream_session(profile, key, ssrc), ssrc, PT,
                                      header[0], header[12:], seq, offset, kind == "video") if use_native else None
    return f


def header_template(mid: str = "0") -> bytes:
    """The RTP header + ``mid`` extension block aiortc serialises, as ``Forwarder`` builds it."""
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap, RtpPacket

    extmap = HeaderExtensionsMap()
    extmap.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid")]))
    template = RtpPacket(payload_type=PT, ssrc=1)
    template.extensions.mid = mid
    return template.serialize(extmap)


def metrics_lines(budget: float, done: Calibration | None) -> list[str]:
    """Prometheus lines of the budget per fan-out process (``budget``), and of the measurement
    it came from (``done``; None: a configured budget)."""
    source = "configured" if done is None else ("floor" if done.error else "measured")
    lines = ["# HELP ccctl_admission_budget_pps Packets a second one fan-out process may send (measured or configured).",
             "# TYPE ccctl_admission_budget_pps gauge", f'ccctl_admission_budget_pps{{source="{source}"}} {budget:g}']
    if done is not None and done.error is None:
        lines += ["# HELP ccctl_admission_send_path_pps Packets a second the send path carried when measured at start.",
                  "# TYPE ccctl_admission_send_path_pps gauge",
                  f'ccctl_admission_send_path_pps{{path="{done.path}"}} {done.measured_pps:.0f}']
    return lines
