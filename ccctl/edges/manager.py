"""A live broadcast's edges: fed, watched, and handed out to sites.

:class:`EdgeManager` runs beside the media core for as long as a broadcast is live. It opens
an :class:`~ccctl.edges.feed.EdgeFeed` on every registered edge, then every
:data:`HEALTH_INTERVAL_S` its health loop:

- reads the registry again: an edge removed there is stopped (its mountpoints destroyed, so
  its viewers are hung up and come back to ask), a new one is fed, a changed one refed;
- asks each fed edge for its viewers (``info``): one that does not answer within
  :data:`PROBE_TIMEOUT_S` is down: its sinks stop, its sites are released at once;
- tries again, in the background, to feed an edge that is down (it may have been restarted:
  its mountpoints are created anew), so that an edge that stays silent never holds up the
  round of the others.

A site asks :meth:`EdgeManager.edge_for` (the join flow's route) and gets an edge of its
region with room left (:mod:`ccctl.edges.assign`), or None: ccctl serves it itself. Once it
plays, it says so (:meth:`EdgeManager.watching_from`): a ``join`` event naming the edge, so
attendance counts it; its ``leave`` is recorded when it says it left, or at once when its edge
goes down or is removed. (Self-reported joins, with the token proving who: Janus's admin API
or event handlers would let the edge say it instead; not done.) So a dead
edge's sites move at the latest one interval plus one probe timeout after it died, plus the
time their viewers take to ask again (they do as soon as Janus hangs up or stops answering).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ccctl.edges import EdgeError
from ccctl.edges.assign import EdgeLoad, assign
from ccctl.edges.feed import EdgeFeed
from ccctl.errors import CcctlError
from ccctl.registry.edges import Edge, list_edges
from ccctl.registry.sites import select_sites

if TYPE_CHECKING:
    from ccctl.media.program import Program
    from ccctl.registry.db import Database

log = logging.getLogger(__name__)
Recorder = Callable[[str, str, dict[str, Any]], None]  # (kind, site, detail): the server's event log

HEALTH_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 2.0
OPEN_TIMEOUT_S = 6.0  # connect and create every tier's mountpoint


@dataclass
class _Edge:
    edge: Edge
    load: EdgeLoad
    feed: EdgeFeed | None = None
    error: str = ""
    opening: asyncio.Task[None] | None = None  # feeding it (again) in the background


class EdgeManager:
    """The edges of one live broadcast (see the module doc)."""

    def __init__(self, db: Database, program: Program, broadcast_id: int,
                 interval: float = HEALTH_INTERVAL_S, record: Recorder | None = None) -> None:
        self.db = db
        self.record = record  # the broadcast's event log (join/leave of sites served by edges)
        self.watching: dict[str, str] = {}  # site -> the edge it reported watching from
        self.program = program
        self.broadcast_id = broadcast_id
        self.interval = interval
        self.edges: dict[str, _Edge] = {}
        self.sites: dict[str, str | None] = {}  # site -> the edge it was given (None: ccctl)
        self.changed = asyncio.Event()  # set (and replaced) whenever an edge goes up or down
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> EdgeManager:
        """Feed every registered edge (those that fail count as down) and start the health loop."""
        await self.refresh()
        await asyncio.gather(*(e.opening for e in self.edges.values() if e.opening is not None),
                             return_exceptions=True)
        self._task = asyncio.create_task(self._health(), name="edges-health")
        return self

    async def close(self) -> None:
        """Stop the loop, stop feeding and destroy every mountpoint (the broadcast ended)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*(self._stop(name, "broadcast_ended") for name in list(self.edges)),
                             return_exceptions=True)
        self.edges.clear()

    # -- the health loop ------------------------------------------------------------------------
    async def _health(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except CcctlError as exc:  # the registry unreadable for a moment: try again next time
                log.warning("edges: health check failed: %s", exc)

    async def refresh(self) -> None:
        """One round: follow the registry, probe the fed edges, retry the ones down."""
        registered = {e.name: e for e in list_edges(self.db)}
        for name in [n for n in self.edges if n not in registered or registered[n] != self.edges[n].edge]:
            await self._stop(name)
            del self.edges[name]
        for name, edge in registered.items():
            if name not in self.edges:
                region = frozenset(s.id for s in select_sites(self.db, edge.site_filter()))
                self.edges[name] = _Edge(edge, EdgeLoad(name, False, region, edge.capacity))
        for e in self.edges.values():  # an edge not fed is retried aside: a silent one must not hold up the round
            if e.feed is None and e.opening is None:
                e.opening = asyncio.create_task(self._open(e), name=f"edges-open-{e.edge.name}")
        await asyncio.gather(*(self._probe(e) for e in self.edges.values() if e.feed is not None))

    async def _open(self, e: _Edge) -> None:
        try:
            feed = EdgeFeed(e.edge, self.program, self.broadcast_id)
            try:
                await asyncio.wait_for(feed.open(), OPEN_TIMEOUT_S)
            except (CcctlError, TimeoutError) as exc:
                self._down(e, str(exc) or f"no answer within {OPEN_TIMEOUT_S:g} s")
                return
            if self.edges.get(e.edge.name) is not e:  # removed meanwhile
                await feed.close()
                return
            e.feed = feed
            self._up(e)
        finally:
            e.opening = None

    async def _probe(self, e: _Edge) -> None:
        feed = e.feed
        assert feed is not None
        try:
            viewers = await asyncio.wait_for(feed.viewers(), PROBE_TIMEOUT_S)
        except (EdgeError, TimeoutError) as exc:
            self._down(e, str(exc) or f"no answer within {PROBE_TIMEOUT_S:g} s")
            e.feed = None
            await feed.close(destroy=False)  # nothing sent to a dead edge: no goodbye to wait for
            return
        e.load.viewers = sum(viewers.values())
        self._up(e)

    def _up(self, e: _Edge) -> None:
        e.error = ""
        if not e.load.up:
            e.load.up = True
            log.info("edges: %s up", e.edge.name)
            self._changed()

    def _down(self, e: _Edge, why: str) -> None:
        e.error = why
        if e.load.up:
            log.warning("edges: %s down: %s", e.edge.name, why)
            e.load.up = False
            self._release(e)
            self._changed()

    def _release(self, e: _Edge, reason: str = "edge_down") -> None:
        for site in e.load.assigned:
            self.sites.pop(site, None)
        e.load.assigned.clear()
        for site in [s for s, name in self.watching.items() if name == e.edge.name]:
            self.left(site, name=e.edge.name, reason=reason)

    async def _stop(self, name: str, reason: str = "edge_removed") -> None:
        e = self.edges[name]
        if e.opening is not None:
            e.opening.cancel()
            await asyncio.gather(e.opening, return_exceptions=True)
        e.load.up = False
        self._release(e, reason)
        if e.feed is not None:
            feed, e.feed = e.feed, None
            await feed.close()
        self._changed()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    # -- what the sites ask -------------------------------------------------------------------
    def edge_for(self, site: str, tier: str) -> dict[str, Any] | None:
        """Where ``site`` plays ``tier`` from: the edge's URL, mountpoint and pin, or None
        (ccctl itself, WHEP)."""
        loads = {name: e.load for name, e in self.edges.items() if e.feed is not None}
        name = assign(site, loads, self.sites.get(site))
        self.sites[site] = name
        if name is None:
            return None
        e = self.edges[name]
        assert e.feed is not None
        mount = e.feed.mounts.get(tier) or e.feed.mounts.get("audio")
        if mount is None:
            return None
        return {"edge": name, "url": e.edge.api_url, "mount": mount.id, "pin": mount.pin, "tier": mount.tier}

    def watching_from(self, site: str, name: str, tier: str) -> bool:
        """A site says it plays from edge ``name`` now (its token checked by the route): a
        ``join`` event with the edge. False (nothing recorded) unless that is the edge it was
        given and the edge is up."""
        e = self.edges.get(name)
        if self.sites.get(site) != name or e is None or not e.load.up:
            return False
        if self.watching.get(site) != name:
            if site in self.watching:
                self.left(site, reason="moved")
            self.watching[site] = name
            if self.record is not None:
                self.record("join", site, {"session_id": f"edge:{name}", "tier": tier, "edge": name})
        return True

    def left(self, site: str, name: str | None = None, reason: str = "left") -> None:
        """A site stopped playing from its edge (it said so, or the edge went away): ``leave``."""
        current = self.watching.get(site)
        if current is None or (name is not None and current != name):
            return
        del self.watching[site]
        if self.record is not None:
            self.record("leave", site, {"session_id": f"edge:{current}", "reason": reason, "edge": current})

    def status(self) -> list[dict[str, Any]]:
        """Each edge of this broadcast: up, viewers, sites given to it, the last error."""
        return [{"name": name, "up": e.load.up, "viewers": e.load.viewers, "sites": len(e.load.assigned),
                 "watching": sorted(s for s, n in self.watching.items() if n == name),
                 "capacity": e.edge.capacity, "error": e.error} for name, e in sorted(self.edges.items())]


async def start_edges(db: Database, program: Program, broadcast_id: int, record: Recorder | None = None) -> EdgeManager:
    """The server's hook at broadcast start: an :class:`EdgeManager`, started; ``record``
    logs the joins and leaves of the sites served by edges."""
    return await EdgeManager(db, program, broadcast_id, record=record).start()
