"""Tiers and the fan-out of one encoded stream to its subscribers.

A tier is what a site's link can carry (``high`` 720p, ``low`` 360p, ``audio`` Opus only).
Each tier's video is encoded once and each encoded unit is handed, as the very same object,
to every subscriber of that tier; the Opus audio is encoded once for all tiers.

Two ways out of a feed:

- the tight path (:mod:`ccctl.media.fastpath`, what ``MediaCore`` uses): the feed packetises
  each unit once into RTP payloads and hands them to every
  :class:`~ccctl.media.fastpath.Forwarder`, which only rewrites the header, encrypts and
  sends. Nothing is queued per subscriber.
- the stock aiortc path (kept for comparison in ``benchmarks/fanout.py`` and as a fallback):
  :class:`SubscriberTrack` is an aiortc ``MediaStreamTrack`` whose ``recv()`` returns
  ``av.Packet`` from a per-subscriber *bounded* queue (video that falls behind throws its
  backlog away and resumes at the next keyframe; audio keeps the newest few packets); each
  subscriber's ``RTCRtpSender`` then packetises, serialises, encrypts and sends by itself.
  :meth:`SubscriberTrack.idle` also parks a sender whose packets the tight path sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ccctl.errors import MediaError as MediaError  # its home is ccctl.errors; the media modules import it here
from ccctl.media.fastpath import packetize

if TYPE_CHECKING:
    from ccctl.media.fastpath import RtpSink, RtpUnit

log = logging.getLogger(__name__)

#: Frames a video subscriber may lag before its backlog is dropped (~0.5 s at 25 fps).
VIDEO_QUEUE_FRAMES = 12
#: Opus packets an audio subscriber may lag (100 ms); older ones are dropped first.
AUDIO_QUEUE_PACKETS = 5


@dataclass(frozen=True)
class TierSpec:
    """One tier: its video size and bitrate, or no video at all (``width == 0``)."""

    name: str
    width: int = 0
    height: int = 0
    video_bitrate: int = 0

    @property
    def has_video(self) -> bool:
        """True when the tier carries video besides the shared audio."""
        return self.width > 0 and self.height > 0


DEFAULT_TIERS: dict[str, TierSpec] = {
    "high": TierSpec("high", 1280, 720, 1_200_000),
    "low": TierSpec("low", 640, 360, 300_000),
    "audio": TierSpec("audio"),
}


@dataclass(frozen=True, slots=True)
class EncodedUnit:
    """One encoded frame as the encoder produced it, shared read-only by all subscribers.

    ``packet`` carries ``pts``/``time_base`` on the program clock (90 kHz video, 48 kHz
    audio), which is what ``RTCRtpSender`` turns into RTP timestamps; one clock for every
    tier keeps timestamps continuous when a subscriber switches tier.
    """

    packet: av.Packet
    keyframe: bool
    size: int


class Feed:
    """One encoded stream (a tier's video or the shared audio) and its subscribers.

    ``subscribers`` holds both kinds (stock tracks and tight-path forwarders, including a
    forwarder waiting to switch here at the next keyframe): any of them keeps the encoder
    running. ``forwarders`` are the tight-path ones sending this feed, ``pending`` those
    that switch to it at its next keyframe.
    """

    def __init__(self, name: str, kind: str, request_keyframe: Callable[[], None] | None = None,
                 on_demand: Callable[[], None] | None = None) -> None:
        self.name = name
        self.kind = kind
        self.subscribers: set[SubscriberTrack | RtpSink] = set()
        self.forwarders: set[RtpSink] = set()
        self.pending: set[RtpSink] = set()
        self.units_out = 0
        self.bytes_out = 0
        self.rtp_packets = 0  # packets made for forwarders (each sent once per forwarder)
        self._request_keyframe = request_keyframe
        self._on_demand = on_demand

    def open(self) -> SubscriberTrack:
        """A new stock subscriber track on this feed; video ones start at the next keyframe."""
        track = SubscriberTrack(self.kind, self)
        self._add(track)
        return track

    def add_forwarder(self, forwarder: RtpSink, pending: bool = False) -> None:
        """Add a tight-path forwarder (``pending``: it switches here at the next keyframe);
        video asks for a keyframe so it can start at once."""
        (self.pending if pending else self.forwarders).add(forwarder)
        self._add(forwarder)

    def promote(self, forwarder: RtpSink) -> None:
        """A pending forwarder switched here: it now gets every unit."""
        self.pending.discard(forwarder)
        self.forwarders.add(forwarder)

    def remove_forwarder(self, forwarder: RtpSink) -> None:
        """Forget a forwarder; the encoder idles once the last subscriber is gone."""
        self.forwarders.discard(forwarder)
        self.pending.discard(forwarder)
        self.detach(forwarder)

    def _add(self, subscriber: SubscriberTrack | RtpSink) -> None:
        self.subscribers.add(subscriber)
        if self.kind == "video":
            self.request_keyframe()
        if self._on_demand is not None:
            self._on_demand()

    def publish(self, unit: EncodedUnit) -> None:
        """Hand one encoded unit to every subscriber; never waits on any of them.

        Forwarders get it packetised once for all of them; stock tracks get the unit itself.
        """
        self.units_out += 1
        self.bytes_out += unit.size
        if self.forwarders or self.pending:
            self.publish_rtp(packetize(self.kind, unit))
        if len(self.subscribers) > len(self.forwarders) + len(self.pending):
            for sub in list(self.subscribers):
                if isinstance(sub, SubscriberTrack):
                    sub.push(unit)

    def publish_rtp(self, rtp: RtpUnit) -> None:
        """Hand a unit packetised once to every forwarder (a fan-out worker's whole input)."""
        self.rtp_packets += len(rtp.payloads)
        if self.pending and rtp.keyframe:
            for forwarder in list(self.pending):
                forwarder.push_pending(self, rtp)
        for forwarder in list(self.forwarders):
            forwarder.push(rtp)

    def request_keyframe(self) -> None:
        """Ask the encoder behind this feed for a keyframe (it coalesces requests)."""
        if self._request_keyframe is not None:
            self._request_keyframe()

    def detach(self, subscriber: SubscriberTrack | RtpSink) -> None:
        """Forget a subscriber; the encoder idles once the last one is gone."""
        if subscriber in self.subscribers:
            self.subscribers.discard(subscriber)
            if self._on_demand is not None:
                self._on_demand()


class SubscriberTrack(MediaStreamTrack):
    """Pass-through track for one subscriber: a bounded queue of shared encoded units.

    ``recv()`` returns ``av.Packet`` so that stock ``RTCRtpSender`` packs instead of
    encoding. :meth:`retire` hands a sender over to another track without ending the
    sender (a plain ``stop()`` while the sender waits in ``recv()`` would make aiortc stop
    the *replacement* track too).
    """

    def __init__(self, kind: str, feed: Feed | None) -> None:
        super().__init__()
        self.kind = kind
        self.feed = feed
        self.delivered = 0
        self.dropped = 0
        self._audio = kind == "audio"
        limit = AUDIO_QUEUE_PACKETS if self._audio else VIDEO_QUEUE_FRAMES
        self._limit = limit
        self._queue: deque[EncodedUnit] = deque(maxlen=limit if self._audio else None)
        self._need_keyframe = not self._audio
        self._wake = asyncio.Event()
        self._successor: MediaStreamTrack | None = None

    @classmethod
    def idle(cls, kind: str) -> SubscriberTrack:
        """A track on no feed: keeps a sender parked (no polling) until it is replaced."""
        return cls(kind, None)

    @property
    def backlog(self) -> int:
        """Units waiting for the sender."""
        return len(self._queue)

    def push(self, unit: EncodedUnit) -> None:
        """Queue a unit, applying the drop policy instead of growing without bound."""
        if self._audio:
            if len(self._queue) == self._limit:
                self.dropped += 1  # the deque drops the oldest
            self._queue.append(unit)
        else:
            if self._need_keyframe:
                if not unit.keyframe:
                    self.dropped += 1
                    return
                self._need_keyframe = False
            if len(self._queue) >= self._limit:
                # Behind by a whole queue: the backlog is stale; restart at a keyframe.
                self.dropped += len(self._queue)
                self._queue.clear()
                if not unit.keyframe:
                    self.dropped += 1
                    self._need_keyframe = True
                    if self.feed is not None:
                        self.feed.request_keyframe()
                    return
            self._queue.append(unit)
        self._wake.set()

    async def recv(self) -> av.Packet:  # type: ignore[override]
        """The next encoded unit for this subscriber's sender, in order."""
        while True:
            if self._successor is not None:
                return await self._successor.recv()  # type: ignore[return-value]
            if self.readyState != "live":
                raise MediaStreamError
            if self._queue:
                self.delivered += 1
                return self._queue.popleft().packet
            self._wake.clear()
            await self._wake.wait()

    def retire(self, successor: MediaStreamTrack) -> None:
        """Leave the feed and pass a pending ``recv()`` on to ``successor``."""
        self._successor = successor
        self._detach()
        super().stop()

    def stop(self) -> None:
        """End the track: leave the feed and wake a pending ``recv()`` so it raises."""
        self._detach()
        super().stop()

    def _detach(self) -> None:
        self._queue.clear()
        if self.feed is not None:
            self.feed.detach(self)
        self._wake.set()
