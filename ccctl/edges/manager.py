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
plays, it says so with its Janus session and handle (:meth:`EdgeManager.report_watching`,
its token proving who): on an edge registered with its admin API, the edge confirms that
handle watches one of ccctl's mountpoints (``handle_info``) before the ``join`` event naming
the edge is recorded (``by: edge``; else the site's word, ``by: site``). Each round then asks
the admin API about every site there: its figures (what Janus sent it) are the stats of
:meth:`EdgeManager.stats`, and a handle gone is a ``leave`` even if the site never said so;
a ``leave`` is also recorded when the site says it left, or at once when its edge goes down or
is removed. A tier change is Janus's ``switch`` of the site's handle to the other tier's
mountpoint on the same edge (:meth:`EdgeManager.set_tier`): the same connection. So a dead
edge's sites move at the latest one interval plus one probe timeout after it died, plus the
time their viewers take to ask again (they do as soon as Janus hangs up or stops answering).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ccctl.edges import EdgeError
from ccctl.edges.assign import EdgeLoad, assign
from ccctl.edges.feed import EdgeFeed
from ccctl.edges.janus import Gone, JanusAdmin, viewer_of
from ccctl.edges.keys import read_key
from ccctl.errors import CcctlError, NotFound, UsageError
from ccctl.registry.edges import Edge, list_edges
from ccctl.registry.sites import select_sites

if TYPE_CHECKING:
    from ccctl.media.program import Program
    from ccctl.registry.db import Database

log = logging.getLogger(__name__)
Recorder = Callable[[str, str, dict[str, Any]], None]  # (kind, site, detail): the server's event log

HEALTH_INTERVAL_S = 2.0
ADMIN_CONCURRENCY = 8  # handle_info requests in flight to one edge's admin API
ADMIN_ROUND_S = 2.0  # at most this long per round reading one edge's viewers
PROBE_TIMEOUT_S = 2.0
OPEN_TIMEOUT_S = 6.0  # connect and create every tier's mountpoint


@dataclass
class _Edge:
    edge: Edge
    load: EdgeLoad
    feed: EdgeFeed | None = None
    error: str = ""
    opening: asyncio.Task[None] | None = None  # feeding it (again) in the background
    admin: JanusAdmin | None = None  # its admin API, when registered: who watches there


class EdgeManager:
    """The edges of one live broadcast (see the module doc)."""

    def __init__(self, db: Database, program: Program, broadcast_id: int,
                 interval: float = HEALTH_INTERVAL_S, record: Recorder | None = None) -> None:
        self.db = db
        self.record = record  # the broadcast's event log (join/leave of sites served by edges)
        self.watching: dict[str, str] = {}  # site -> the edge it reported watching from
        self.handles: dict[str, tuple[int, int]] = {}  # site -> its Janus session and handle there
        self.tiers: dict[str, str] = {}  # site -> the tier an operator moved it to (kept if it moves edge)
        self.given: dict[str, str] = {}  # site -> the tier of the mountpoint it plays now
        self.seen: dict[str, dict[str, Any]] = {}  # site -> what its edge's admin API says of it
        self.joined: dict[str, tuple[float, str]] = {}  # site -> when it joined its edge, and who said so
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
            if e.edge.admin_url and e.admin is None:
                try:
                    e.admin = JanusAdmin(e.edge.admin_url, read_key(e.edge.admin_key_file, line=1))
                except CcctlError as exc:  # its key file went bad meanwhile: viewers' own word only
                    log.warning("edges: %s: admin API not used: %s", e.edge.name, exc)
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
        if e.admin is not None:
            await self._read_viewers(e, e.admin, feed)

    async def _read_viewers(self, e: _Edge, admin: JanusAdmin, feed: EdgeFeed) -> None:
        """Ask the edge's admin API about each site watching there: one whose handle is gone
        (it closed, crashed, or lost its connection) or watches none of ccctl's mountpoints
        has left (``leave``, reason ``gone_from_edge``); the others' figures are kept for stats.
        An admin API that does not answer changes nothing (the probe decides up or down)."""
        name, mounts = e.edge.name, {m.id: m.tier for m in feed.mounts.values()}
        limit = asyncio.Semaphore(ADMIN_CONCURRENCY)

        async def one(site: str, ids: tuple[int, int]) -> None:
            async with limit:
                try:
                    viewer = viewer_of(await asyncio.wait_for(admin.handle_info(*ids), PROBE_TIMEOUT_S))
                except Gone:
                    viewer = None
                except (EdgeError, TimeoutError):
                    return
            if self.watching.get(site) != name or self.handles.get(site) != ids:
                return  # it moved meanwhile
            if viewer is None or viewer["mount"] not in mounts:
                self.left(site, name=name, reason="gone_from_edge")
            else:
                self.seen[site] = viewer | {"tier": mounts[viewer["mount"]]}

        asks = [one(site, self.handles[site]) for site, n in list(self.watching.items())
                if n == name and site in self.handles]
        try:  # a slow admin API must not hold up the round (failover depends on it): the rest waits
            await asyncio.wait_for(asyncio.gather(*asks), ADMIN_ROUND_S)
        except TimeoutError:
            log.warning("edges: %s: admin API slower than %g s; some viewers not read this round", name,
                        ADMIN_ROUND_S)

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
        if e.admin is not None:
            admin, e.admin = e.admin, None
            await admin.close()
        self._changed()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    # -- what the sites ask -------------------------------------------------------------------
    def edge_for(self, site: str, tier: str) -> dict[str, Any] | None:
        """Where ``site`` plays ``tier`` from (or the tier an operator moved it to since):
        the edge's URL, mountpoint and pin, or None (ccctl itself, WHEP)."""
        tier = self.tiers.get(site, tier)
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
        self.given[site] = mount.tier
        return {"edge": name, "url": e.edge.api_url, "mount": mount.id, "pin": mount.pin, "tier": mount.tier}

    def watching_from(self, site: str, name: str, tier: str, ids: tuple[int, int] | None = None,
                      by: str = "site") -> bool:
        """A site says it plays from edge ``name`` now (its token checked by the route), on
        Janus session and handle ``ids``: a ``join`` event with the edge. False (nothing
        recorded) unless that is the edge it was given and the edge is up."""
        e = self.edges.get(name)
        if self.sites.get(site) != name or e is None or not e.load.up:
            return False
        tier = self.given.get(site, tier)
        if self.watching.get(site) != name:
            if site in self.watching:
                self.left(site, reason="moved")
            self.watching[site] = name
            if ids is not None:
                self.handles[site] = ids
            self.joined[site] = (time.time(), by)
            if self.record is not None:
                self.record("join", site, {"session_id": f"edge:{name}", "tier": tier, "edge": name, "by": by})
        elif ids is not None:
            self.handles[site] = ids
        return True

    async def report_watching(self, site: str, name: str, tier: str, ids: tuple[int, int] | None) -> bool:
        """A site's report that it plays from edge ``name`` on Janus handle ``ids``. On an edge
        with an admin API, the edge has the last word: the handle must exist and watch one of
        ccctl's mountpoints there (the ``join`` then says ``by: edge``); False when it does not.
        If the admin API does not answer, or the edge has none, the site's word is taken
        (``by: site``). Then as :meth:`watching_from`."""
        e = self.edges.get(name)
        by = "site"
        if ids is not None and any(h == ids and s != site for s, h in self.handles.items()):
            return False  # another site's handle is not this one's (ccctl would switch it)
        if e is not None and e.admin is not None and e.feed is not None and self.sites.get(site) == name:
            if ids is None:
                return False
            mounts = {m.id: m.tier for m in e.feed.mounts.values()}
            try:
                viewer = viewer_of(await asyncio.wait_for(e.admin.handle_info(*ids), PROBE_TIMEOUT_S))
            except Gone:
                return False
            except (EdgeError, TimeoutError) as exc:
                log.warning("edges: %s: admin API: %s; taking %s's word", name, exc, site)
            else:
                if viewer is None or viewer["mount"] not in mounts:
                    return False
                self.seen[site] = viewer | {"tier": mounts[viewer["mount"]]}
                by = "edge"
        return self.watching_from(site, name, tier, ids, by)

    async def set_tier(self, site: str, tier: str) -> dict[str, Any]:
        """Move a site playing from an edge to ``tier`` now: Janus's ``switch`` of its handle
        to that tier's mountpoint on the same edge (same connection, no new session); a
        ``tier`` event. NotFound unless it plays from an edge, UsageError for an unknown tier,
        EdgeError when the edge refuses (or the site never said which handle is its)."""
        name = self.watching.get(site)
        e = self.edges.get(name) if name else None
        if name is None or e is None or e.feed is None or e.feed.client is None:
            raise NotFound(f"site {site} does not play from an edge")
        mount = e.feed.mounts.get(tier)
        if mount is None:
            raise UsageError(f"unknown tier {tier!r} (known: {', '.join(sorted(e.feed.mounts))})")
        ids = self.handles.get(site)
        if ids is None:
            raise EdgeError(f"site {site} did not say which Janus handle it plays on; it must join again")
        previous = self.given.get(site)
        if previous != tier:
            await e.feed.client.switch(ids[0], ids[1], mount.id)
            if self.record is not None:
                self.record("tier", site, {"session_id": f"edge:{name}", "from": previous, "to": tier,
                                           "reason": "operator", "edge": name})
        self.tiers[site] = self.given[site] = tier
        return {"site_id": site, "tier": tier, "previous": previous, "edge": name}

    async def release(self, site: str, why: str) -> bool:
        """Send ``site`` away from its edge (a higher broadcast took it): hang up its handle, so
        that its page's player asks ccctl again and is given the broadcast that holds it now;
        a ``leave`` saying ``why``. False when it does not play from an edge of this broadcast."""
        name = self.sites.pop(site, None)
        for each in self.edges.values():
            each.load.assigned.discard(site)
        name = self.watching.get(site) or name
        if site not in self.watching:
            return False
        e = self.edges.get(name) if name else None
        ids = self.handles.get(site)
        if e is not None and e.feed is not None and e.feed.client is not None and ids is not None:
            try:
                await e.feed.client.hangup(*ids)
            except (EdgeError, TimeoutError) as exc:  # gone already: its player asks again on its own
                log.info("edges: %s: hangup of %s: %s", name, site, exc)
        self.left(site, reason=why)
        return True

    def left(self, site: str, name: str | None = None, reason: str = "left") -> None:
        """A site stopped playing from its edge (it said so, or the edge went away): ``leave``."""
        current = self.watching.get(site)
        if current is None or (name is not None and current != name):
            return
        del self.watching[site]
        self.handles.pop(site, None)
        self.seen.pop(site, None)
        self.joined.pop(site, None)
        if self.record is not None:
            self.record("leave", site, {"session_id": f"edge:{current}", "reason": reason, "edge": current})

    def stats(self) -> list[dict[str, Any]]:
        """Per site playing from an edge, in the shape of the media core's session stats, with
        ``edge`` (which serves it) and ``by`` (``edge``: its edge's admin API confirms it and
        gave the figures, sent by Janus: packets, bytes, kbps over the last second, RTT;
        ``site``: its own word, no figures)."""
        rows = []
        for site, name in sorted(self.watching.items()):
            seen = self.seen.get(site) or {}
            joined, by = self.joined.get(site, (None, "site"))
            rows.append({"site_id": site, "session_id": f"edge:{name}", "edge": name, "by": by,
                         "tier": seen.get("tier") or self.given.get(site),
                         "state": "connected" if seen.get("started", by == "site") else "connecting",
                         "joined_at": joined, "connected_at": joined,
                         "packets_sent": seen.get("packets_sent"), "bytes_sent": seen.get("bytes_sent"),
                         "kbps": seen.get("kbps"), "rtt_ms": seen.get("rtt_ms")})
        return rows

    def status(self) -> list[dict[str, Any]]:
        """Each edge of this broadcast: up, viewers, sites given to it, the last error."""
        return [{"name": name, "up": e.load.up, "viewers": e.load.viewers, "sites": len(e.load.assigned),
                 "watching": sorted(s for s, n in self.watching.items() if n == name),
                 "capacity": e.edge.capacity, "error": e.error} for name, e in sorted(self.edges.items())]


async def start_edges(db: Database, program: Program, broadcast_id: int, record: Recorder | None = None) -> EdgeManager:
    """The server's hook at broadcast start: an :class:`EdgeManager`, started; ``record``
    logs the joins and leaves of the sites served by edges."""
    return await EdgeManager(db, program, broadcast_id, record=record).start()
