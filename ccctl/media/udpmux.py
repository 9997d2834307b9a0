"""One UDP port for every subscriber of a fan-out process (per local address).

aioice opens one UDP socket per ICE connection: with 2,594 sites that is 2,594 sockets, and the
native sender (:mod:`ccctl.media.native`) can then batch ``sendmmsg`` only within one site. Here,
as pion's UDPMux and mediasoup's WebRtcServer do, a :class:`UdpMux` owns one socket per local
address, and every connection gathered inside :func:`gathering` gets its host candidate on it:

- A STUN request is routed by its USERNAME (``<our ufrag>:<theirs>``) to the connection whose
  local ufrag it names; when its MESSAGE-INTEGRITY checks with that connection's password, the
  datagram's source address is bound to that connection (a later authenticated request moves it).
- A STUN response is routed by its transaction id (the mux notes the id of every request a
  connection sends through it; an address not yet bound to anyone is then bound to it), else by
  source address.
- Everything else (DTLS, SRTP/SRTCP, STUN indications) is routed by source address.
- What matches nothing (garbage, an unknown ufrag, an unknown address) is dropped and counted
  (:attr:`Port.counts`); a handler that raises is counted and logged, the port goes on.

Each connection sees an ordinary aioice ``StunProtocol`` whose transport (:class:`Endpoint`)
sends through the shared socket, so ICE checks, consent (:mod:`ccctl.media.net`), DTLS and
RTCP reach aiortc's transports as with a socket of their own; the fan-out's forwarders find the
shared socket where they found the per-site one (``_sock``), and the native sender's
``sendmmsg`` then carries the packets of many sites in one call. Closing a connection closes
only its endpoint; the port stays open (the same port for the process's life) until
:meth:`UdpMux.close`.

``CCCTL_UDPMUX=0`` (read per subscription) keeps aioice's socket per site: the fallback, and
the reference the tests compare with. The mux serves host candidates only: a core configured
with STUN/TURN servers gathers with aioice's own code. What this takes from aioice's internals
goes through :mod:`ccctl.media.seam`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
from collections import deque
from collections.abc import Iterator
from typing import Any

from ccctl.media import seam

log = logging.getLogger(__name__)

ENV = "CCCTL_UDPMUX"  # "0": one socket per site (aioice's own), the reference path
BUFFER_BYTES = 4 << 20  # send and receive buffer of a shared socket (the kernel caps it at [rw]mem_max)
READS_PER_WAKEUP = 512  # datagrams read per wakeup of the event loop before other callbacks run
RECV_BYTES = 65_536
TRANSACTIONS_PER_ENDPOINT = 32  # request ids remembered per connection, for routing their responses
_COOKIE = b"\x21\x12\xa4\x42"  # STUN's magic cookie (RFC 8489 section 5)

COUNTS = ("datagrams", "delivered", "garbage", "unknown_ufrag", "unknown_address", "unknown_transaction",
          "unauthenticated", "handler_errors", "send_dropped", "send_errors")


def enabled() -> bool:
    """Whether new subscriptions share the port (``CCCTL_UDPMUX`` is not ``0``)."""
    return os.environ.get(ENV, "1") != "0"


class Endpoint(asyncio.DatagramTransport):
    """One ICE connection's view of the shared port: what its ``StunProtocol`` sends through."""

    def __init__(self, port: Port, connection: Any, ufrag: str) -> None:
        super().__init__()
        self.port = port
        self.connection = connection
        self.ufrag = ufrag
        self.password = b""
        self.protocol: Any = None
        self.addresses: set[tuple[str, int]] = set()
        self.transactions: deque[bytes] = deque()
        self._closed = False
        self._sock = port.sock  # where the fan-out's forwarders send from (seam.send_path)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``socket`` and ``sockname`` are the shared port's (aioice reads both)."""
        if name == "socket":
            return self.port.sock
        if name == "sockname":
            return self.port.sockname
        return default

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Send through the shared socket; a STUN request's transaction id is noted first."""
        if self._closed:
            return
        data = bytes(data)
        if len(data) >= 20 and data[0] < 2 and data[4:8] == _COOKIE and not data[1] & 0x10 and not data[0] & 1:
            self.port.note_transaction(self, data[8:20])  # class bits 00: a request
        self.port.sendto(data, addr)

    def is_closing(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._closed

    def close(self) -> None:
        """Leave the port (it stays open for the others); the protocol hears it as asyncio's would."""
        if self._closed:
            return
        self._closed = True
        self.port.forget(self)
        if self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close


class Port:
    """One shared UDP socket and its routing tables (see the module doc).

    It reads for itself rather than through an asyncio datagram transport: asyncio reads one
    datagram per wakeup of the event loop, which is one per site per loop iteration with a
    socket per site, but one for all sites on a shared socket (800 sites joining at once then
    time out). Here each wakeup drains up to :data:`READS_PER_WAKEUP` datagrams. Sends go
    straight to the socket; one that finds it full is dropped and counted (STUN and DTLS
    retransmit, RTCP is periodic), as UDP may.
    """

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock
        self.sockname: tuple[Any, ...] = sock.getsockname() if sock is not None else ()
        self.is_open = sock is not None
        self.by_ufrag: dict[str, Endpoint] = {}
        self.by_address: dict[tuple[str, int], Endpoint] = {}
        self.by_transaction: dict[bytes, Endpoint] = {}
        self.counts = dict.fromkeys(COUNTS, 0)

    # -- the socket ---------------------------------------------------------------------------
    def readable(self) -> None:
        """The event loop's reader callback: drain the socket (bounded), route each datagram."""
        sock = self.sock
        if sock is None:
            return
        for _ in range(READS_PER_WAKEUP):
            try:
                data, addr = sock.recvfrom(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error queued on the socket: nothing to route
                log.debug("shared UDP port %s: %s", self.sockname, exc)
                continue
            self.datagram_received(data, addr)

    def sendto(self, data: bytes, addr: Any) -> None:
        """Send one datagram now; a full socket or an unroutable address drops it (counted)."""
        if self.sock is None:
            return
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.counts["send_dropped"] += 1
        except OSError as exc:
            self.counts["send_errors"] += 1
            log.debug("shared UDP port %s: send to %s: %s", self.sockname, addr, exc)

    def close(self) -> None:
        """Stop reading and close the socket; its remaining connections hear their socket is gone."""
        if self.sock is None:
            return
        sock, self.sock, self.is_open = self.sock, None, False
        with contextlib.suppress(RuntimeError, ValueError):  # no running loop, or not registered
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        for endpoint in list(self.by_ufrag.values()):
            endpoint.close()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.counts["datagrams"] += 1
        addr = (addr[0], addr[1])
        endpoint = self.route(data, addr)
        if endpoint is None or endpoint.protocol is None:
            return
        try:
            endpoint.protocol.datagram_received(data, addr)
        except Exception:  # aioice's or aiortc's handler: one connection's fault must not stop the port
            self.counts["handler_errors"] += 1
            log.warning("shared UDP port %s: the handler of %s failed", self.sockname, endpoint.ufrag, exc_info=True)
            return
        self.counts["delivered"] += 1

    # -- routing ------------------------------------------------------------------------------
    def route(self, data: bytes, addr: tuple[str, int]) -> Endpoint | None:
        """The endpoint a datagram from ``addr`` is for, or None (counted) to drop it."""
        first = data[0] if data else 255
        if first < 4 and len(data) >= 20 and data[4:8] == _COOKIE:  # STUN (RFC 7983)
            return self._route_stun(data, addr)
        if first < 4 or 64 <= first < 128 or first >= 192:  # nothing WebRTC multiplexes here
            self.counts["garbage"] += 1
            return None
        endpoint = self.by_address.get(addr)  # DTLS (20-63), RTP/RTCP (128-191)
        if endpoint is None:
            self.counts["unknown_address"] += 1
        return endpoint

    def _route_stun(self, data: bytes, addr: tuple[str, int]) -> Endpoint | None:
        message = seam.parse_stun(data)
        if message is None:
            self.counts["garbage"] += 1
            return None
        kind = seam.stun_class(message)
        if kind == "request":
            username = seam.stun_username(message)
            if username is None:
                self.counts["garbage"] += 1
                return None
            endpoint = self.by_ufrag.get(username.partition(":")[0])
            if endpoint is None:
                self.counts["unknown_ufrag"] += 1
                return None
            if self.by_address.get(addr) is not endpoint:
                if seam.stun_authentic(message, endpoint.password):
                    self._bind(endpoint, addr)
                else:
                    self.counts["unauthenticated"] += 1  # aioice answers it 401 and forgets it
            return endpoint
        if kind == "response":
            endpoint = self.by_transaction.pop(seam.stun_transaction(message), None)
            if endpoint is not None:  # the answer to our check: that address is the site's (its 96-bit
                if addr not in endpoint.addresses and addr not in self.by_address:  # id was only ever sent there)
                    self._bind(endpoint, addr)
                return endpoint
            endpoint = self.by_address.get(addr)
            if endpoint is None:
                self.counts["unknown_transaction"] += 1
            return endpoint
        endpoint = self.by_address.get(addr)  # an indication (keep-alive)
        if endpoint is None:
            self.counts["unknown_address"] += 1
        return endpoint

    def _bind(self, endpoint: Endpoint, addr: tuple[str, int]) -> None:
        previous = self.by_address.get(addr)
        if previous is not None:
            previous.addresses.discard(addr)
        self.by_address[addr] = endpoint
        endpoint.addresses.add(addr)

    def note_transaction(self, endpoint: Endpoint, transaction: bytes) -> None:
        """Route the response to this request to ``endpoint`` (its newest few requests only)."""
        if transaction in self.by_transaction:  # a retransmission
            return
        self.by_transaction[transaction] = endpoint
        endpoint.transactions.append(transaction)
        if len(endpoint.transactions) > TRANSACTIONS_PER_ENDPOINT:
            old = endpoint.transactions.popleft()
            if self.by_transaction.get(old) is endpoint:
                del self.by_transaction[old]

    # -- membership ---------------------------------------------------------------------------
    def attach(self, connection: Any, component: int) -> Any:
        """A ``StunProtocol`` of ``connection`` on this port, with its host candidate set."""
        ufrag, password = seam.ice_credentials(connection)
        if ufrag in self.by_ufrag:
            raise ValueError(f"ICE ufrag {ufrag!r} is already on this port")
        endpoint = Endpoint(self, connection, ufrag)
        endpoint.password = password.encode()
        host, port = self.sockname[0], self.sockname[1]
        endpoint.protocol = seam.stun_protocol(connection, endpoint, component, host, port)
        self.by_ufrag[ufrag] = endpoint
        return endpoint.protocol

    def forget(self, endpoint: Endpoint) -> None:
        """Take a closed endpoint out of every table."""
        if self.by_ufrag.get(endpoint.ufrag) is endpoint:
            del self.by_ufrag[endpoint.ufrag]
        for addr in endpoint.addresses:
            if self.by_address.get(addr) is endpoint:
                del self.by_address[addr]
        endpoint.addresses.clear()
        for transaction in endpoint.transactions:
            if self.by_transaction.get(transaction) is endpoint:
                del self.by_transaction[transaction]
        endpoint.transactions.clear()


class UdpMux:
    """The shared ports of one process, one per local address, opened on first use."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.ports: dict[str, Port] = {}
        self.collisions = 0  # connections whose ufrag was taken on the port: they got their own socket
        self._opening: dict[str, asyncio.Lock] = {}

    async def open(self, address: str) -> Port:
        """The shared port on ``address`` (bound on first use; OSError if it cannot be)."""
        port = self.ports.get(address)
        if port is not None and port.is_open:
            return port
        lock = self._opening.setdefault(address, asyncio.Lock())
        async with lock:
            port = self.ports.get(address)
            if port is None or not port.is_open:
                sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                        sock.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)
                    sock.bind((address, self.port))
                    sock.setblocking(False)
                    port = Port(sock)
                    asyncio.get_running_loop().add_reader(sock.fileno(), port.readable)
                except BaseException:
                    sock.close()
                    raise
                self.ports[address] = port
                log.info("shared UDP port for ICE on %s:%s", *port.sockname[:2])
            return port

    def counts(self) -> dict[str, int]:
        """Every port's counters, summed (datagrams in, delivered, and each kind dropped)."""
        total = dict.fromkeys(COUNTS, 0)
        for port in self.ports.values():
            for key, value in port.counts.items():
                total[key] += value
        return total

    def endpoints(self) -> int:
        """ICE connections on the shared ports now."""
        return sum(len(p.by_ufrag) for p in self.ports.values())

    async def close(self) -> None:
        """Close every shared port (their remaining connections hear that their socket is gone)."""
        for port in self.ports.values():
            port.close()
        self.ports.clear()


# -- the hook into aioice's gathering -------------------------------------------------------------

_CURRENT: contextvars.ContextVar[UdpMux | None] = contextvars.ContextVar("ccctl_udpmux", default=None)


async def _candidates(mux: UdpMux, connection: Any, component: int, addresses: list[str]) -> list[Any] | None:
    """Host candidates of ``connection`` on ``mux``'s ports, one per address; None when its
    ufrag is already on one of them (aioice's 4 random characters: among 2,594 sites about one
    chance in four of a pair), and the connection then gathers a socket of its own."""
    ports = []
    for address in addresses:
        try:
            ports.append(await mux.open(address))
        except OSError as exc:
            log.warning("no shared UDP port on %s: %s", address, exc)
    ufrag, _ = seam.ice_credentials(connection)
    if any(ufrag in port.by_ufrag for port in ports):
        mux.collisions += 1
        log.info("ICE ufrag %r is taken on the shared port: that connection gets a socket of its own", ufrag)
        return None
    candidates = []
    for port in ports:
        protocol = port.attach(connection, component)
        seam.add_ice_protocol(connection, protocol)
        candidates.append(seam.protocol_candidate(protocol))
    return candidates


def _install() -> None:
    """Route aioice's host gathering through :data:`_CURRENT`'s mux when one is set (once)."""
    original = seam.component_gathering()
    if getattr(original, "_ccctl_udpmux", False):
        return

    async def gather(connection: Any, component: int, addresses: list[str], timeout: int = 5) -> list[Any]:
        mux = _CURRENT.get()
        if mux is not None and seam.host_only(connection):
            candidates = await _candidates(mux, connection, component, addresses)
            if candidates is not None:
                return candidates
        return list(await original(connection, component, addresses, timeout))

    gather._ccctl_udpmux = True  # type: ignore[attr-defined]
    seam.replace_component_gathering(gather)


@contextlib.contextmanager
def gathering(mux: UdpMux | None) -> Iterator[None]:
    """ICE gathering started in this block (and its tasks) puts host candidates on ``mux``'s
    shared ports (``None``: aioice's socket per connection)."""
    if mux is None:
        yield
        return
    _install()
    token = _CURRENT.set(mux)
    try:
        yield
    finally:
        _CURRENT.reset(token)

