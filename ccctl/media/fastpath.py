"""The tight fan-out path: packetise once per tier, then per subscriber only header, SRTP, send.

Stock aiortc gives every ``RTCRtpSender`` its own task that pulls a frame, packetises it
(``H264Encoder.pack``: split the Annex B bitstream, FU-A/STAP-A), builds an ``RtpPacket``
object with extensions, serialises it, and sends it through three coroutine layers (DTLS
``_send_rtp`` -> ICE ``_send`` -> aioice ``sendto``), with clock conversions on the way.
That is 33-43 us per packet per subscriber here.

Here a :class:`~ccctl.media.tiers.Feed` packetises each encoded unit once into an
:class:`RtpUnit` (payloads plus the program-clock timestamp), and hands it to every
:class:`Forwarder` of the feed synchronously. Per packet per subscriber a forwarder only:

1. packs a 12-byte RTP header (its SSRC, its own sequence counter, the program timestamp
   plus its random offset, its negotiated payload type and the marker) and appends its
   constant extension block (``mid``);
2. encrypts it with the subscriber's SRTP session (keys from aiortc's DTLS): libsrtp called
   in place in pylibsrtp's buffer (see :func:`ccctl.media.seam.lean_srtp`);
3. sends it from there with one ``sendto`` on the ICE pair's UDP socket: the process's one
   shared port (:mod:`ccctl.media.udpmux`), or the site's own socket with ``CCCTL_UDPMUX=0``.

Where the native sender is built (:mod:`ccctl.media.native`; ``CCCTL_NATIVE=0`` switches it
off), a forwarder gets a C ``Sender`` with an SRTP session of its own when it is made, and steps
1-3 run in C for every native forwarder of a feed in one call per unit (``sendmmsg``, GIL
released): the feed sees one :class:`~ccctl.media.native.NativeFanout` for all of them. The
choice is per stream and for its life (one SRTP context per stream, never two); the seam is
``Forwarder._native`` (set in ``__init__``; ``attach``, ``_leave_current``, ``push_pending`` and
``push`` branch on it) and the counters read from it.

aiortc keeps doing ICE (including consent checks), DTLS, keys and incoming RTCP: its sender
is parked on an idle track. Receiver reports, PLI and FIR reach the sender as before (the
core routes PLI to the tier's keyframe policy). Outgoing sender reports are ours too:
aiortc's per-sender RTCP task (a timer, packet objects and three coroutine layers per report,
10 % of the server's CPU at 200 sites) is parked by :func:`~ccctl.media.seam.park_rtcp`, and
:func:`send_reports` sends one compound SR+SDES per site and second, and writes the figures
back into aiortc's sender so that its RTT estimate (from the receiver's LSR/DLSR) and
``getStats()`` stay right.

SRTP indexes: a packet's sequence number is used up as soon as it is protected, sent or not (a
send that would block loses that packet; it is never protected again with other content, which
under AES-GCM would reuse a nonce). On the Python path each stream also protects with an SRTP
context of its own that refuses a repeated index (``allow_repeat_tx`` off, as on the native
path; aiortc's own session allows repeats), so a slip would end the stream, not leak.

Slow or gone subscribers: the socket is non-blocking; a send that would block drops the
rest of the unit and, for video, everything until the next keyframe (requested, coalesced
by the tier). Nothing queues per subscriber, so one slow site costs nobody else anything.
Sequence numbers are the forwarder's own, so a tier switch (done at a keyframe of the new
tier, see :meth:`Forwarder.switch`) is seamless for the receiver: same SSRC, continuous
sequence, one timestamp clock for every tier.

Not done (noted): NACK retransmission (aiortc's history is not filled; loss is handled by
keyframes) and abs-send-time/transport-cc extensions (no send-side bandwidth estimation).
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pylibsrtp
from aiortc.clock import current_ntp_time
from aiortc.rtcrtpparameters import RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket, RtpPacket

from ccctl.media import native
from ccctl.media.seam import h264_payloads, lean_srtp, record_sender_report, send_path, sender_cname, sender_ssrc

if TYPE_CHECKING:
    from aiortc.rtcrtptransceiver import RTCRtpTransceiver

    from ccctl.media.tiers import EncodedUnit, Feed

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">BBHII")
LEAN_MAX = 1500 - 144  # pylibsrtp's buffer less its largest SRTP trailer


@dataclass(frozen=True, slots=True)
class RtpUnit:
    """One encoded unit as RTP payloads, made once per feed and shared by its forwarders."""

    payloads: tuple[bytes, ...]
    timestamp: int  # program clock (90 kHz video, 48 kHz audio)
    keyframe: bool
    size: int  # payload bytes
    ntp: int  # 64-bit NTP time when it was packetised, for sender reports


def packetize(kind: str, unit: EncodedUnit) -> RtpUnit:
    """Split an encoded unit into RTP payloads (RFC 6184 FU-A/STAP-A for H.264; Opus whole)."""
    data = bytes(unit.packet)
    if kind == "video":
        payloads = h264_payloads(data)
    else:
        payloads = (data,)
    pts = unit.packet.pts or 0
    return RtpUnit(payloads, pts, unit.keyframe, sum(map(len, payloads)), current_ntp_time())


class RtpSink(Protocol):
    """What a feed hands packetised units to: a :class:`Forwarder`, or a fan-out worker's link."""

    def push(self, unit: RtpUnit) -> None:
        """Take one unit of the feed this sink is on."""

    def push_pending(self, feed: Feed, unit: RtpUnit) -> None:
        """A keyframe of a feed this sink waits to switch to."""

    def stop(self) -> None:
        """The feed is closing."""


class Forwarder:
    """One subscriber's sender of one kind: header rewrite, SRTP, sendto (see module doc)."""

    __slots__ = ("kind", "feed", "pending", "sender", "_delivered", "_dropped", "_packets", "_octets", "_last_ts",
                 "_last_ntp", "_ext", "_b0", "_pt", "_ssrc", "_seq", "_ts_offset", "_protect", "_protect_rtcp",
                 "_lean", "_sock", "_addr", "_fallback", "_need_keyframe", "_closed", "_on_dead", "_native")

    def __init__(self, kind: str, transceiver: RTCRtpTransceiver, on_dead: Callable[[], None] | None = None) -> None:
        sender = transceiver.sender
        dtls = sender.transport
        path = send_path(transceiver)
        codec = path.codec
        if codec.payloadType is None:
            raise ConnectionError("no payload type negotiated")
        extmap = HeaderExtensionsMap()
        extmap.configure(RTCRtpParameters(headerExtensions=path.header_extensions))
        ssrc = sender_ssrc(sender)
        template = RtpPacket(payload_type=codec.payloadType, ssrc=ssrc)
        template.extensions.mid = transceiver.mid
        header = template.serialize(extmap)
        self.kind = kind
        self.feed: Feed | None = None
        self.pending: Feed | None = None  # the feed we move to at its next keyframe
        self.sender = sender
        self._delivered = 0
        self._dropped = 0
        self._packets = 0
        self._octets = 0
        self._last_ts = self._last_ntp = 0  # the newest (RTP, NTP) time pair, for sender reports
        self._b0 = header[0]
        self._ext = header[12:]
        self._pt = codec.payloadType
        self._ssrc = ssrc
        self._seq = random.randrange(1 << 16)
        self._ts_offset = random.randrange(1 << 32)
        self._protect_rtcp = path.srtp.protect_rtcp
        self._sock: Any = path.sock  # asyncio's socket: one syscall, no buffer
        self._fallback = path.sendto
        self._addr = path.addr
        self._need_keyframe = kind == "video"
        self._closed = False
        self._on_dead = on_dead
        # The path choice (ccctl.media.native): a C sender with its own SRTP context for this
        # stream, or None for the Python path below. Fixed for the stream's life.
        self._native = native.sender_for(self, dtls, header)
        srtp = path.srtp if self._native is not None else _stream_srtp(dtls, ssrc, path.srtp)
        self._protect = srtp.protect
        self._lean = lean_srtp(srtp) if self._sock is not None and self._native is None else None
        say_path_once()

    # -- counters (the C sender keeps them on the native path) ---------------------------------
    @property
    def delivered(self) -> int:
        """Units of which at least one packet was sent."""
        return self._native.delivered if self._native is not None else self._delivered

    @property
    def dropped(self) -> int:
        """Units skipped (waiting for a keyframe) or cut short (socket full)."""
        return self._native.dropped if self._native is not None else self._dropped

    @property
    def packets(self) -> int:
        """RTP packets sent."""
        return self._native.packets if self._native is not None else self._packets

    @property
    def octets(self) -> int:
        """Payload bytes of the units sent."""
        return self._native.octets if self._native is not None else self._octets

    @property
    def last_ts(self) -> int:
        """RTP timestamp of the newest unit sent (for sender reports)."""
        return self._native.last_ts if self._native is not None else self._last_ts

    @property
    def last_ntp(self) -> int:
        """NTP time of the newest unit sent (for sender reports)."""
        return self._native.last_ntp if self._native is not None else self._last_ntp

    # -- feed membership ----------------------------------------------------------------------
    def attach(self, feed: Feed) -> None:
        """Start forwarding ``feed`` (video waits for its next keyframe, which it requests)."""
        self.feed = feed
        if self._native is not None:
            native.group_for(feed).add(self)
        else:
            feed.add_forwarder(self)

    def switch(self, feed: Feed | None) -> None:
        """Move to ``feed`` at its next keyframe (seamless), or stop sending (``None``)."""
        if feed is self.feed:
            self._drop_pending()
            return
        self._drop_pending()
        if feed is None or self.feed is None:
            self._leave_current()
            if feed is not None:
                self._need_keyframe = self.kind == "video"
                if self._native is not None:
                    self._native.need_keyframe = self._need_keyframe
                self.attach(feed)
            return
        self.pending = feed
        feed.add_forwarder(self, pending=True)  # the feed calls push_pending() at its next keyframe

    def close(self) -> None:
        """Leave every feed; nothing more is sent."""
        self._closed = True
        self._drop_pending()
        self._leave_current()

    stop = close  # what Program.close() calls on every subscriber of a feed

    def _leave_current(self) -> None:
        if self.feed is not None:
            if self._native is not None:
                native.group_for(self.feed).remove(self)
            else:
                self.feed.remove_forwarder(self)
            self.feed = None

    def _drop_pending(self) -> None:
        if self.pending is not None:
            self.pending.remove_forwarder(self)
            self.pending = None

    # -- the per-packet path ------------------------------------------------------------------
    def push_pending(self, feed: Feed, unit: RtpUnit) -> None:
        """A keyframe of the feed we wait to switch to: switch now; the feed then sends it to us."""
        if feed is self.pending and unit.keyframe:
            self._leave_current()
            self.feed, self.pending = feed, None
            self._need_keyframe = False
            if self._native is not None:  # into the feed's native group, which sends this unit
                self._native.need_keyframe = False
                native.group_for(feed).add(self, keyframe=False)
                feed.remove_forwarder(self)
            else:
                feed.promote(self)

    def push(self, unit: RtpUnit) -> None:
        """Send one unit: per packet a header, SRTP and one ``sendto``; never blocks or queues."""
        if self._native is not None:  # not called by feeds (they call the native group): direct use
            native.send_one(self, unit)
            return
        if self._need_keyframe:
            if not unit.keyframe:
                self._dropped += 1
                return
            self._need_keyframe = False
        pack, protect, ext = _HEADER.pack, self._protect, self._ext
        b0, pt, ssrc, addr = self._b0, self._pt, self._ssrc, self._addr
        send = self._sock.sendto if self._sock is not None else self._fallback
        ts = (unit.timestamp + self._ts_offset) & 0xFFFF_FFFF
        seq = self._seq
        last = len(unit.payloads) - 1
        sent = 0
        try:
            if self._lean is not None:  # encrypt in place in the session's buffer, send from it
                ctx, cdata, buffer, length, srtp_protect = self._lean
                for i, payload in enumerate(unit.payloads):
                    packet = pack(b0, pt | 0x80 if i == last else pt, seq, ts, ssrc) + ext + payload
                    n = len(packet)
                    if n > LEAN_MAX:  # no room for the trailer in the buffer: the stock call checks
                        data: bytes | memoryview = protect(packet)
                    else:
                        buffer[:n] = packet
                        length[0] = n
                        if srtp_protect(ctx, cdata, length):
                            raise OSError("SRTP protect failed")
                        data = buffer[:length[0]]
                    seq = (seq + 1) & 0xFFFF  # protected: its index is used up, sent or not
                    send(data, addr)
                    sent += 1
            else:
                for i, payload in enumerate(unit.payloads):
                    data = protect(pack(b0, pt | 0x80 if i == last else pt, seq, ts, ssrc) + ext + payload)
                    seq = (seq + 1) & 0xFFFF  # protected: its index is used up, sent or not
                    send(data, addr)
                    sent += 1
        except BlockingIOError:  # the socket is full: this subscriber is behind
            self._behind()
        except (OSError, pylibsrtp.Error):  # the socket is gone (ICE closed under us), or SRTP refused
            self._dead()
        self._seq = seq
        if sent:
            self._delivered += 1
            self._packets += sent
            self._octets += unit.size
            self._last_ts, self._last_ntp = ts, unit.ntp

    def _behind(self) -> None:
        self._dropped += 1
        if self.kind == "video":
            self._need_keyframe = True
            if self.feed is not None:
                self.feed.request_keyframe()

    def _dead(self) -> None:
        if not self._closed:
            self.close()
            if self._on_dead is not None:
                self._on_dead()


def _stream_srtp(dtls: Any, ssrc: int, shared: Any) -> Any:
    """The Python path's RTP session for one stream: as the native path's, its own context that
    refuses to protect an index twice (aiortc's ``shared`` one allows repeats); ``shared`` if
    the keys cannot be had again (then only the sequence discipline in ``push`` holds)."""
    try:
        return native.stream_session(*native.tx_key(dtls), ssrc)
    except (AttributeError, ConnectionError, TypeError, ValueError, pylibsrtp.Error) as exc:
        log.warning("fan-out: SSRC %s protects with aiortc's session (repeats allowed): %s", ssrc, exc)
        return shared


_said_path = False


def say_path_once() -> None:
    """Log, once per process (``serve`` and each fan-out worker), which send path is used."""
    global _said_path
    if not _said_path:
        _said_path = True
        why = native.unavailable()
        (log.info if why is None else log.warning)("%s", native.describe())


def send_reports(forwarders: list[Forwarder]) -> None:
    """One compound RTCP packet (an SR per forwarder, then SDES) for one site's forwarders."""
    sent = [f for f in forwarders if f.packets and not f._closed]
    if not sent:
        return
    now = time.time()
    packets: list[bytes] = []
    chunks = []
    for f in sent:
        sender = f.sender
        packets.append(bytes(RtcpSrPacket(ssrc=f._ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=f.last_ntp, rtp_timestamp=f.last_ts,
            packet_count=f.packets & 0xFFFF_FFFF, octet_count=f.octets & 0xFFFF_FFFF))))
        # What aiortc's own task would have recorded: RTT from LSR/DLSR, and getStats().
        record_sender_report(sender, f.last_ntp, f.last_ts, f.packets, f.octets, now)
        cname = sender_cname(sender)
        if cname:
            chunks.append(RtcpSourceInfo(ssrc=f._ssrc, items=[(1, cname.encode("utf8"))]))
    if chunks:
        packets.append(bytes(RtcpSdesPacket(chunks=chunks)))
    first = sent[0]
    data = first._protect_rtcp(b"".join(packets))
    try:
        if first._sock is not None:
            first._sock.sendto(data, first._addr)
        else:
            first._fallback(data, first._addr)
    except OSError:  # full or gone: the next report goes out a second later
        pass
