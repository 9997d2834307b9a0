"""Tiers and the fan-out of one encoded stream to its subscribers.

A tier is what a site's link can carry (``high`` 720p, ``low`` 360p, ``audio`` Opus only).
Each tier's video is encoded once and each encoded unit is handed, as the very same object,
to every subscriber of that tier; the Opus audio is encoded once for all tiers.

What is stock aiortc and what is ours, in this first version:

- ours: :class:`Feed` (one encoded stream, its subscriber set and counters) and
  :class:`SubscriberTrack`, a per-subscriber *bounded* queue with a drop policy: video
  that falls behind throws its backlog away and resumes at the next keyframe (asking the
  tier for one), audio keeps only the newest few packets. A slow subscriber therefore never
  slows the tier or its neighbours and never buffers without bound.
- stock: :class:`SubscriberTrack` is an aiortc ``MediaStreamTrack`` whose ``recv()``
  returns ``av.Packet``; each subscriber's ``RTCRtpSender`` then packetizes it itself
  (``H264Encoder.pack``/``OpusEncoder.pack``: split the Annex B bitstream, FU-A/STAP-A),
  builds RTP headers, encrypts (SRTP) and sends. That packetizing is repeated per
  subscriber: it is the cost the tight path removes.

The tight path keeps :class:`Feed` and its API (``open``/``publish``/``request_keyframe``)
and replaces :class:`SubscriberTrack` by a forwarder that receives payloads packetized
once per tier and only rewrites the RTP header (SSRC, sequence, timestamp offset) before
SRTP and send; ``MediaCore`` does not change.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ccctl.errors import CcctlError

log = logging.getLogger(__name__)

#: Frames a video subscriber may lag before its backlog is dropped (~0.5 s at 25 fps).
VIDEO_QUEUE_FRAMES = 12
#: Opus packets an audio subscriber may lag (100 ms); older ones are dropped first.
AUDIO_QUEUE_PACKETS = 5


class MediaError(CcctlError):
    """A subscriber could not be served: bad offer, no common codec, needs renegotiation."""

    exit_code = 9


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
    """One encoded stream (a tier's video or the shared audio) and its subscribers."""

    def __init__(self, name: str, kind: str, request_keyframe: Callable[[], None] | None = None,
                 on_demand: Callable[[], None] | None = None) -> None:
        self.name = name
        self.kind = kind
        self.subscribers: set[SubscriberTrack] = set()
        self.units_out = 0
        self.bytes_out = 0
        self._request_keyframe = request_keyframe
        self._on_demand = on_demand

    def open(self) -> SubscriberTrack:
        """A new subscriber track on this feed; video ones start at the next keyframe."""
        track = SubscriberTrack(self.kind, self)
        self.subscribers.add(track)
        if self.kind == "video":
            self.request_keyframe()
        if self._on_demand is not None:
            self._on_demand()
        return track

    def publish(self, unit: EncodedUnit) -> None:
        """Hand one encoded unit to every subscriber; never waits on any of them."""
        self.units_out += 1
        self.bytes_out += unit.size
        for track in list(self.subscribers):
            track.push(unit)

    def request_keyframe(self) -> None:
        """Ask the encoder behind this feed for a keyframe (it coalesces requests)."""
        if self._request_keyframe is not None:
            self._request_keyframe()

    def detach(self, track: SubscriberTrack) -> None:
        """Forget a subscriber; the encoder idles once the last one is gone."""
        if track in self.subscribers:
            self.subscribers.discard(track)
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
