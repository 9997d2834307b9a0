"""The one seam between ccctl and the private parts of aiortc, aioice and pylibsrtp.

ccctl's media paths need a few things these libraries do not offer publicly: one shared DTLS
certificate and no bitrate estimators while a peer is built (:func:`lean_peers`), the sender's
SSRC, counters and RTCP hooks (the tight fan-out sends RTP and sender reports itself), the ICE
pair's socket and the SRTP session's buffer (one ``sendto`` and libsrtp in place per packet),
the receiver's RTP hook (the simulator's counting), aioice's address lookup and consent checks
and aiortc's "closed" flag (:mod:`ccctl.media.net`), the SRTP keys of a DTLS session (the
native sender), and aioice's gathering, STUN protocol and parser (the shared UDP port,
:mod:`ccctl.media.udpmux`). Every such reach is a function here, so that an upgrade of one of them is read
against one file.

:func:`check` verifies once, at ``serve`` start and in each simulator worker, that every private
name used here (:data:`REACHES`) exists with the shape expected, and fails with one line
naming the library and version that changed (:class:`SeamBroken`).
Attributes that objects set on themselves (aiortc's name-mangled ``__rtt``, say) are checked
in the code of their class, which must still assign them, since no object exists yet at start.
"""

from __future__ import annotations

import asyncio
import dis
import importlib
import importlib.metadata
import inspect
import struct
import types
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ccctl.errors import SeamBroken

# -- the peer patch (server subscribers and simulated sites alike) -------------------------------


def _no_estimator() -> None:
    return None


@contextmanager
def lean_peers(certificate: Any) -> Iterator[None]:
    """While building a peer connection and its transceivers (synchronously, no await inside):
    share one DTLS certificate instead of an EC key and X.509 certificate per peer, and give the
    receivers no remote bitrate estimator (1,000 buckets per video receiver that ccctl never
    reads). Together about half of a join's CPU (cProfile)."""
    import aiortc.rtcpeerconnection as pcmod
    import aiortc.rtcrtpreceiver as rxmod

    saved = pcmod.RTCCertificate, rxmod.RemoteBitrateEstimator
    pcmod.RTCCertificate = types.SimpleNamespace(generateCertificate=lambda: certificate)  # type: ignore[misc,assignment]
    rxmod.RemoteBitrateEstimator = _no_estimator  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        pcmod.RTCCertificate, rxmod.RemoteBitrateEstimator = saved  # type: ignore[misc]


# -- aiortc's RTP sender ------------------------------------------------------------------------


def sender_ssrc(sender: Any) -> int:
    """The sender's RTP SSRC."""
    return int(sender._ssrc)


def sender_rtt(sender: Any) -> float | None:
    """aiortc's smoothed round-trip time (seconds) from the site's receiver reports."""
    rtt: float | None = sender._RTCRtpSender__rtt
    return rtt


def sender_counts(sender: Any) -> tuple[int, int]:
    """Packets and payload bytes aiortc's own RTP task sent (the stock path)."""
    return sender._RTCRtpSender__packet_count, sender._RTCRtpSender__octet_count


def sender_remote_stats(sender: Any) -> Any:
    """The sender's statistics objects (its latest ``remote-inbound-rtp`` among them)."""
    return sender._RTCRtpSender__stats.values()


def sender_cname(sender: Any) -> str | None:
    """The CNAME aiortc's sender puts in its SDES."""
    cname: str | None = sender._RTCRtpSender__cname
    return cname


def record_sender_report(sender: Any, ntp: int, rtp: int, packets: int, octets: int, now: float) -> None:
    """Write a sender report we sent into aiortc's sender, as its own RTCP task would: its RTT
    (from the receiver's LSR/DLSR) and ``getStats()`` stay right."""
    sender._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFF_FFFF
    sender._RTCRtpSender__lsr_time = now
    sender._RTCRtpSender__ntp_timestamp = ntp
    sender._RTCRtpSender__rtp_timestamp = rtp
    sender._RTCRtpSender__packet_count = packets
    sender._RTCRtpSender__octet_count = octets


def route_keyframes(sender: Any, request: Callable[[], None]) -> None:
    """PLI/FIR from the site calls ``request`` (stock aiortc only flags its own encoder)."""
    sender._send_keyframe = request


def wrap_rtcp_handler(sender: Any, wrap: Callable[[Callable[[Any], Awaitable[None]]], Callable[[Any], Awaitable[None]]]) -> None:
    """Replace the sender's handler of incoming RTCP with ``wrap(original)``."""
    sender._handle_rtcp_packet = wrap(sender._handle_rtcp_packet)


def park_rtcp(sender: Any) -> None:
    """Before the sender starts: its RTCP task only says BYE at the end (ccctl sends the
    sender reports, see :mod:`ccctl.media.fastpath`)."""
    sender._run_rtcp = lambda: _parked_rtcp(sender)


async def _parked_rtcp(sender: Any) -> None:
    """Stands in for ``RTCRtpSender._run_rtcp``: no timer; BYE and the exit flag on stop."""
    import asyncio

    from aiortc.rtp import RtcpByePacket

    sender._RTCRtpSender__rtcp_started.set()
    try:
        await asyncio.get_running_loop().create_future()  # until the sender stops
    except asyncio.CancelledError:
        pass
    await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])
    sender._RTCRtpSender__rtcp_exited.set()


# -- what the tight fan-out sends on ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendPath:
    """A connected sender's ways out: its SRTP session, the nominated ICE pair's transport (its
    plain socket when asyncio has one) and address, the negotiated codec and extensions."""

    srtp: Any  # pylibsrtp.Session (aiortc's, allows repeats)
    sock: Any  # socket.socket or None
    sendto: Callable[..., None]
    addr: Any
    codec: Any  # RTCRtpCodecParameters
    header_extensions: list[Any]


def send_path(transceiver: Any) -> SendPath:
    """The :class:`SendPath` of a connected transceiver; ConnectionError when ICE/DTLS is not up."""
    sender = transceiver.sender
    dtls = sender.transport
    pair = dtls.transport._connection._nominated.get(1)
    if pair is None or dtls._tx_srtp is None:
        raise ConnectionError("the subscriber's ICE/DTLS is not connected")
    transport = pair.protocol.transport
    return SendPath(dtls._tx_srtp, getattr(transport, "_sock", None), transport.sendto, pair.remote_addr,
                    transceiver._codecs[0], list(transceiver._headerExtensions))


def lean_srtp(session: Any) -> tuple[Any, Any, memoryview, Any, Callable[..., int]] | None:
    """pylibsrtp's context and buffer, to call ``srtp_protect`` without its per-call Python layer
    (context, cdata, buffer, an ``int *`` for the length, and the C function). None (use
    ``protect()``) if pylibsrtp's internals are not what this expects."""
    from pylibsrtp._binding import ffi, lib

    try:
        buffer = memoryview(session._buffer)
        if len(buffer) < 1500:
            return None
        return session._srtp[0], session._cdata, buffer, ffi.new("int *"), lib.srtp_protect
    except (AttributeError, TypeError):
        return None


def h264_payloads(data: bytes) -> tuple[bytes, ...]:
    """An Annex B access unit as RTP payloads (RFC 6184 FU-A/STAP-A), by aiortc's packetiser."""
    from aiortc.codecs.h264 import H264Encoder

    return tuple(H264Encoder._packetize(H264Encoder._split_bitstream(data)))


def ice_host_addresses() -> list[str]:
    """The addresses aioice gathers host candidates on (as pinned by ``ccctl.media.net``)."""
    import aioice.ice

    return list(aioice.ice.get_host_addresses(True, True))


# -- aiortc's RTP receiver and aioice's connection (the simulator's counting) --------------------


def replace_rtp_handler(receiver: Any, handler: Callable[[Any, int], Awaitable[None]]) -> dict[int, Any]:
    """Every RTP packet the receiver decrypts goes to ``handler(packet, arrival_ms)``; returns the
    receiver's per-SSRC statistics (what its receiver reports are made from), to keep filling."""
    receiver._handle_rtp_packet = handler
    streams: dict[int, Any] = receiver._RTCRtpReceiver__remote_streams
    return streams


def wrap_ice_data(connection: Any, wrap: Callable[[Callable[[bytes, int], None]], Callable[[bytes, int], None]]) -> None:
    """Every datagram the aioice connection takes in goes to ``wrap(original)(data, component)``
    (before DTLS and SRTP see it)."""
    connection.data_received = wrap(connection.data_received)


def shared_certificate() -> Any:
    """A new DTLS certificate for many peers (:func:`lean_peers`): its fingerprints computed
    once, not once per peer's offer or answer."""
    from aiortc import RTCCertificate

    certificate = RTCCertificate.generateCertificate()
    fingerprints = certificate.getFingerprints()
    certificate.getFingerprints = lambda: fingerprints  # type: ignore[method-assign]  # same cert: same digests
    return certificate


def ice_sockets(connection: Any) -> list[Any]:
    """The UDP sockets of an aioice connection's candidates."""
    return [p.transport.get_extra_info("socket") for p in connection._protocols if p.transport is not None]


# -- aioice's address lookup and consent checks, aiortc's closed flag (ccctl.media.net) ------------


def host_address_lookup() -> Callable[[bool, bool], list[str]]:
    """aioice's current lookup of the addresses it gathers host candidates on."""
    import aioice.ice

    lookup: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
    return lookup


def replace_host_address_lookup(lookup: Callable[[bool, bool], list[str]]) -> None:
    """Make aioice gather host candidates on ``lookup(use_ipv4, use_ipv6)`` (for this process)."""
    import aioice.ice

    aioice.ice.get_host_addresses = lookup  # type: ignore[assignment]


def ice_connection(ice_transport: Any) -> Any:
    """The aioice connection of an ``RTCIceTransport`` (None if it has none)."""
    return getattr(ice_transport, "_connection", None)


def replace_consent_check(connection: Any, check: Callable[[], Awaitable[None]]) -> None:
    """Run ``check()`` instead of aioice's consent freshness task on ``connection``."""
    connection.query_consent = check


def consent_request(connection: Any, pair: Any) -> Any:
    """A STUN binding request for a consent check on ``pair`` (not nominating)."""
    return connection.build_request(pair, nominate=False)


def nominated_pairs(connection: Any) -> list[Any]:
    """The connection's nominated candidate pairs (one per component)."""
    return list(connection._nominated.values())


def forget_consent_task(connection: Any) -> None:
    """Make ``connection.close()`` not cancel the consent task (the task is closing it)."""
    connection._query_consent_task = None


def mark_closed(pc: Any) -> None:
    """Resolve aiortc's private "closed" future of a peer connection whose ``close()`` failed,
    so that a later ``close()`` does not wait for it forever."""
    closed = getattr(pc, "_RTCPeerConnection__isClosed", None)
    if isinstance(closed, asyncio.Future) and not closed.done():
        closed.set_result(True)


# -- one UDP port for many ICE connections (ccctl.media.udpmux) ------------------------------------


def component_gathering() -> Callable[..., Awaitable[list[Any]]]:
    """aioice's current gathering of one component's candidates (``Connection`` method)."""
    import aioice.ice

    gather: Callable[..., Awaitable[list[Any]]] = aioice.ice.Connection.get_component_candidates
    return gather


def replace_component_gathering(gather: Callable[..., Awaitable[list[Any]]]) -> None:
    """Make every aioice connection gather a component's candidates with
    ``gather(connection, component, addresses, timeout)`` (for this process)."""
    import aioice.ice

    aioice.ice.Connection.get_component_candidates = gather  # type: ignore[method-assign,assignment]


def host_only(connection: Any) -> bool:
    """Whether an aioice connection gathers host candidates only, for one component (no STUN or
    TURN server, RTCP muxed: aiortc's way): what a shared port can serve."""
    return (connection.stun_server is None and connection.turn_server is None
            and connection._components == {1})


def ice_credentials(connection: Any) -> tuple[str, str]:
    """An aioice connection's local ufrag and password."""
    return str(connection.local_username), str(connection.local_password)


def stun_protocol(connection: Any, transport: Any, component: int, host: str, port: int) -> Any:
    """An aioice ``StunProtocol`` of ``connection`` sending through ``transport``, with the
    host candidate ``host:port`` of ``component`` (as ``get_component_candidates`` makes one)."""
    from aioice.candidate import Candidate, candidate_foundation, candidate_priority
    from aioice.ice import StunProtocol

    protocol = StunProtocol(connection)
    protocol.connection_made(transport)
    protocol.local_candidate = Candidate(
        foundation=candidate_foundation("host", "udp", host), component=component, transport="udp",
        priority=candidate_priority(component, "host"), host=host, port=port, type="host")
    return protocol


def add_ice_protocol(connection: Any, protocol: Any) -> None:
    """Count ``protocol`` among the connection's own (it pairs, checks and closes it)."""
    connection._protocols.append(protocol)


def protocol_candidate(protocol: Any) -> Any:
    """The local candidate of an aioice ``StunProtocol``."""
    return protocol.local_candidate


def parse_stun(data: bytes) -> Any:
    """aioice's parse of a STUN message, or None when it is malformed (its parser raises
    ValueError on most bad input, struct.error or IndexError on some truncated attributes)."""
    from aioice import stun

    try:
        return stun.parse_message(data)
    except (ValueError, struct.error, IndexError, KeyError, TypeError):
        return None


def stun_class(message: Any) -> str:
    """``request``, ``response`` (success or error) or ``indication``."""
    from aioice import stun

    if message.message_class == stun.Class.REQUEST:
        return "request"
    if message.message_class in (stun.Class.RESPONSE, stun.Class.ERROR):
        return "response"
    return "indication"


def stun_username(message: Any) -> str | None:
    """The USERNAME of a STUN message (None without one)."""
    username = message.attributes.get("USERNAME")
    return username if isinstance(username, str) else None


def stun_transaction(message: Any) -> bytes:
    """A STUN message's transaction id."""
    return bytes(message.transaction_id)


def stun_authentic(message: Any, key: bytes) -> bool:
    """Whether a STUN message carries a MESSAGE-INTEGRITY that checks with ``key``."""
    return "MESSAGE-INTEGRITY" in message.attributes and bool(message.check_message_integrity(key))


# -- the SRTP keys of a DTLS session (ccctl.media.native) -----------------------------------------


def srtp_tx_key(dtls: Any) -> tuple[int, bytes]:
    """The negotiated SRTP profile (libsrtp's number) and our sending master key and salt,
    exported again from the DTLS session with aiortc's own label, lengths and role split
    (``RTCDtlsTransport._setup_srtp``); ConnectionError when no profile was negotiated."""
    ssl = dtls._ssl
    chosen = ssl.get_selected_srtp_profile()
    profile = next((p for p in dtls._srtp_profiles if p.openssl_profile == chosen), None)
    if profile is None:
        raise ConnectionError(f"no SRTP profile negotiated ({chosen!r})")
    view = ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length))
    return profile.libsrtp_profile, profile.get_key_and_salt(view, 1 if dtls._role == "server" else 0)


# -- the check at start --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reach:
    """One private name ccctl relies on: ``owner`` (``module`` or ``module:Class``) has ``name``;
    ``kind`` is ``attr`` (present now), ``callable`` (present and callable, with at least
    ``arity`` positional parameters), ``field`` (assigned by the class's own code) or
    ``declared`` (a field its annotations declare: a dataclass's)."""

    library: str
    owner: str
    name: str
    kind: str = "attr"
    arity: int = 0


REACHES: tuple[Reach, ...] = (
    # lean_peers
    Reach("aiortc", "aiortc.rtcpeerconnection", "RTCCertificate"),
    Reach("aiortc", "aiortc.rtcrtpreceiver", "RemoteBitrateEstimator"),
    Reach("aiortc", "aiortc.rtcdtlstransport:RTCCertificate", "generateCertificate", "callable"),
    # the sender
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_ssrc", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_RTCRtpSender__rtt", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_RTCRtpSender__packet_count", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_RTCRtpSender__octet_count", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_RTCRtpSender__stats", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_RTCRtpSender__cname", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_RTCRtpSender__lsr", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_RTCRtpSender__lsr_time", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_RTCRtpSender__ntp_timestamp", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_RTCRtpSender__rtp_timestamp", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_RTCRtpSender__rtcp_started", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_RTCRtpSender__rtcp_exited", "field"),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_send_keyframe", "callable", 1),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_handle_rtcp_packet", "callable", 2),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_run_rtcp", "callable", 1),
    Reach("aiortc", "aiortc.rtcrtpsender:RTCRtpSender", "_send_rtcp", "callable", 2),
    # the send path
    Reach("aiortc", "aiortc.rtcdtlstransport:RTCDtlsTransport", "_tx_srtp", "field"),
    Reach("aiortc", "aiortc.rtcdtlstransport:RTCDtlsTransport", "_ssl", "field"),
    Reach("aiortc", "aiortc.rtcdtlstransport:RTCDtlsTransport", "_role", "field"),
    Reach("aiortc", "aiortc.rtcdtlstransport:RTCDtlsTransport", "_srtp_profiles", "field"),
    Reach("aiortc", "aiortc.rtcdtlstransport:SRTPProtectionProfile", "get_key_and_salt", "callable", 3),
    Reach("aiortc", "aiortc.rtcdtlstransport:SRTPProtectionProfile", "libsrtp_profile", "declared"),
    Reach("aiortc", "aiortc.rtcdtlstransport:SRTPProtectionProfile", "openssl_profile", "declared"),
    Reach("aiortc", "aiortc.rtcdtlstransport:SRTPProtectionProfile", "key_length", "declared"),
    Reach("aiortc", "aiortc.rtcdtlstransport:SRTPProtectionProfile", "salt_length", "declared"),
    Reach("aiortc", "aiortc.rtcicetransport:RTCIceTransport", "_connection", "field"),
    Reach("aiortc", "aiortc.rtcrtptransceiver:RTCRtpTransceiver", "_codecs", "field"),
    Reach("aiortc", "aiortc.rtcrtptransceiver:RTCRtpTransceiver", "_headerExtensions", "field"),
    Reach("aiortc", "aiortc.rtcpeerconnection:RTCPeerConnection", "_RTCPeerConnection__isClosed", "field"),
    Reach("aiortc", "aiortc.codecs.h264:H264Encoder", "_packetize", "callable", 1),
    Reach("aiortc", "aiortc.codecs.h264:H264Encoder", "_split_bitstream", "callable", 1),
    Reach("aioice", "aioice.ice:Connection", "_nominated", "field"),
    Reach("aioice", "aioice.ice:Connection", "_protocols", "field"),
    Reach("aioice", "aioice.ice:Connection", "_query_consent_task", "field"),
    Reach("aioice", "aioice.ice:Connection", "query_consent", "callable", 1),
    Reach("aioice", "aioice.ice:Connection", "build_request", "callable", 3),
    Reach("aioice", "aioice.ice:Connection", "data_received", "callable", 3),
    Reach("aioice", "aioice.ice", "get_host_addresses", "callable", 2),
    Reach("aioice", "aioice.ice:StunProtocol", "request", "callable", 3),
    # the shared UDP port (ccctl.media.udpmux)
    Reach("aioice", "aioice.ice:Connection", "get_component_candidates", "callable", 3),
    Reach("aioice", "aioice.ice:Connection", "stun_server", "field"),
    Reach("aioice", "aioice.ice:Connection", "turn_server", "field"),
    Reach("aioice", "aioice.ice:Connection", "_components", "field"),
    Reach("aioice", "aioice.ice:Connection", "local_username"),
    Reach("aioice", "aioice.ice:Connection", "local_password"),
    Reach("aioice", "aioice.ice:StunProtocol", "connection_made", "callable", 2),
    Reach("aioice", "aioice.ice:StunProtocol", "connection_lost", "callable", 2),
    Reach("aioice", "aioice.ice:StunProtocol", "datagram_received", "callable", 3),
    Reach("aioice", "aioice.ice:StunProtocol", "local_candidate", "declared"),
    Reach("aioice", "aioice.candidate", "candidate_foundation", "callable", 3),
    Reach("aioice", "aioice.candidate", "candidate_priority", "callable", 2),
    Reach("aioice", "aioice.stun", "parse_message", "callable", 1),
    Reach("aioice", "aioice.stun:Message", "check_message_integrity", "callable", 2),
    Reach("pylibsrtp", "pylibsrtp:Session", "_buffer", "field"),
    Reach("pylibsrtp", "pylibsrtp:Session", "_srtp", "field"),
    Reach("pylibsrtp", "pylibsrtp:Session", "_cdata", "field"),
    Reach("pylibsrtp", "pylibsrtp._binding", "lib"),
    Reach("pylibsrtp", "pylibsrtp._binding", "ffi"),
    Reach("pylibsrtp", "pylibsrtp:Policy", "allow_repeat_tx"),
    # the simulator's receiver
    Reach("aiortc", "aiortc.rtcrtpreceiver:RTCRtpReceiver", "_handle_rtp_packet", "callable", 3),
    Reach("aiortc", "aiortc.rtcrtpreceiver:RTCRtpReceiver", "_RTCRtpReceiver__remote_streams", "field"),
)


def _assigned_names(cls: type) -> set[str]:
    """Every attribute name the code of ``cls`` (and its bases, nested functions included)
    assigns (``x.name = ...``)."""
    names: set[str] = set()
    pending: list[types.CodeType] = []
    for klass in cls.__mro__:
        for value in vars(klass).values():
            func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if isinstance(func, types.FunctionType):
                pending.append(func.__code__)
    while pending:
        code = pending.pop()
        names.update(i.argval for i in dis.get_instructions(code) if i.opname == "STORE_ATTR")
        pending.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return names


def _problem(reach: Reach) -> str | None:
    """What is wrong with one reach (None: as expected)."""
    module_name, _, class_name = reach.owner.partition(":")
    try:
        owner: Any = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name)
    except (ImportError, AttributeError):
        return f"{reach.owner.replace(':', '.')} is gone"
    where = f"{reach.owner.replace(':', '.')}.{reach.name}"
    if reach.kind == "field":
        return None if reach.name in _assigned_names(owner) else f"{where} is no longer set"
    if reach.kind == "declared":
        declared = {n for k in getattr(owner, "__mro__", ()) for n in vars(k).get("__annotations__", {})}
        return None if reach.name in declared else f"{where} is no longer declared"
    if not hasattr(owner, reach.name):
        return f"{where} is gone"
    value = getattr(owner, reach.name)
    if reach.kind == "callable":
        if not callable(value):
            return f"{where} is no longer callable"
        try:
            params = [p for p in inspect.signature(value).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):  # a builtin without a signature: callable is all we know
            return None
        if len(params) < reach.arity:
            return f"{where} now takes {len(params)} arguments, not {reach.arity}"
    return None


def version(library: str) -> str:
    """The installed version of ``library`` (``?`` if its metadata is missing)."""
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def check(reaches: tuple[Reach, ...] = REACHES) -> None:
    """Verify every private name ccctl reaches into; SeamBroken (one line naming the library,
    its version and what changed) on the first that is not as expected."""
    for reach in reaches:
        problem = _problem(reach)
        if problem is not None:
            raise SeamBroken(f"{reach.library} {version(reach.library)} changed: {problem}; "
                             f"ccctl needs the version setup.cfg pins (see ccctl/media/seam.py)")
