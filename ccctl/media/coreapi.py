"""The one face of the media core that the server is typed against.

Two cores have it: :class:`~ccctl.media.core.MediaCore` (every site's connection in this
process) and :class:`~ccctl.media.shard.ShardedCore` (the program here, the connections in
fan-out worker processes). ``ccctl.media.server`` holds a :class:`MediaCoreAPI` and cannot tell
which; mypy checks both against it (``_checked`` below, and the server's uses). Every call that
may have to ask a worker is a coroutine in both, even where the in-process core could answer at
once (``set_tier``), so the server awaits the same way whichever it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the cores load aiortc and PyAV; the server imports this at start
    from ccctl.media.program import Program
    from ccctl.media.tiers import TierSpec


class SessionInfo(Protocol):
    """What the server reads of one live session (a core's ``Session`` or a ``SessionRef``)."""

    @property
    def session_id(self) -> str:
        """The session's id (the last part of its WHEP resource URL)."""

    @property
    def site_id(self) -> str:
        """The site it belongs to."""

    @property
    def tier(self) -> str:
        """The tier it is sent now."""


class MediaCoreAPI(Protocol):
    """A broadcast's media core: its program, and the sites' WHEP sessions on it."""

    tiers: dict[str, TierSpec]

    @property
    def program(self) -> Program:
        """The program (source, clocks, one encode per tier)."""

    @property
    def processes(self) -> int:
        """Fan-out processes (admission's budget is per process)."""

    async def start(self) -> None:
        """Start the program (and the fan-out workers, if any)."""

    async def close(self) -> None:
        """End every session, then the program; afterwards no task of the core runs."""

    async def record(self, path: str) -> None:
        """Record the program as sent to ``path`` until close (MediaError if already recording)."""

    async def subscribe(self, site_id: str, offer_sdp: str, tier: str = "high") -> tuple[str, str]:
        """Answer a site's WHEP offer: (session_id, answer_sdp); its previous session is replaced."""

    async def unsubscribe(self, session_id: str, reason: str = "unsubscribed") -> bool:
        """End a session; False when there is no such session."""

    async def set_tier(self, site_id: str, tier: str, reason: str = "operator") -> None:
        """Move a live site to ``tier`` (NotFound: not subscribed; UsageError: no such tier;
        MediaError: it negotiated no video)."""

    def sessions(self) -> Sequence[SessionInfo]:
        """The live sessions."""

    def session(self, session_id: str) -> SessionInfo | None:
        """One live session, or None."""

    def tier_counts(self) -> dict[str, int]:
        """Subscribed sites per tier (every tier listed, zeros included)."""

    def program_stats(self) -> dict[str, dict[str, int]]:
        """Encoder and fan-out counters per tier."""

    async def stats(self) -> list[dict[str, Any]]:
        """One row per session (see ``MediaCore.stats``)."""


if TYPE_CHECKING:  # mypy: both cores have the face (a mismatch fails the type check, not a join)
    from ccctl.media.core import MediaCore
    from ccctl.media.shard import ShardedCore

    def _checked(a: MediaCore, b: ShardedCore) -> tuple[MediaCoreAPI, MediaCoreAPI]:
        return a, b
