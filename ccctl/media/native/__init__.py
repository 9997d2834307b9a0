"""The native batched send of the tight fan-out path (``fanout.c``, a CPython C extension).

Per packetised unit the Python path (:class:`~ccctl.media.fastpath.Forwarder`) runs, for every
subscriber and packet, a header pack, a call into libsrtp and one ``sendto``: 14-18 us of CPU
per packet per subscriber here, nearly all of it Python and system calls. Here one call per
unit and feed (:func:`_fanout.send_unit`) does all of it in C with the GIL released: RTP header
(SSRC, sequence, timestamp offset, the ``mid`` extension block), SRTP from libsrtp (the copy
pylibsrtp bundles, on OpenSSL: the library the Python path and aiortc use; AES-CM/HMAC-SHA1 or
AES-GCM, RFC 7714, whichever the DTLS handshake chose) and ``sendmmsg`` per socket: on the
shared UDP port (:mod:`ccctl.media.udpmux`) one call carries the packets of many subscribers,
and a subscriber's equal-size packets of one unit go as one UDP GSO message (``CCCTL_GSO=0``
sends them one by one; the first GSO message a kernel refuses switches it off for the process). Debian's
libsrtp2 was tried first: built on NSS, it protected slower than the Python path (see fanout.c).

Pieces:

- :class:`NativeFanout`: the one sink a feed sees for all its native forwarders; it calls
  ``send_unit`` and hands "socket full" / "socket gone" back to each forwarder's policy.
- :func:`sender_for`: a subscriber's C ``Sender`` with an SRTP session of its own
  (:func:`stream_session`), keyed from the DTLS session the same way aiortc keys its own
  (``RTCDtlsTransport._setup_srtp``), or None.
- :func:`unavailable`: why the Python path is used (not built, or ``CCCTL_NATIVE=0``).

The extension is built by ``pip install -e .`` (setup.py, optional: without a C compiler and
Python's headers, or with ``CCCTL_NATIVE_BUILD=0``, the install goes on without it).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from typing import TYPE_CHECKING, Any

import pylibsrtp

from ccctl.media import seam

if TYPE_CHECKING:
    from ccctl.media.fastpath import Forwarder, RtpUnit
    from ccctl.media.tiers import Feed

log = logging.getLogger(__name__)

ENV = "CCCTL_NATIVE"  # "0": use the Python path even when the extension is there
GSO_ENV = "CCCTL_GSO"  # "0": no UDP GSO (one datagram per message), read at import

_fanout: Any = None
_MISSING: str | None = None
if importlib.util.find_spec(f"{__name__}._fanout") is None:  # the install built no extension
    _MISSING = "the native sender is not built (no C compiler or Python headers at install, or CCCTL_NATIVE_BUILD=0)"
else:
    try:
        _fanout = importlib.import_module(f"{__name__}._fanout")
    except ImportError as exc:  # built, but it does not load here (pylibsrtp changed, another Python)
        _MISSING = f"the native sender does not load ({exc})"

if _fanout is not None and os.environ.get(GSO_ENV, "1") == "0":
    _fanout.set_gso(False)

BEHIND, GONE = 1, 2  # send_unit's status bytes (3, an SRTP failure, is handled as gone)


def unavailable() -> str | None:
    """Why the fan-out uses the Python path (None: the native sender is used)."""
    if os.environ.get(ENV, "1") == "0":
        return f"{ENV}=0"
    return _MISSING


def describe() -> str:
    """One line for the log: which send path the tight fan-out uses, and why."""
    why = unavailable()
    if why is not None:
        return f"fan-out: Python send path ({why})"
    gso = "UDP GSO" if _fanout.gso_stats()[0] else f"no UDP GSO ({GSO_ENV}=0 or refused by the kernel)"
    return f"fan-out: native send path (libsrtp of pylibsrtp {pylibsrtp.__version__}, sendmmsg, {gso})"


def tx_key(dtls: Any) -> tuple[int, bytes]:
    """The negotiated SRTP profile (libsrtp's number) and our sending master key and salt.

    Exported again from the DTLS session with aiortc's own label, lengths and role split
    (``RTCDtlsTransport._setup_srtp``), so that both paths protect with the same keys.
    """
    return seam.srtp_tx_key(dtls)  # aiortc's DTLS session internals: ccctl/media/seam.py


def stream_session(profile: int, key: bytes, ssrc: int) -> pylibsrtp.Session:
    """The SRTP session of one native stream: aiortc's profile and key, this SSRC only, and no
    index protected twice (aiortc allows repeats; the native path never needs one)."""
    policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_SPECIFIC, ssrc_value=ssrc,
                              srtp_profile=profile)
    policy.allow_repeat_tx = False
    policy.window_size = 128  # libsrtp's default: a sender's window is only its own history (1,024 cost 2 %)
    return pylibsrtp.Session(policy)


def sender_for(forwarder: Forwarder, dtls: Any, header: bytes) -> Any:
    """The C sender of one subscriber stream, or None when the native path cannot serve it
    (not built, switched off, no plain socket, an address it does not take): the Python path
    then serves that stream, from its first packet on (one SRTP context per stream, never two)."""
    if unavailable() is not None or forwarder._sock is None:
        return None
    try:
        profile, key = tx_key(dtls)
        host, port = forwarder._addr[0], forwarder._addr[1]
        session = stream_session(profile, key, forwarder._ssrc)
        return _fanout.Sender(forwarder._sock, host, port, session, forwarder._ssrc, forwarder._pt,
                              header[0], header[12:], forwarder._seq, forwarder._ts_offset,
                              forwarder.kind == "video")
    except (AttributeError, ConnectionError, TypeError, ValueError, OSError, IndexError, pylibsrtp.Error) as exc:
        log.info("fan-out: Python send path for SSRC %s: %s", forwarder._ssrc, exc)
        return None


class NativeFanout:
    """The sink a feed sees for all its native forwarders: one ``send_unit`` per unit.

    Forwarders join with :meth:`add` and leave with :meth:`remove`; the group is on the feed
    (its ``forwarders`` and ``subscribers``) while it has members, so the program's encoder
    runs while any native subscriber is there (the feed counts the group as one sink, as the
    main process counts a fan-out worker). Per unit: a socket that was full cuts that
    subscriber's unit short (video then waits for a keyframe, which the feed is asked for
    once); a closed socket or an SRTP failure ends that forwarder, as on the Python path.
    """

    __slots__ = ("feed", "_members", "_batch", "_warned")

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self._members: dict[Forwarder, None] = {}  # insertion order: the send order
        self._batch: tuple[tuple[Forwarder, ...], tuple[Any, ...]] | None = None
        self._warned = False

    def __len__(self) -> int:
        return len(self._members)

    def add(self, forwarder: Forwarder, keyframe: bool = True) -> None:
        """Send this feed to ``forwarder`` too (video asks the feed for a keyframe unless
        ``keyframe`` is False: it joins at one)."""
        first = not self._members
        self._members[forwarder] = None
        self._batch = None
        if first:
            _groups[self.feed] = self
            self.feed.add_forwarder(self)  # asks for a keyframe itself
        elif keyframe and self.feed.kind == "video":
            self.feed.request_keyframe()

    def remove(self, forwarder: Forwarder) -> None:
        """Stop sending to ``forwarder``; the last one out takes the group off the feed."""
        if self._members.pop(forwarder, 0) is None:
            self._batch = None
            if not self._members:
                _groups.pop(self.feed, None)
                self.feed.remove_forwarder(self)

    def push(self, unit: RtpUnit) -> None:
        """Send one unit to every member in one native call; apply the per-subscriber outcome."""
        batch = self._batch
        if batch is None:
            members = tuple(self._members)
            batch = self._batch = (members, tuple(f._native for f in members))
        try:
            status = _fanout.send_unit(batch[1], unit.payloads, unit.timestamp, unit.ntp, unit.keyframe)
        except (TypeError, ValueError) as exc:  # a unit the sender refuses whole (checked before any send)
            if not self._warned:
                self._warned = True
                log.warning("fan-out: native send refused a unit of feed %s: %s", self.feed.name, exc)
            return
        if status is not None:
            apply_status(batch[0], status, self.feed)

    def push_pending(self, feed: Feed, unit: RtpUnit) -> None:
        """Pending switches are the forwarders' own (see ``Forwarder.push_pending``)."""

    def stop(self) -> None:
        """The feed is closing: close every member."""
        for forwarder in list(self._members):
            forwarder.close()


def apply_status(forwarders: tuple[Forwarder, ...], status: bytes, feed: Feed | None) -> None:
    """Hand ``send_unit``'s per-subscriber outcome to the forwarders (the C side has already
    counted the drop and set the keyframe wait of a full socket)."""
    behind = False
    for forwarder, code in zip(forwarders, status, strict=True):
        if code == BEHIND:
            behind = True
        elif code:
            log.info("fan-out: SSRC %s ends: %s", forwarder._ssrc, "socket gone" if code == GONE else "SRTP failure")
            forwarder._dead()
    if behind and feed is not None and feed.kind == "video":
        feed.request_keyframe()


_groups: dict[Feed, NativeFanout] = {}


def group_for(feed: Feed) -> NativeFanout:
    """The feed's native group (made on first use; it leaves the feed with its last member)."""
    group = _groups.get(feed)
    return group if group is not None else NativeFanout(feed)


def send_one(forwarder: Forwarder, unit: RtpUnit) -> None:
    """One unit to one native forwarder (what ``Forwarder.push`` does for a native stream)."""
    status = _fanout.send_unit((forwarder._native,), unit.payloads, unit.timestamp, unit.ntp, unit.keyframe)
    if status is not None:
        apply_status((forwarder,), status, forwarder.feed)
