"""Plain RTP out to a UDP address: how the program feeds a media server (a Janus edge).

:class:`RtpOut` is an :class:`~ccctl.media.fastpath.RtpSink` like a site's
:class:`~ccctl.media.fastpath.Forwarder`: attached to a tier's :class:`~ccctl.media.tiers.Feed`,
it gets each unit the feed packetised once for every sink, and only adds a 12-byte RTP header
(its own SSRC, sequence and timestamp offset, the payload type the far end expects, the
marker on a unit's last packet) and sends it with one ``sendto`` on a non-blocking UDP socket.
Given an SRTP master key (:data:`SRTP_KEY_BYTES`: AES-128 key and salt, the
``AES_CM_128_HMAC_SHA1_80`` suite, Janus's ``srtpsuite`` 80), each packet is protected with
pylibsrtp before it is sent: for an edge on another machine. The key lives only in the
sink's SRTP context and in the request that told the edge (see :mod:`ccctl.edges.feed`);
it is never logged or printed. Video starts at a keyframe (the feed asks for one
when the sink is attached); a full socket drops the rest of the unit and, for video,
everything up to the next keyframe, which it requests: nothing queues.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ccctl.media.fastpath import RtpUnit
    from ccctl.media.tiers import Feed

_HEADER = struct.Struct(">BBHII")
SRTP_KEY_BYTES = 30  # 16-byte AES-128 key + 14-byte salt (RFC 3711), what Janus's srtpcrypto decodes to


class RtpOut:
    """One kind (audio or video) of one feed, sent as plain RTP to ``address`` (host, port)."""

    def __init__(self, kind: str, address: tuple[str, int], payload_type: int, srtp_key: bytes | None = None) -> None:
        self.kind = kind
        self.address = address
        self.feed: Feed | None = None
        self.packets = 0
        self.octets = 0
        self.dropped = 0
        self._pt = payload_type & 0x7F
        self._ssrc = random.randrange(1, 1 << 32)
        self._seq = random.randrange(1 << 16)
        self._ts_offset = random.randrange(1 << 32)
        self._need_keyframe = kind == "video"
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._protect: Callable[[bytes], bytes] | None = None
        if srtp_key is not None:
            from pylibsrtp import Policy, Session

            if len(srtp_key) != SRTP_KEY_BYTES:
                raise ValueError(f"an SRTP master key is {SRTP_KEY_BYTES} bytes")
            policy = Policy(key=srtp_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                            srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
            self._protect = Session(policy).protect

    @property
    def srtp(self) -> bool:
        """Whether this sink sends SRTP."""
        return self._protect is not None

    def attach(self, feed: Feed) -> None:
        """Start sending ``feed`` (video from its next keyframe, which the feed requests)."""
        self.feed = feed
        feed.add_forwarder(self)

    def push(self, unit: RtpUnit) -> None:
        """Send one unit: a header per payload, one ``sendto`` each; never blocks or queues."""
        if self._need_keyframe:
            if not unit.keyframe:
                return
            self._need_keyframe = False
        pack, send, addr, protect = _HEADER.pack, self._sock.sendto, self.address, self._protect
        ts = (unit.timestamp + self._ts_offset) & 0xFFFF_FFFF
        seq, last = self._seq, len(unit.payloads) - 1
        try:
            for i, payload in enumerate(unit.payloads):
                packet = pack(0x80, self._pt | 0x80 if i == last else self._pt, seq, ts, self._ssrc) + payload
                send(packet if protect is None else protect(packet), addr)
                seq = (seq + 1) & 0xFFFF
                self.packets += 1
                self.octets += len(payload)
        except OSError:  # full (BlockingIOError) or unreachable for now: drop, restart at a keyframe
            self.dropped += 1
            if self.kind == "video":
                self._need_keyframe = True
                if self.feed is not None:
                    self.feed.request_keyframe()
        self._seq = seq

    def push_pending(self, feed: Feed, unit: RtpUnit) -> None:
        """Never pending: an RtpOut does not switch feeds."""

    def stop(self) -> None:
        """Leave the feed and close the socket (also what ``Program.close`` calls)."""
        feed, self.feed = self.feed, None
        if feed is not None:
            feed.remove_forwarder(self)
        self._sock.close()

    close = stop
