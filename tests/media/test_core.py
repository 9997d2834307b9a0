"""MediaCore against real subscriber peers: WHEP answers, decoded media, tiers, lifecycles."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from aiortc import RTCRtpSender

from ccctl.errors import NotFound, UsageError
from ccctl.media.core import MediaCore
from ccctl.media.tiers import DEFAULT_TIERS, MediaError

from .conftest import SMALL_TIERS, JoinFn, Site, counters

pytestmark = pytest.mark.asyncio

Events = list[tuple[str, str, dict[str, Any]]]


def increasing(values: list[int]) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


async def test_subscriber_receives_decoded_video_and_audio(core: MediaCore, join: JoinFn, events: Events) -> None:
    site, session_id = await join("s-high", "high")
    frames = await site.frames(8)
    assert {(f.width, f.height) for f in frames} == {(320, 180)}
    assert increasing(counters(frames))  # distinct, moving pictures
    sound = await site.frames(3, "audio")
    assert all(f.sample_rate == 48_000 and f.samples == 960 for f in sound)
    assert events[0] == ("join", "s-high", {"session_id": session_id, "tier": "high"})
    (row,) = await core.stats()
    assert row["session_id"] == session_id and row["state"] == "connected" and row["tier"] == "high"
    assert row["packets_sent"] > 0 and row["bytes_sent"] > 0 and row["frames_delivered"] > 0
    assert {"packets_lost", "fraction_lost", "jitter_ms", "rtt_ms", "joined_at"} <= row.keys()


async def test_answer_offers_only_h264_and_opus(core: MediaCore) -> None:
    site = Site()
    try:
        _, answer = await core.subscribe("s-codecs", await site.offer(), "low")
    finally:
        await site.close()
    rtpmaps = {line.split()[1].split("/")[0].lower() for line in answer.splitlines() if line.startswith("a=rtpmap:")}
    assert rtpmaps == {"h264", "opus", "rtx"}
    assert "a=candidate:" in answer and "a=end-of-candidates" in answer  # gathered before returning


async def test_audio_tier_gets_no_video_track(core: MediaCore, join: JoinFn) -> None:
    site, _ = await join("s-audio", "audio")
    assert site.track("video") is None
    assert len(await site.frames(5, "audio")) == 5
    stats = core.program_stats()
    assert stats["high"]["frames_encoded"] == stats["low"]["frames_encoded"] == 0
    assert core.tier_counts() == {"high": 0, "low": 0, "audio": 1}


async def test_audio_only_offer_is_served_as_audio_tier(core: MediaCore, join: JoinFn) -> None:
    site, _ = await join("s-radio", "high", kinds=("audio",))
    assert len(await site.frames(3, "audio")) == 3
    assert core.tier_counts()["audio"] == 1
    with pytest.raises(MediaError):
        await core.set_tier("s-radio", "high")  # no video m-line: must re-subscribe


async def test_two_subscribers_of_a_tier_cost_one_encode(core: MediaCore, join: JoinFn) -> None:
    a, _ = await join("s-a", "low")
    b, _ = await join("s-b", "low")
    fa, fb = await a.frames(10), await b.frames(10)
    assert {(f.width, f.height) for f in fa + fb} == {(160, 90)}
    stats = core.program_stats()
    low = stats["low"]
    assert low["frames_encoded"] <= stats["_program"]["video_ticks"]  # at most one encode per tick
    delivered = sum(row["frames_delivered"] for row in await core.stats())
    assert delivered > low["units_out"]  # every unit reached both, from one encode
    assert stats["high"]["frames_encoded"] == 0


async def test_stalled_subscriber_does_not_stall_another(core: MediaCore, join: JoinFn) -> None:
    reader, _ = await join("s-reader", "low")
    stalled, _ = await join("s-stalled", "low")
    await stalled.frames(1)  # connected; from now on it never reads again
    frames = await reader.frames(30)
    assert increasing(counters(frames))
    assert all(row["state"] == "connected" for row in await core.stats())


async def test_set_tier_switches_resolution_live(core: MediaCore, join: JoinFn, events: Events) -> None:
    site, session_id = await join("s-switch", "high")
    await site.frame_sized(320)
    await core.set_tier("s-switch", "low")
    assert core.tier_counts() == {"high": 0, "low": 1, "audio": 0}
    first_low = await site.frame_sized(160)
    assert first_low.height == 90
    await core.set_tier("s-switch", "audio")  # parks video; sound goes on
    assert len(await site.frames(3, "audio")) == 3
    await core.set_tier("s-switch", "high")
    assert (await site.frame_sized(320)).height == 180
    assert [e for e in events if e[0] == "tier"] == [
        ("tier", "s-switch", {"session_id": session_id, "from": "high", "to": "low", "reason": "operator"}),
        ("tier", "s-switch", {"session_id": session_id, "from": "low", "to": "audio", "reason": "operator"}),
        ("tier", "s-switch", {"session_id": session_id, "from": "audio", "to": "high", "reason": "operator"})]
    with pytest.raises(UsageError):
        await core.set_tier("s-switch", "ultra")
    with pytest.raises(NotFound):
        await core.set_tier("nobody", "low")


async def test_resubscribe_replaces_and_unsubscribe_ends(core: MediaCore, join: JoinFn, events: Events) -> None:
    _, first = await join("s-again", "low")
    site, second = await join("s-again", "low")
    assert [row["session_id"] for row in await core.stats()] == [second]
    assert ("leave", "s-again", {"session_id": first, "reason": "replaced"}) in events
    await site.frames(2)
    assert await core.unsubscribe(second)
    assert not await core.unsubscribe(second) and not await core.unsubscribe(first)
    assert await core.stats() == [] and core.program_stats()["low"]["subscribers"] == 0


async def test_offer_without_h264_is_refused(core: MediaCore) -> None:
    site = Site()
    vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/VP8"]
    site.transceivers["video"].setCodecPreferences(vp8)
    try:
        with pytest.raises(MediaError):
            await core.subscribe("s-vp8", await site.offer(), "high")
    finally:
        await site.close()
    assert await core.stats() == []
    with pytest.raises(MediaError):
        await core.subscribe("s-junk", "not sdp at all", "high")


async def test_real_tier_sizes(join: JoinFn, events: Events) -> None:
    media = MediaCore("testsrc", tiers=DEFAULT_TIERS)
    await media.start()
    try:
        high, _ = await join("s-720", "high", media=media)
        low, _ = await join("s-360", "low", media=media)
        assert {(f.width, f.height) for f in await high.frames(3, timeout=20)} == {(1280, 720)}
        assert {(f.width, f.height) for f in await low.frames(3, timeout=20)} == {(640, 360)}
    finally:
        await media.close()


async def test_close_leaves_no_tasks_or_threads() -> None:
    before = asyncio.all_tasks()
    media = MediaCore("testsrc", tiers=SMALL_TIERS)
    await media.start()
    sites = [Site(), Site()]
    sessions = []
    for n, site in enumerate(sites):
        session_id, answer = await media.subscribe(f"s-{n}", await site.offer(), "low")
        await site.accept(answer)
        sessions.append(session_id)
    for site in sites:
        await site.frames(2)
    assert await media.unsubscribe(sessions[0])
    await media.close()
    for site in sites:
        await site.close()
    left = asyncio.all_tasks() - before - {asyncio.current_task()}
    if left:  # tasks already cancelled may need their last step; they must end on their own
        await asyncio.wait(left, timeout=5)
    assert all(task.done() for task in left), left
    assert not [t for t in threading.enumerate() if t.name.startswith("ccctl-media")]
    assert await media.stats() == []
