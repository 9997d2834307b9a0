"""One UDP port for every subscriber (ccctl.media.udpmux), on real aiortc sites over loopback.

Sites connect and decode through the shared port; one leaving disturbs nobody else on it; what
reaches the port and matches no connection (garbage, an unknown ufrag or transaction, an unknown
address, a request that does not authenticate) is dropped and counted, and arbitrary bytes never
make it raise (hypothesis). The per-site socket (``CCCTL_UDPMUX=0``) stays as the reference: the
same units sent through both ports, and through both send paths (native and Python), decrypt at
real receivers to identical payloads, with continuous sequence numbers and one timestamp clock.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import aioice.ice
import pytest
from aioice import stun
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccctl.media import native, seam, udpmux
from ccctl.media.core import MediaCore

from .conftest import JoinFn, Site, until


def candidate_ports(sdp: str) -> set[int]:
    """The ports of an SDP's ``a=candidate`` lines."""
    return {int(line.split()[5]) for line in sdp.splitlines() if line.startswith("a=candidate:")}


def session_of(core: MediaCore, site_id: str) -> Any:
    return next(s for s in core.sessions() if s.site_id == site_id)


async def connected(core: MediaCore, site_id: str) -> Any:
    """The site's forwarders once it is connected (bounded poll)."""
    return await until(lambda: asyncio.sleep(0, result=session_of(core, site_id).forwarders))


@pytest.mark.asyncio
@pytest.mark.parametrize("core", ["tight", "stock"], indirect=True)
async def test_sites_connect_and_decode_through_one_port_and_one_leaving_disturbs_none(
        core: MediaCore, join: JoinFn) -> None:
    assert core.udp_mux is not None
    sites = [(await join(f"s-{i}", "low"))[0] for i in range(3)]
    for site in sites:
        assert len(await site.frames(3)) == 3 and len(await site.frames(3, kind="audio")) == 3
    ports = {p for s in sites for p in candidate_ports(s.pc.remoteDescription.sdp)}
    (port,) = core.udp_mux.ports.values()
    assert ports == {port.sockname[1]}  # every answer offers the one shared port
    assert core.udp_mux.endpoints() == 3 and len(port.by_address) == 3
    if core.fanout == "tight":
        socks = {f._sock for s in core.sessions() for f in (s.forwarders or {}).values()}
        assert socks == {port.sock}  # the forwarders send from it too

    leaving = session_of(core, "s-0")
    await sites[0].close()
    await core.unsubscribe(leaving.session_id)
    assert core.udp_mux.endpoints() == 2 and len(port.by_address) == 2
    for site in sites[1:]:  # the others go on, on the same port
        assert len(await site.frames(10)) == 10 and len(await site.frames(5, kind="audio")) == 5
    assert port.is_open
    assert port.counts["handler_errors"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("core", ["tight"], indirect=True)
async def test_a_site_whose_ufrag_is_taken_gets_a_socket_of_its_own(
        core: MediaCore, join: JoinFn, monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice draws 4 random characters per ufrag: at thousands of sites two can meet. Here every
    # connection, the sites' too, draws the same (a fault made real by fixing the draw).
    monkeypatch.setattr(aioice.ice, "random_string", lambda length: "Z" * length)
    first, _ = await join("s-first", "low")
    second, _ = await join("s-second", "low")
    for site in (first, second):
        assert len(await site.frames(3)) == 3
    assert core.udp_mux is not None
    (port,) = core.udp_mux.ports.values()
    assert candidate_ports(first.pc.remoteDescription.sdp) == {port.sockname[1]}
    assert port.sockname[1] not in candidate_ports(second.pc.remoteDescription.sdp)
    assert core.udp_mux.collisions == 1 and core.udp_mux.endpoints() == 1


def stun_request(username: str, password: str | None) -> bytes:
    """A binding request naming ``username``, with MESSAGE-INTEGRITY under ``password`` if given."""
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1
    if password is not None:
        message.add_message_integrity(password.encode())
    return bytes(message)


@pytest.mark.asyncio
@pytest.mark.parametrize("core", ["tight"], indirect=True)
async def test_datagrams_matching_no_site_are_dropped_and_counted(core: MediaCore, join: JoinFn) -> None:
    site, _ = await join("s-0", "low")
    await site.frames(2)
    assert core.udp_mux is not None
    (port,) = core.udp_mux.ports.values()
    ufrag, _ = seam.ice_credentials(port.by_ufrag[next(iter(port.by_ufrag))].connection)
    before = dict(port.counts)
    response = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE)
    bad_cookie = bytearray(stun_request("x:y", None))
    bad_cookie[4] ^= 0xFF
    truncated = stun_request("x:y", None)[:-2]
    sent = {
        "garbage": [b"", b"\x40" * 50, b"\xff\x00", bytes(bad_cookie), truncated, b"\x00\x01" + b"\x00" * 30],
        "unknown_ufrag": [stun_request("nobody:there", "x" * 22)],
        "unknown_transaction": [bytes(response)],
        "unknown_address": [b"\x80\x60" + b"\x00" * 40, b"\x16\xfe\xfd" + b"\x00" * 20],
        "unauthenticated": [stun_request(f"{ufrag}:them", "wrong password here!!")],
    }
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    attacker.settimeout(10.0)  # bounds the wait for aioice's 401 below
    try:
        for datagrams in sent.values():
            for data in datagrams:
                attacker.sendto(data, port.sockname[:2])
        total = sum(map(len, sent.values()))
        await until(lambda: asyncio.sleep(0, result=port.counts["datagrams"] - before["datagrams"] >= total))
        for key, datagrams in sent.items():
            assert port.counts[key] - before[key] == len(datagrams), key
        # the request that did not authenticate reached its connection (aioice answers 401) but
        # bound nothing: the attacker's address is no route to the site
        answer = stun.parse_message(await asyncio.get_running_loop().run_in_executor(None, attacker.recv, 2048))
        assert answer.message_class == stun.Class.ERROR and answer.attributes["ERROR-CODE"][0] == 401
        assert attacker.getsockname() not in port.by_address
    finally:
        attacker.close()
    assert len(await site.frames(5)) == 5  # the site never noticed
    assert port.counts["handler_errors"] == 0


class _Connection:
    """What a fuzzed port's endpoint needs of an aioice connection: it records what it is handed."""

    local_username = "fuzzufrag"
    local_password = "fuzzpasswordfuzzpassword"

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.requests = 0

    def data_received(self, data: bytes, component: int) -> None:
        self.data.append(data)

    def request_received(self, message: Any, addr: Any, protocol: Any) -> None:
        self.requests += 1


@pytest.fixture
def fuzzed_port() -> Iterator[tuple[udpmux.Port, _Connection]]:
    # A port with no socket (nothing is sent) and one endpoint bound to 127.0.0.1:5000, whose
    # aioice StunProtocol hands what it gets to a recording stand-in for the connection (the
    # real Connection would answer on a socket this test does not open).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        port = udpmux.Port()  # no socket: what would be sent is dropped
        port.sockname = ("127.0.0.1", 9)
        connection = _Connection()
        port.attach(connection, 1)
        port._bind(port.by_ufrag["fuzzufrag"], ("127.0.0.1", 5000))
        yield port, connection
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300),
                      st.binary(min_size=12, max_size=200).map(lambda b: b[:4] + b"\x21\x12\xa4\x42" + b[4:]),
                      st.builds(lambda tail: stun_request("fuzzufrag:x", None)[:-4] + tail, st.binary(max_size=8))),
       source=st.sampled_from([("127.0.0.1", 5000), ("127.0.0.1", 5001)]))
def test_arbitrary_bytes_are_routed_or_dropped_and_never_raise(
        fuzzed_port: tuple[udpmux.Port, _Connection], data: bytes, source: tuple[str, int]) -> None:
    port, connection = fuzzed_port
    before, got = dict(port.counts), len(connection.data) + connection.requests
    port.datagram_received(data, source)
    after = port.counts
    dropped = sum(after[k] - before[k] for k in ("garbage", "unknown_ufrag", "unknown_address", "unknown_transaction"))
    delivered = after["delivered"] - before["delivered"] + after["handler_errors"] - before["handler_errors"]
    assert after["datagrams"] - before["datagrams"] == 1 == dropped + delivered
    if source != ("127.0.0.1", 5000) and not data.startswith(b"\x00\x01"):  # not a request: by address only
        assert not delivered and len(connection.data) + connection.requests == got


# -- the per-site socket as the reference: same units, both ports, both send paths --------------

PATHS = [("mux", "native"), ("mux", "python"), ("socket", "native"), ("socket", "python")]


@pytest.mark.asyncio
@pytest.mark.parametrize("core", ["tight"], indirect=True)
async def test_both_ports_and_both_send_paths_deliver_identical_rtp(
        core: MediaCore, join: JoinFn, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = PATHS if native.unavailable() is None else [p for p in PATHS if p[1] == "python"]
    got: dict[str, list[Any]] = {}
    sites: dict[str, Site] = {}
    for port_kind, send in paths:
        name = f"{port_kind}-{send}"
        monkeypatch.setenv(udpmux.ENV, "1" if port_kind == "mux" else "0")  # read per subscription
        monkeypatch.setenv(native.ENV, "1" if send == "native" else "0")  # read per stream, on connect
        site, _ = await join(name, "low")
        sites[name] = site
        forwarders = await connected(core, name)
        assert (forwarders["video"]._native is not None) == (send == "native")
        packets = got[name] = []
        receiver = site.transceivers["video"].receiver
        original = receiver._handle_rtp_packet

        async def record(packet: Any, arrival_time_ms: int, packets: list[Any] = packets,
                         original: Any = original) -> None:
            packets.append(packet)
            await original(packet, arrival_time_ms)

        seam.replace_rtp_handler(receiver, record)
    assert core.udp_mux is not None
    (port,) = core.udp_mux.ports.values()
    for name, site in sites.items():
        shared = candidate_ports(site.pc.remoteDescription.sdp) == {port.sockname[1]}
        assert shared == name.startswith("mux")
    for site in sites.values():
        await site.frames(15)  # decoded: every site gets the program
    # The program's units as each site got them: per program timestamp (the site's timestamp
    # less its forwarder's offset), the payloads in order and their sequence numbers.
    by_ts: dict[str, dict[int, list[tuple[int, bytes]]]] = {}
    for name, packets in got.items():
        video = session_of(core, name).forwarders["video"]
        assert packets and {p.ssrc for p in packets} == {video._ssrc}
        units = by_ts[name] = {}
        for p in packets:
            units.setdefault((p.timestamp - video._ts_offset) & 0xFFFF_FFFF, []).append((p.sequence_number, p.payload))
    common = sorted(set.intersection(*(set(u) for u in by_ts.values())))
    assert len(common) >= 5, "the sites shared too few units"
    common = common[1:-1]  # the first and last may be partial in one site's capture
    reference = [payload for ts in common for _, payload in by_ts[paths[-1][0] + "-" + paths[-1][1]][ts]]
    for name, units in by_ts.items():
        assert [payload for ts in common for _, payload in units[ts]] == reference, name
        seqs = [seq for ts in common for seq, _ in units[ts]]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))], name  # no gap, no repeat
    assert port.counts["handler_errors"] == 0
