"""A simulated site (``ccctl sim join``) playing from an edge, as a real site's join flow does.

:class:`ccctl.sim.receiver.SimReceiver` asks :func:`ask_edge` before its WHEP offer; when
ccctl names an edge, :func:`edge_session` plays from it instead: an
:class:`~ccctl.edges.viewer.EdgeViewer` (Janus's HTTP protocol), reported to ccctl as
watching (attendance), counted into the receiver's own statistics, until the edge hangs up,
goes silent or the receiver is told to leave; then the receiver's loop asks again (after its
usual backoff), and gets another edge or ccctl itself.

Counting here is coarser than on the WHEP path: packets per kind come from the peer
connection's ``inbound-rtp`` statistics, read every second (aiortc's have no byte count, so
bytes stay 0 on this path), and the link faults
(``loss``, ``bwcap``) are not applied. ICE is not pinned to the site's loopback address:
an edge is another machine (here, another network namespace), out of loopback's reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp

from ccctl.edges import EdgeError
from ccctl.edges.viewer import EdgeViewer

if TYPE_CHECKING:
    from ccctl.sim.receiver import SimReceiver

ASK_TIMEOUT_S = 10.0
STATS_PERIOD_S = 1.0


async def ask_edge(receiver: SimReceiver) -> dict[str, Any] | None:
    """Where ccctl says this site plays from: an edge's coordinates, or None (ccctl itself,
    or a server without edges, or any error: the WHEP path then says what is wrong)."""
    url = f"{receiver.server}/api/sites/{quote(receiver.spec.site_id, safe='')}/edge"
    headers = {"Authorization": f"Bearer {receiver.spec.token}"}
    try:
        async with receiver.http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)) as r:
            if r.status != 200:
                return None
            where = await r.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None
    return where if isinstance(where, dict) and where.get("edge") else None


async def _report(receiver: SimReceiver, body: dict[str, Any]) -> bool:
    url = f"{receiver.server}/api/sites/{quote(receiver.spec.site_id, safe='')}/edge"
    headers = {"Authorization": f"Bearer {receiver.spec.token}"}
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with receiver.http.post(url, json=body, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)) as r:
            return r.status == 204
    return False


async def edge_session(receiver: SimReceiver, where: dict[str, Any], stop: asyncio.Event) -> float:
    """One session on an edge; seconds it was up. Raises ``JoinFailed`` when it cannot start."""
    from ccctl.sim.receiver import CONNECTED, JOINING, RETRYING, JoinFailed

    stats = receiver.stats
    stats.state = JOINING if not stats.joins else RETRYING
    started = time.monotonic()
    viewer = EdgeViewer(str(where["url"]), int(where["mount"]), str(where["pin"]),
                        timeout=receiver.connect_timeout)
    try:
        try:
            await viewer.start()
            await asyncio.wait_for(viewer.connected.wait(), receiver.connect_timeout)
        except (EdgeError, TimeoutError) as exc:
            raise JoinFailed("edge_join_failed", f"{where['edge']}: {exc}") from None
        up = time.monotonic()
        stats.joins += 1
        stats.last_join_s = up - started
        if stats.first_join_s is None:
            stats.first_join_s = up - receiver._started
            stats.first_connected_at = time.time()
        stats.state = CONNECTED
        stats.kinds = tuple(sorted(viewer.tracks))
        stats.last_packet = max(stats.last_packet, up)
        await _report(receiver, {"state": "watching", "edge": where["edge"], **viewer.ids})
        base = {k: (stats.packets[k], stats.bytes[k]) for k in ("audio", "video")}
        while not stop.is_set() and not viewer.hangup.is_set():
            counts: dict[str, list[int]] = {"audio": [0, 0], "video": [0, 0]}
            for s in (await viewer.pc.getStats()).values():
                if s.type == "inbound-rtp" and s.kind in counts:
                    counts[s.kind][0] += s.packetsReceived
                    counts[s.kind][1] += getattr(s, "bytesReceived", 0)  # aiortc 1.x has no byte count
            for kind, (packets, octets) in counts.items():
                if base[kind][0] + packets > stats.packets[kind]:
                    stats.last_packet = time.monotonic()
                stats.packets[kind] = base[kind][0] + packets
                stats.bytes[kind] = base[kind][1] + octets
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stop.wait()), STATS_PERIOD_S)
        if not stop.is_set():
            stats.fail("edge_gone", str(where["edge"]))
        return time.monotonic() - up
    finally:
        if stats.state == CONNECTED:
            await _report(receiver, {"state": "left"})
        await viewer.close()
