"""The media core: one program, and one WHEP-style peer connection per subscribing site.

``MediaCore`` owns the :class:`~ccctl.media.program.Program` and every subscriber
``RTCPeerConnection``: it opens them in :meth:`MediaCore.subscribe` and closes them on
unsubscribe, re-subscribe, ICE failure and :meth:`MediaCore.close`. A site's offer is
recvonly audio+video (or audio only); the answer sends the tier's tracks, H.264 and Opus
only, since those are what the program encodes.

Fan-out (``fanout="tight"``, the default): once a site is connected, a
:class:`~ccctl.media.fastpath.Forwarder` per kind takes the packets its tier's feed made
once, and only rewrites the RTP header, encrypts and sends; sender reports are ours too.
``fanout="stock"`` keeps stock aiortc senders fed with encoded packets (packetised per
subscriber), for comparison in ``benchmarks/fanout.py``.

Tiers: a site starts at its registry tier; with ``adapt`` (default on) its own RTCP receiver
reports move it down and back up, never above the registry tier (:mod:`ccctl.media.adapt`).
A tier switch needs no renegotiation: the tiers share one RTP clock and the forwarder moves
at the new tier's next keyframe.

Joins: every connection shares one DTLS certificate, and their sendonly receivers get no
bitrate estimator; see :func:`ccctl.media.seam.lean_peers`. ICE: host candidates only unless
``ice_servers`` is given (the server has a known address and sites reach it; a default public
STUN server would stall every answer on a closed network).

Two more reach into aiortc internals, through :mod:`ccctl.media.seam` as every such reach:
PLI/FIR from a site is routed to its tier's keyframe policy, and receiver reports are watched
for adaptation.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiortc import RTCCertificate, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import RtcpRrPacket, RtcpSrPacket

from ccctl.errors import NotFound, UsageError
from ccctl.media import udpmux
from ccctl.media.adapt import DEFAULT_ADAPT, AdaptPolicy, TierGovernor
from ccctl.media.events import EventSink, EventSource
from ccctl.media.fastpath import Forwarder, send_reports
from ccctl.media.net import close_quietly, patient_consent
from ccctl.media.program import Program
from ccctl.media.record import Recorder
from ccctl.media.seam import (
    lean_peers,
    park_rtcp,
    route_keyframes,
    sender_counts,
    sender_remote_stats,
    sender_rtt,
    sender_ssrc,
    shared_certificate,
    wrap_rtcp_handler,
)
from ccctl.media.tiers import DEFAULT_TIERS, MediaError, SubscriberTrack, TierSpec

log = logging.getLogger(__name__)

CLOCK_RATES = {"audio": 48_000, "video": 90_000}
REPORT_INTERVAL = 1.0  # seconds between RTCP sender reports to each site (tight path)
REPORT_MIN_PACKETS = 20  # packets a receiver report must cover to count for the tier governor
REPORT_SLICE = 256  # sites per slice of a report round, so a round never holds the loop long
CERTIFICATE_MAX_AGE = 86_400.0  # seconds before the shared DTLS certificate is renewed (aiortc's last 30 days)
CONNECT_TIMEOUT_S = 20.0  # a session whose ICE and DTLS are not up this long after its answer is ended
CLOSING_AT_ONCE = 16  # peer connections closed at the same time (a storm of leaves is paced)


def _codec_preferences(kind: str, mime: str, first_profile: str | None = None) -> list[RTCRtpCodecCapability]:
    """Our one codec for ``kind`` (with its RTX), so the answer can only pick what we encode."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for c in caps if c.mimeType.lower() == mime]
    if first_profile:  # constrained baseline first: what every browser decodes
        chosen.sort(key=lambda c: str(c.parameters.get("profile-level-id", "")).lower() != first_profile)
    return chosen + [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]


@dataclass(eq=False)
class Session:
    """One site's subscription: its peer connection and the tracks feeding its senders."""

    session_id: str
    site_id: str
    tier: str
    pc: RTCPeerConnection
    joined_at: float
    audio: RTCRtpTransceiver | None = None
    video: RTCRtpTransceiver | None = None  # None: no video negotiated to send
    audio_track: SubscriberTrack | None = None  # the sender's track (idle on the tight path)
    video_track: SubscriberTrack | None = None
    forwarders: dict[str, Forwarder] | None = None  # tight path, once connected
    governor: TierGovernor | None = None  # live tier choice from RTCP (None: fixed tier)
    connected_at: float | None = None
    connected_at_monotonic: float = 0.0
    rate_mark: tuple[float, int] | None = None  # (monotonic time, bytes sent) of the last stats()
    kbps: float | None = None
    ended: bool = False
    deadline: asyncio.TimerHandle | None = None  # ends the session if it never connects

    def counters(self) -> tuple[int, int, int]:
        """Units delivered, units dropped and units waiting, over both kinds."""
        if self.forwarders is not None:
            parts = [(f.delivered, f.dropped, 0) for f in self.forwarders.values()]
        else:
            parts = [(t.delivered, t.dropped, t.backlog) for t in (self.audio_track, self.video_track) if t is not None]
        return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts))


def start_recorder(program: Program, tiers: Mapping[str, TierSpec], path: str) -> Recorder:
    """A recorder of ``program``'s best video tier and its audio, started (see ccctl.media.record)."""
    video = max((t for t in tiers.values() if t.has_video), key=lambda t: t.width * t.height, default=None)
    audio = program.open_track("", "audio")
    vtrack = program.open_track(video.name, "video") if video is not None else None
    try:
        recorder = Recorder(path, vtrack, audio, (video.width, video.height) if video else (0, 0), program.fps)
    except MediaError:
        for track in (audio, vtrack):
            if track is not None:
                track.stop()
        raise
    recorder.start()
    return recorder


class MediaCore(EventSource):
    """The broadcast's program and all subscriber peer connections (see the module doc); it has
    the face the server is typed against (:class:`~ccctl.media.coreapi.MediaCoreAPI`)."""

    def __init__(self, source: str = "testsrc", on_event: EventSink | None = None, *,
                 tiers: Mapping[str, TierSpec] | None = None, fps: int = 25, ice_servers: Sequence[str] = (),
                 fanout: str = "tight", adapt: AdaptPolicy | None = DEFAULT_ADAPT, program: Any = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        if fanout not in ("tight", "stock"):
            raise UsageError(f"unknown fan-out path {fanout!r}: use tight or stock")
        self.source = source
        self.fanout = fanout
        self.adapt = adapt
        self.connect_timeout = connect_timeout
        self._closing = asyncio.Semaphore(CLOSING_AT_ONCE)
        self.tiers: dict[str, TierSpec] = dict(tiers or DEFAULT_TIERS)
        # A fan-out worker (ccctl.media.shard) passes a program fed by the main process.
        self.program = program if program is not None else Program(source, self.tiers, fps=fps)
        super().__init__(on_event)
        self._ice_servers = [RTCIceServer(urls=url) for url in ice_servers]
        self.udp_mux = udpmux.UdpMux() if not ice_servers else None  # one port for all sites (host candidates)
        self._sessions: dict[str, Session] = {}
        self._by_site: dict[str, Session] = {}
        self._reports: asyncio.Task[None] | None = None
        self._certificate: tuple[float, RTCCertificate] | None = None
        self.recorder: Recorder | None = None
        self._started = False
        self._warned_consent = False
        self._audio = _codec_preferences("audio", "audio/opus")
        self._video = _codec_preferences("video", "video/h264", first_profile="42e01f")

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the program's clocks (nothing is encoded until a site subscribes)."""
        await self.program.start()
        self._started = True
        if self.fanout == "tight":
            self._reports = asyncio.get_running_loop().create_task(self._send_reports(), name="media-sender-reports")

    async def record(self, path: str) -> None:
        """Record the program (best video tier and the audio, as sent) to ``path`` until close."""
        if self.recorder is not None:
            raise MediaError(f"already recording to {self.recorder.path}")
        self.recorder = start_recorder(self.program, self.tiers, path)

    async def close(self) -> None:
        """Close every peer connection, then the program; afterwards no task of ours runs."""
        self._started = False
        if self.recorder is not None:
            await self.recorder.stop()
        if self._reports is not None:
            self._reports.cancel()
            await asyncio.gather(self._reports, return_exceptions=True)
            self._reports = None
        await asyncio.gather(*(self._end(s, "closed") for s in list(self._sessions.values())))
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.udp_mux is not None:
            await self.udp_mux.close()
        await self.program.close()

    # -- subscribers --------------------------------------------------------------------------
    async def subscribe(self, site_id: str, offer_sdp: str, tier: str = "high") -> tuple[str, str]:
        """Answer a site's WHEP offer with ``tier``'s tracks; returns (session_id, answer_sdp).

        The answer carries all ICE candidates (gathered in setLocalDescription), as WHEP
        expects. A site that subscribes again has its previous session replaced. A session
        whose ICE and DTLS are not up ``connect_timeout`` seconds later is ended
        (``never_connected``); the ``join`` event comes when it is connected and sending.
        """
        if not self._started:
            raise MediaError("the media core is not running", status=503)
        spec = self._spec(tier)
        kinds = {line[2:].split(" ", 1)[0] for line in offer_sdp.splitlines() if line.startswith("m=")}
        if not kinds & {"audio", "video"}:
            raise MediaError(f"offer from {site_id} has no audio or video")
        if spec.has_video and "video" not in kinds:
            spec = next((s for s in self.tiers.values() if not s.has_video), spec)  # it asked for sound only
        certificate = self._shared_certificate()
        with lean_peers(certificate):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        session = Session(uuid.uuid4().hex, site_id, spec.name, pc, time.time())
        try:
            with lean_peers(certificate):
                self._add_transceivers(session, kinds, spec)
            pc.on("connectionstatechange", functools.partial(self._on_state, session))
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            with udpmux.gathering(self.udp_mux if udpmux.enabled() else None):
                await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await close_quietly(pc)
            raise MediaError(f"cannot answer {site_id}'s offer: {exc}") from None
        # A thin link's round trip can exceed aioice's 0.5 s consent answer; bundled transports
        # are final now, and ICE (whose end starts the checks) has not finished.
        if not patient_consent(pc) and not self._warned_consent:
            self._warned_consent = True
            log.warning("aiortc changed: consent checks stay aioice's (sites over 0.5 s RTT drop)")
        if not self._started:  # close() ran while we were negotiating
            await pc.close()
            raise MediaError("the media core is shutting down", status=503)
        old = self._by_site.get(site_id)
        self._sessions[session.session_id] = session
        self._by_site[site_id] = session
        if old is not None:
            await self._end(old, "replaced")
        session.deadline = asyncio.get_running_loop().call_later(self.connect_timeout, self._never_connected, session)
        if pc.connectionState == "connected":
            self._attach(session)
        return session.session_id, pc.localDescription.sdp

    def _add_transceivers(self, session: Session, kinds: set[str], spec: TierSpec) -> None:
        """Sendonly transceivers for what the site asked for, parked until it is connected.

        Senders start on idle tracks (a sender with no track polls every 20 ms); on the
        tight path we send their packets and sender reports ourselves.
        """
        pc = session.pc
        if "audio" in kinds:
            session.audio_track = SubscriberTrack.idle("audio")
            session.audio = pc.addTransceiver(session.audio_track, direction="sendonly")
            session.audio.setCodecPreferences(self._audio)
        if "video" in kinds:
            if spec.has_video:
                session.video_track = SubscriberTrack.idle("video")
                session.video = pc.addTransceiver(session.video_track, direction="sendonly")
                session.video.setCodecPreferences(self._video)
            else:
                pc.addTransceiver("video", direction="inactive")
        for transceiver, kind in ((session.audio, "audio"), (session.video, "video")):
            if transceiver is not None:
                if self.fanout == "tight":
                    park_rtcp(transceiver.sender)
                if self.adapt is not None:
                    self._watch_reports(session, transceiver.sender, kind)
        if self.adapt is not None and session.video is not None:
            best_first = sorted(self.tiers.values(), key=lambda t: t.width * t.height, reverse=True)
            session.governor = TierGovernor([t.name for t in best_first], spec.name, self.adapt, time.monotonic())

    def _shared_certificate(self) -> RTCCertificate:
        """The DTLS certificate of every subscriber connection, renewed daily."""
        now = time.monotonic()
        if self._certificate is None or now - self._certificate[0] > CERTIFICATE_MAX_AGE:
            self._certificate = (now, shared_certificate())
        return self._certificate[1]

    async def unsubscribe(self, session_id: str, reason: str = "unsubscribed") -> bool:
        """End a session (the site left); False when there is no such session."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        await self._end(session, reason)
        return True

    async def set_tier(self, site_id: str, tier: str, reason: str = "operator") -> None:
        """Move a live site to another tier (see :meth:`move`; a coroutine as the sharded core's is)."""
        self.move(site_id, tier, reason)

    def move(self, site_id: str, tier: str, reason: str = "operator") -> None:
        """Move a live site to another tier now, by swapping its video sender's track.

        No renegotiation: the RTP clock is shared by the tiers and the new track starts at
        a keyframe, so the site's decoder just sees a new resolution. ``audio`` parks the
        video sender; a site that negotiated no video at all must re-subscribe for video.
        An operator's choice (``reason="operator"``) or admission's (``"admission"``, making
        room) is also the ceiling its RTCP reports may bring it back up to.
        """
        session = self._by_site.get(site_id)
        if session is None:
            raise NotFound(f"site {site_id} is not subscribed")
        spec = self._spec(tier)
        if spec.has_video and session.video is None:
            raise MediaError(f"site {site_id} negotiated no video; it must re-subscribe for tier {tier}")
        if reason in ("operator", "admission") and session.governor is not None:
            session.governor.cap(tier, time.monotonic())
        if tier == session.tier:
            return
        previous, session.tier = session.tier, tier
        if session.forwarders is not None:
            forwarder = session.forwarders.get("video")
            if forwarder is not None:  # moves at the new tier's next keyframe
                forwarder.switch(self.program.feed(tier) if spec.has_video else None)
        elif session.connected_at is not None and session.video is not None and session.video_track is not None:
            new = self.program.open_track(tier, "video") if spec.has_video else SubscriberTrack.idle("video")
            session.video.sender.replaceTrack(new)
            session.video_track.retire(new)
            session.video_track = new
        self._emit("tier", site_id, {"session_id": session.session_id, "from": previous, "to": tier, "reason": reason})

    def tier_counts(self) -> dict[str, int]:
        """Subscribed sites per tier (every tier listed, zeros included)."""
        counts = dict.fromkeys(self.tiers, 0)
        for session in self._sessions.values():
            counts[session.tier] = counts.get(session.tier, 0) + 1
        return counts

    #: Fan-out processes: this one (admission's budget is per process).
    processes = 1

    def sessions(self) -> list[Session]:
        """The live sessions (read-only use: tests, the dashboard)."""
        return list(self._sessions.values())

    def session(self, session_id: str) -> Session | None:
        """One live session, or None."""
        return self._sessions.get(session_id)

    def program_stats(self) -> dict[str, dict[str, int]]:
        """Encoder and fan-out counters per tier (see :meth:`Program.stats`)."""
        return self.program.stats()

    async def stats(self) -> list[dict[str, Any]]:
        """Per session: who, tier, connection state, counters and RTCP receiver reports.

        ``packets_sent``/``bytes_sent`` are RTP packets and payload bytes sent to the site,
        ``kbps`` the rate since the previous call (or since it connected);
        ``frames_delivered``/``frames_dropped`` count encoded units (dropped: waiting for a
        keyframe or behind); loss, jitter and RTT come from the site's RTCP receiver reports
        (None until one). Read straight from the senders, without aiortc's ``getStats()``
        and its per-connection coroutines, so that thousands of sites cost milliseconds.
        """
        now = time.monotonic()
        rows = []
        for session in list(self._sessions.values()):
            row: dict[str, Any] = {
                "site_id": session.site_id, "session_id": session.session_id, "tier": session.tier,
                "state": session.pc.connectionState, "joined_at": session.joined_at,
                "connected_at": session.connected_at, "packets_sent": 0, "bytes_sent": 0, "kbps": None,
                "packets_lost": None, "fraction_lost": None, "jitter_ms": None, "rtt_ms": None}
            row["frames_delivered"], row["frames_dropped"], row["backlog"] = session.counters()
            for transceiver, kind in ((session.audio, "audio"), (session.video, "video")):
                if transceiver is None:
                    continue
                sender = transceiver.sender
                forwarder = (session.forwarders or {}).get(kind)
                if forwarder is not None:
                    row["packets_sent"] += forwarder.packets
                    row["bytes_sent"] += forwarder.octets
                else:
                    packets, octets = sender_counts(sender)
                    row["packets_sent"] += packets
                    row["bytes_sent"] += octets
                _add_receiver_report(row, kind, sender_remote_stats(sender))
            if session.connected_at is not None:
                since, octets = session.rate_mark or (session.connected_at_monotonic, 0)
                if now - since > 0.2:
                    session.kbps = (row["bytes_sent"] - octets) * 8 / (now - since) / 1000
                    session.rate_mark = (now, row["bytes_sent"])
                row["kbps"] = None if session.kbps is None else round(session.kbps, 1)
            rows.append(row)
        return rows

    # -- internals ----------------------------------------------------------------------------
    def _spec(self, tier: str) -> TierSpec:
        if tier not in self.tiers:
            raise UsageError(f"unknown tier {tier!r}: use one of {', '.join(self.tiers)}")
        return self.tiers[tier]

    def _on_state(self, session: Session) -> None:
        """Attach the tracks once connected; end the session when ICE/DTLS fails or closes."""
        if session.ended:
            return
        state = session.pc.connectionState
        if state == "connected":
            self._attach(session)
        elif state in ("failed", "closed"):
            self._spawn(self._end(session, state))

    def _never_connected(self, session: Session) -> None:
        if not session.ended and session.connected_at is None:
            self._spawn(self._end(session, "never_connected"))

    def _attach(self, session: Session) -> None:
        """Start sending the session's tier once connected (PLI from the site reaches the tier);
        the ``join`` event says media flows from now on."""
        if session.connected_at is not None or session.ended:
            return
        if session.deadline is not None:
            session.deadline.cancel()
        session.connected_at = time.time()
        session.connected_at_monotonic = time.monotonic()
        self._emit("join", session.site_id, {"session_id": session.session_id, "tier": session.tier})
        if session.video is not None:
            # Stock aiortc only flags a PLI/FIR for its own encoder, which pass-through
            # never uses; route it to the tier's (coalescing) keyframe policy instead.
            route_keyframes(session.video.sender, functools.partial(self._keyframe_for, session))
        if self.fanout == "tight":
            self._attach_forwarders(session)
            return
        for transceiver, kind in ((session.audio, "audio"), (session.video, "video")):
            if transceiver is None:
                continue
            idle = session.audio_track if kind == "audio" else session.video_track
            track = self.program.open_track(session.tier, kind)
            transceiver.sender.replaceTrack(track)
            if idle is not None:
                idle.retire(track)  # the sender may be waiting in the idle track's recv()
            if kind == "audio":
                session.audio_track = track
            else:
                session.video_track = track

    def _attach_forwarders(self, session: Session) -> None:
        forwarders: dict[str, Forwarder] = {}
        on_dead = functools.partial(self._on_dead, session)
        try:
            for transceiver, kind in ((session.audio, "audio"), (session.video, "video")):
                if transceiver is not None:
                    forwarders[kind] = Forwarder(kind, transceiver, on_dead)
        except (ConnectionError, AttributeError, IndexError) as exc:
            log.warning("site %s: cannot start sending: %s", session.site_id, exc)
            self._spawn(self._end(session, "failed"))
            return
        session.forwarders = forwarders
        for kind, forwarder in forwarders.items():
            spec = self.tiers[session.tier]
            if kind == "audio":
                forwarder.attach(self.program.audio_feed)
            elif spec.has_video:
                forwarder.attach(self.program.feed(session.tier))

    async def _send_reports(self) -> None:
        """Every second, one RTCP sender report packet to each site, in slices."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + REPORT_INTERVAL
            sessions = [s.forwarders for s in self._sessions.values() if s.forwarders]
            for i in range(0, len(sessions), REPORT_SLICE):
                for forwarders in sessions[i:i + REPORT_SLICE]:
                    send_reports(list(forwarders.values()))
                await asyncio.sleep(0)
            await asyncio.sleep(max(0.0, due - loop.time()))

    def _watch_reports(self, session: Session, sender: RTCRtpSender, kind: str) -> None:
        """Give the tier governor the loss seen by each receiver report aiortc's sender handles.

        The loss is computed from the report's cumulative counters (lost, highest sequence)
        since the last report used, once at least :data:`REPORT_MIN_PACKETS` were expected:
        a site may send reports close together (aiortc's receivers send one per stream), and
        a report's own ``fraction_lost`` then covers a few packets or none.
        """
        last: list[int] = []  # [highest extended sequence, cumulative lost] of the last report used

        def wrap(handle: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
            async def handle_and_adapt(packet: Any) -> None:
                await handle(packet)
                adapt(packet)
            return handle_and_adapt

        ssrc = sender_ssrc(sender)

        def adapt(packet: Any) -> None:
            if session.governor is None or session.ended or not isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                return
            if self.tiers[session.tier].has_video != (kind == "video"):
                last.clear()  # judge the link by the stream the site is getting now
                return
            for report in packet.reports:
                if report.ssrc != ssrc:
                    continue
                if not last:
                    last[:] = [report.highest_sequence, report.packets_lost]
                    continue
                expected = report.highest_sequence - last[0]
                if expected < REPORT_MIN_PACKETS:
                    continue
                lost = max(0, report.packets_lost - last[1])
                last[:] = [report.highest_sequence, report.packets_lost]
                rtt = sender_rtt(sender)
                self._on_report(session, min(1.0, lost / expected), None if rtt is None else rtt * 1000)

        wrap_rtcp_handler(sender, wrap)

    def _on_report(self, session: Session, fraction_lost: float, rtt_ms: float | None) -> None:
        assert session.governor is not None
        new = session.governor.observe(session.tier, fraction_lost, rtt_ms, time.monotonic())
        if new is not None and new != session.tier:
            rtt = "n/a" if rtt_ms is None else f"{rtt_ms:.0f} ms"
            log.info("site %s: tier %s -> %s (loss %.0f %%, rtt %s)", session.site_id, session.tier, new,
                     fraction_lost * 100, rtt)
            self.move(session.site_id, new, reason=f"auto: loss {fraction_lost * 100:.0f} %, rtt {rtt}")

    def _on_dead(self, session: Session) -> None:
        self._spawn(self._end(session, "failed"))

    def _keyframe_for(self, session: Session) -> None:
        self.program.request_keyframe(session.tier)

    async def _end(self, session: Session, reason: str) -> None:
        """Forget one session, stop sending to it, then close its peer connection (idempotent).

        The ``leave`` event goes out at once (also for a session that never connected, which
        had no ``join``). Closing is paced (:data:`CLOSING_AT_ONCE` at a time) so that a storm of leaves
        does not hold the loop that sends the program to the sites that stay.
        """
        if session.ended:
            return
        session.ended = True
        if session.deadline is not None:
            session.deadline.cancel()
        self._sessions.pop(session.session_id, None)
        if self._by_site.get(session.site_id) is session:
            del self._by_site[session.site_id]
        for forwarder in (session.forwarders or {}).values():
            forwarder.close()
        for track in (session.audio_track, session.video_track):
            if track is not None:
                track.stop()
        self._emit("leave", session.site_id, {"session_id": session.session_id, "reason": reason})
        async with self._closing:
            await session.pc.close()



def _add_receiver_report(row: dict[str, Any], kind: str, stats: Any) -> None:
    """Fold one sender's latest RTCP receiver report (aiortc's remote-inbound-rtp) into ``row``."""
    for st in stats:
        if st.type != "remote-inbound-rtp":
            continue
        row["packets_lost"] = (row["packets_lost"] or 0) + max(0, st.packetsLost)
        row["fraction_lost"] = max(row["fraction_lost"] or 0.0, st.fractionLost / 256)
        jitter = st.jitter / CLOCK_RATES[kind] * 1000
        row["jitter_ms"] = max(row["jitter_ms"] or 0.0, round(jitter, 2))
        if st.roundTripTime is not None:
            row["rtt_ms"] = max(row["rtt_ms"] or 0.0, round(st.roundTripTime * 1000, 2))
