"""``ccctl serve --workers N``: fan-out worker processes fed the program locally.

One Python process sends at most one core's worth of packets. With ``--workers N`` the
main process keeps each live broadcast's program (source, one encode per tier, packetising)
and the control plane, and N worker processes, one :class:`WorkerPool` shared by every live
broadcast, hold the sites' peer connections (ICE, DTLS, the tight-path forwarders). A
broadcast (a room, :class:`ShardedCore`) is open in every worker, as one in-process core
there; its sites are placed on the worker sending the fewest packets a second over every
room. Each worker gets every packetised unit of the feeds it has subscribers on, once, over
a local stream socket; what it costs per site stays in the worker.

Wire format over each worker's socketpair: frames of ``length (4 bytes) | kind (1 byte) |
body``. Main -> worker: ``U`` a packetised unit (:func:`encode_unit`, its feed named
``ROOM/FEED``), ``R`` a call (JSON: id, op, args; the room key is the first arg). Worker ->
main: ``A`` an answer (JSON: id, result or error), ``E`` an event for the registry (JSON:
room, kind, site, detail), ``K`` a keyframe request (``ROOM/TIER``), ``D`` the feeds the
worker now needs of a room (JSON: room, list), ``T`` its sending loop's share of its ticks
(JSON number, every second), ``S`` started.

:class:`ShardedCore` has the face the server is typed against,
:class:`~ccctl.media.coreapi.MediaCoreAPI`, as :class:`~ccctl.media.core.MediaCore` does. A
worker serves the calls of :data:`WORKER_CALLS` (a table: op -> coroutine on a room's core)
and :data:`ROOM_CALLS`. A worker that dies, or does not answer a call within
``call_timeout`` (it is then killed), takes its sites of every room with it ("leave" events);
it is started again with every room reopened, and its sites are told to rejoin by the server
(:mod:`ccctl.media.server`). A worker's error keeps its HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ccctl.errors import CcctlError, NotFound, UsageError
from ccctl.media.adapt import DEFAULT_ADAPT, AdaptPolicy
from ccctl.media.core import CONNECT_TIMEOUT_S, MediaCore
from ccctl.media.fastpath import RtpUnit
from ccctl.media.program import Program
from ccctl.media.tiers import DEFAULT_TIERS, Feed, MediaError, TierSpec

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
_UNIT = struct.Struct(">IQ?H")  # timestamp, ntp, keyframe, payload count
_PAYLOAD = struct.Struct(">H")
WORKER_BUFFER_LIMIT = 8 << 20  # bytes queued to one worker before it is treated as behind
CALL_TIMEOUT = 30.0
START_TIMEOUT = 60.0
RESTARTS_PER_MINUTE = 5
ERRORS: dict[str, type[CcctlError]] = {"MediaError": MediaError, "NotFound": NotFound, "UsageError": UsageError}


def encode_unit(feed: str, unit: RtpUnit) -> bytes:
    """A unit's wire form: feed name, timestamps, keyframe flag and the payloads."""
    name = feed.encode()
    parts = [bytes([len(name)]), name, _UNIT.pack(unit.timestamp, unit.ntp, unit.keyframe, len(unit.payloads))]
    for payload in unit.payloads:
        parts += [_PAYLOAD.pack(len(payload)), payload]
    return b"".join(parts)


def decode_unit(body: bytes) -> tuple[str, RtpUnit]:
    """The inverse of :func:`encode_unit`."""
    n = body[0]
    feed = body[1:1 + n].decode()
    at = 1 + n
    ts, ntp, keyframe, count = _UNIT.unpack_from(body, at)
    at += _UNIT.size
    payloads = []
    for _ in range(count):
        (size,) = _PAYLOAD.unpack_from(body, at)
        at += _PAYLOAD.size
        payloads.append(body[at:at + size])
        at += size
    return feed, RtpUnit(tuple(payloads), ts, keyframe, sum(map(len, payloads)), ntp)


class Channel:
    """Framed messages over one stream socket, in both directions."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, kind: bytes, body: bytes) -> None:
        """Queue one frame (never waits; see :meth:`backlog`)."""
        if not self.writer.is_closing():
            self.writer.write(_LEN.pack(len(body) + 1) + kind + body)

    def send_json(self, kind: bytes, obj: Any) -> None:
        """Queue one JSON frame."""
        self.send(kind, json.dumps(obj).encode())

    def backlog(self) -> int:
        """Bytes written but not yet taken by the other end."""
        return self.writer.transport.get_write_buffer_size()

    async def receive(self) -> tuple[bytes, bytes] | None:
        """The next frame, or None when the other end has gone."""
        try:
            (size,) = _LEN.unpack(await self.reader.readexactly(_LEN.size))
            frame = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return frame[:1], frame[1:]

    def close(self) -> None:
        """Close the socket."""
        self.writer.close()


# -- the main process ------------------------------------------------------------------------
class _Link:
    """A worker's place on one of a room's program feeds: units go to it packetised, named
    ``ROOM/FEED`` on the wire (one worker serves several rooms)."""

    def __init__(self, worker: _Worker, feed: Feed, wire_name: str) -> None:
        self.worker, self.feed, self.wire_name = worker, feed, wire_name
        self.dropped = 0
        self._need_keyframe = feed.kind == "video"

    def push(self, unit: RtpUnit) -> None:
        if self._need_keyframe:
            if not unit.keyframe:
                return
            self._need_keyframe = False
        if self.worker.channel.backlog() > WORKER_BUFFER_LIMIT:  # the worker is behind: skip to a keyframe
            self.dropped += 1
            if self.feed.kind == "video":
                self._need_keyframe = True
                self.feed.request_keyframe()
            return
        self.worker.channel.send(b"U", encode_unit(self.wire_name, unit))

    def push_pending(self, feed: Feed, unit: RtpUnit) -> None:
        """Links are never pending."""

    def stop(self) -> None:
        self.feed.remove_forwarder(self)


@dataclass
class SessionRef:
    """What the main process knows of a site's session in a worker."""

    session_id: str
    site_id: str
    tier: str
    worker: int


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.channel: Channel = None  # type: ignore[assignment]  # set by start()
        self.calls: dict[int, asyncio.Future[Any]] = {}
        self.hello: asyncio.Future[None] | None = None  # the process said it started
        self.ready: asyncio.Future[None] | None = None  # ... and every attached room is open in it
        self.rooms: set[int] = set()  # rooms open in it now
        self.reader_task: asyncio.Task[None] | None = None
        self.restart: asyncio.Task[None] | None = None
        self.loop_share: float | None = None  # its sending loop's last reported share of its ticks

    @property
    def running(self) -> bool:
        return self.proc is not None and self.ready is not None and self.ready.done() and not self.ready.cancelled() \
            and self.ready.exception() is None


class WorkerPool:
    """The server's fan-out worker processes, shared by every live broadcast's
    :class:`ShardedCore` (a room): each worker holds one in-process core per room open in it,
    and a room's sites are placed on the worker carrying the fewest packets a second over
    every room. A worker that dies, or does not answer a call within ``call_timeout`` (it is
    then killed), takes its sites of every room with it ("leave" events, reason ``worker
    exited``); it is started again and every attached room reopened in it."""

    def __init__(self, workers: int = 2, *, call_timeout: float = CALL_TIMEOUT) -> None:
        if workers < 1:
            raise UsageError("--workers must be at least 1")
        self.call_timeout = call_timeout
        self.workers = [_Worker(i) for i in range(workers)]
        self.rooms: dict[int, ShardedCore] = {}  # room key -> its core
        self._keys = itertools.count(1)
        self._ids = itertools.count(1)
        self._restarts: list[float] = []
        self._started = False
        self._closing = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start every worker (once; later calls return at once)."""
        async with self._lock:
            if not self._started:
                self._started = True
                await asyncio.gather(*(self._start_worker(w) for w in self.workers))

    async def close(self) -> None:
        """End every worker (their sites' connections close)."""
        self._closing = True
        await asyncio.gather(*(self._stop_worker(w) for w in self.workers))
        for worker in self.workers:
            if worker.restart is not None:
                worker.restart.cancel()
                await asyncio.gather(worker.restart, return_exceptions=True)

    async def attach(self, core: ShardedCore) -> int:
        """Open ``core``'s room in every running worker; its key on the wire."""
        await self.start()
        key = next(self._keys)
        self.rooms[key] = core
        await asyncio.gather(*(self._open(w, key) for w in self.workers if w.running))
        return key

    async def detach(self, key: int) -> None:
        """Close a room in every worker (its sites' sessions end, "closed")."""
        async def close_in(worker: _Worker) -> None:
            worker.rooms.discard(key)
            with contextlib.suppress(CcctlError):  # a worker not answering is killed: its sites leave anyway
                await self.call(worker, "room_close", key)

        await asyncio.gather(*(close_in(w) for w in self.workers if key in w.rooms and w.proc is not None))
        core = self.rooms.pop(key, None)  # after: the leave events of its sites came first
        if core is not None:
            core._drop_links()

    def load(self) -> dict[int, float]:
        """Packets a second each running worker sends, over every room (room costs by its tiers)."""
        from ccctl.media.admission import tier_cost

        load = {w.index: 0.0 for w in self.workers if w.running}
        for core in self.rooms.values():
            for ref in core.sessions():
                if ref.worker in load:
                    load[ref.worker] += tier_cost(core.tiers[ref.tier], core.program.fps)
        return load

    def clock_shares(self) -> list[float]:
        """Each running worker's last reported share of its sending loop's ticks (see
        :func:`_loop_watch`); empty until they report."""
        return [w.loop_share for w in self.workers if w.running and w.loop_share is not None]

    # -- one worker ---------------------------------------------------------------------------
    async def _open(self, worker: _Worker, key: int) -> None:
        core = self.rooms.get(key)
        if core is None:
            return
        await self.call(worker, "room_open", key, core.worker_config())
        if key in self.rooms:
            worker.rooms.add(key)
        else:  # the room ended while it opened here: end it here too
            await self.call(worker, "room_close", key)

    async def _start_worker(self, worker: _Worker) -> None:
        from ccctl.media.seam import ice_host_addresses

        loop = asyncio.get_running_loop()
        worker.hello, worker.ready = hello, ready = loop.create_future(), loop.create_future()  # running once ready
        parent, child = socket.socketpair()
        # the main process's ICE address choice (pinned to the listen address when loopback)
        config = {"hosts": ice_host_addresses()}
        worker.rooms.clear()
        worker.loop_share = None
        worker.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ccctl.media.shard", str(child.fileno()), json.dumps(config), pass_fds=(child.fileno(),))
        child.close()
        reader, writer = await asyncio.open_connection(sock=parent)
        worker.channel = Channel(reader, writer)
        worker.reader_task = loop.create_task(self._read(worker), name=f"fanout-worker-{worker.index}")
        try:
            await asyncio.wait_for(asyncio.shield(hello), START_TIMEOUT)
            opened: set[int] = set()
            while missing := [key for key in self.rooms if key not in opened]:  # rooms started meanwhile too
                for key in missing:
                    opened.add(key)
                    await self._open(worker, key)
        except TimeoutError:
            raise MediaError(f"fan-out worker {worker.index} did not start within {START_TIMEOUT:.0f} s", status=503) from None
        if not ready.done():  # (cancelled: it died meanwhile)
            ready.set_result(None)

    async def _stop_worker(self, worker: _Worker) -> None:
        if worker.proc is None:
            return
        proc, worker.proc = worker.proc, None
        worker.channel.close()  # the worker ends its sessions and exits when its socket closes
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if worker.reader_task is not None:
            await asyncio.gather(worker.reader_task, return_exceptions=True)

    async def call(self, worker: _Worker, op: str, *args: Any) -> Any:
        """Ask ``worker`` to run ``op`` (one of :data:`WORKER_CALLS` with a room key first, or
        ``room_open``/``room_close``); its answer, or the error it raised (status kept)."""
        if op not in WORKER_CALLS and op not in ROOM_CALLS:
            raise MediaError(f"no fan-out worker call {op!r}")
        if worker.proc is None:
            raise MediaError(f"fan-out worker {worker.index} is not running", status=503)
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.calls[call_id] = future
        worker.channel.send_json(b"R", {"id": call_id, "op": op, "args": args})
        try:
            return await asyncio.wait_for(future, self.call_timeout)
        except TimeoutError:
            self._unresponsive(worker, op)
            raise MediaError(f"fan-out worker {worker.index} did not answer {op} within {self.call_timeout:g} s",
                             status=503) from None
        finally:
            worker.calls.pop(call_id, None)

    async def _read(self, worker: _Worker) -> None:
        while True:
            message = await worker.channel.receive()
            if message is None:
                break
            kind, body = message
            if kind == b"A":
                answer = json.loads(body)
                future = worker.calls.get(answer["id"])
                if future is not None and not future.done():
                    if "error" in answer:
                        error = ERRORS.get(answer["error"], MediaError)
                        future.set_exception(error(answer["message"], status=answer.get("status", error.status)))
                    else:
                        future.set_result(answer["result"])
            elif kind == b"E":
                key, event_kind, site_id, detail = json.loads(body)
                if key in self.rooms:
                    self.rooms[key]._event(event_kind, site_id, detail)
            elif kind == b"K":
                key, _, tier = body.decode().partition("/")
                if int(key) in self.rooms:
                    self.rooms[int(key)].program.request_keyframe(tier)
            elif kind == b"D":
                key, wanted = json.loads(body)
                if key in self.rooms:
                    self.rooms[key]._demand(worker, set(wanted))
            elif kind == b"T":
                worker.loop_share = float(json.loads(body))
            elif kind == b"S" and worker.hello is not None and not worker.hello.done():
                worker.hello.set_result(None)
        self._worker_gone(worker)

    def _unresponsive(self, worker: _Worker, op: str) -> None:
        """A worker that does not answer in time is killed: its sites are counted out (leave
        events, when its socket closes) and rejoin, on another worker or this one restarted;
        nothing waits on it any longer."""
        proc = worker.proc
        if proc is None or proc.returncode is not None or self._closing:
            return
        log.error("fan-out worker %d did not answer %s within %g s: restarting it", worker.index, op, self.call_timeout)
        for future in worker.calls.values():
            if not future.done():
                future.set_exception(MediaError(f"fan-out worker {worker.index} is not answering", status=503))
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    def _worker_gone(self, worker: _Worker) -> None:
        """The worker's socket closed: its sites of every room have left; start it again unless closing."""
        for future in worker.calls.values():
            if not future.done():
                future.set_exception(MediaError(f"fan-out worker {worker.index} exited", status=503))
        if worker.hello is not None and not worker.hello.done():  # its start waits no longer
            worker.hello.set_exception(MediaError(f"fan-out worker {worker.index} exited while starting", status=503))
        if worker.ready is not None and not worker.ready.done():
            worker.ready.cancel()
        worker.ready = None  # not running (a restart makes new ones)
        worker.rooms.clear()
        for core in list(self.rooms.values()):
            core._worker_gone(worker, "closed" if self._closing or core._closing else "worker exited")
        if self._closing or worker.proc is None:
            return
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 60] + [now]
        log.error("fan-out worker %d exited (code %s)", worker.index, worker.proc.returncode)
        worker.proc = None
        if len(self._restarts) <= RESTARTS_PER_MINUTE:
            worker.restart = asyncio.get_running_loop().create_task(self._start_worker(worker),
                                                                     name=f"restart-worker-{worker.index}")


class ShardedCore:
    """One broadcast's media core over the fan-out workers of a :class:`WorkerPool` (see the
    module doc): the program here, the sites' connections in the workers. Given no ``pool``,
    it starts and ends a pool of its own with ``workers`` processes."""

    def __init__(self, source: str = "testsrc", on_event: Callable[[str, str, dict[str, Any]], None] | None = None, *,
                 tiers: Mapping[str, TierSpec] | None = None, fps: int = 25, workers: int = 2,
                 adapt: AdaptPolicy | None = DEFAULT_ADAPT, ice_servers: tuple[str, ...] = (),
                 connect_timeout: float = CONNECT_TIMEOUT_S, call_timeout: float = CALL_TIMEOUT,
                 pool: WorkerPool | None = None) -> None:
        self.source = source
        self.tiers: dict[str, TierSpec] = dict(tiers or DEFAULT_TIERS)
        self.program = Program(source, self.tiers, fps=fps)
        self._on_event = on_event
        self._adapt = adapt
        self._ice_servers = list(ice_servers)
        self.connect_timeout = connect_timeout
        self._own_pool = pool is None
        self.pool = pool if pool is not None else WorkerPool(workers, call_timeout=call_timeout)
        self.key = 0  # the room's key in the pool (set by start)
        self._links: dict[tuple[int, str], _Link] = {}
        self._sessions: dict[str, SessionRef] = {}
        self._by_site: dict[str, SessionRef] = {}
        self._closing = False
        self.recorder: Any = None

    @property
    def _workers(self) -> list[_Worker]:
        return self.pool.workers

    @property
    def call_timeout(self) -> float:
        return self.pool.call_timeout

    def worker_config(self) -> dict[str, Any]:
        """What a worker needs to open this room."""
        return {"tiers": {name: asdict(spec) for name, spec in self.tiers.items()}, "fps": self.program.fps,
                "adapt": None if self._adapt is None else asdict(self._adapt), "ice_servers": self._ice_servers,
                "connect_timeout": self.connect_timeout}

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the program and open the room in every worker (the pool's first room starts it)."""
        await self.program.start()
        self.key = await self.pool.attach(self)

    async def close(self) -> None:
        """Close the room in every worker (its sites' connections close), then the program."""
        self._closing = True
        if self.recorder is not None:
            await self.recorder.stop()
        if self._own_pool:
            await self.pool.close()
        await self.pool.detach(self.key)
        for ref in list(self._sessions.values()):  # a worker that did not answer: counted out here
            self._event("leave", ref.site_id, {"session_id": ref.session_id, "reason": "closed"})
        await self.program.close()

    async def record(self, path: str) -> None:
        """Record the program as sent (see :meth:`MediaCore.record`): runs in the main process."""
        from ccctl.media.core import start_recorder

        if self.recorder is not None:
            raise MediaError(f"already recording to {self.recorder.path}")
        self.recorder = start_recorder(self.program, self.tiers, path)

    # -- the MediaCore face -------------------------------------------------------------------
    @property
    def processes(self) -> int:
        """Fan-out processes (admission's budget is per process)."""
        return len(self.pool.workers)

    def session(self, session_id: str) -> SessionRef | None:
        """One live session, or None."""
        return self._sessions.get(session_id)

    async def _call(self, worker: _Worker, op: str, *args: Any) -> Any:
        return await self.pool.call(worker, op, self.key, *args)

    async def subscribe(self, site_id: str, offer_sdp: str, tier: str = "high") -> tuple[str, str]:
        """Answer a site's offer in the running worker sending the fewest packets a second (every room's)."""
        if tier not in self.tiers:
            raise UsageError(f"unknown tier {tier!r}: use one of {', '.join(self.tiers)}")
        old = self._by_site.get(site_id)
        load = {i: v for i, v in self.pool.load().items() if self.key in self._workers[i].rooms}
        if not load:
            raise MediaError("no fan-out worker is running", status=503)
        worker = self._workers[min(load, key=lambda i: (load[i], i))]
        session_id, answer, final_tier = await self._call(worker, "subscribe", site_id, offer_sdp, tier)
        ref = SessionRef(session_id, site_id, final_tier, worker.index)
        self._sessions[session_id] = ref
        self._by_site[site_id] = ref
        if old is not None and old.worker != worker.index and old.session_id in self._sessions:
            await self._call(self._workers[old.worker], "unsubscribe", old.session_id, "replaced")  # else its worker did
        return session_id, answer

    async def unsubscribe(self, session_id: str, reason: str = "unsubscribed") -> bool:
        """End a session; False when there is no such session."""
        ref = self._sessions.get(session_id)
        if ref is None:
            return False
        return bool(await self._call(self._workers[ref.worker], "unsubscribe", session_id, reason))

    async def set_tier(self, site_id: str, tier: str, reason: str = "operator") -> None:
        """Move a live site to another tier (in its worker)."""
        ref = self._by_site.get(site_id)
        if ref is None:
            raise NotFound(f"site {site_id} is not subscribed")
        await self._call(self._workers[ref.worker], "set_tier", site_id, tier, reason)
        ref.tier = tier

    def sessions(self) -> list[SessionRef]:
        """The live sessions as the main process knows them."""
        return list(self._sessions.values())

    def tier_counts(self) -> dict[str, int]:
        """Subscribed sites per tier (every tier listed, zeros included)."""
        counts = dict.fromkeys(self.tiers, 0)
        for ref in self._sessions.values():
            counts[ref.tier] = counts.get(ref.tier, 0) + 1
        return counts

    def program_stats(self) -> dict[str, dict[str, int]]:
        """The main program's encoder counters (subscribers: workers fed, not sites)."""
        return self.program.stats()

    async def stats(self) -> list[dict[str, Any]]:
        """Every worker's per-session stats of this room (see :meth:`MediaCore.stats`), with its index."""
        asked = [w for w in self._workers if w.proc is not None and self.key in w.rooms]
        parts = await asyncio.gather(*(self._call(w, "stats") for w in asked), return_exceptions=True)
        rows: list[dict[str, Any]] = []
        for worker, part in zip(asked, parts, strict=True):
            if isinstance(part, BaseException):
                log.warning("worker %d gave no stats: %s", worker.index, part)
                continue
            rows += [row | {"worker": worker.index} for row in part]
        return rows

    # -- from the pool ------------------------------------------------------------------------
    def _feed(self, name: str) -> Feed:
        return self.program.audio_feed if name == "audio" else self.program.feed(name)

    def _demand(self, worker: _Worker, wanted: set[str]) -> None:
        """Put the worker's links on exactly this room's feeds it has sites on."""
        for index, name in [k for k in self._links if k[0] == worker.index and k[1] not in wanted]:
            self._links.pop((index, name)).stop()
        for name in wanted - {n for i, n in self._links if i == worker.index}:
            link = self._links[worker.index, name] = _Link(worker, self._feed(name), f"{self.key}/{name}")
            link.feed.add_forwarder(link)

    def _drop_links(self, worker: _Worker | None = None) -> None:
        for key in [k for k in self._links if worker is None or k[0] == worker.index]:
            self._links.pop(key).stop()

    def _event(self, kind: str, site_id: str, detail: dict[str, Any]) -> None:
        session_id = detail.get("session_id", "")
        if kind == "leave":
            ref = self._sessions.pop(session_id, None)
            if ref is not None and self._by_site.get(site_id) is ref:
                del self._by_site[site_id]
        elif kind == "tier" and session_id in self._sessions:
            self._sessions[session_id].tier = detail["to"]
        if self._on_event is not None:
            try:
                self._on_event(kind, site_id, detail)
            except Exception:  # the registry failing must not break media
                log.exception("on_event(%s, %s) failed", kind, site_id)

    def _worker_gone(self, worker: _Worker, reason: str) -> None:
        """``worker`` exited: this room's sites on it have left."""
        self._drop_links(worker)
        for ref in [r for r in self._sessions.values() if r.worker == worker.index]:
            self._event("leave", ref.site_id, {"session_id": ref.session_id, "reason": reason})


# -- a worker process --------------------------------------------------------------------------
class RemoteProgram:
    """A worker's stand-in for one room's :class:`Program`: feeds filled from the main process."""

    def __init__(self, tiers: Mapping[str, TierSpec], fps: int, channel: Channel, key: int = 0) -> None:
        self.tiers = dict(tiers)
        self.fps = fps
        self.key = key
        self._channel = channel
        self._video = {s.name: Feed(s.name, "video", functools.partial(self._keyframe, s.name), self._demand)
                       for s in self.tiers.values() if s.has_video}
        self.audio_feed = Feed("audio", "audio", None, self._demand)
        self._wanted: set[str] = set()

    async def start(self) -> None:
        """Nothing to start: units arrive from the main process."""

    async def close(self) -> None:
        """Stop every forwarder still on a feed."""
        for feed in [*self._video.values(), self.audio_feed]:
            for sink in list(feed.subscribers):
                sink.stop()

    def feed(self, tier: str) -> Feed:
        """The video feed of ``tier``."""
        return self._video[tier]

    def request_keyframe(self, tier: str) -> None:
        """Ask the main program for a keyframe of ``tier``."""
        if tier in self._video:
            self._video[tier].request_keyframe()

    def open_track(self, tier: str, kind: str) -> Any:
        """Stock tracks (and recording) live in the main process."""
        raise MediaError("a fan-out worker has only the tight path")

    def publish(self, feed: str, unit: RtpUnit) -> None:
        """A unit from the main process, to this worker's forwarders of that feed."""
        target = self.audio_feed if feed == "audio" else self._video.get(feed)
        if target is not None:
            target.publish_rtp(unit)

    def stats(self) -> dict[str, dict[str, int]]:
        """Forwarders per feed."""
        return {f.name: {"subscribers": len(f.subscribers)} for f in [*self._video.values(), self.audio_feed]}

    def _keyframe(self, tier: str) -> None:
        self._channel.send(b"K", f"{self.key}/{tier}".encode())

    def _demand(self) -> None:
        wanted = {f.name for f in [*self._video.values(), self.audio_feed] if f.subscribers}
        if wanted != self._wanted:
            self._wanted = wanted
            self._channel.send_json(b"D", [self.key, sorted(wanted)])


async def _subscribe(core: MediaCore, site_id: str, offer_sdp: str, tier: str) -> list[str]:
    session_id, answer = await core.subscribe(site_id, offer_sdp, tier)
    session = core.session(session_id)
    return [session_id, answer, session.tier if session is not None else tier]  # the tier it got


async def _ping(core: MediaCore) -> None:
    return None


#: What a fan-out worker answers: the op of a call (``R``, args: room key first) -> the
#: coroutine run on that room's core. ``room_open``/``room_close`` (:data:`ROOM_CALLS`) make
#: and end a room's core.
WORKER_CALLS: dict[str, Callable[..., Awaitable[Any]]] = {
    "subscribe": _subscribe,
    "unsubscribe": MediaCore.unsubscribe,
    "set_tier": MediaCore.set_tier,
    "stats": MediaCore.stats,
    "ping": _ping,
}
ROOM_CALLS = frozenset({"room_open", "room_close"})
#: A worker's sending-loop watch: ticks a second, and how often it reports its share.
LOOP_TICK_S, LOOP_REPORT_S = 0.02, 1.0


class _WorkerRooms:
    """A worker process's rooms: one in-process core (on a :class:`RemoteProgram`) per room key."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.cores: dict[int, MediaCore] = {}
        self.programs: dict[int, RemoteProgram] = {}

    async def open(self, key: int, config: dict[str, Any]) -> None:
        if key in self.cores:
            return
        tiers = {name: TierSpec(**spec) for name, spec in config["tiers"].items()}
        program = RemoteProgram(tiers, config["fps"], self.channel, key)
        adapt = AdaptPolicy(**config["adapt"]) if config["adapt"] is not None else None
        channel = self.channel
        core = MediaCore(on_event=lambda kind, site, detail: channel.send_json(b"E", [key, kind, site, detail]),
                         tiers=tiers, fps=config["fps"], ice_servers=config["ice_servers"], adapt=adapt,
                         program=program, connect_timeout=config["connect_timeout"])
        await core.start()
        self.cores[key], self.programs[key] = core, program

    async def close(self, key: int) -> None:
        core = self.cores.pop(key, None)
        self.programs.pop(key, None)
        if core is not None:
            await core.close()

    def core(self, key: int) -> MediaCore:
        core = self.cores.get(key)
        if core is None:
            raise MediaError(f"no room {key} in this fan-out worker", status=503)
        return core

    def publish(self, wire_name: str, unit: RtpUnit) -> None:
        key, _, feed = wire_name.partition("/")
        program = self.programs.get(int(key))
        if program is not None:
            program.publish(feed, unit)


async def _loop_watch(channel: Channel) -> None:
    """Report, every :data:`LOOP_REPORT_S`, the share of its :data:`LOOP_TICK_S` ticks this
    process's event loop (which sends every site's packets) kept: a tick more than one late
    is lost, as the program's clock loses one (admission's lag check reads the slowest worker's)."""
    loop = asyncio.get_running_loop()
    start = next_tick = loop.time()
    made = 0
    while True:  # ends with the worker (cancelled)
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
        now = loop.time()
        made += 1
        next_tick += LOOP_TICK_S
        if now - next_tick > LOOP_TICK_S:  # behind by more than a tick: those are lost
            next_tick = now + LOOP_TICK_S
        if now - start >= LOOP_REPORT_S:
            channel.send_json(b"T", round(min(1.0, made * LOOP_TICK_S / (now - start)), 3))
            start, made = now, 0


async def _serve_worker(fd: int, config: dict[str, Any]) -> None:
    from ccctl.media.net import pin_ice

    hosts = config["hosts"]
    if len(hosts) == 1:
        pin_ice(hosts[0])
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    channel = Channel(reader, writer)
    rooms = _WorkerRooms(channel)
    channel.send(b"S", b"")
    tasks: set[asyncio.Task[None]] = set()
    watch = asyncio.get_running_loop().create_task(_loop_watch(channel))

    async def call(request: dict[str, Any]) -> None:
        try:
            op, (key, *args) = request["op"], request["args"]
            result: Any = None
            if op == "room_open":
                await rooms.open(key, *args)
            elif op == "room_close":
                await rooms.close(key)
            else:
                handler = WORKER_CALLS.get(op)
                if handler is None:
                    raise MediaError(f"unknown call {op}")
                result = await handler(rooms.core(key), *args)
            channel.send_json(b"A", {"id": request["id"], "result": result})
        except CcctlError as exc:
            channel.send_json(b"A", {"id": request["id"], "error": type(exc).__name__, "message": str(exc),
                                     "status": exc.status})

    try:
        while True:
            message = await channel.receive()
            if message is None:
                break
            kind, body = message
            if kind == b"U":
                rooms.publish(*decode_unit(body))
            elif kind == b"R":
                task = asyncio.get_running_loop().create_task(call(json.loads(body)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        watch.cancel()
        for key in list(rooms.cores):
            await rooms.close(key)
        channel.close()


def main() -> None:
    """``python -m ccctl.media.shard FD CONFIG``: one fan-out worker (started by a WorkerPool)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve_worker(int(sys.argv[1]), json.loads(sys.argv[2])))


if __name__ == "__main__":
    main()
