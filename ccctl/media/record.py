"""``broadcast start --record FILE``: the program, as sent, into a media file.

The recorder is one more subscriber of the best video tier and of the shared audio: it
takes the very packets the sites get (no encode of its own) and muxes them with PyAV.
MPEG-TS (``.ts``, the default for any other suffix) carries H.264 and Opus as they come and
survives a server that is killed mid-broadcast (every packet written is playable);
Matroska (``.mkv``) is also accepted. Timestamps are the program clock from the first
packet recorded, so the file starts at zero.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from pathlib import Path

import av
from aiortc.mediastreams import MediaStreamError

from ccctl.media.tiers import MediaError, SubscriberTrack

log = logging.getLogger(__name__)

CLOCKS = {"video": 90_000, "audio": 48_000}


class Recorder:
    """Writes a video track (may be None: audio-only programs) and the audio track to a file."""

    def __init__(self, path: str | Path, video: SubscriberTrack | None, audio: SubscriberTrack,
                 size: tuple[int, int], fps: int) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise MediaError(f"cannot record to {self.path}: no such directory {self.path.parent}")
        fmt = "matroska" if self.path.suffix.lower() == ".mkv" else "mpegts"
        try:
            self._out = av.open(str(self.path), "w", format=fmt)
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"cannot record to {self.path}: {exc}") from None
        self._streams: dict[str, av.stream.Stream] = {}
        self._tracks = {"audio": audio} | ({"video": video} if video is not None else {})
        if video is not None:
            vs = self._out.add_stream("h264", rate=fps)
            vs.width, vs.height = size
            vs.time_base = fractions.Fraction(1, CLOCKS["video"])
            self._streams["video"] = vs
        a = self._out.add_stream("opus", rate=48_000)
        a.time_base = fractions.Fraction(1, CLOCKS["audio"])
        self._streams["audio"] = a
        self._origin: dict[str, int] = {}
        self.packets = 0
        self.bytes = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start writing (one task per track)."""
        self._tasks = [asyncio.get_running_loop().create_task(self._run(kind), name=f"record-{kind}")
                       for kind in self._tracks]

    async def stop(self) -> None:
        """Stop the tracks, finish and close the file."""
        for track in self._tracks.values():
            track.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            self._out.close()
        except av.FFmpegError as exc:
            log.warning("closing the recording %s: %s", self.path, exc)

    async def _run(self, kind: str) -> None:
        track, stream = self._tracks[kind], self._streams[kind]
        while True:
            try:
                shared = await track.recv()
            except MediaStreamError:
                return
            # The packet is shared with every subscriber: mux a copy with our own timestamps.
            packet = av.Packet(bytes(shared))
            origin = self._origin.setdefault(kind, shared.pts or 0)
            packet.pts = packet.dts = (shared.pts or 0) - origin
            packet.is_keyframe = shared.is_keyframe
            packet.time_base = fractions.Fraction(1, CLOCKS[kind])
            packet.stream = stream
            try:
                self._out.mux(packet)
            except av.FFmpegError as exc:
                log.warning("recording %s: %s packet dropped: %s", self.path, kind, exc)
                continue
            self.packets += 1
            self.bytes += packet.size
