"""UDP GSO in the native sender: a subscriber's equal-size packets of one unit as one message.

The kernel cuts a GSO message into datagrams; a receiver must get exactly what it gets without
GSO and from the Python path (byte for byte: same SRTP), from a shared sending socket to several
real UDP receivers on 127.0.0.1, for units whose packets are equal, end shorter, or differ (only
a shorter last packet may share a message). Whether GSO was really used is read from the
extension's own counters.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pylibsrtp import Policy

from benchmarks.sendpath import KEY_LENGTHS, standalone_forwarder
from ccctl.media import native
from ccctl.media.fastpath import RtpUnit
from ccctl.media.tiers import Feed

fanout = native._fanout
needs_native = pytest.mark.skipif(fanout is None, reason="the native sender is not built here (see setup.py)")
PROFILE = Policy.SRTP_PROFILE_AEAD_AES_128_GCM
KEY = bytes(range(1, KEY_LENGTHS[PROFILE] + 1))
SSRCS = (0x0101_0101, 0x0202_0202, 0x0303_0303)


@pytest.fixture
def gso_setting() -> Iterator[None]:
    """Whatever a test sets, the process's setting afterwards is what it was."""
    was = fanout.set_gso(True) if fanout is not None else False
    yield
    if fanout is not None:
        fanout.set_gso(was)


def udp(made: list[socket.socket]) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10.0)  # bounds a missing datagram; loopback delivers before sendto returns
    made.append(s)
    return s


def units() -> list[RtpUnit]:
    """Equal packets; equal then one shorter; sizes that go down step by step; one packet."""
    shapes = [[1100] * 5, [1200, 1200, 1200, 300], [900, 899, 899, 800], [700]]
    out = []
    for i, sizes in enumerate(shapes):
        payloads = tuple(bytes((i * 7 + j + k) % 256 for k in range(n)) for j, n in enumerate(sizes))
        out.append(RtpUnit(payloads, 90_000 + 3000 * i, i == 0, sum(sizes), 1 << 40 | i))
    return out


def send_all(path: str, made: list[socket.socket]) -> dict[int, list[bytes]]:
    """The units through one path (``gso``, ``no-gso`` or ``python``) from one shared socket to
    a receiver per subscriber; what each receiver got."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    tx.setblocking(False)
    made.append(tx)
    fanout.set_gso(path == "gso")
    feed = Feed("low", "video")
    receivers = {}
    forwarders = []
    for n, ssrc in enumerate(SSRCS):
        rx = receivers[ssrc] = udp(made)
        f = standalone_forwarder("video", ssrc, 100 * n, 1000 * n, PROFILE, KEY, tx, rx.getsockname(), path != "python")
        f.attach(feed)
        forwarders.append(f)
    sent = units()
    for unit in sent:
        feed.publish_rtp(unit)
    count = sum(len(u.payloads) for u in sent)
    got = {ssrc: [rx.recv(4096) for _ in range(count)] for ssrc, rx in receivers.items()}
    for f in forwarders:
        assert f.packets == count and f.dropped == 0
        f.close()
    return got


@needs_native
def test_gso_messages_arrive_as_the_same_datagrams_as_without_gso(
        sockets: list[socket.socket], gso_setting: None) -> None:
    _, messages, packets = fanout.gso_stats()
    with_gso = send_all("gso", sockets)
    _, messages_after, packets_after = fanout.gso_stats()
    # per subscriber: 5 equal; 3 equal + the shorter last; 900+899 and 899+800 (a shorter one
    # ends a message); the lone packet goes as a plain datagram
    assert (messages_after - messages, packets_after - packets) == (4 * len(SSRCS), 13 * len(SSRCS))
    assert send_all("no-gso", sockets) == with_gso == send_all("python", sockets)
    assert fanout.gso_stats()[1] == messages_after  # nothing went as GSO with it off


@needs_native
def test_gso_is_said_and_can_be_switched_off(gso_setting: None) -> None:
    assert "UDP GSO" in native.describe() and "no UDP GSO" not in native.describe()
    assert fanout.set_gso(False) is True
    assert "no UDP GSO" in native.describe()
