"""The send paths alone: packets per second per core of CPU, Python path vs native, no peers.

What issue 15's table measures: 1,200-byte packets to many destinations on loopback, each
destination with its own UDP socket as each site has today; here through the real
:class:`~ccctl.media.fastpath.Forwarder` (Python path) and the native sender, with their SRTP
sessions keyed as aiortc keys them, fed by a :class:`~ccctl.media.tiers.Feed`. Units of one
packet (audio-like: one ``sendmmsg`` per destination sends one packet) and of four (a video
frame: one ``sendmmsg`` sends four). The receivers' sockets are not read (the kernel still
delivers every datagram to them, then drops what overflows), so only the sender is measured.

    .venv/bin/python benchmarks/sendpath.py [--quick]

fanout.py prints these lines too. The forwarders are those of serve's measurement at start
(:func:`ccctl.media.calibrate.standalone_forwarder`), which tests/media/test_native.py compares
the two paths with too. Loopback only; every loop bounded in count and time.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pylibsrtp import Policy  # noqa: E402

from ccctl.media import native  # noqa: E402
from ccctl.media.calibrate import PT, header_template, standalone_forwarder  # noqa: E402,F401 (test_native's too)
from ccctl.media.fastpath import RtpUnit  # noqa: E402
from ccctl.media.tiers import Feed  # noqa: E402
from ccctl.media.udpmux import BUFFER_BYTES  # noqa: E402

KEY_LENGTHS = {Policy.SRTP_PROFILE_AES128_CM_SHA1_80: 30, Policy.SRTP_PROFILE_AEAD_AES_128_GCM: 28,
               Policy.SRTP_PROFILE_AEAD_AES_256_GCM: 44}
PROFILE_NAMES = {Policy.SRTP_PROFILE_AES128_CM_SHA1_80: "AES-CM+HMAC-SHA1-80",
                 Policy.SRTP_PROFILE_AEAD_AES_128_GCM: "AES-128-GCM", Policy.SRTP_PROFILE_AEAD_AES_256_GCM: "AES-256-GCM"}


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
