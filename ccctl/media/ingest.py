"""WHIP ingest (RFC 9725): publishers' peer connections, and the floor.

A publisher is one WHIP session: an ``RTCPeerConnection`` with recvonly transceivers (H.264
or VP8 video, Opus audio) whose decoded tracks feed a
:class:`~ccctl.media.program.RemoteSource`. :class:`Ingest` owns those connections (it opens
them in :meth:`Ingest.publish` and closes them on DELETE, replacement, ICE/DTLS failure,
silence, loss of the floor and :meth:`Ingest.close`) and chooses what the program shows:

1. the floor holder's uplink, from its first decoded picture on;
2. else the main publisher (a broadcast started with ``--source whip``), likewise;
3. else the program's own main source (test pattern, file, or black with silence).

So a floor given to a site whose camera is not up yet keeps the main picture until the
site's first frame arrives, and a floor holder whose uplink drops falls back to the main
source until it comes back. The program decodes each publisher once and re-encodes once per
tier; subscribers never renegotiate.

Consent freshness (RFC 7675) is off for ingest peers: FFmpeg's WHIP muxer (8.0, as bundled
in PyAV) answers STUN only during its handshake, so aioice's consent checks expire after
about 30 s and would close a healthy publisher. We only receive, so instead a publisher is
ended when no media has arrived for ``silence_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription, candidate_from_sdp

from ccctl.media.events import EventSink, EventSource
from ccctl.media.net import candidate_ok, close_quietly, without_consent_checks
from ccctl.media.program import Program, RemoteSource
from ccctl.media.tiers import MediaError

log = logging.getLogger(__name__)

#: Seconds without any media after which a publisher is considered gone.
SILENCE_TIMEOUT = 10.0
#: The video codecs a publisher may send, in our order of preference.
VIDEO_CODECS = ("video/h264", "video/vp8")
#: Most candidates one publisher may trickle (each is a pair ICE keeps checking).
MAX_TRICKLED = 100


class FloorRefused(MediaError):
    """A site tried to publish without holding the floor."""

    status = 403


class SourceRefused(MediaError):
    """The main program was published to while the broadcast's source is not ``whip``."""

    status = 409


class IceRestartRefused(MediaError):
    """A PATCH asked for an ICE restart, which this server does not do."""

    status = 422


class FloorBoard:
    """Who holds the floor, with a version number that sites' long-polls wait on.

    Each live broadcast's room has one (and the server one for sites no broadcast holds), and
    versions start from the clock, so a page polling a restarted server, or now polling another
    broadcast's board, almost never finds its old version current (if it does, it is answered
    when its wait ends).
    """

    def __init__(self) -> None:
        self.holder: str | None = None
        self.since: float | None = None
        self.version = int(time.time() * 1000)
        self._changed = asyncio.Event()
        self._closed = False
        self.pokes = 0  # wakes for every waiting site (its room changed)
        self.kicks: dict[str, int] = {}  # per site: sessions the server ended under its page

    @property
    def closed(self) -> bool:
        """Whether the board is going away (every wait returns at once)."""
        return self._closed

    def set(self, holder: str | None) -> bool:
        """Give the floor to ``holder`` (None: nobody); False when nothing changed."""
        if holder == self.holder:
            return False
        self.holder, self.since = holder, (time.time() if holder is not None else None)
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return True

    async def wait(self, since: int, timeout: float) -> None:
        """Return once the version is no longer ``since``, or after ``timeout`` seconds."""
        if since != self.version or self._closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def poke(self) -> None:
        """Wake every waiting long-poll without a change (its site may belong elsewhere now)."""
        self.pokes += 1
        self._wake()

    def kick(self, site_id: str) -> None:
        """Tell ``site_id``'s long-poll that the server ended its session (others wait on)."""
        self.kicks[site_id] = self.kicks.get(site_id, 0) + 1
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """Wake every waiting long-poll (the server, or this broadcast, is going away)."""
        self._closed = True
        self._changed.set()


@dataclass(eq=False)
class Publisher:
    """One WHIP session: its peer connection and the source reading its tracks."""

    resource_id: str
    site_id: str | None  # None: the control room's main program
    pc: RTCPeerConnection
    source: RemoteSource
    etag: str
    remote_ice: tuple[str, str]  # the offer's ufrag and pwd: a PATCH with others is an ICE restart
    mid: str  # the BUNDLE's first media id, where trickled candidates go
    created_at: float = field(default_factory=time.time)
    connected_at: float | None = None
    ended: bool = False
    trickled: int = 0  # candidates added by PATCH so far

    @property
    def role(self) -> str:
        """``main`` (the control room's program) or ``floor`` (a site's uplink)."""
        return "main" if self.site_id is None else "floor"


def _candidate(text: str, mid: str) -> RTCIceCandidate:
    """A trickled ``a=candidate`` value (RFC 8839 section 5.1), checked field by field first:
    aiortc's own parser asserts, or takes a candidate without ``typ`` for one."""
    if not candidate_ok(text):
        raise MediaError("bad candidate in the trickle fragment (foundation component transport priority "
                         "address port typ TYPE ...)")
    candidate = candidate_from_sdp(text)
    candidate.sdpMid = mid
    return candidate


def _codecs(kind: str) -> list[RTCRtpCodecCapability]:
    capabilities = RTCRtpReceiver.getCapabilities(kind)
    caps = capabilities.codecs if capabilities is not None else []
    wanted = VIDEO_CODECS if kind == "video" else ("audio/opus",)
    chosen = [c for name in wanted for c in caps if c.mimeType.lower() == name]
    return chosen + [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]


class Ingest(EventSource):
    """The WHIP publishers of one broadcast and what the program shows (see the module doc)."""

    def __init__(self, program: Program, board: FloorBoard, on_event: EventSink | None = None, *,
                 main_is_whip: bool = False, ice_servers: Sequence[str] = (),
                 silence_timeout: float = SILENCE_TIMEOUT) -> None:
        self.program = program
        self.board = board
        self.main_is_whip = main_is_whip
        self.silence_timeout = silence_timeout
        super().__init__(on_event)
        self._ice_servers = [RTCIceServer(urls=url) for url in ice_servers]
        self._publishers: dict[str, Publisher] = {}
        self._by_owner: dict[str | None, Publisher] = {}  # site id, or None for the main publisher
        self._showing: Publisher | None = None
        self._granted_at: float | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False
        self._codecs = {"audio": _codecs("audio"), "video": _codecs("video")}

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the silence watchdog."""
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch(), name="ingest-watchdog")

    async def close(self) -> None:
        """End every publisher and give the program back its main source."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        await asyncio.gather(*(self._end(p, "closed") for p in list(self._publishers.values())))
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._showing is not None:
            self._showing = None
            with contextlib.suppress(MediaError):
                self.program.set_source(None)

    # -- publishers ---------------------------------------------------------------------------
    async def publish(self, offer_sdp: str, site_id: str | None = None) -> tuple[Publisher, str]:
        """Answer a WHIP offer; returns the publisher and the answer SDP (all candidates in it).

        ``site_id`` None publishes the main program (only for a ``whip`` broadcast); a site
        publishes only while it holds the floor. A second publisher of the same owner
        replaces the first.
        """
        if self._closed:
            raise MediaError("the broadcast is ending", status=503)
        if site_id is None and not self.main_is_whip:
            raise SourceRefused(f"the broadcast's source is {self.program.source_name}, not whip: "
                                "start it with --source whip to publish the program")
        if site_id is not None and self.board.holder != site_id:
            raise FloorRefused(f"site {site_id} does not hold the floor")
        try:
            media = SessionDescription.parse(offer_sdp).media
        except Exception as exc:  # aiortc's parser raises assorted errors on bad input
            raise MediaError(f"unreadable offer: {exc}") from None
        kinds = [m.kind for m in media if m.kind in ("audio", "video")]
        if not kinds or media[0].ice is None or not media[0].rtp.muxId:
            raise MediaError("the offer has no audio or video, or no ICE credentials or media id")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        try:
            receivers = {}
            for kind in dict.fromkeys(kinds):
                transceiver = pc.addTransceiver(kind, direction="recvonly")
                transceiver.setCodecPreferences(self._codecs[kind])
                receivers[kind] = transceiver.receiver
            if not without_consent_checks(pc):  # publishers that answer STUN still work
                log.warning("cannot turn consent checks off for a WHIP publisher (aiortc changed)")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await close_quietly(pc)
            raise MediaError(f"cannot answer the offer: {exc}") from None
        if self._closed:
            await pc.close()
            raise MediaError("the broadcast is ending", status=503)
        if site_id is not None and self.board.holder != site_id:  # the floor moved while we answered
            await pc.close()
            raise FloorRefused(f"site {site_id} does not hold the floor")
        video, audio = receivers.get("video"), receivers.get("audio")
        source = RemoteSource(video.track if video else None, audio.track if audio else None,
                              self.program.width, self.program.height)
        ice = media[0].ice
        publisher = Publisher(uuid.uuid4().hex, site_id, pc, source, uuid.uuid4().hex[:16],
                              (str(ice.usernameFragment), str(ice.password)), str(media[0].rtp.muxId))
        pc.on("connectionstatechange", functools.partial(self._on_state, publisher))
        source.start()
        self._spawn(self._follow(publisher))
        old = self._by_owner.get(site_id)
        self._publishers[publisher.resource_id] = publisher
        self._by_owner[site_id] = publisher
        if old is not None:
            await self._end(old, "replaced")
        self._emit("publish", site_id or "", {"action": "start", "role": publisher.role,
                                              "resource_id": publisher.resource_id})
        return publisher, pc.localDescription.sdp

    def publisher(self, resource_id: str) -> Publisher | None:
        """The live publisher with this resource id."""
        return self._publishers.get(resource_id)

    async def trickle(self, publisher: Publisher, fragment: str) -> None:
        """Apply a trickle-ICE SDP fragment (RFC 8840) to a publisher's connection.

        All candidates go to the BUNDLE transport; ``a=end-of-candidates`` ends them. New
        ICE credentials would be an ICE restart, which is refused.
        """
        ufrag = pwd = None
        candidates: list[str] = []
        end = False
        for raw in fragment.splitlines():
            line = raw.strip()
            if line.startswith("a=ice-ufrag:"):
                ufrag = line[len("a=ice-ufrag:"):]
            elif line.startswith("a=ice-pwd:"):
                pwd = line[len("a=ice-pwd:"):]
            elif line.startswith("a=candidate:"):
                candidates.append(line[len("a=candidate:"):])
            elif line == "a=end-of-candidates":
                end = True
        if (ufrag is not None and ufrag != publisher.remote_ice[0]) or (pwd is not None and pwd != publisher.remote_ice[1]):
            raise IceRestartRefused("ICE restarts are not supported: publish again instead")
        parsed = [_candidate(text, publisher.mid) for text in candidates]  # all or nothing
        if publisher.trickled + len(parsed) > MAX_TRICKLED:
            raise MediaError(f"more than {MAX_TRICKLED} trickled candidates for one session: publish again")
        publisher.trickled += len(parsed)
        try:
            for candidate in parsed:
                await publisher.pc.addIceCandidate(candidate)
            if end:
                await publisher.pc.addIceCandidate(None)
        except ValueError as exc:  # e.g. a candidate after end-of-candidates
            raise MediaError(f"bad trickle fragment: {exc}") from None

    async def unpublish(self, publisher: Publisher, reason: str = "deleted") -> None:
        """End a publisher (its WHIP DELETE, or the control room's)."""
        await self._end(publisher, reason)

    async def end_site(self, site_id: str, reason: str) -> int:
        """End every publisher of ``site_id`` now (its token was revoked, say); how many."""
        mine = [p for p in self._publishers.values() if p.site_id == site_id]
        await asyncio.gather(*(self._end(p, reason) for p in mine))
        return len(mine)

    def stats(self) -> list[dict[str, Any]]:
        """Per publisher: who, state, whether on air, and input counters."""
        return [{"resource_id": p.resource_id, "role": p.role, "site_id": p.site_id, "state": p.pc.connectionState,
                 "created_at": p.created_at, "connected_at": p.connected_at, "on_air": p is self._showing,
                 "frames_in": p.source.frames_in, "audio_in": p.source.audio_in,
                 "audio_dropped": p.source.audio_dropped} for p in self._publishers.values()]

    # -- the floor ------------------------------------------------------------------------------
    def set_floor(self, site_id: str | None, why: str = "lost the floor") -> str | None:
        """Give the floor to ``site_id`` (None: release it); returns the previous holder.

        A site that loses the floor stops being published: its session is ended (``why`` is
        the reason its end event gives). The program switches once the new holder's first
        picture is decoded.
        """
        previous = self.board.holder
        if not self.board.set(site_id):
            return previous
        self._granted_at = time.monotonic() if site_id is not None else None
        for owner, publisher in list(self._by_owner.items()):
            if owner is not None and owner != site_id:
                self._spawn(self._end(publisher, why))
        self._refresh()
        return previous

    @property
    def on_air(self) -> Publisher | None:
        """The publisher the program shows now, if any."""
        return self._showing

    # -- internals ------------------------------------------------------------------------------
    def _wanted(self) -> Publisher | None:
        for owner in ([self.board.holder] if self.board.holder is not None else []) + [None]:
            publisher = self._by_owner.get(owner)
            if publisher is not None and not publisher.ended and publisher.source.ready.is_set():
                return publisher
        return None

    def _refresh(self) -> None:
        """Point the program at the publisher it should show (see the module doc)."""
        if self._closed:
            return
        wanted = self._wanted()
        if wanted is self._showing:
            return
        self._showing = wanted
        try:
            self.program.set_source(wanted.source if wanted is not None else None)
        except MediaError:  # the program is already closed
            return
        if wanted is not None and wanted.site_id is not None:
            detail: dict[str, Any] = {"action": "on_air", "resource_id": wanted.resource_id}
            if self._granted_at is not None:
                detail["after_ms"] = round((time.monotonic() - self._granted_at) * 1000)
                self._granted_at = None
            self._emit("floor", wanted.site_id, detail)

    async def _follow(self, publisher: Publisher) -> None:
        """Put the publisher on air once its first frame is decoded; end it when its tracks end.

        Ending a publisher closes its source, which ends the tracks, so this always returns.
        """
        source = publisher.source
        ready = asyncio.ensure_future(source.ready.wait())
        ended = asyncio.ensure_future(source.ended.wait())
        try:
            await asyncio.wait({ready, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not ended.done():
                self._refresh()
                await ended
        finally:
            ready.cancel()
            ended.cancel()
        await self._end(publisher, "tracks ended")

    def _on_state(self, publisher: Publisher) -> None:
        state = publisher.pc.connectionState
        if state == "connected" and publisher.connected_at is None:
            publisher.connected_at = time.time()
        elif state in ("failed", "closed") and not publisher.ended:
            self._spawn(self._end(publisher, state))

    async def _end(self, publisher: Publisher, reason: str) -> None:
        """Forget a publisher, switch the program away from it, close its connection (idempotent)."""
        if publisher.ended:
            return
        publisher.ended = True
        self._publishers.pop(publisher.resource_id, None)
        if self._by_owner.get(publisher.site_id) is publisher:
            del self._by_owner[publisher.site_id]
        self._refresh()
        publisher.source.close()
        await publisher.pc.close()
        self._emit("publish", publisher.site_id or "", {"action": "end", "role": publisher.role,
                                                        "resource_id": publisher.resource_id, "reason": reason})

    async def _watch(self) -> None:
        """End publishers from which no media has come for ``silence_timeout`` seconds."""
        while True:
            await asyncio.sleep(min(1.0, self.silence_timeout / 4))
            now = time.monotonic()
            for publisher in list(self._publishers.values()):
                if now - publisher.source.last_input > self.silence_timeout:
                    await self._end(publisher, "silent")

