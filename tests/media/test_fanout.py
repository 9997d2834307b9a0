"""The per-subscriber queues of the fan-out: bounded, dropping to a keyframe, never blocking."""

from __future__ import annotations

import asyncio

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from ccctl.media.tiers import AUDIO_QUEUE_PACKETS, VIDEO_QUEUE_FRAMES, EncodedUnit, Feed

pytestmark = pytest.mark.asyncio


def unit(n: int, keyframe: bool) -> EncodedUnit:
    """An encoded unit whose payload says which one it is."""
    packet = av.Packet(n.to_bytes(4, "big"))
    packet.pts = n
    return EncodedUnit(packet, keyframe, 4)


def number(packet: av.Packet) -> int:
    return int.from_bytes(bytes(packet), "big")


async def test_stalled_subscriber_is_bounded_and_resumes_at_a_keyframe() -> None:
    requests: list[int] = []
    feed = Feed("low", "video", request_keyframe=lambda: requests.append(1))
    reader, stalled = feed.open(), feed.open()
    requests.clear()
    got = []
    for n in range(100):
        feed.publish(unit(n, keyframe=n % 25 == 0))
        got.append(number(await reader.recv()))  # queued already: returns at once
        assert stalled.backlog <= VIDEO_QUEUE_FRAMES
    assert got == list(range(100))  # the reader lost nothing to its stalled neighbour
    assert stalled.dropped > 0 and requests  # it overflowed and asked for a keyframe
    feed.publish(unit(100, keyframe=False))
    feed.publish(unit(101, keyframe=True))
    assert number(await stalled.recv()) == 101  # resumes at a keyframe, not mid-GOP
    assert feed.units_out == 102 and reader.delivered == 100


async def test_video_subscriber_starts_at_a_keyframe() -> None:
    feed = Feed("high", "video")
    track = feed.open()
    for n in range(1, 5):
        feed.publish(unit(n, keyframe=n == 3))
    assert [number(await track.recv()), number(await track.recv())] == [3, 4]
    assert track.dropped == 2


async def test_audio_keeps_only_the_newest_packets() -> None:
    feed = Feed("audio", "audio")
    track = feed.open()
    for n in range(20):
        feed.publish(unit(n, keyframe=True))
    got = [number(await track.recv()) for _ in range(track.backlog)]
    assert got == list(range(20 - AUDIO_QUEUE_PACKETS, 20))
    assert track.dropped == 20 - AUDIO_QUEUE_PACKETS


async def test_retire_hands_a_waiting_sender_to_the_new_track() -> None:
    old_feed, new_feed = Feed("high", "video"), Feed("low", "video")
    old, new = old_feed.open(), new_feed.open()
    pending = asyncio.ensure_future(old.recv())
    await asyncio.sleep(0)  # let recv() start waiting (a yield, not a timing guess)
    old.retire(new)
    new_feed.publish(unit(7, keyframe=True))
    assert number(await asyncio.wait_for(pending, 5)) == 7
    assert not old_feed.subscribers and new.readyState == "live"


async def test_stop_wakes_a_waiting_recv_and_leaves_the_feed() -> None:
    feed = Feed("low", "video")
    track = feed.open()
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)  # one yield so recv() is waiting before stop(), not a timing guess
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(pending, 5)
    assert not feed.subscribers
