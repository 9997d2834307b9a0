"""A live broadcast's edges: fed, watched, and handed out to sites.

:class:`EdgeManager` runs beside the media core for as long as a broadcast is live. It opens
an :class:`~ccctl.edges.feed.EdgeFeed` on every registered edge, then every
:data:`HEALTH_INTERVAL_S` its health loop:

- reads the registry again: an edge removed there is stopped (its mountpoints destroyed, so
  its viewers are hung up and come back to ask), a new one is fed, a changed one refed;
- asks each fed edge for its viewers (``info``): one that does not answer within
  :data:`PROBE_TIMEOUT_S` is down: its sinks stop, its sites are released at once;
- tries again to feed an edge that is down (it may have been restarted: its mountpoints
  are created anew).

A site asks :meth:`EdgeManager.edge_for` (the join flow's route) and gets an edge of its
region with room left (:mod:`ccctl.edges.assign`), or None: ccctl serves it itself. So a dead
edge's sites move at the latest one interval plus one probe timeout after it died, plus the
time their viewers take to ask again (they do as soon as Janus hangs up or stops answering).
"""

from __future__ import annotations

import asyncio
import logging
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

HEALTH_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 2.0


@dataclass
class _Edge:
    edge: Edge
    load: EdgeLoad
    feed: EdgeFeed | None = None
    error: str = ""


class EdgeManager:
    """The edges of one live broadcast (see the module doc)."""

    def __init__(self, db: Database, program: Program, broadcast_id: int,
                 interval: float = HEALTH_INTERVAL_S) -> None:
        self.db = db
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
        self._task = asyncio.create_task(self._health(), name="edges-health")
        return self

    async def close(self) -> None:
        """Stop the loop, stop feeding and destroy every mountpoint (the broadcast ended)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*(self._stop(name) for name in list(self.edges)), return_exceptions=True)
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
        await asyncio.gather(*(self._check(e) for e in self.edges.values()))

    async def _check(self, e: _Edge) -> None:
        if e.feed is None:
            try:
                feed = EdgeFeed(e.edge, self.program, self.broadcast_id)
                await asyncio.wait_for(feed.open(), PROBE_TIMEOUT_S * 3)
                e.feed = feed
            except (CcctlError, TimeoutError) as exc:
                self._down(e, str(exc) or "no answer to create")
                return
        try:
            viewers = await asyncio.wait_for(e.feed.viewers(), PROBE_TIMEOUT_S)
        except (EdgeError, TimeoutError) as exc:
            self._down(e, str(exc) or f"no answer within {PROBE_TIMEOUT_S:g} s")
            feed, e.feed = e.feed, None
            await feed.close(destroy=False)
            return
        e.load.viewers = sum(viewers.values())
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

    def _release(self, e: _Edge) -> None:
        for site in e.load.assigned:
            self.sites.pop(site, None)
        e.load.assigned.clear()

    async def _stop(self, name: str) -> None:
        e = self.edges[name]
        e.load.up = False
        self._release(e)
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

    def status(self) -> list[dict[str, Any]]:
        """Each edge of this broadcast: up, viewers, sites given to it, the last error."""
        return [{"name": name, "up": e.load.up, "viewers": e.load.viewers, "sites": len(e.load.assigned),
                 "capacity": e.edge.capacity, "error": e.error} for name, e in sorted(self.edges.items())]


async def start_edges(db: Database, program: Program, broadcast_id: int) -> EdgeManager:
    """The server's hook at broadcast start: an :class:`EdgeManager`, started."""
    return await EdgeManager(db, program, broadcast_id).start()
