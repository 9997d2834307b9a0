"""The broadcast's program: produced once, encoded at most once per tier, fanned out.

One real-time clock drives a video producer (``fps`` frames a second) and an audio
producer (20 ms Opus frames). Each video tier that has subscribers gets the newest raw
frame, scaled to its size and encoded by its own libx264 context in a worker thread; a
tier that cannot keep up skips frames rather than falling behind. The Opus audio is
encoded once and shared by every tier. Encoded units go to :class:`~ccctl.media.tiers.Feed`
objects, which hand the same unit to every subscriber (see that module for what is stock
aiortc and what is ours).

Sources: ``testsrc`` (colour bars, a moving bar and a binary frame counter that
:func:`read_counter` reads back, plus a 1 kHz tone), ``file:PATH`` (decoded with PyAV
and re-encoded, looping at the end) and ``whip`` (a :class:`Placeholder`, black with
silence, until a WHIP publisher's :class:`RemoteSource` takes over).

:meth:`Program.set_source` swaps the input live (a WHIP publisher, the floor holder's
uplink, then back): the program clock keeps stamping every frame, so subscribers see one
continuous RTP stream with a forced keyframe at the cut, and no renegotiation.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.video.frame import PictureType

from ccctl.media.tiers import DEFAULT_TIERS, EncodedUnit, Feed, MediaError, SubscriberTrack, TierSpec

log = logging.getLogger(__name__)
F = TypeVar("F", av.VideoFrame, av.AudioFrame)

VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000
AUDIO_SAMPLES = 960  # 20 ms at 48 kHz: one Opus frame
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
KEYFRAME_MIN_INTERVAL = 1.0  # seconds between forced keyframes of one tier
COUNTER_BITS = 16
REMOTE_AUDIO_BACKLOG = 5  # 20 ms frames of a remote source's sound kept waiting, at most
CATCH_UP = 0.25  # seconds of missed ticks a late clock still produces; later ones are skipped
MAX_BUSY = 0.02  # seconds a late clock may go on catching up before it lets the loop run
ENCODE_BACKLOG = 4  # raw frames a busy tier encoder may have waiting; past that it skips to the newest


class KeyframePolicy:
    """Coalesces keyframe requests: at most one forced keyframe per interval.

    Thousands of sites joining, or PLIs from lossy links, must not turn the stream into
    all-keyframes; a request inside the interval is remembered and served when it ends,
    or dropped if a natural (GOP) keyframe goes out first.
    """

    def __init__(self, min_interval: float = KEYFRAME_MIN_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval = min_interval
        self.forced = 0
        self._clock = clock
        self._pending = False
        self._last_forced = float("-inf")

    def request(self) -> None:
        """Someone needs a keyframe (a new subscriber, a PLI, an overflowing queue)."""
        self._pending = True

    def take(self) -> bool:
        """Whether the frame about to be encoded must be a keyframe."""
        now = self._clock()
        if self._pending and now - self._last_forced >= self.min_interval:
            self._pending = False
            self._last_forced = now
            self.forced += 1
            return True
        return False

    def satisfied(self) -> None:
        """A keyframe went out: pending requests are served."""
        self._pending = False


def _counter_cells(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Where the counter's bits are drawn (x0, x1, y0, y1), as fractions of the picture so
    that every tier, scaled from the same program, reads back the same number."""
    y0, y1 = round(height / 12), round(height * 2 / 12)
    return [(round(width * (1 + i) / 20), round(width * (2 + i) / 20), y0, y1) for i in range(COUNTER_BITS)]


class Source(Protocol):
    """Where the program's raw pictures and sound come from."""

    blocking: bool  # True: call from a worker thread (file decoding)

    def video(self, index: int) -> av.VideoFrame:
        """The picture for program frame ``index`` at the program size."""
        ...

    def audio(self, index: int) -> av.AudioFrame:
        """20 ms of s16 stereo 48 kHz sound for audio frame ``index``."""
        ...

    def close(self) -> None:
        """Release files and decoders."""
        ...


class TestPattern:
    """Colour bars with a moving bar and a binary frame counter, and a 1 kHz tone."""

    __test__ = False  # not a pytest class
    blocking = False

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        bars = [(235, 128, 128), (210, 16, 146), (170, 166, 16), (145, 54, 34),
                (106, 202, 222), (81, 90, 240), (41, 240, 110), (16, 128, 128)]
        y = np.empty((height, width), np.uint8)
        u = np.empty((height // 2, width // 2), np.uint8)
        v = np.empty_like(u)
        for i, (by, bu, bv) in enumerate(bars):
            x0, x1 = i * width // 8, (i + 1) * width // 8
            y[:, x0:x1], u[:, x0 // 2:x1 // 2], v[:, x0 // 2:x1 // 2] = by, bu, bv
        ramp = np.linspace(16, 235, width).astype(np.uint8)
        y[height * 3 // 4:, :] = ramp
        u[height * 3 // 8:, :] = v[height * 3 // 8:, :] = 128
        self._y, self._u, self._v = y, u, v
        tone = (np.sin(2 * np.pi * 1000 * np.arange(AUDIO_SAMPLES) / AUDIO_RATE) * 4000).astype(np.int16)
        self._tone = np.repeat(tone, 2).reshape(1, -1)  # packed stereo

    def video(self, index: int) -> av.VideoFrame:
        """The pattern for frame ``index``: the bar moves and the counter shows ``index``."""
        w, h = self.width, self.height
        y, u, v = self._y.copy(), self._u.copy(), self._v.copy()
        bar, step = max(4, w // 80), max(2, w // 160)
        x = (index * step) % (w - bar)
        y[: h * 3 // 4, x:x + bar] = 235
        # A black band, neutral chroma, and one white cell per set bit of the counter.
        band_y, band_x = slice(h // 24 & ~1, h * 5 // 24 & ~1), slice(0, w * 18 // 20 & ~1)
        y[band_y, band_x] = 16
        u[band_y.start // 2:band_y.stop // 2, : band_x.stop // 2] = 128
        v[band_y.start // 2:band_y.stop // 2, : band_x.stop // 2] = 128
        value = index % (1 << COUNTER_BITS)
        for bit, (x0, x1, y0, y1) in enumerate(_counter_cells(w, h)):
            if value >> (COUNTER_BITS - 1 - bit) & 1:
                y[y0:y1, x0:x1] = 235
        arr = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(h * 3 // 2, w)
        return av.VideoFrame.from_ndarray(arr, format="yuv420p")

    def audio(self, index: int) -> av.AudioFrame:
        """20 ms of the tone (1 kHz fits 960 samples exactly, so every frame is the same)."""
        frame = av.AudioFrame.from_ndarray(self._tone, format="s16", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        return frame

    def close(self) -> None:
        """Nothing to release."""


def read_counter(frame: av.VideoFrame) -> int:
    """The frame counter drawn by :class:`TestPattern`, read back from a (decoded) frame."""
    gray = frame.to_ndarray(format="gray")
    h, w = gray.shape
    value = 0
    for x0, x1, y0, y1 in _counter_cells(w, h):
        value = value << 1 | int(gray[(y0 + y1) // 2, (x0 + x1) // 2] > 128)
    return value


class FileSource:
    """A media file decoded with PyAV, looped at the end, paced by the program clock."""

    blocking = True

    def __init__(self, path: str, width: int, height: int, fps: int) -> None:
        if not Path(path).is_file():
            raise MediaError(f"no such media file: {path}")
        try:
            self._vc = av.open(path)
            self._ac = av.open(path)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot open {path}: {exc}") from None
        self.width, self.height, self.fps = width, height, fps
        self._vs = next(iter(self._vc.streams.video), None)
        self._as = next(iter(self._ac.streams.audio), None)
        self._vframes = self._vc.decode(self._vs) if self._vs is not None else iter(())
        self._aframes = self._ac.decode(self._as) if self._as is not None else iter(())
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=AUDIO_SAMPLES)
        self._pending_audio: deque[av.AudioFrame] = deque()
        self._offset = 0.0  # seconds of the file already played in earlier loops
        self._last_time = 0.0
        self._current: av.VideoFrame | None = None
        self._next: tuple[float, av.VideoFrame] | None = None  # (program seconds, picture)

    def _next_video(self) -> tuple[float, av.VideoFrame] | None:
        """The next decoded picture and when it is due, looping at the end; None if none."""
        for _ in range(2):
            frame = next(self._vframes, None)
            if frame is not None:
                self._last_time = float(frame.time or 0.0)
                return self._offset + self._last_time, frame
            if self._vs is None:
                return None
            self._offset += self._last_time + 1 / self.fps
            self._vc.seek(0)
            self._vframes = self._vc.decode(self._vs)
        return None

    def video(self, index: int) -> av.VideoFrame:
        """The file's picture due at program time ``index / fps``, scaled to the program."""
        t = index / self.fps
        if self._next is None:
            self._next = self._next_video()
        for _ in range(10 * self.fps):  # bounded: a broken file must not hang the worker
            if self._next is None or self._next[0] > t:
                break
            self._current = self._next[1]
            self._next = self._next_video()
        if self._current is None:
            return av.VideoFrame.from_ndarray(np.full((self.height * 3 // 2, self.width), 16, np.uint8), format="yuv420p")
        return self._current.reformat(self.width, self.height, format="yuv420p")

    def audio(self, index: int) -> av.AudioFrame:
        """The next 20 ms of the file's sound, or silence when it has none."""
        for _ in range(64):
            if self._pending_audio:
                return self._pending_audio.popleft()
            frame = next(self._aframes, None)
            if frame is None:
                if self._as is None:
                    break
                self._ac.seek(0)
                self._aframes = self._ac.decode(self._as)
                continue
            frame.pts = None
            self._pending_audio.extend(self._resampler.resample(frame))
        return silence()

    def close(self) -> None:
        """Close both demuxers."""
        self._vc.close()
        self._ac.close()


def silence() -> av.AudioFrame:
    """20 ms of s16 stereo 48 kHz silence."""
    frame = av.AudioFrame.from_ndarray(np.zeros((1, AUDIO_SAMPLES * 2), np.int16), format="s16", layout="stereo")
    frame.sample_rate = AUDIO_RATE
    return frame


class Placeholder:
    """Black with silence: what a ``whip`` program shows while nobody publishes."""

    blocking = False

    def __init__(self, width: int, height: int) -> None:
        self._black = np.full((height * 3 // 2, width), 128, np.uint8)
        self._black[:height] = 16  # video black; neutral chroma

    def video(self, index: int) -> av.VideoFrame:
        """A black picture (a new frame each time: the program stamps it)."""
        return av.VideoFrame.from_ndarray(self._black, format="yuv420p")

    def audio(self, index: int) -> av.AudioFrame:
        """20 ms of silence."""
        return silence()

    def close(self) -> None:
        """Nothing to release."""


class RemoteSource:
    """The decoded tracks of a remote peer (a WHIP publisher), paced by the program clock.

    aiortc decodes each received track once, in its receiver's thread, into a queue without
    bound; one reader task per track drains it, keeping only the newest picture and a short
    queue of 20 ms sound resampled to 48 kHz s16 stereo (the program clock takes one per tick;
    beyond :data:`REMOTE_AUDIO_BACKLOG` the oldest is dropped, so delay cannot build up).
    Each tick scales the newest picture to the program size in a worker thread; the program
    then encodes it once per tier, as for any source. The publisher's own timestamps are not
    used: the program clock stamps every frame.
    """

    blocking = True  # scaling a camera picture to 720p is worth a worker thread

    def __init__(self, video: MediaStreamTrack | None, audio: MediaStreamTrack | None, width: int, height: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.width, self.height = width, height
        self.ready = asyncio.Event()  # first picture decoded (first sound, for a publisher without video)
        self.ended = asyncio.Event()  # every track ended
        self.frames_in = 0
        self.audio_in = 0
        self.audio_dropped = 0
        self._clock = clock
        self.last_input = clock()
        self._tracks = [t for t in (video, audio) if t is not None]
        self._has_video = video is not None
        self._latest: av.VideoFrame | None = None
        self._audio: deque[av.AudioFrame] = deque()
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=AUDIO_SAMPLES)
        self._black = Placeholder(width, height)
        self._tasks: list[asyncio.Task[None]] = []
        self._running = 0

    def start(self) -> None:
        """Start draining the tracks (call from the event loop)."""
        loop = asyncio.get_running_loop()
        self._running = len(self._tracks)
        self._tasks = [loop.create_task(self._read(track), name=f"remote-{track.kind}") for track in self._tracks]
        if not self._tasks:
            self.ended.set()

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                self.last_input = self._clock()
                if isinstance(frame, av.VideoFrame):
                    self._latest = frame
                    self.frames_in += 1
                    self.ready.set()
                elif isinstance(frame, av.AudioFrame):
                    self._take_audio(frame)
                    if not self._has_video:
                        self.ready.set()
        finally:
            self._running -= 1
            if self._running <= 0:
                self.ended.set()

    def _take_audio(self, frame: av.AudioFrame) -> None:
        frame.pts = None
        for out in self._resampler.resample(frame):
            self._audio.append(out)
            self.audio_in += 1
        while len(self._audio) > REMOTE_AUDIO_BACKLOG:
            self._audio.popleft()
            self.audio_dropped += 1

    def video(self, index: int) -> av.VideoFrame:
        """The newest picture scaled to the program size (black until the first one)."""
        frame = self._latest
        if frame is None:
            return self._black.video(index)
        out = frame.reformat(self.width, self.height, format="yuv420p")
        if out is frame:  # already the program size: copy, since the program stamps what it gets
            out = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
        return out

    def audio(self, index: int) -> av.AudioFrame:
        """The next 20 ms of the publisher's sound, or silence when none has arrived."""
        try:
            return self._audio.popleft()
        except IndexError:
            return silence()

    def close(self) -> None:
        """Stop draining (the tracks themselves end with their peer connection)."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []


class VideoEncoder:
    """libx264 for one tier, tuned for live browser playback; one thread at a time."""

    def __init__(self, spec: TierSpec, fps: int) -> None:
        self.spec = spec
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height = spec.width, spec.height
        codec.pix_fmt = "yuv420p"
        codec.framerate = fractions.Fraction(fps, 1)
        codec.time_base = VIDEO_TIME_BASE
        codec.bit_rate = spec.video_bitrate
        codec.gop_size = 2 * fps
        rate = str(spec.video_bitrate)
        # Baseline for every browser's decoder; no lookahead or B-frames (zerolatency);
        # a one-second VBV so thin links see a capped rate, not just an average.
        codec.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "level": "31",
                         "forced-idr": "1", "maxrate": rate, "bufsize": rate}
        self.codec = codec

    def encode(self, raw: av.VideoFrame, pts: int, force_keyframe: bool) -> list[av.Packet]:
        """Scale the shared raw frame to this tier and encode it as program time ``pts`` (GIL
        released inside). The raw frame is never written: a source may hand the same picture
        for several ticks, and other tiers read it at the same time."""
        frame = raw.reformat(self.spec.width, self.spec.height, format="yuv420p")
        if frame is raw:  # same size: copy, since encoding sets pict_type and pts
            frame = av.VideoFrame.from_ndarray(raw.to_ndarray(), format="yuv420p")
        frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
        frame.pict_type = PictureType.I if force_keyframe else PictureType.NONE
        return list(self.codec.encode(frame))


class _Tier:
    """A video tier's encoder, its feed and the raw frames waiting for it (a few at most)."""

    def __init__(self, spec: TierSpec, fps: int, on_demand: Callable[[], None]) -> None:
        self.spec = spec
        self.fps = fps
        self.keyframes = KeyframePolicy()
        self.feed = Feed(spec.name, "video", self.keyframes.request, on_demand)
        self.encoder: VideoEncoder | None = None
        self.waiting: collections.deque[tuple[av.VideoFrame, int]] = collections.deque()  # (raw, pts)
        self.fresh = asyncio.Event()
        self.frames_encoded = 0
        self.frames_skipped = 0

    def offer(self, raw: av.VideoFrame, pts: int) -> None:
        """Queue ``raw`` for encoding at ``pts``. A burst (a late clock catching up) waits its
        turn; a queue that overflows (an encoder slower than the clock) is dropped but for the
        newest frame, so that a slow encoder does not add a fixed delay."""
        if len(self.waiting) >= ENCODE_BACKLOG:
            self.frames_skipped += len(self.waiting)
            self.waiting.clear()
        self.waiting.append((raw, pts))
        self.fresh.set()


class Program:
    """The program of one broadcast: one source, one encode per tier, shared audio."""

    def __init__(self, source: str = "testsrc", tiers: Mapping[str, TierSpec] | None = None, fps: int = 25,
                 opus_bitrate: int = 32_000) -> None:
        self.source_name = source
        self.tiers: dict[str, TierSpec] = dict(tiers or DEFAULT_TIERS)
        for spec in self.tiers.values():
            if spec.has_video and (spec.width % 2 or spec.height % 2):
                raise MediaError(f"tier {spec.name}: width and height must be even")
        if source not in ("testsrc", "whip") and not source.startswith("file:"):
            raise MediaError(f"unknown source {source!r}: use testsrc, file:PATH or whip")
        self.fps = fps
        self.opus_bitrate = opus_bitrate
        video = [s for s in self.tiers.values() if s.has_video]
        largest = max(video, key=lambda s: s.width * s.height, default=TierSpec("none", 320, 180))
        self.width, self.height = largest.width, largest.height
        self._video = {s.name: _Tier(s, fps, self._update_demand) for s in video}
        self.audio_feed = Feed("audio", "audio", None, self._update_demand)
        self._video_demand = asyncio.Event()
        self._audio_demand = asyncio.Event()
        self._main: Source | None = None  # what the broadcast was started with; owned here
        self._source: Source | None = None  # what the program shows now: the main one or a remote one
        self._opus: av.AudioCodecContext | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._t0 = 0.0
        self._resumed = 0.0  # when a clock last came back from letting the loop run
        self.video_ticks = 0
        self.audio_ticks = 0
        self.source_switches = 0

    async def start(self) -> None:
        """Open the source and start the clocks; nothing is encoded until someone subscribes."""
        if self._tasks:
            return
        if self.source_name == "testsrc":
            self._main = TestPattern(self.width, self.height)
        elif self.source_name == "whip":
            self._main = Placeholder(self.width, self.height)
        else:
            self._main = FileSource(self.source_name[len("file:"):], self.width, self.height, self.fps)
        self._source = self._main
        opus = av.CodecContext.create("libopus", "w")
        opus.bit_rate, opus.format, opus.layout = self.opus_bitrate, "s16", "stereo"
        opus.sample_rate, opus.time_base = AUDIO_RATE, AUDIO_TIME_BASE
        opus.options = {"application": "audio"}
        self._opus = opus
        self._executor = ThreadPoolExecutor(max_workers=len(self._video) + 1, thread_name_prefix="ccctl-media")
        self._t0 = asyncio.get_running_loop().time()
        self._tasks = [asyncio.create_task(self._run_video(), name="program-video"),
                       asyncio.create_task(self._run_audio(), name="program-audio")]
        self._tasks += [asyncio.create_task(self._run_tier(t), name=f"program-tier-{t.spec.name}")
                        for t in self._video.values()]

    async def close(self) -> None:
        """Stop the clocks and encoders, end every subscriber track, release the source."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for feed in [t.feed for t in self._video.values()] + [self.audio_feed]:
            for track in list(feed.subscribers):
                track.stop()
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown)  # an encode in flight finishes first
        self._source = None
        if self._main is not None:
            self._main.close()
            self._main = None

    def set_source(self, source: Source | None) -> None:
        """Show ``source`` from the next tick on; None goes back to the main source.

        The caller keeps ownership of ``source`` (and closes it after switching away). The
        frames keep the program clock, so the RTP timestamps run on across the cut; every
        tier is asked for a keyframe (coalesced by its :class:`KeyframePolicy`).
        """
        if self._main is None:
            raise MediaError("the program is not running")
        new = source if source is not None else self._main
        if new is self._source:
            return
        self._source = new
        self.source_switches += 1
        for tier in self._video.values():
            tier.keyframes.request()

    @property
    def source(self) -> Source | None:
        """What the program shows now (None before start and after close)."""
        return self._source

    def open_track(self, tier: str, kind: str) -> SubscriberTrack:
        """A subscriber track on ``tier``'s video, or on the shared audio (``kind="audio"``)."""
        if kind == "audio":
            return self.audio_feed.open()
        if tier not in self._video:
            raise MediaError(f"tier {tier!r} has no video")
        return self._video[tier].feed.open()

    def feed(self, tier: str) -> Feed:
        """The video feed of ``tier``."""
        return self._video[tier].feed

    def request_keyframe(self, tier: str) -> None:
        """Ask ``tier`` for a keyframe; coalesced to at most one forced per second."""
        if tier in self._video:
            self._video[tier].keyframes.request()

    def stats(self) -> dict[str, dict[str, int]]:
        """Per tier and for the shared audio: subscribers, encodes and output counters."""
        out = {name: {"subscribers": len(t.feed.subscribers), "frames_encoded": t.frames_encoded,
                      "frames_skipped": t.frames_skipped, "keyframes_forced": t.keyframes.forced,
                      "units_out": t.feed.units_out, "bytes_out": t.feed.bytes_out}
               for name, t in self._video.items()}
        out["_audio"] = {"subscribers": len(self.audio_feed.subscribers), "frames_encoded": self.audio_ticks,
                         "units_out": self.audio_feed.units_out, "bytes_out": self.audio_feed.bytes_out}
        out["_program"] = {"video_ticks": self.video_ticks, "audio_ticks": self.audio_ticks,
                           "source_switches": self.source_switches}
        return out

    def _update_demand(self) -> None:
        """Run a producer only while some feed of its kind has subscribers."""
        for event, wanted in ((self._video_demand, any(t.feed.subscribers for t in self._video.values())),
                              (self._audio_demand, bool(self.audio_feed.subscribers))):
            if wanted:
                event.set()
            else:
                event.clear()

    async def _tick(self, last: int, rate: float) -> int:
        """Wait for the next tick of a ``rate``-per-second clock.

        Late by up to CATCH_UP (a burst of fan-out, a keyframe to many sites), the missed ticks
        are still produced, one after another: skipping them would cut the program's rate while
        the loop has time to spare on average. Later than that, the missed ticks are skipped.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = int((now - self._t0) * rate)
        if due <= last:
            await asyncio.sleep(self._t0 + (last + 1) / rate - now)
            self._resumed = loop.time()
            return last + 1
        if due - last > CATCH_UP * rate:
            await asyncio.sleep(0)
            self._resumed = loop.time()
            return due
        # Late: each clock yields at least every MAX_BUSY, or a fan-out slower than the tick
        # would never let HTTP, ICE or DTLS run again (a set Event does not yield either); but
        # not at every tick, since one loop turn with thousands of sites can outlast a tick.
        if now - self._resumed >= MAX_BUSY:
            await asyncio.sleep(0)
            self._resumed = loop.time()
        return last + 1

    async def _produce(self, source: Source, make: Callable[[int], F], index: int) -> F:
        """Call a source; file decoding and scaling run in a worker thread so the loop stays free."""
        if source.blocking:
            return await asyncio.get_running_loop().run_in_executor(self._executor, make, index)
        return make(index)

    async def _run_video(self) -> None:
        tick = -1
        while True:
            await self._video_demand.wait()
            tick = await self._tick(tick, self.fps)
            source = self._source
            assert source is not None
            raw = await self._produce(source, source.video, tick)
            self.video_ticks += 1
            for tier in self._video.values():
                if tier.feed.subscribers:
                    tier.offer(raw, tick * VIDEO_CLOCK // self.fps)

    async def _run_tier(self, tier: _Tier) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await tier.fresh.wait()
            if not tier.waiting:
                tier.fresh.clear()
                continue
            raw, pts = tier.waiting.popleft()
            if not tier.feed.subscribers:
                tier.waiting.clear()
                continue
            if tier.encoder is None:
                tier.encoder = VideoEncoder(tier.spec, self.fps)
            force = tier.keyframes.take()
            try:
                packets = await loop.run_in_executor(self._executor, tier.encoder.encode, raw, pts, force)
            except av.FFmpegError:
                log.exception("tier %s: encode failed; frame skipped", tier.spec.name)
                continue
            tier.frames_encoded += 1
            for packet in packets:
                unit = EncodedUnit(packet, bool(packet.is_keyframe), packet.size)
                if unit.keyframe:
                    tier.keyframes.satisfied()
                tier.feed.publish(unit)

    async def _run_audio(self) -> None:
        tick = -1
        while True:
            await self._audio_demand.wait()
            tick = await self._tick(tick, AUDIO_RATE / AUDIO_SAMPLES)
            source = self._source
            assert source is not None and self._opus is not None
            frame = await self._produce(source, source.audio, tick)
            frame.pts, frame.time_base = tick * AUDIO_SAMPLES, AUDIO_TIME_BASE
            self.audio_ticks += 1
            try:
                packets = self._opus.encode(frame)
            except av.FFmpegError:
                log.exception("opus encode failed; audio frame %d dropped", tick)
                continue
            for packet in packets:
                # Opus gives one packet per 20 ms frame; stamp it with the program clock.
                packet.pts, packet.time_base = tick * AUDIO_SAMPLES, AUDIO_TIME_BASE
                self.audio_feed.publish(EncodedUnit(packet, True, packet.size))
