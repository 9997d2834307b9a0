"""Admission: what the media core can carry, and who gets in when more sites come than that.

The core's capacity is a budget of RTP packets per second per fan-out process
(``[admission] pps_budget``): ``"auto"`` (the default) measures this machine's send path at
start (:mod:`ccctl.media.calibrate`: packets per CPU second, times a headroom, clamped), or a
number set in the configuration (e.g. one found with ``benchmarks/joins.py`` on the server's
machine). A site's cost is what its tier sends it: the
program's audio (one Opus packet per 20 ms) plus, for a video tier, one packet per frame and
one per 1,100 bytes of its bitrate (:func:`tier_cost`).

A join is admitted only if its cost fits under the budget of all fan-out processes together
(the sharded core places each site on its least-loaded worker). When it does not, in this
order (``[admission] degrade_video`` turns step 2 off):

1. the floor holder is always admitted, and a site already in is never dropped;
2. video sites of the lowest priority, among the sites in and the joining one, are moved to
   the audio tier (lowest priority first: the tiers in ``low_first`` order, the latest
   connected first; the joining site counts as the latest) until the join fits;
3. the rest is refused: :class:`Overloaded`, a ``503`` with ``Retry-After``.

The budget is checked against what happens: while the program's audio clock runs below
``min_clock_share`` of its rate (the machine is busier than the budget assumed, e.g. shared
with other work), no new site is admitted (503, reason ``lagging``); a site rejoining to
replace its own session still is, and a quarter as many handshakes may be in flight.

Handshakes are paced: at most ``handshakes`` sessions answered but not yet connected (ICE
and DTLS in flight); a further offer waits in a queue of ``queue`` places for at most
``queue_wait_s`` seconds, then gets a 503 too. A refusal's ``Retry-After`` is at least
``retry_after_s`` and grows with the sites waiting (refused lately and not admitted since) so
that they come back about ``retry_rate`` a second in all, at most ``retry_after_max_s``: on a
machine that is full, thousands of refused sites retrying every few seconds would be a storm
of offers that takes the CPU the admitted sites' program needs (measured: 2,482 sites refused
at a 5 s Retry-After came back 8,807 times in 40 s). Every move and refusal is an ``admission``
event (``action``: ``audio`` or ``refused``, with its ``reason``; a site retrying as told is
recorded once a minute, with how many refusals it had since) and a counter in
:meth:`Admission.metrics`.

The core's events (``join`` when a session is connected, ``leave``, ``tier``) keep the
account: :meth:`Admission.on_event` is called with each of them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ccctl.config import AdmissionConfig
from ccctl.errors import CcctlError
from ccctl.media.calibrate import budget_of

if TYPE_CHECKING:  # tiers.py loads PyAV and aiortc; the server imports this module at start
    from ccctl.media.tiers import TierSpec

AUDIO_PPS = 50.0  # Opus packets a second (20 ms frames)
PACKET_BYTES = 1_100  # payload bytes per video packet, about (H.264 FU-A at our MTU)
LEFT_MEMORY = 4096  # ended session ids remembered
CLOCK_WINDOW_S = 3.0  # the program clock's rate is judged over this long
REFUSAL_EVENT_EVERY_S = 60.0  # a site refused again within this is counted, not recorded again


class Overloaded(CcctlError):
    """The core cannot take this join now: come back after ``retry_after`` seconds (503)."""

    status = 503
    expected = True  # a refusal is the system working: no warning per refused join

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: The limits (see the module doc): the configuration's ``[admission]`` section itself, so its
#: fields and defaults are written once; ``pps_budget`` 0 admits everything, ``"auto"`` is
#: measured (:func:`ccctl.media.calibrate.budget_of`).
AdmissionPolicy = AdmissionConfig


def tier_cost(spec: TierSpec, fps: int) -> float:
    """Packets a second a site on ``spec`` is sent: the audio, and the tier's video if any."""
    if not spec.has_video:
        return AUDIO_PPS
    return AUDIO_PPS + fps + math.ceil(spec.video_bitrate / 8 / PACKET_BYTES)


@dataclass
class _Entry:
    """A session the core holds (or an offer being answered, ``session_id`` None)."""

    site_id: str
    tier: str
    connected_at: float | None = None
    session_id: str | None = None


@dataclass
class Ticket:
    """An admitted join: the tier it gets and the video sites to move to audio for it."""

    site_id: str
    tier: str
    moves: list[str] = field(default_factory=list)
    entry: _Entry | None = None


class Admission:
    """The account of what the core carries, and the decisions (see the module doc)."""

    def __init__(self, policy: AdmissionPolicy, tiers: Mapping[str, TierSpec], fps: int, processes: int = 1,
                 on_event: Callable[[str, str, dict[str, Any]], None] | None = None) -> None:
        self.policy = policy
        self.tiers = dict(tiers)
        self.fps = fps
        self.processes = max(1, processes)
        self._on_event = on_event
        self._low_first = tuple(t.strip() for t in policy.low_first.split(",") if t.strip())  # video tiers
        self._audio = next((name for name, spec in self.tiers.items() if not spec.has_video), None)
        self._sessions: dict[str, _Entry] = {}  # session id -> entry
        self._left: dict[str, None] = {}  # sessions that ended lately (a leave before bound())
        self._entries: dict[int, _Entry] = {}
        self._waiters = 0
        self._changed = asyncio.Event()
        self.counts = {"admitted": 0, "refused_budget": 0, "refused_handshakes": 0, "refused_lagging": 0,
                       "moved_to_audio": 0}
        self._clock: list[tuple[float, int]] = []
        self._refused: dict[str, tuple[float, int]] = {}  # site -> (last refusal event, refusals since)
        self._waiting: dict[str, float] = {}  # refused sites not admitted since -> last refusal, oldest first
        self.clock_share: float | None = None  # the program clock's rate over the last window, of nominal

    # -- the account ------------------------------------------------------------------------
    @property
    def capacity(self) -> float:
        """Packets a second the core may send, over all its fan-out processes (0: no limit)."""
        return budget_of(self.policy) * self.processes

    def cost(self, tier: str) -> float:
        """What a site on ``tier`` costs (packets a second)."""
        spec = self.tiers.get(tier)
        return tier_cost(spec, self.fps) if spec is not None else 0.0

    def load(self) -> float:
        """Packets a second of every session held or being answered."""
        return sum(self.cost(e.tier) for e in self._entries.values())

    def in_flight(self) -> int:
        """Handshakes in flight: offers being answered and sessions not yet connected."""
        return sum(e.connected_at is None for e in self._entries.values())

    def observe_clock(self, now: float, ticks: int, rate: float, active: bool, others: Sequence[float] = ()) -> None:
        """The program's audio clock (``ticks`` so far, ``rate`` a second) at ``now``; while
        ``active`` (sites subscribed), a clock below ``min_clock_share`` of its rate over the
        last few seconds means this machine carries less than the budget says: no new site
        is admitted until it keeps up again (those in stay). ``others``: each fan-out worker's
        sending loop's share of its ticks (ccctl.media.shard); the slowest clock counts."""
        if not active:
            self._clock.clear()
            self.clock_share = None
            return
        self._clock = [(t, n) for t, n in self._clock if now - t <= CLOCK_WINDOW_S] + [(now, ticks)]
        (t0, n0), (t1, n1) = self._clock[0], self._clock[-1]
        if t1 - t0 >= CLOCK_WINDOW_S / 2:
            self.clock_share = min([(n1 - n0) / ((t1 - t0) * rate), *others])
            self._wake()

    def handshake_limit(self) -> int:
        """Handshakes allowed in flight: a quarter of ``handshakes`` while the clock lags."""
        return max(1, self.policy.handshakes // 4) if self.lagging else self.policy.handshakes

    @property
    def lagging(self) -> bool:
        """Whether the program's clock is behind (see :meth:`observe_clock`)."""
        return self.clock_share is not None and self.clock_share < self.policy.min_clock_share

    # -- deciding -----------------------------------------------------------------------------
    async def admit(self, site_id: str, tier: str, holder: str | None = None) -> Ticket:
        """Admit a join of ``site_id`` at ``tier`` (maybe moved to audio), waiting for a
        handshake slot in the bounded queue; :class:`Overloaded` when it cannot."""
        policy = self.policy
        if policy.handshakes > 0 and self.in_flight() >= self.handshake_limit() and site_id != holder:
            if self._waiters >= policy.queue:
                self._refuse(site_id, "handshakes", f"{self._waiters} offers already wait for a handshake slot")
            deadline = time.monotonic() + policy.queue_wait_s
            self._waiters += 1
            try:
                while self.in_flight() >= self.handshake_limit():  # bounded by the deadline
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._refuse(site_id, "handshakes",
                                     f"{self.handshake_limit()} handshakes in flight for {policy.queue_wait_s:g} s")
                    self._changed.clear()
                    try:
                        await asyncio.wait_for(self._changed.wait(), remaining)
                    except TimeoutError:
                        pass
            finally:
                self._waiters -= 1
        ticket = self._fit(site_id, tier, holder)
        entry = _Entry(site_id, ticket.tier)
        self._entries[id(entry)] = entry
        ticket.entry = entry
        self.counts["admitted"] += 1
        self._refused.pop(site_id, None)
        self._waiting.pop(site_id, None)
        for moved in ticket.moves:
            self._record("audio", moved, "budget", f"to make room for {site_id}")
        if ticket.tier != tier:
            self._record("audio", site_id, "budget", f"joined on {ticket.tier} instead of {tier}")
        return ticket

    def _fit(self, site_id: str, tier: str, holder: str | None) -> Ticket:
        capacity = self.capacity
        if capacity <= 0 or site_id == holder:
            return Ticket(site_id, tier)
        mine = [e for e in self._entries.values() if e.site_id == site_id]  # a rejoin replaces these
        if self.lagging and not mine:
            self._refuse(site_id, "lagging", f"the program's clock (or a fan-out worker's sending loop) runs "
                                             f"at {(self.clock_share or 0) * 100:.0f} % of its rate")
        load = self.load() - sum(self.cost(e.tier) for e in mine)
        need = self.cost(tier)
        if load + need <= capacity:
            return Ticket(site_id, tier)
        audio = self._audio
        if self.policy.degrade_video and audio is not None:
            # Lowest priority first; the joiner (if on video) goes first among its equals.
            order: list[_Entry | None] = list(self._lowest_video(site_id, holder))
            if self.cost(tier) > self.cost(audio):
                at = next((i for i, e in enumerate(order) if e is not None and self._rank(e.tier) >= self._rank(tier)),
                          len(order))
                order.insert(at, None)
            joined_on = tier
            moves: list[_Entry] = []
            for entry in order:
                if entry is None:
                    joined_on, need = audio, self.cost(audio)
                else:
                    load -= self.cost(entry.tier) - self.cost(audio)
                    moves.append(entry)
                if load + need <= capacity:
                    for moved in moves:  # counted on audio from now (its tier event confirms it)
                        moved.tier = audio
                    return Ticket(site_id, joined_on, [m.site_id for m in moves])
        self._refuse(site_id, "budget", f"{self.load():.0f} of {capacity:.0f} packets/s in use, "
                                        f"{self.cost(tier):.0f} more needed")
        raise AssertionError("unreachable")

    def _rank(self, tier: str) -> int:
        order = self._low_first
        return order.index(tier) if tier in order else len(order)

    def _lowest_video(self, site_id: str, holder: str | None) -> list[_Entry]:
        """Connected video sites (not the floor holder, not the joiner), lowest priority first."""
        video = [e for e in self._entries.values() if e.connected_at is not None and e.site_id not in (site_id, holder)
                 and self.tiers.get(e.tier) is not None and self.tiers[e.tier].has_video]
        return sorted(video, key=lambda e: (self._rank(e.tier), -(e.connected_at or 0.0)))

    def _refuse(self, site_id: str, reason: str, detail: str) -> None:
        self.counts[f"refused_{reason}"] += 1
        now = time.monotonic()
        last, repeats = self._refused.get(site_id, (-REFUSAL_EVENT_EVERY_S, 0))
        if now - last >= REFUSAL_EVENT_EVERY_S:  # a site retrying as told is one event a minute, not one a retry
            self._refused[site_id] = (now, 0)
            self._record("refused", site_id, reason, detail + (f"; refused {repeats} more times since" if repeats else ""))
        else:
            self._refused[site_id] = (last, repeats + 1)
        raise Overloaded(f"the media core is full ({detail}): try again later", self._retry_after(site_id, now))

    def _retry_after(self, site_id: str, now: float) -> int:
        """The Retry-After of a refusal of ``site_id`` now: see the module doc."""
        policy = self.policy
        waiting = self._waiting
        waiting.pop(site_id, None)
        waiting[site_id] = now  # the newest last
        horizon = now - max(policy.retry_after_max_s, policy.retry_after_s) * 1.5  # with the clients' jitter
        while waiting:  # oldest first: forget the sites that gave up
            first = next(iter(waiting))
            if waiting[first] >= horizon:
                break
            del waiting[first]
        if policy.retry_rate <= 0:
            return policy.retry_after_s
        spread = math.ceil(len(waiting) / policy.retry_rate)
        return max(policy.retry_after_s, min(spread, policy.retry_after_max_s))

    def _record(self, action: str, site_id: str, reason: str, detail: str) -> None:
        if action == "audio":
            self.counts["moved_to_audio"] += 1
        if self._on_event is not None:
            self._on_event("admission", site_id, {"action": action, "reason": reason, "detail": detail})

    # -- following the core ---------------------------------------------------------------
    def bound(self, ticket: Ticket, session_id: str, tier: str) -> None:
        """The core answered the ticket's offer with ``session_id`` on ``tier``."""
        entry = ticket.entry
        if entry is None or id(entry) not in self._entries:
            return
        known = self._sessions.get(session_id)
        if session_id in self._left or (known is not None and known is not entry):  # it left, or was
            del self._entries[id(entry)]  # counted by its join, before we heard back
        elif known is entry:
            entry.tier = tier
        else:
            entry.session_id, entry.tier = session_id, tier
            self._sessions[session_id] = entry
        self._wake()

    def release(self, ticket: Ticket) -> None:
        """The offer was not answered: forget its reservation."""
        if ticket.entry is not None and self._entries.pop(id(ticket.entry), None) is not None:
            self._wake()

    @contextmanager
    def holding(self, ticket: Ticket) -> Iterator[Ticket]:
        """Release the ticket unless :meth:`bound` is called within the block."""
        try:
            yield ticket
        except BaseException:
            self.release(ticket)
            raise

    def on_event(self, kind: str, site_id: str, detail: dict[str, Any]) -> None:
        """A core event (``join``, ``leave``, ``tier``) updates the account."""
        session_id = detail.get("session_id")
        if not isinstance(session_id, str):
            return
        entry = self._sessions.get(session_id)
        if kind == "join":
            if entry is None:  # connected before subscribe() returned to us; else not the core's (an edge's)
                entry = self._find_answering(site_id)
                if entry is None:
                    return
                entry.session_id = session_id
                self._sessions[session_id] = entry
            entry.connected_at = time.monotonic()
        elif kind == "leave":
            self._refused.pop(site_id, None)
            self._waiting.pop(site_id, None)
            self._left[session_id] = None
            while len(self._left) > LEFT_MEMORY:
                del self._left[next(iter(self._left))]
            if entry is None:
                return
            del self._sessions[session_id]
            self._entries.pop(id(entry), None)
        elif kind == "tier" and entry is not None:
            entry.tier = str(detail.get("to", entry.tier))
        else:
            return
        self._wake()

    def _find_answering(self, site_id: str) -> _Entry | None:
        for entry in self._entries.values():
            if entry.site_id == site_id and entry.session_id is None:
                return entry
        return None

    def _wake(self) -> None:
        self._changed.set()

    def summary(self) -> dict[str, Any]:
        """Capacity (the budget per fan-out process times the processes), load, handshakes,
        waiting offers, the clock's share and the decisions."""
        return {"capacity_pps": self.capacity, "budget_pps": budget_of(self.policy), "processes": self.processes,
                "load_pps": self.load(), "waiting_sites": len(self._waiting), "handshakes": self.in_flight(),
                "waiting": self._waiters, "clock_share": self.clock_share, **self.counts}

    def metrics(self, broadcast: int | None = None) -> list[str]:
        """Prometheus lines: capacity, load, handshakes, waiting offers, decisions (with a
        ``broadcast`` label when given); :func:`metrics_of` for several accounts."""
        return metrics_of([(broadcast, self)])


#: The admission series: name, type, help, the value of an account.
_SERIES: tuple[tuple[str, str, str, Callable[[Admission], float]], ...] = (
    ("ccctl_admission_capacity_pps", "gauge", "Packets a second the core may send (all fan-out processes).",
     lambda a: a.capacity),
    ("ccctl_admission_load_pps", "gauge", "Packets a second of the sessions held or being answered.", Admission.load),
    ("ccctl_admission_handshakes", "gauge", "ICE/DTLS handshakes in flight.", Admission.in_flight),
    ("ccctl_admission_waiting", "gauge", "Offers waiting for a handshake slot.", lambda a: a._waiters),
    ("ccctl_admission_clock_share", "gauge", "The program clock's rate over the last seconds, of nominal.",
     lambda a: a.clock_share if a.clock_share is not None else 1),
)


def metrics_of(accounts: Sequence[tuple[int | None, Admission]]) -> list[str]:
    """Prometheus lines of several rooms' accounts (``(broadcast id or None, account)``),
    each family once, a ``broadcast`` label on each series when the id is given."""
    def labels(bid: int | None, extra: str = "") -> str:
        parts = ([f'broadcast="{bid}"'] if bid is not None else []) + ([extra] if extra else [])
        return "{" + ",".join(parts) + "}" if parts else ""

    lines: list[str] = []
    for name, kind, text, value in _SERIES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{labels(bid, '')} {value(a):g}" for bid, a in accounts]
    lines += ["# HELP ccctl_admission_decisions_total Joins admitted, refused (by reason), sites moved to audio.",
              "# TYPE ccctl_admission_decisions_total counter"]
    lines += [f'ccctl_admission_decisions_total{labels(bid, f"decision={chr(34)}{name}{chr(34)}")} {n}'
              for bid, a in accounts for name, n in a.counts.items()]
    return lines
