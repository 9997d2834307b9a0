"""The Python fan-out path never protects one SRTP index twice, even when the socket fills.

aiortc's sending SRTP session allows repeated indexes (``allow_repeat_tx``); the Python path
used to keep a packet's sequence number when its send would block, and protect that number
again, with other content, in the next unit: under AES-GCM the same nonce twice. Now a packet
protected is a sequence number used up (as in the native sender), and the stream protects with a
context of its own that refuses a repeat.

A real site joins a real core (Python path, ``CCCTL_NATIVE=0``); its video forwarder is then
given a socket that fills up: loopback UDP never reports a full buffer, so it is a Unix datagram
socket nobody reads until the test drains it, a real kernel socket that answers EAGAIN as a
congested uplink would. Everything that reached that socket is the wire.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pylibsrtp
import pytest
from pylibsrtp import Policy, Session

from ccctl.media import native
from ccctl.media.core import MediaCore
from ccctl.media.fastpath import RtpUnit

from .conftest import JoinFn

pytestmark = [pytest.mark.asyncio, pytest.mark.parametrize("core", ["tight"], indirect=True)]

PACKETS_PER_UNIT = 8


def unit(n: int) -> RtpUnit:
    """A keyframe of 8 packets of 1,000 bytes whose content differs from unit to unit."""
    payloads = tuple(bytes([(n * 7 + i) % 256]) * 1000 for i in range(PACKETS_PER_UNIT))
    return RtpUnit(payloads, n * 3000, True, 8000, n)


def drain(sink: socket.socket, wire: list[bytes]) -> None:
    while True:
        try:
            wire.append(sink.recv(65536))
        except BlockingIOError:
            return


async def test_a_full_socket_burns_indexes_and_never_reprotects_one(
        core: MediaCore, join: JoinFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV, "0")
    site, _ = await join("s-full", "low")
    await site.frames(1)
    (session,) = core.sessions()
    assert session.forwarders is not None
    video = session.forwarders["video"]
    assert video._native is None and video._lean is not None  # the Python path, in place
    video.switch(None)  # the feed stops pushing: the units below are the only ones sent
    profile, key = native.tx_key(video.sender.transport)

    path = str(tmp_path / "uplink.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.setblocking(False)
    uplink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    uplink.setblocking(False)
    wire: list[bytes] = []
    try:
        video._sock, video._addr = uplink, path
        first_seq, sent_before = video._seq, video.packets
        n = 0
        while video.dropped == 0:  # until the socket is full (bounded: its queue holds far fewer)
            assert n < 10_000, "the socket never filled"
            video.push(unit(n))
            n += 1
        for _ in range(5):  # still full: each keyframe's first packet is protected, then lost
            video.push(unit(n))
            n += 1
        assert video.dropped == 6
        drain(sink, wire)
        for _ in range(5):  # the uplink clears: the stream goes on, at the next keyframe
            video.push(unit(n))
            n += 1
            drain(sink, wire)
        assert not video._closed, "the stream ended: an index was protected twice and refused"
    finally:
        uplink.close()
        sink.close()

    sequences = [struct.unpack_from(">H", packet, 2)[0] for packet in wire]
    assert len(set(sequences)) == len(sequences), "two protected packets with one sequence number on the wire"
    assert len(wire) == video.packets - sent_before
    # Six packets were protected and never sent: their indexes are gone, not given to others.
    assert (video._seq - first_seq) & 0xFFFF == len(wire) + 6
    receiver = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
    for packet in wire:  # each decrypts, once, in order (libsrtp's replay check would refuse a repeat)
        assert len(receiver.unprotect(packet)) > 1000
    # The stream's own context refuses to protect an index again, whatever the content.
    header = struct.pack(">BBHII", video._b0, video._pt, sequences[-1], 0, video._ssrc) + video._ext
    with pytest.raises(pylibsrtp.Error):
        video._protect(header + b"other content")
