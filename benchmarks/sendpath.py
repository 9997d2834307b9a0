"""The send paths alone: packets per second per core of CPU, Python path vs native, no peers.

What issue 15's table measures: 1,200-byte packets to many destinations on loopback, each
destination with its own UDP socket as each site has today; here through the real
:class:`~ccctl.media.fastpath.Forwarder` (Python path) and the native sender, with their SRTP
sessions keyed as aiortc keys them, fed by a :class:`~ccctl.media.tiers.Feed`. Units of one
packet (audio-like: one ``sendmmsg`` per destination sends one packet) and of four (a video
frame: one ``sendmmsg`` sends four). The receivers' sockets are not read (the kernel still
delivers every datagram to them, then drops what overflows), so only the sender is measured.

    .venv/bin/python benchmarks/sendpath.py [--quick]

fanout.py prints these lines too. :func:`standalone_forwarder` is also what tests/media/
test_native.py compares the two paths with. Loopback only; every loop bounded in count and time.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters  # noqa: E402
from aiortc.rtp import HeaderExtensionsMap, RtpPacket  # noqa: E402
from pylibsrtp import Policy, Session  # noqa: E402

from ccctl.media import native  # noqa: E402
from ccctl.media.fastpath import Forwarder, RtpUnit  # noqa: E402
from ccctl.media.seam import lean_srtp  # noqa: E402
from ccctl.media.tiers import Feed  # noqa: E402
from ccctl.media.udpmux import BUFFER_BYTES  # noqa: E402

PT = 102
KEY_LENGTHS = {Policy.SRTP_PROFILE_AES128_CM_SHA1_80: 30, Policy.SRTP_PROFILE_AEAD_AES_128_GCM: 28,
               Policy.SRTP_PROFILE_AEAD_AES_256_GCM: 44}
PROFILE_NAMES = {Policy.SRTP_PROFILE_AES128_CM_SHA1_80: "AES-CM+HMAC-SHA1-80",
                 Policy.SRTP_PROFILE_AEAD_AES_128_GCM: "AES-128-GCM", Policy.SRTP_PROFILE_AEAD_AES_256_GCM: "AES-256-GCM"}


def header_template(mid: str = "0") -> bytes:
    """The RTP header + ``mid`` extension block aiortc serialises, as ``Forwarder`` builds it."""
    extmap = HeaderExtensionsMap()
    extmap.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid")]))
    template = RtpPacket(payload_type=PT, ssrc=1)
    template.extensions.mid = mid
    return template.serialize(extmap)


def outbound(profile: int, key: bytes) -> Session:
    """A sending SRTP session made as aiortc makes its own (``RTCDtlsTransport._setup_srtp``)."""
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return Session(policy)


def standalone_forwarder(kind: str, ssrc: int, seq: int, offset: int, profile: int, key: bytes,
                         sock: socket.socket, addr: tuple[str, int], use_native: bool) -> Forwarder:
    """A forwarder of either path with what ``Forwarder.__init__`` takes from aiortc's sender,
    DTLS session and ICE pair given directly (real SRTP sessions and sockets, no peer)."""
    header = header_template()
    f = Forwarder.__new__(Forwarder)
    session = outbound(profile, key)
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


def udp_sender() -> socket.socket:
    """A non-blocking UDP socket on 127.0.0.1 with a shared port's send buffer."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
    tx.bind(("127.0.0.1", 0))
    tx.setblocking(False)
    return tx


def measure(use_native: bool, profile: int, destinations: int, per_unit: int, seconds: float,
            shared: bool = False) -> float:
    """Packets per second per core of CPU sending 1,200-byte packets to ``destinations``, from a
    socket each (aioice's way) or from one ``shared`` socket (ccctl.media.udpmux's)."""
    socks: list[socket.socket] = []
    try:
        feed = Feed("audio", "audio")
        one = udp_sender() if shared else None
        if one is not None:
            socks.append(one)
        for i in range(destinations):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.bind(("127.0.0.1", 0))
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # overflows at once: drops, no memory
            tx = one if one is not None else udp_sender()
            socks += [rx] if one is not None else [rx, tx]
            key = bytes((i + k) % 256 for k in range(KEY_LENGTHS[profile]))
            standalone_forwarder("audio", 1000 + i, i, i, profile, key, tx, rx.getsockname(), use_native).attach(feed)
        payloads = tuple(bytes([i]) * 1200 for i in range(per_unit))
        units = [RtpUnit(payloads, 960 * k, False, 1200 * per_unit, 0) for k in range(64)]
        sent = 0
        c0, deadline = time.process_time(), time.monotonic() + seconds
        for _ in range(100_000):  # bounded in count, and in time below
            for unit in units:
                feed.publish_rtp(unit)
            sent += len(units) * per_unit * destinations
            if time.monotonic() > deadline:
                break
        cpu = time.process_time() - c0
        return sent / cpu if cpu > 0 else float("nan")
    finally:
        for s in socks:
            s.close()


def report(quick: bool) -> None:
    """Print packets/s per core for each path, profile and unit size (issue 15's table beside)."""
    destinations, seconds = (200, 0.3) if quick else (1000, 2.0)
    print(f"send path alone, 1,200-byte packets to {destinations} destinations, loopback, from a socket each "
          f"(aioice's) or one shared port (udpmux) (issue 15, same method: Python path 72k, native AES-CM/GCM "
          f"325k/541k, send-only 685k, sendmmsg+GSO send-only 1.85M pkt/s/core)")
    has_native = native.unavailable() is None
    for profile in (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, Policy.SRTP_PROFILE_AEAD_AES_128_GCM):
        for per_unit in (1, 4):
            python = measure(False, profile, destinations, per_unit, seconds)
            line = f"  {PROFILE_NAMES[profile]:20s} {per_unit} pkt/unit: python {python / 1e3:5.0f}k"
            if has_native:
                own = measure(True, profile, destinations, per_unit, seconds)
                shared = measure(True, profile, destinations, per_unit, seconds, shared=True)
                line += (f"   native {own / 1e3:5.0f}k   native, one port {shared / 1e3:5.0f}k pkt/s/core   "
                         f"(native/python {own / python:.1f}x, one port/python {shared / python:.1f}x, "
                         f"one port/socket each {shared / own:.2f}x)")
            print(line, flush=True)
    if not has_native:
        print(f"  native: {native.describe()}")


def main(argv: list[str] | None = None) -> None:
    """Run on its own (fanout.py calls :func:`report`)."""
    report("--quick" in (argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    from benchmarks.cpu import pin_cpu

    pin_cpu(0)
    main()
