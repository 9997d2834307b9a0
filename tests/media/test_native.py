"""The native batched send (ccctl.media.native) against the Python path, its reference.

Both paths send the same units to real UDP receivers on 127.0.0.1, which decrypt them with
libsrtp (pylibsrtp, as aiortc does): the datagrams must be byte-identical, and decrypt to the
expected payloads, sequence numbers (across the 16-bit wrap) and timestamps (across the 32-bit
wrap), for several subscribers with different SSRCs and offsets and every SRTP profile aiortc
negotiates. Then what the C side does on its own: a socket that fills up, one that is gone,
and inputs it must refuse without sending anything (and without crashing: hypothesis).
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import Any

import pytest
from aiortc.rtp import RtpPacket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pylibsrtp import Policy, Session

from benchmarks.sendpath import KEY_LENGTHS, PT, header_template, standalone_forwarder
from ccctl.media import fastpath, native
from ccctl.media.core import MediaCore
from ccctl.media.fastpath import Forwarder, RtpUnit
from ccctl.media.tiers import Feed

from .conftest import JoinFn

fanout = native._fanout
# Where the extension is not built (setup.py skips it without a compiler) only the fallback test runs.
needs_native = pytest.mark.skipif(fanout is None, reason="the native sender is not built here (see setup.py)")

PROFILES = KEY_LENGTHS  # libsrtp's profile number: key + salt length (the three aiortc offers)
# (SSRC, first sequence number, timestamp offset): one wraps its sequence, one its timestamp.
SUBSCRIBERS = [(0x1111_1111, 65_530, 5), (0xDEAD_BEEF, 0, 0xFFFF_FF00), (7, 40_000, 123_456)]


def forwarder(kind: str, ssrc: int, seq: int, offset: int, profile: int, key: bytes, sock: socket.socket,
              addr: tuple[str, int], use_native: bool) -> Forwarder:
    """A forwarder of either path on real SRTP sessions and sockets (benchmarks/sendpath.py)."""
    return standalone_forwarder(kind, ssrc, seq, offset, profile, key, sock, addr, use_native)


def udp(made: list[socket.socket], blocking: bool = True) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(blocking)
    s.settimeout(10.0 if blocking else None)  # a bound on a missing datagram, not a synchronisation
    made.append(s)
    return s


def receive(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` datagrams (loopback UDP delivers before sendto returns; the timeout bounds a miss)."""
    return [sock.recv(4096) for _ in range(count)]


def units() -> list[RtpUnit]:
    """A keyframe of three packets, then units of one to four packets (payload sizes 1 to 1,300,
    including ones longer than the Python path's in-place buffer takes), with timestamps beyond
    32 bits (the RTP clock wraps)."""
    out = []
    ts = (1 << 32) - 9000
    for i in range(8):
        sizes = [1300, 1, 1200] if i == 0 else [1 + (i * 337) % 1300 for _ in range(1 + i % 4)]
        payloads = tuple(bytes((i * 31 + j + k) % 256 for k in range(n)) for j, n in enumerate(sizes))
        out.append(RtpUnit(payloads, ts, i == 0, sum(sizes), 0x1234_5678_9ABC_DEF0 + i))
        ts += 3000
    return out


@needs_native
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_both_paths_send_identical_srtp_to_real_receivers(profile: int, sockets: list[socket.socket]) -> None:
    key = bytes(range(1, PROFILES[profile] + 1))
    sender_sock = udp(sockets, blocking=False)
    feeds = {True: Feed("low", "video"), False: Feed("low", "video")}
    receivers: dict[tuple[bool, int], socket.socket] = {}
    forwarders: dict[tuple[bool, int], Forwarder] = {}
    for use_native in (True, False):
        for ssrc, seq, offset in SUBSCRIBERS:
            rx = receivers[(use_native, ssrc)] = udp(sockets)
            f = forwarder("video", ssrc, seq, offset, profile, key, sender_sock, rx.getsockname(), use_native)
            f.attach(feeds[use_native])
            forwarders[(use_native, ssrc)] = f
    assert feeds[True].forwarders == {native.group_for(feeds[True])}  # one sink for all three
    sent = units()
    for unit in sent:
        for feed in feeds.values():
            feed.publish_rtp(unit)
    count = sum(len(u.payloads) for u in sent)
    for ssrc, seq, offset in SUBSCRIBERS:
        wire = {p: receive(receivers[(p, ssrc)], count) for p in (True, False)}
        assert wire[True] == wire[False]  # same keys, SSRC, index and plaintext: same SRTP bytes
        inbound = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
        got = [RtpPacket.parse(inbound.unprotect(d)) for d in wire[True]]
        expected = [(payload, (seq + n) & 0xFFFF, (unit.timestamp + offset) & 0xFFFF_FFFF, i == len(unit.payloads) - 1)
                    for n, (unit, i, payload) in enumerate((u, i, p) for u in sent for i, p in enumerate(u.payloads))]
        assert [(p.payload, p.sequence_number, p.timestamp, p.marker) for p in got] == expected
        assert {(p.ssrc, p.payload_type) for p in got} == {(ssrc, PT)}
        assert expected[0][1] > expected[-1][1] or ssrc != SUBSCRIBERS[0][0]  # the first one wrapped
        py, nat = forwarders[(False, ssrc)], forwarders[(True, ssrc)]
        assert (nat.packets, nat.octets, nat.delivered, nat.last_ts, nat.dropped) == \
            (py.packets, py.octets, py.delivered, py.last_ts, py.dropped) == \
            (count, sum(u.size for u in sent), len(sent), (sent[-1].timestamp + offset) & 0xFFFF_FFFF, 0)
        assert nat.last_ntp == py.last_ntp == sent[-1].ntp
    for f in forwarders.values():
        f.close()
    assert not feeds[True].subscribers and not feeds[True].forwarders  # the group left with its last member


@needs_native
def test_video_waits_for_a_keyframe_and_audio_does_not(sockets: list[socket.socket]) -> None:
    key = bytes(30)
    rx = udp(sockets)
    tx = udp(sockets, blocking=False)
    video = forwarder("video", 1, 0, 0, 1, key, tx, rx.getsockname(), True)
    audio = forwarder("audio", 2, 0, 0, 1, key, tx, rx.getsockname(), True)
    delta = RtpUnit((b"d",), 0, False, 1, 0)
    key_unit = RtpUnit((b"k",), 3000, True, 1, 0)
    for unit in (delta, key_unit, delta):
        video.push(unit)
        audio.push(unit)
    assert (video.dropped, video.delivered, audio.dropped, audio.delivered) == (1, 2, 0, 3)
    assert len(receive(rx, 5)) == 5


@needs_native
def test_a_full_socket_cuts_the_unit_short_and_burns_no_index_twice(tmp_path: Any) -> None:
    # Loopback UDP never reports a full buffer; a Unix datagram socket nobody reads does (EAGAIN).
    path = str(tmp_path / "sink.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tx.setblocking(False)
    header = header_template()
    try:
        s = fanout.Sender(tx, path, 0, native.stream_session(1, bytes(30), 9), 9, PT, header[0], header[12:], 100, 0, True)
        unit = RtpUnit(tuple(bytes(1000) for _ in range(8)), 0, True, 8000, 0)
        status = None
        for _ in range(10_000):  # bounded: the socket's queue holds far fewer
            status = fanout.send_unit((s,), unit.payloads, 0, 0, True)
            if status is not None:
                break
        assert status == bytes([native.BEHIND])
        assert s.dropped == 1 and s.need_keyframe
        queued = 0
        sink.setblocking(False)
        while True:
            try:
                sink.recv(65536)
                queued += 1
            except BlockingIOError:
                break
        assert queued == s.packets  # the kernel took exactly what was counted as sent
        burnt = (s.seq - 100 - s.packets) & 0xFFFF  # protected but not sent: their indexes are used up
        assert 0 <= burnt <= 8
        assert fanout.send_unit((s,), (b"x",), 0, 0, False) is None and s.dropped == 2  # waits for a keyframe
        seq = s.seq
        assert fanout.send_unit((s,), (b"x",), 0, 0, True) is None  # the socket drained: it resumes
        assert s.seq == (seq + 1) & 0xFFFF and sink.recv(100)
    finally:
        tx.close()
        sink.close()


@needs_native
def test_a_closed_socket_ends_only_that_forwarder(sockets: list[socket.socket]) -> None:
    key = bytes(30)
    rx = udp(sockets)
    good_tx = udp(sockets, blocking=False)
    gone_tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    feed = Feed("audio", "audio")
    good = forwarder("audio", 1, 0, 0, 1, key, good_tx, rx.getsockname(), True)
    gone = forwarder("audio", 2, 0, 0, 1, key, gone_tx, rx.getsockname(), True)
    ended: list[str] = []
    gone._on_dead = lambda: ended.append("gone")
    good.attach(feed)
    gone.attach(feed)
    gone_tx.close()  # ICE closed its socket under us
    feed.publish_rtp(RtpUnit((b"a",), 960, False, 1, 0))
    assert ended == ["gone"] and gone._closed and gone.feed is None
    assert good.packets == 1 and len(receive(rx, 1)) == 1
    feed.publish_rtp(RtpUnit((b"b",), 1920, False, 1, 0))
    assert good.packets == 2


@needs_native
def test_bad_input_is_refused_before_anything_is_sent(sockets: list[socket.socket]) -> None:
    rx = udp(sockets)
    tx = udp(sockets, blocking=False)
    header = header_template()
    host, port = rx.getsockname()
    session = native.stream_session(1, bytes(30), 1)
    s = fanout.Sender(tx, host, port, session, 1, PT, header[0], header[12:], 0, 0, False)
    bad_calls: list[tuple[Any, ...]] = [
        ((s,), (bytes(fanout.MAX_PACKET),), 0, 0, True),  # no room for the header and SRTP tag
        ((s,), (b"ok", "text"), 0, 0, True),
        ((s, "x"), (b"ok",), 0, 0, True),
        ((s, s), (b"ok",), 0, 0, True),  # one stream twice in one unit
        ([s], (b"ok",), 0, 0, True),
        ((fanout.Sender.__new__(fanout.Sender),), (b"ok",), 0, 0, True),  # never initialised
    ]
    for args in bad_calls:
        with pytest.raises((TypeError, ValueError)):
            fanout.send_unit(*args)
    assert s.packets == 0 and s.seq == 0
    bad_senders: list[tuple[Any, ...]] = [
        (tx, host, port, "not a session", 1, PT, header[0], header[12:], 0, 0, False),
        (tx, host, port, Policy(), 1, PT, header[0], header[12:], 0, 0, False),
        (tx, "not-an-address", port, session, 1, PT, header[0], header[12:], 0, 0, False),
        (tx, host, 70_000, session, 1, PT, header[0], header[12:], 0, 0, False),
        (tx, host, port, session, 1, 200, header[0], header[12:], 0, 0, False),  # payload type
        (tx, host, port, session, 1, PT, header[0], header[12:13], 0, 0, False),  # extension length
        (tx, host, port, session, 1, PT, 0x80, header[12:], 0, 0, False),  # extension without X
        (tx, host, port, session, 1 << 32, PT, header[0], header[12:], 0, 0, False),
    ]
    for sargs in bad_senders:
        with pytest.raises((ValueError, OverflowError, TypeError)):
            fanout.Sender(*sargs)
    assert fanout.send_unit((s,), (b"ok",), 0, 0, True) is None and len(receive(rx, 1)) == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.binary(max_size=2100) | st.integers() | st.none(), max_size=6),
       timestamp=st.integers(min_value=-(1 << 70), max_value=1 << 70),
       ntp=st.integers(min_value=-(1 << 70), max_value=1 << 70), keyframe=st.booleans(),
       ext=st.binary(max_size=300), b0=st.integers(min_value=-5, max_value=300),
       seq=st.integers(min_value=-5, max_value=70_000))
@needs_native
def test_fuzzed_calls_raise_or_send_and_never_crash(payloads: list[Any], timestamp: int, ntp: int,
                                                     keyframe: bool, ext: bytes, b0: int, seq: int,
                                                     sockets: list[socket.socket]) -> None:
    if not sockets:
        udp(sockets)
        udp(sockets, blocking=False)
    rx, tx = sockets[0], sockets[1]
    host, port = rx.getsockname()
    session = native.stream_session(1, bytes(30), 5)
    try:
        s = fanout.Sender(tx, host, port, session, 5, PT, b0, ext, seq, 0, False)
    except (ValueError, OverflowError, TypeError):
        s = fanout.Sender(tx, host, port, session, 5, PT, 0x90, header_template()[12:], 0, 0, False)
    before = s.packets
    try:
        status = fanout.send_unit((s,), tuple(payloads), timestamp, ntp, keyframe)
    except (ValueError, OverflowError, TypeError):
        assert s.packets == before
        return
    assert status is None and s.packets == before + len(payloads)
    for _ in payloads:  # what was counted arrived, and decrypts
        data = rx.recv(4096)
        assert struct.unpack_from(">I", data, 8)[0] == 5


# -- on real aiortc peers (conftest's core and join: the tight path, the sites decode what they get)
@needs_native
@pytest.mark.asyncio
@pytest.mark.parametrize("core", ["tight"], indirect=True)
async def test_real_sites_decode_the_native_path_and_the_switch_forces_python(
        core: MediaCore, join: JoinFn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fastpath, "_said_path", False)
    caplog.set_level(logging.INFO, logger="ccctl.media.fastpath")
    expected = native.describe()
    site, _ = await join("s-native", "low")
    assert len(await site.frames(3)) == 3 and len(await site.frames(5, kind="audio")) == 5
    monkeypatch.setenv(native.ENV, "0")  # read per stream: the next site's streams are Python's
    other, _ = await join("s-python", "low")
    assert len(await other.frames(3)) == 3
    by_site = {s.site_id: s.forwarders for s in core.sessions()}
    assert by_site["s-native"] and all(f._native is not None for f in by_site["s-native"].values())
    assert by_site["s-python"] and all(f._native is None for f in by_site["s-python"].values())
    rows = {r["site_id"]: r for r in await core.stats()}
    assert rows["s-native"]["packets_sent"] > 0 and rows["s-native"]["bytes_sent"] > 0
    said = [r.getMessage() for r in caplog.records if r.name == "ccctl.media.fastpath"]
    assert said == [expected] and "native send path" in expected  # once, before the switch


@pytest.mark.asyncio
@pytest.mark.parametrize("core", ["tight"], indirect=True)
async def test_without_the_extension_serve_says_so_once_and_sends_with_python(
        core: MediaCore, join: JoinFn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # What an install without a compiler leaves (setup.py skips the optional extension): no module.
    monkeypatch.setattr(native, "_fanout", None)
    monkeypatch.setattr(native, "_MISSING", "the native sender is not built (test)")
    monkeypatch.setattr(fastpath, "_said_path", False)
    caplog.set_level(logging.WARNING, logger="ccctl.media.fastpath")
    sites = [(await join(f"s-{i}", "low"))[0] for i in range(2)]
    for site in sites:
        assert len(await site.frames(2)) == 2
    assert all(f._native is None for s in core.sessions() for f in (s.forwarders or {}).values())
    said = [r.getMessage() for r in caplog.records if r.name == "ccctl.media.fastpath"]
    assert said == ["fan-out: Python send path (the native sender is not built (test))"]
