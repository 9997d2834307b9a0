"""Simulated sites joining a broadcast: cheap aiortc WHEP receivers that only count packets.

A :class:`SimReceiver` does what the join page does: a recvonly offer POSTed to
``/whep/{site}`` with the site's token, the answer applied, and, when the session fails, is
closed by the server or goes silent, a rejoin with growing, jittered backoff (so thousands
of sites coming back after a server restart do not all knock at the same instant); a 503
(no broadcast, or the core is full) is retried no sooner than its ``Retry-After``, jittered. A
refused token (401/403) or an unknown or disabled site (404) is final: the receiver stops
and reports it, as a real site would need a new link.

Receivers are cheap so that thousands fit on a small machine: every peer connection
gathers ICE on its site's own loopback address only and bundles audio and video on one
transport; the peers of one process share one DTLS certificate (aiortc makes an EC key and
an X.509 certificate per connection otherwise; the server still checks each fingerprint and
runs each handshake) and have no remote bitrate estimator (unused here); media is never
depacketized or decoded. Two ways to count:

* ``sample == 1``: each RTP packet is decrypted and parsed by aiortc and then only counted
  and fed to the RTCP statistics, so the site sends real receiver reports (loss, jitter)
  and the server's per-site figures stay meaningful. About 50 us of CPU a packet.
* ``sample == K > 1``: a kernel socket filter lets through one RTP packet in K (chosen at
  random) and drops the rest unread; the counts are scaled estimates and no receiver
  reports are sent. ICE, DTLS and RTCP from the server pass untouched. This is what lets
  2,594 receivers run beside the server on two cores.

Media faults, from a ``--faults`` spec: ``loss:PCT`` drops that share of the packets before
they are counted (the receiver reports then show it) and ``bwcap:KBPS`` polices the link,
dropping what exceeds the cap.

:class:`ReceiverPool` runs a shard of receivers in one process and writes their status to
a JSON file every second, which ``ccctl sim status`` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import random
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiortc import RTCCertificate, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.sdp import SessionDescription

from ccctl.limits import raise_nofile_limit
from ccctl.media.net import gather_only_on, ice_connections, patient_consent
from ccctl.media.seam import ice_sockets, lean_peers, replace_rtp_handler, shared_certificate, wrap_ice_data
from ccctl.media.tls import ServerTrust
from ccctl.sim.faults import BWCAP, LOSS, Fault

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 45.0  # from the POST until ICE and DTLS are up
HTTP_TIMEOUT_S = 60.0
MEDIA_TIMEOUT_S = 10.0  # connected but no packet for this long: the session is dead
RECEIVING_WINDOW_S = 5.0  # a packet within this window counts as "receiving"
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 10.0
RETRY_AFTER_MAX_S = 300.0  # a longer Retry-After is taken as this
MAX_ATTEMPTS = 1000  # bounded, like the join page: about three hours of retries
STATUS_INTERVAL_S = 1.0
LEAVE_TIMEOUT_S = 5.0
CLOSE_GRACE_S = 10.0  # then receivers still busy with a slow server are cancelled
CLOCK_RATES = {"audio": 48_000, "video": 90_000}

# States of a receiver, as ``sim status`` shows them.
JOINING = "joining"
CONNECTED = "connected"
RETRYING = "retrying"
REFUSED = "refused"
LEFT = "left"
STATES = (JOINING, CONNECTED, RETRYING, REFUSED, LEFT)

_SO_ATTACH_FILTER = 26  # Linux; the socket module does not name it
_SKF_AD_RANDOM = -0x1000 + 56


@dataclass(frozen=True)
class ReceiverSpec:
    """One simulated site's receiver: who it is, its token, where its ICE lives."""

    site_id: str
    token: str
    tier: str = "high"
    host: str = "127.0.0.1"
    kinds: tuple[str, ...] = ("audio", "video")
    fault: Fault | None = None


class Refused(Exception):
    """The server will never take this site with this token (401/403/404)."""


class JoinFailed(Exception):
    """This attempt failed for a reason worth retrying; ``reason`` is its short name."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.retry_after = retry_after


def sampling_filter(sample: int) -> bytes:
    """A classic BPF program (``struct sock_filter[]``) for a UDP socket that passes STUN,
    DTLS and RTCP untouched and one RTP packet in ``sample``, at random.

    At filter time a UDP socket's packet starts at the UDP header, so the payload's first
    byte is at offset 8. RTP/RTCP have version 2 (first byte 128..191); RTCP packet types
    sit at 192..223 in the second byte (RFC 5761).
    """

    def ins(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)

    ldb, ldw, jge, jeq, mod, ret = 0x30, 0x20, 0x35, 0x15, 0x94, 0x06
    return b"".join([
        ins(ldb, 0, 0, 8),                 # 0  A = first payload byte
        ins(jge, 0, 7, 128),               # 1  below 128 (STUN, DTLS): accept
        ins(jge, 6, 0, 192),               # 2  192 and up: not RTP, accept
        ins(ldb, 0, 0, 9),                 # 3  A = marker bit + payload type
        ins(jge, 0, 1, 192),               # 4  below 192: RTP, sample it
        ins(jge, 0, 3, 224),               # 5  192..223: RTCP, accept
        ins(ldw, 0, 0, _SKF_AD_RANDOM),    # 6  A = random
        ins(mod, 0, 0, sample),            # 7  A %= sample
        ins(jeq, 0, 1, 0),                 # 8  zero: accept, else drop
        ins(ret, 0, 0, 0xFFFFFFFF),        # 9  accept
        ins(ret, 0, 0, 0),                 # 10 drop
    ])


def attach_filter(sock: Any, program: bytes) -> None:
    """Attach a classic BPF ``program`` to ``sock`` (the kernel copies it)."""
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


class LinkShaper:
    """The media faults of one site: spread loss and a policed bandwidth cap.

    Loss is spread evenly by error diffusion from an offset seeded by the site id, so
    ``loss:5`` drops 5 of every 100 packets, the same ones on every run; the cap is a token
    bucket of half a second that drops what does not fit.
    """

    def __init__(self, site_id: str, fault: Fault | None, clock: Callable[[], float] = time.monotonic) -> None:
        kind = fault.kind if fault else None
        self.loss_pct = float(fault.arg or 0) if fault is not None and kind == LOSS else 0.0
        self.rate = float(fault.arg or 0) * 125.0 if fault is not None and kind == BWCAP else 0.0  # bytes/s
        self._acc = float(int.from_bytes(hashlib.sha256(site_id.encode()).digest()[:4], "big") % 100)
        self._clock = clock
        self._tokens = self.rate / 2
        self._at = clock()
        self.active = bool(self.loss_pct or self.rate)

    def drop(self, size: int) -> bool:
        """True when this packet of ``size`` bytes is lost on the site's link."""
        if self.loss_pct:
            self._acc += self.loss_pct
            if self._acc >= 100:
                self._acc -= 100
                return True
        if self.rate:
            now = self._clock()
            self._tokens = min(self.rate / 2, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if size > self._tokens:
                return True
            self._tokens -= size
        return False


@dataclass
class ReceiverStats:
    """What one receiver saw: its state, packets and bytes per kind, joins, failures."""

    state: str = JOINING
    packets: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    bytes: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    joins: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    first_join_s: float | None = None  # from the receiver's start to its first connected session
    first_connected_at: float | None = None  # time.time() of that moment
    last_join_s: float | None = None  # POST to connected, of the latest session
    last_packet: float = 0.0  # time.monotonic() of the latest counted packet
    kinds: tuple[str, ...] = ()  # what the server answered with (audio, video)

    def fail(self, reason: str, detail: str = "") -> None:
        """Count one failed or ended session under ``reason``."""
        self.failures[reason] = self.failures.get(reason, 0) + 1
        self.last_error = f"{reason}: {detail}" if detail else reason


class SimReceiver:
    """One simulated site's WHEP session, rejoined until stopped (see the module doc)."""

    def __init__(self, spec: ReceiverSpec, server: str, http: aiohttp.ClientSession, *, sample: int = 1,
                 media_timeout: float = MEDIA_TIMEOUT_S, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.spec = spec
        self.server = server.rstrip("/")
        self.http = http
        self.sample = max(1, int(sample))
        self.media_timeout = media_timeout
        self.connect_timeout = connect_timeout
        self.stats = ReceiverStats()
        self._shaper = LinkShaper(spec.site_id, spec.fault)
        self._rng = random.Random(spec.site_id)
        self._pc: RTCPeerConnection | None = None
        self._location: str | None = None
        self._started = time.monotonic()

    # -- the loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Join, stay, rejoin with backoff after a failure, until ``stop`` or a refusal."""
        attempt = 0
        try:
            while not stop.is_set() and attempt < MAX_ATTEMPTS:
                retry_after: float | None = None
                try:
                    stayed = await self._session(stop)
                except Refused as exc:
                    self.stats.state = REFUSED
                    self.stats.fail("refused", str(exc))
                    return
                except JoinFailed as exc:
                    self.stats.fail(exc.reason, str(exc) if str(exc) != exc.reason else "")
                    retry_after, stayed = exc.retry_after, 0.0
                except Exception as exc:  # e.g. aiortc refusing an answer: a site keeps trying
                    self.stats.fail("error", f"{type(exc).__name__}: {exc}")
                    stayed = 0.0
                finally:
                    await self._close_pc()
                if stop.is_set():
                    break
                attempt = 1 if stayed > BACKOFF_MAX_S else attempt + 1  # a long session resets the backoff
                self.stats.state = RETRYING
                delay = retry_delay(attempt, retry_after, self._rng)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            if self.stats.state != REFUSED:
                self.stats.state = LEFT

    async def _session(self, stop: asyncio.Event) -> float:
        """One session: offer, answer, connect, receive until it ends; seconds it was up.

        Raises Refused or JoinFailed when it cannot start; a session that ends after it was
        up counts its reason in the stats and returns normally.
        """
        from ccctl.edges.simsite import ask_edge, edge_session  # edges: play from one when ccctl says so

        if (where := await ask_edge(self)) is not None:
            return await edge_session(self, where, stop)
        self.stats.state = JOINING if not self.stats.joins else RETRYING
        pc = lean_peer(self.spec.kinds)
        self._pc = pc
        changed = asyncio.Event()
        pc.on("connectionstatechange", changed.set)
        with gather_only_on(self.spec.host):
            await pc.setLocalDescription(await pc.createOffer())
        posted = time.monotonic()
        answer = await self._post(pc.localDescription.sdp)
        self._install_counters(pc, answer)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        if not await self._until_connected(pc, changed, stop):
            await self._leave()  # told to leave while connecting
            return 0.0
        up = time.monotonic()
        self.stats.joins += 1
        self.stats.last_join_s = up - posted
        if self.stats.first_join_s is None:
            self.stats.first_join_s = up - self._started
            self.stats.first_connected_at = time.time()
        self.stats.state = CONNECTED
        self.stats.last_packet = max(self.stats.last_packet, up)  # the media timeout runs from here
        reason = await self._until_ended(pc, changed, stop)
        if reason is not None:
            self.stats.fail(reason)
        else:
            await self._leave()
        return time.monotonic() - up

    async def _post(self, offer: str) -> str:
        """POST the offer to the site's WHEP URL; the answer, or Refused/JoinFailed."""
        url = f"{self.server}/whep/{quote(self.spec.site_id, safe='')}"
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {self.spec.token}"}
        try:
            async with self.http.post(url, data=offer, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as response:
                text = await response.text()
                if response.status == 201:
                    location = response.headers.get("Location")
                    self._location = f"{self.server}{location}" if location and location.startswith("/") else location
                    return text
                first = text.strip().splitlines()[0] if text.strip() else response.reason or ""
                if response.status in (401, 403):
                    raise Refused(f"HTTP {response.status}: {first}")
                if response.status == 404:
                    raise Refused(f"HTTP 404: {first}")
                if response.status == 503:  # no broadcast, or the core is full: come back as told
                    reason = "no_broadcast" if "no live broadcast" in first else "http_503"
                    raise JoinFailed(reason, first, parse_retry_after(response.headers.get("Retry-After")))
                raise JoinFailed(f"http_{response.status}", first)
        except TimeoutError:  # before OSError, its base; aiohttp's timeouts are TimeoutErrors too
            raise JoinFailed("http_timeout") from None
        except aiohttp.ServerFingerprintMismatch as exc:  # not the pinned certificate: nothing was sent
            seen = ":".join(f"{b:02X}" for b in exc.got)
            raise JoinFailed("tls_refused", f"certificate SHA256 {seen} is not the pinned one") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise JoinFailed("tls_refused", str(exc.certificate_error)) from None
        except aiohttp.ClientConnectorError as exc:
            raise JoinFailed("server_down", type(exc).__name__) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise JoinFailed("http_error", type(exc).__name__) from None

    async def _until_connected(self, pc: RTCPeerConnection, changed: asyncio.Event, stop: asyncio.Event) -> bool:
        """Wait for ICE and DTLS; False when stopped, JoinFailed when it fails or times out."""
        deadline = time.monotonic() + self.connect_timeout
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise JoinFailed("ice_failed", pc.connectionState)
            if stop.is_set():
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JoinFailed("connect_timeout")
            changed.clear()
            await _wait_any(changed, stop, remaining)
        return True

    async def _until_ended(self, pc: RTCPeerConnection, changed: asyncio.Event, stop: asyncio.Event) -> str | None:
        """Stay until the session ends; its reason, or None when we were told to leave."""
        while True:
            if stop.is_set():
                return None
            if pc.connectionState in ("failed", "closed"):
                return f"session_{pc.connectionState}"
            silent_for = time.monotonic() - self.stats.last_packet
            if silent_for >= self.media_timeout:
                return "media_timeout"
            changed.clear()
            await _wait_any(changed, stop, self.media_timeout - silent_for)

    async def _leave(self) -> None:
        """DELETE the session, as the join page does when it is closed (best effort)."""
        location, self._location = self._location, None
        if location is None:
            return
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with self.http.delete(location, headers={"Authorization": f"Bearer {self.spec.token}"},
                                        timeout=aiohttp.ClientTimeout(total=LEAVE_TIMEOUT_S)):
                pass

    async def _close_pc(self) -> None:
        pc, self._pc = self._pc, None
        self._location = None
        if pc is not None:
            with contextlib.suppress(Exception):  # closing a half-made connection must not stop the loop
                await pc.close()

    # -- counting -----------------------------------------------------------------------------
    def _install_counters(self, pc: RTCPeerConnection, answer: str) -> None:
        """Hook the counting into this connection before its ICE starts (see the module doc)."""
        try:
            media = SessionDescription.parse(answer).media
        except Exception:  # the server's answer is checked again by setRemoteDescription
            media = []
        self.stats.kinds = tuple(m.kind for m in media if m.direction in ("sendonly", "sendrecv"))
        transceivers = pc.getTransceivers()
        if self.sample == 1:
            for transceiver in transceivers:
                self._exact_counter(transceiver.receiver, transceiver.kind)
            return
        kinds = {codec.payloadType: m.kind for m in media for codec in m.rtp.codecs if codec.payloadType is not None}
        program = sampling_filter(self.sample)
        for conn in ice_connections(pc):
            for sock in ice_sockets(conn):
                if sock is not None:
                    attach_filter(sock, program)
            wrap_ice_data(conn, functools.partial(self._sampled_counter, kinds=kinds))

    def _exact_counter(self, receiver: RTCRtpReceiver, kind: str) -> None:
        """Every RTP packet ``receiver`` decrypts is counted, and its RTCP statistics kept."""
        stats = self.stats
        streams: dict[int, StreamStatistics] = {}
        clock_rate = CLOCK_RATES.get(kind, 90_000)
        shaper = self._shaper

        async def count(packet: Any, arrival_time_ms: int) -> None:
            size = len(packet.payload)
            if shaper.active and shaper.drop(size):
                return
            stats.packets[kind] += 1
            stats.bytes[kind] += size
            stats.last_packet = time.monotonic()
            stream = streams.get(packet.ssrc)
            if stream is None:
                stream = streams[packet.ssrc] = StreamStatistics(clock_rate)
            stream.add(packet)

        streams = replace_rtp_handler(receiver, count)

    def _sampled_counter(self, forward: Callable[[bytes, int], None], kinds: dict[int, str]) -> Callable[[bytes, int], None]:
        """Replaces the ICE connection's ``data_received``: RTP is counted (scaled) and dropped."""
        stats, sample, shaper = self.stats, self.sample, self._shaper

        def received(data: bytes, component: int) -> None:
            if len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
                kind = kinds.get(data[1] & 0x7F)
                if kind is not None and not (shaper.active and shaper.drop(len(data))):
                    stats.packets[kind] += sample
                    stats.bytes[kind] += (len(data) - 12) * sample
                    stats.last_packet = time.monotonic()
                return
            forward(data, component)

        return received

    # -- status -------------------------------------------------------------------------------
    def row(self, now: float) -> dict[str, Any]:
        """This receiver's status row (stable snake_case keys)."""
        s = self.stats
        return {"site_id": self.spec.site_id, "tier": self.spec.tier, "state": s.state,
                "receiving": self.receiving(now), "kinds": ",".join(s.kinds),
                "packets_audio": s.packets["audio"], "packets_video": s.packets["video"],
                "bytes_audio": s.bytes["audio"], "bytes_video": s.bytes["video"], "joins": s.joins,
                "first_join_s": _round(s.first_join_s), "last_join_s": _round(s.last_join_s),
                "first_connected_at": s.first_connected_at,
                "failures": dict(s.failures), "last_error": s.last_error}

    def receiving(self, now: float) -> bool:
        """Connected, with a packet counted within the last few seconds."""
        return self.stats.state == CONNECTED and now - self.stats.last_packet < RECEIVING_WINDOW_S


_certificate: RTCCertificate | None = None


def lean_peer(kinds: tuple[str, ...]) -> RTCPeerConnection:
    """A bundled recvonly peer connection for ``kinds``, built with this process's shared DTLS
    certificate and without remote bitrate estimators (:func:`ccctl.media.seam.lean_peers`)."""
    global _certificate
    if _certificate is None:
        _certificate = shared_certificate()
    with lean_peers(_certificate):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        for kind in kinds:
            pc.addTransceiver(kind, direction="recvonly")
    patient_consent(pc)  # as a browser: consent ends 30 s after the last answer, not 6 late ones
    return pc


def https_check(trust: ServerTrust | None) -> aiohttp.Fingerprint | ssl.SSLContext:
    """What aiohttp checks an https server with: the pinned certificate's fingerprint (a
    self-signed server of this installation), else ``trust``'s CA file or the system's store."""
    trust = trust or ServerTrust()
    if trust.fingerprint:
        return aiohttp.Fingerprint(bytes.fromhex(trust.fingerprint.replace(":", "")))
    return trust.context()


def retry_delay(attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Seconds before rejoin ``attempt``: a growing backoff with jitter, and never sooner than
    the server's ``Retry-After`` (spread over up to half as long again, so that the sites
    it refused together do not all come back at the same instant)."""
    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * attempt) * rng.uniform(0.5, 1.5)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX_S) * rng.uniform(1.0, 1.5))
    return delay


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (RFC 9110 section 10.2.3); an HTTP date or nonsense: None."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86_400 else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def _wait_any(event: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` or ``stop`` is set, or ``timeout`` passes."""
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class ReceiverPool:
    """A shard of receivers in this process, with a status file refreshed every second."""

    def __init__(self, specs: list[ReceiverSpec], server: str, status_path: Path | None = None, *,
                 sample: int = 1, media_timeout: float = MEDIA_TIMEOUT_S, trust: ServerTrust | None = None) -> None:
        self.specs = specs
        self.server = server
        self.trust = trust  # how an https server's certificate is checked (None: the system's store)
        self.status_path = status_path
        self.sample = sample
        self.media_timeout = media_timeout
        self.receivers: list[SimReceiver] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Start every receiver at once (they join concurrently) and the status writer."""
        raise_nofile_limit()
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, force_close=False,
                                                                          ssl=https_check(self.trust)),
                                           trust_env=False)
        self.receivers = [SimReceiver(spec, self.server, self._http, sample=self.sample,
                                      media_timeout=self.media_timeout) for spec in self.specs]
        self._tasks = [asyncio.create_task(r.run(self._stop), name=f"receiver-{r.spec.site_id}")
                       for r in self.receivers]
        if self.status_path is not None:
            self._tasks.append(asyncio.create_task(self._write_status_loop(), name="receiver-status"))

    async def close(self) -> None:
        """Every receiver leaves (DELETE, close); the last status is written.

        A receiver still waiting on a slow server after ``CLOSE_GRACE_S`` is cancelled (its
        connection is still closed, which ends its session by DTLS close_notify)."""
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=CLOSE_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        self.write_status()

    def summary(self) -> dict[str, Any]:
        """Counts across the pool: states, receiving, packets/bytes per kind, joins, failures."""
        now = time.monotonic()
        states = dict.fromkeys(STATES, 0)
        failures: dict[str, int] = {}
        packets = {"audio": 0, "video": 0}
        byte_counts = {"audio": 0, "video": 0}
        joins = receiving = 0
        for r in self.receivers:
            s = r.stats
            states[s.state] += 1
            receiving += r.receiving(now)
            joins += s.joins
            for kind in packets:
                packets[kind] += s.packets[kind]
                byte_counts[kind] += s.bytes[kind]
            for reason, n in s.failures.items():
                failures[reason] = failures.get(reason, 0) + n
        return {"receivers": len(self.receivers), "states": states, "receiving": receiving, "joins": joins,
                "packets": packets, "bytes": byte_counts, "failures": failures, "sample": self.sample}

    def write_status(self) -> None:
        """Write the status file atomically (summary and one row per site)."""
        if self.status_path is None:
            return
        now = time.monotonic()
        data = {"pid": os.getpid(), "updated_at": time.time(), **self.summary(),
                "sites": [r.row(now) for r in self.receivers]}
        tmp = self.status_path.with_name(self.status_path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.status_path)

    async def _write_status_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.write_status()
            except OSError:
                log.exception("cannot write %s", self.status_path)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), STATUS_INTERVAL_S)


def specs_from_plan(plan: dict[str, Any]) -> list[ReceiverSpec]:
    """The receiver specs of a shard's plan (see ``ccctl.sim.control.plan_receivers``)."""
    from ccctl.sim.faults import parse_fault

    return [ReceiverSpec(r["site_id"], r["token"], r["tier"], r["host"], tuple(r["kinds"]),
                         parse_fault(r["fault"]) if r.get("fault") else None)
            for r in plan["receivers"]]
