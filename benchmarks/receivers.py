"""Cheap WebRTC receivers for the fan-out benchmarks: real aiortc peers that count RTP.

A receiver is a real ``RTCPeerConnection`` (ICE, DTLS, keys all happen), but every RTP
datagram is counted at the socket and dropped before SRTP decryption, jitter buffer or
decoding, so that one process can hold hundreds of receivers without becoming the
bottleneck of a server benchmark. STUN, DTLS and RTCP still go their normal way
(RFC 7983 demultiplexing: first byte 128-191 is RTP or RTCP; RTCP packet types 192-223).
Both ccctl's and Janus's benchmarks use these same receivers.
"""

from __future__ import annotations

from typing import Any

import aioice.ice

COUNTS = {"packets": 0, "bytes": 0}


def install() -> dict[str, int]:
    """Patch aioice in this process so that RTP is counted and dropped; returns the counts."""
    original = aioice.ice.StunProtocol.datagram_received

    def datagram_received(self: Any, data: bytes, addr: tuple[Any, ...]) -> None:
        if 128 <= data[0] <= 191 and not 192 <= data[1] <= 223:
            COUNTS["packets"] += 1
            COUNTS["bytes"] += len(data)
            return
        original(self, data, addr)

    aioice.ice.StunProtocol.datagram_received = datagram_received  # type: ignore[method-assign]
    return COUNTS
