"""One live broadcast's media: its core, WHIP ingest, admission, floor, edges and audience.

The server (:mod:`ccctl.media.server`) keeps one :class:`Room` per live broadcast, by id. A
site belongs to the room of the highest-level broadcast whose audience holds it
(:func:`ccctl.registry.broadcasts.audience_level`: every site, then several provinces, one
province, one district; between two of the same level, the one started first keeps it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ccctl.media import state
from ccctl.media.admission import Admission, AdmissionPolicy
from ccctl.registry.broadcasts import audience_ids, audience_level

if TYPE_CHECKING:
    from ccctl.media.coreapi import MediaCoreAPI
    from ccctl.media.ingest import FloorBoard, Ingest
    from ccctl.registry.db import Database

log = logging.getLogger(__name__)
WORKER_EXITED = "worker exited"  # a leave's reason when a fan-out worker died or was killed (ccctl.media.shard)


class Room:
    """A live broadcast's media (see the module doc); :meth:`start` then :meth:`close`."""

    def __init__(self, db: Database, broadcast: dict[str, Any], policy: AdmissionPolicy) -> None:
        from ccctl.media.ingest import FloorBoard

        self.db = db
        self.broadcast = broadcast
        self.id: int = int(broadcast["id"])
        self.policy = policy
        self.core: MediaCoreAPI | None = None
        self.ingest: Ingest | None = None
        self.admission: Admission | None = None
        self.edges: Any = None  # its EdgeManager (ccctl.edges.manager)
        self.board: FloorBoard = FloorBoard()
        self.audience: frozenset[str] | None = audience_ids(db, self.id)  # None: every enabled site
        self.level: int = audience_level(db, self.id)
        self.refused: set[str] = set()  # sites outside every audience refused (one event each)
        self.floor_listeners = 0  # join pages parked in this room's floor long-poll
        self._clock_watch: asyncio.Task[None] | None = None
        self.lost: dict[str, str] = {}  # site -> its session lost with a fan-out worker (until it rejoins)
        self._poke_soon = False

    @property
    def rank(self) -> tuple[int, int]:
        """Lower ranks first: a site goes to the room of the lowest rank whose audience holds it."""
        return self.level, self.id

    def holds(self, site_id: str) -> bool:
        """Whether ``site_id`` is in this broadcast's audience."""
        return self.audience is None or site_id in self.audience

    def record(self, kind: str, site: str, detail: dict[str, Any]) -> None:
        """An event of this broadcast (admission hears it too). A session lost with its fan-out
        worker is noted in :attr:`lost` and the floor long-polls woken: the page whose session
        it was rejoins (onto a live worker) without waiting for its own media timeout."""
        if kind == "leave" and detail.get("reason") == WORKER_EXITED and detail.get("session_id"):
            self.lost[site] = str(detail["session_id"])
            if not self._poke_soon:
                self._poke_soon = True  # one wake for a worker's whole batch of leaves
                asyncio.get_running_loop().call_soon(self._poke)
        if self.admission is not None:
            self.admission.on_event(kind, site, detail)
        state.record_event(self.db, self.id, site, kind, detail)

    def _poke(self) -> None:
        self._poke_soon = False
        self.board.poke()

    async def start(self, factory: Any) -> None:
        """Start the core (``factory(source=..., on_event=...)``), admission, ingest and edges."""
        from ccctl.edges.manager import start_edges
        from ccctl.media.ingest import Ingest

        broadcast = self.broadcast
        self.core = factory(source=broadcast["source"], on_event=self.record)
        await self.core.start()
        self.admission = Admission(self.policy, self.core.tiers, self.core.program.fps,
                                   getattr(self.core, "processes", 1), on_event=self.record)
        self._clock_watch = asyncio.get_running_loop().create_task(self._watch_clock(), name=f"admission-clock-{self.id}")
        self.ingest = Ingest(self.core.program, self.board, self.record, main_is_whip=broadcast["source"] == "whip")
        await self.ingest.start()
        self.ingest.set_floor(broadcast.get("floor_site"))  # a restarted server gives it back
        self.edges = await start_edges(self.db, self.core.program, self.id, self.record)  # fed while live

    async def _watch_clock(self) -> None:
        """Every second, tell admission how the program's audio clock keeps up."""
        from ccctl.media.program import AUDIO_RATE, AUDIO_SAMPLES

        loop = asyncio.get_running_loop()
        while self.core is not None and self.admission is not None:  # ends with the room (cancelled)
            program = self.core.program
            pool = getattr(self.core, "pool", None)  # --workers: each worker's sending loop counts too
            self.admission.observe_clock(loop.time(), program.audio_ticks, AUDIO_RATE / AUDIO_SAMPLES,
                                         bool(program.audio_feed.subscribers),
                                         pool.clock_shares() if pool is not None else ())
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        """End the publishers, release the floor (pages stop publishing), close the core."""
        if self._clock_watch is not None:
            self._clock_watch.cancel()
            await asyncio.gather(self._clock_watch, return_exceptions=True)
            self._clock_watch = None
        if self.edges is not None:  # edges: stop feeding, remove the mountpoints
            await self.edges.close()
            self.edges = None
        if self.ingest is not None:
            await self.ingest.close()
            self.ingest = None
        self.board.set(None)
        self.board.close()  # wake its long-polls: their pages ask again and find their room
        if self.core is not None:
            await self.core.close()
            self.core = None
        self.admission = None

    def site_ids(self) -> set[str]:
        """The sites with anything live here: a WHEP session, a WHIP uplink, or the floor."""
        sites = {s.site_id for s in self.core.sessions()} if self.core is not None else set()
        if self.board.holder is not None:
            sites.add(self.board.holder)
        if self.ingest is not None:
            sites |= {p["site_id"] for p in self.ingest.stats() if p.get("site_id")}
        if self.edges is not None:
            sites |= set(self.edges.watching)
        return sites

    async def end_site(self, site_id: str, why: str, leave: str = "unsubscribed") -> dict[str, Any]:
        """End everything ``site_id`` has live here: the floor if it holds it (the program goes
        back to the main source, the release event says ``why``), its WHIP uplink, its WHEP
        sessions and its place on an edge (hung up: its player asks again; their ``leave``
        events say ``leave``). The floor goes first, so an uplink still
        negotiating is refused when it finishes."""
        released, publishers, ended = False, 0, 0
        if self.ingest is not None:
            if self.board.holder == site_id:
                state.set_floor(self.db, self.id, None, why)
                self.ingest.set_floor(None, why)
                released = True
            publishers = await self.ingest.end_site(site_id, why)
        if self.core is not None:
            for session in [s for s in self.core.sessions() if s.site_id == site_id]:
                ended += int(await self.core.unsubscribe(session.session_id, leave))
        edge = await self.edges.release(site_id, leave) if self.edges is not None else False
        return {"site_id": site_id, "sessions_ended": ended + int(edge), "publishers_ended": publishers,
                "floor_released": released}
