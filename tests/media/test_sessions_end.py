"""Sessions end, and only theirs: an offer that never connects, a closed peer, a storm of leaves.

Real aiortc peers on loopback (conftest's ``Site``) against a real :class:`MediaCore`; the
bound on connecting is injected small. Waits are bounded polls on the core's state.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ccctl.media.core import MediaCore
from ccctl.media.state import _ends

from .conftest import SMALL_TIERS, Site, until

Events = list[tuple[str, str, dict[str, Any]]]
CONNECT_S = 1.0


def without_candidates(sdp: str) -> str:
    return "\r\n".join(line for line in sdp.splitlines() if not line.startswith("a=candidate:")) + "\r\n"


async def started(events: Events, **kwargs: Any) -> MediaCore:
    core = MediaCore("testsrc", on_event=lambda k, s, d: events.append((k, s, d)), tiers=SMALL_TIERS,
                     connect_timeout=CONNECT_S, **kwargs)
    await core.start()
    return core


@pytest.mark.asyncio
async def test_an_offer_with_no_candidates_is_ended_and_never_joins() -> None:
    events: Events = []
    core = await started(events)
    site = Site(("audio",))
    try:
        session_id, _ = await core.subscribe("s-mute", without_candidates(await site.offer()), "audio")
        assert [row["state"] for row in await core.stats()] == ["new"] or core.sessions()
        await until(lambda: asyncio.sleep(0, result=not core.sessions()))
        assert events == [("leave", "s-mute", {"session_id": session_id, "reason": "never_connected"})]
    finally:
        await site.close()
        await core.close()


@pytest.mark.asyncio
async def test_a_closed_peer_is_removed_and_a_connected_one_is_not_timed_out() -> None:
    events: Events = []
    core = await started(events)
    site, gone = Site(("audio",)), Site(("audio",))
    try:
        for who, name in ((site, "s-stay"), (gone, "s-gone")):
            _, answer = await core.subscribe(name, await who.offer(), "audio")
            await who.accept(answer)
        await site.frames(3, "audio")
        await gone.frames(1, "audio")
        await gone.close()  # DTLS close_notify: the server's peer closes
        await until(lambda: asyncio.sleep(0, result=[s.site_id for s in core.sessions()] == ["s-stay"]))
        # Well past the connect bound, the connected site is still there and still fed.
        before = core.sessions()[0].counters()[0]
        await site.frames(int(CONNECT_S * 50) + 10, "audio")
        assert [s.site_id for s in core.sessions()] == ["s-stay"] and core.sessions()[0].counters()[0] > before
        kinds = [(k, s) for k, s, _ in events]
        assert kinds.count(("join", "s-stay")) == 1 and ("leave", "s-stay") not in kinds
        assert ("join", "s-gone") in kinds and ("leave", "s-gone") in kinds
    finally:
        await site.close()
        await core.close()


@pytest.mark.asyncio
async def test_a_storm_of_leaves_does_not_cut_a_site_that_stays() -> None:
    events: Events = []
    core = await started(events)
    stay = Site(("audio",))
    leavers = [Site(("audio",)) for _ in range(12)]
    try:
        _, answer = await core.subscribe("s-stay", await stay.offer(), "audio")
        await stay.accept(answer)
        ids = []
        for i, site in enumerate(leavers):
            session_id, answer = await core.subscribe(f"s-leave-{i}", await site.offer(), "audio")
            await site.accept(answer)
            ids.append(session_id)
        await until(lambda: asyncio.sleep(0, result=all(s.connected_at for s in core.sessions())))
        await stay.frames(2, "audio")
        # Every leaver at once: the server's DELETEs and the peers' own closes together.
        await asyncio.gather(*(core.unsubscribe(i) for i in ids), *(site.close() for site in leavers))
        (kept,) = core.sessions()
        assert kept.site_id == "s-stay"
        frames = await stay.frames(50, "audio")  # a second of program sound still arrives
        assert len(frames) == 50 and core.sessions() == [kept] and kept.forwarders and not kept.ended
        assert ("leave", "s-stay") not in [(k, s) for k, s, _ in events]
    finally:
        await stay.close()
        await core.close()


def test_a_leave_of_another_session_does_not_end_attendance() -> None:
    assert _ends({"session_id": "a"}, "a") and _ends({}, "a") and _ends({"session_id": "a"}, None)
    assert not _ends({"session_id": "b"}, "a")  # an unconnected offer, or a replaced session
