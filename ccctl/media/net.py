"""Keep media on the interface the server listens on.

aioice (aiortc's ICE) offers every interface address of the machine and has no option to
choose; a server bound to loopback must not offer or reach anything else. ``pin_ice``
replaces aioice's address lookup for this process, and
``keep_candidates`` drops a remote offer's candidates outside the allowed network, so
connectivity checks never target other addresses either. ``gather_only_on`` pins one task
(and the tasks it starts) instead of the process, for the roll-call's media stage and the
simulator, which talk to many addresses from one process. ``patient_consent`` and
``without_consent_checks`` replace aioice's consent checks on one connection (see below).
What they take from aioice's and aiortc's internals goes through :mod:`ccctl.media.seam`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import ipaddress
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

from ccctl.media import seam

log = logging.getLogger(__name__)

def pin_ice(host: str) -> None:
    """Gather ICE host candidates on ``host`` only (for a server bound to one address)."""
    def addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [host]

    seam.replace_host_address_lookup(addresses)


def keep_candidates(sdp: str, network: str) -> str:
    """``sdp`` without the ``a=candidate`` lines whose address is outside ``network``.

    Host names (mDNS ``*.local``) are dropped too: they cannot be checked against the network.
    """
    allowed = ipaddress.ip_network(network)
    kept = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            try:
                if ipaddress.ip_address(parts[4]) not in allowed:
                    continue
            except (IndexError, ValueError):
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


async def close_quietly(pc: Any) -> None:
    """Close a peer connection whose negotiation failed, without raising.

    aiortc's ``close()`` can itself fail on a half-applied offer (a transceiver without its
    transport, say); the caller reports the negotiation's error, and this one is only logged.
    """
    try:
        await pc.close()
    except Exception as exc:  # whatever aiortc raises here, the first error is the one to report
        log.info("closing a failed peer connection: %s: %s", type(exc).__name__, exc)
        # aiortc stopped at the first transceiver without a transport: stop the others' (and
        # so their sockets) one by one, drop its listeners, and mark it closed, or a later
        # close() (a state-change handler's) would wait forever for the one that failed.
        for transceiver in pc.getTransceivers():
            dtls = transceiver.receiver.transport
            for transport in (dtls, getattr(dtls, "transport", None)):
                if transport is not None:
                    with contextlib.suppress(Exception):
                        await transport.stop()
        pc.remove_all_listeners()
        seam.mark_closed(pc)


#: ICE candidate types (RFC 8445 section 5.1.1).
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")


def candidate_ok(value: str) -> bool:
    """Whether an ``a=candidate`` value has the fields RFC 8839 section 5.1 requires, in
    range (aiortc's parser asserts on a short one, and aioice sends to a port over 65535
    until the socket raises)."""
    bits = value.split()
    try:
        return (8 <= len(bits) <= 32 and len(bits) % 2 == 0 and bits[6] == "typ" and bits[7] in CANDIDATE_TYPES
                and bits[2].lower() in ("udp", "tcp") and 1 <= int(bits[1]) <= 256
                and 0 <= int(bits[3]) < 2**32 and 0 <= int(bits[5]) <= 65535
                and all(0 <= int(port) <= 65535 for key, port in zip(bits[8::2], bits[9::2], strict=True)
                        if key == "rport"))
    except ValueError:  # a field that is no number
        return False


# ``pin_ice`` pins the whole process to one address; a roll-call talks to
# many boxes (and the simulator serves many addresses) in one process, so the pin is held in
# a context variable that aiortc's gathering tasks inherit.

_PINNED: contextvars.ContextVar[str | None] = contextvars.ContextVar("ccctl_ice_host", default=None)


def _install_pin() -> None:
    """Wrap aioice's address lookup (once, or again if ``pin_ice`` replaced it)."""
    current = seam.host_address_lookup()
    if getattr(current, "_ccctl_pinned", False):
        return

    def addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        host = _PINNED.get()
        return [host] if host is not None else current(use_ipv4, use_ipv6)

    addresses._ccctl_pinned = True  # type: ignore[attr-defined]
    seam.replace_host_address_lookup(addresses)


@contextlib.contextmanager
def gather_only_on(host: str) -> Iterator[None]:
    """ICE gathering started in this block (and its tasks) offers ``host`` only."""
    _install_pin()
    token = _PINNED.set(host)
    try:
        yield
    finally:
        _PINNED.reset(token)


def only_peer(sdp: str, address: str) -> str:
    """``sdp`` keeping only the candidates on ``address`` (the other end of our SSH link)."""
    return keep_candidates(sdp, str(ipaddress.ip_network(address)))


# -- consent freshness (RFC 7675) ---------------------------------------------------------------
# aioice checks consent every ~5 s with a single request that fails when no answer comes within
# 0.5 s, and ends the connection after 6 such failures: a site whose round trip is over half a
# second (a satellite link, a congested 3G one) is cut every 30 s. RFC 7675 has consent expire
# 30 s after the last answer, whatever the round trip; browsers do that, and so do our peers.

CONSENT_INTERVAL_S = 5.0  # between checks (randomised 0.8-1.2x, as aioice does)
CONSENT_EXPIRY_S = 30.0  # RFC 7675 section 5.1: no answer for this long ends the connection
CONSENT_RETRANSMISSIONS = 3  # aioice doubles 0.5 s: an answer within 7.5 s still counts


def ice_connections(pc: Any) -> list[Any]:
    """The aioice connections under ``pc``'s transceivers (one when bundled), once each.

    aiortc keeps them private (:func:`ccctl.media.seam.ice_connection`).
    """
    found: dict[int, Any] = {}
    for transceiver in pc.getTransceivers():
        ice = getattr(getattr(transceiver.receiver, "transport", None), "transport", None)
        connection = seam.ice_connection(ice) if ice is not None else None
        if connection is not None:
            found[id(connection)] = connection
    return list(found.values())


def without_consent_checks(pc: Any) -> bool:
    """Never end ``pc`` for unanswered consent checks (a publisher that stops answering STUN
    once connected); False if aiortc's layout changed and the checks stay."""
    async def no_checks() -> None:
        return None

    connections = ice_connections(pc)
    for connection in connections:
        seam.replace_consent_check(connection, no_checks)
    return bool(connections)


def patient_consent(pc: Any) -> bool:
    """Check ``pc``'s consent as RFC 7675 says: retransmitted checks, expiry 30 s after the
    last answer. Call before ICE connects; False if aiortc's layout changed (aioice's own
    checks then stay)."""
    connections = ice_connections(pc)
    for connection in connections:
        seam.replace_consent_check(connection, functools.partial(_query_consent, connection))
    return bool(connections)


async def _query_consent(connection: Any) -> None:
    from aioice import stun

    answered = time.monotonic()
    checks: set[asyncio.Task[None]] = set()

    async def check(pair: Any) -> None:
        nonlocal answered
        request = seam.consent_request(connection, pair)
        try:
            await pair.protocol.request(request, pair.remote_addr, integrity_key=connection.remote_password.encode(),
                                        retransmissions=CONSENT_RETRANSMISSIONS)
        except (stun.TransactionError, ConnectionError, OSError):
            return
        answered = time.monotonic()

    try:
        while True:
            await asyncio.sleep(CONSENT_INTERVAL_S * (0.8 + 0.4 * random.random()))
            if time.monotonic() - answered >= CONSENT_EXPIRY_S:
                for task in checks:  # no retransmissions onto sockets being closed
                    task.cancel()
                seam.forget_consent_task(connection)  # close() must not cancel us while we await it
                await connection.close()
                return
            for pair in seam.nominated_pairs(connection):
                task = asyncio.create_task(check(pair))
                checks.add(task)
                task.add_done_callback(checks.discard)
    finally:
        for task in checks:
            task.cancel()
