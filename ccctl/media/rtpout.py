"""Plain RTP out to a UDP address: how the program feeds a media server (a Janus edge).

:class:`RtpOut` is an :class:`~ccctl.media.fastpath.RtpSink` like a site's
:class:`~ccctl.media.fastpath.Forwarder`: attached to a tier's :class:`~ccctl.media.tiers.Feed`,
it gets each unit the feed packetised once for every sink, and only adds a 12-byte RTP header
(its own SSRC, sequence and timestamp offset, the payload type the far end expects, the
marker on a unit's last packet) and sends it with one ``sendto`` on a non-blocking UDP socket.
No SRTP: for an edge on this machine or a private network (the issue asks for SRTP where the
edge is on another machine; not done yet). Video starts at a keyframe (the feed asks for one
when the sink is attached); a full socket drops the rest of the unit and, for video,
everything up to the next keyframe, which it requests: nothing queues.
"""

from __future__ import annotations

import random
import socket
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ccctl.media.fastpath import RtpUnit
    from ccctl.media.tiers import Feed

_HEADER = struct.Struct(">BBHII")


class RtpOut:
    """One kind (audio or video) of one feed, sent as plain RTP to ``address`` (host, port)."""

    def __init__(self, kind: str, address: tuple[str, int], payload_type: int) -> None:
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
        pack, send, addr = _HEADER.pack, self._sock.sendto, self.address
        ts = (unit.timestamp + self._ts_offset) & 0xFFFF_FFFF
        seq, last = self._seq, len(unit.payloads) - 1
        try:
            for i, payload in enumerate(unit.payloads):
                send(pack(0x80, self._pt | 0x80 if i == last else self._pt, seq, ts, self._ssrc) + payload, addr)
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
