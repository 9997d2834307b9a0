"""The program: one encode per tier shared by its subscribers, coalesced keyframes, sources."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest
import pytest_asyncio

from ccctl.media.program import ENCODE_BACKLOG, KeyframePolicy, Program, TestPattern, VideoEncoder, read_counter
from ccctl.media.tiers import MediaError, TierSpec

from .conftest import SMALL_TIERS

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def program() -> AsyncIterator[Program]:
    prog = Program("testsrc", SMALL_TIERS)
    await prog.start()
    try:
        yield prog
    finally:
        await prog.close()


async def test_keyframe_requests_are_coalesced_to_one_per_second() -> None:
    now = [100.0]
    policy = KeyframePolicy(clock=lambda: now[0])
    assert not policy.take()  # nobody asked
    for _ in range(50):
        policy.request()
    assert policy.take() and not policy.take()
    now[0] += 0.5
    policy.request()
    assert not policy.take()  # inside the second: deferred, not lost
    now[0] += 0.5
    assert policy.take()
    policy.request()
    policy.satisfied()  # a GOP keyframe went out meanwhile
    now[0] += 5
    assert not policy.take()
    assert policy.forced == 2


async def test_counter_survives_scaling_and_h264() -> None:
    pattern = TestPattern(320, 180)
    encoder = VideoEncoder(TierSpec("low", 160, 90, 150_000), fps=25)
    decoder = av.CodecContext.create("h264", "r")
    seen = []
    for i in range(6):
        frame = pattern.video(1000 + i)
        for packet in encoder.encode(frame, i * 3600, force_keyframe=i == 0):
            seen += [(f.width, f.height, read_counter(f)) for f in decoder.decode(packet)]
    assert seen == [(160, 90, 1000 + i) for i in range(6)]


async def test_a_picture_held_for_several_ticks_is_encoded_at_each_ticks_time() -> None:
    # A file slower than the program hands the same picture object for several ticks, and
    # several of them may wait for the encoder at once: the time goes with each offer.
    encoder = VideoEncoder(TierSpec("low", 160, 90, 150_000), fps=25)
    raw = TestPattern(160, 90).video(0)  # the tier's own size: nothing to scale
    before = raw.pts
    stamps = [packet.pts for i in range(3) for packet in encoder.encode(raw, i * 3600, force_keyframe=i == 0)]
    assert stamps == [0, 3600, 7200] and raw.pts == before  # the shared picture is not written


async def test_subscribers_of_a_tier_share_one_encode(program: Program) -> None:
    a, b = program.open_track("low", "video"), program.open_track("low", "video")
    got_a = [await asyncio.wait_for(a.recv(), 5) for _ in range(8)]
    got_b = [await asyncio.wait_for(b.recv(), 5) for _ in range(8)]
    # The very same packet objects: encoded once, handed to both.
    assert all(pa is pb for pa, pb in zip(got_a, got_b, strict=True))
    assert got_a[0].is_keyframe
    stats = program.stats()
    assert stats["low"]["frames_encoded"] <= stats["_program"]["video_ticks"]
    assert stats["low"]["keyframes_forced"] == 1  # two joins, one forced keyframe
    assert stats["high"]["frames_encoded"] == 0  # no subscribers, no encode
    a.stop()
    b.stop()
    assert program.stats()["low"]["subscribers"] == 0


async def test_audio_is_encoded_once_as_opus(program: Program) -> None:
    a, b = program.open_track("high", "audio"), program.open_track("audio", "audio")
    pa, pb = await asyncio.wait_for(a.recv(), 5), await asyncio.wait_for(b.recv(), 5)
    assert pa is pb and pa.time_base == fractions.Fraction(1, 48_000)
    decoded = av.CodecContext.create("libopus", "r").decode(pa)
    assert decoded and decoded[0].sample_rate == 48_000
    assert program.stats()["high"]["frames_encoded"] == 0


async def test_a_late_clock_catches_up_a_short_burst_and_skips_a_long_one() -> None:
    # The clock's start is set back instead of stalling the loop: the lateness is exact.
    program = Program("testsrc", SMALL_TIERS)
    now = asyncio.get_running_loop().time()
    program._t0 = now - 5.5 / 50  # 5 ticks late at 50 ticks/s, within CATCH_UP (0.25 s)
    assert [await program._tick(last, 50) for last in range(-1, 4)] == [0, 1, 2, 3, 4]  # none skipped
    program._t0 = asyncio.get_running_loop().time() - 40.5 / 50  # 0.8 s late: the missed ticks are skipped
    assert await program._tick(-1, 50) == 40


async def test_a_busy_encoder_takes_a_burst_in_turn_and_skips_to_the_newest_past_it() -> None:
    program = Program("testsrc", SMALL_TIERS)
    tier = program._video["low"]
    frames = [(TestPattern(160, 90).video(i), i * 3600) for i in range(ENCODE_BACKLOG + 1)]
    for raw, pts in frames[:ENCODE_BACKLOG]:
        tier.offer(raw, pts)
    assert list(tier.waiting) == frames[:ENCODE_BACKLOG] and tier.frames_skipped == 0  # a burst waits
    tier.offer(*frames[-1])
    assert list(tier.waiting) == frames[-1:] and tier.frames_skipped == ENCODE_BACKLOG  # no fixed delay


def _write_clip(path: Path, frames: int) -> None:
    """A short H.264 + AAC clip made with PyAV (frames at 25 fps)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
        audio = out.add_stream("aac", rate=48_000)
        pattern = TestPattern(320, 180)
        for i in range(frames):
            out.mux(video.encode(pattern.video(i)))
        for i in range(frames * 2):
            samples = np.zeros((1, 960 * 2), np.int16)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
            frame.sample_rate, frame.pts = 48_000, i * 960
            out.mux(audio.encode(frame))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


async def test_file_source_loops(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _write_clip(clip, frames=5)  # 0.2 s: the program wraps around it several times
    program = Program(f"file:{clip}", SMALL_TIERS)
    await program.start()
    try:
        track, audio = program.open_track("low", "video"), program.open_track("low", "audio")
        decoder = av.CodecContext.create("h264", "r")
        counts = []
        for _ in range(15):
            for frame in decoder.decode(await asyncio.wait_for(track.recv(), 5)):
                counts.append(read_counter(frame))
        assert await asyncio.wait_for(audio.recv(), 5)
    finally:
        await program.close()
    assert {frame.width for frame in decoder.decode(None)} <= {160}
    assert max(counts) <= 4 and counts.count(0) >= 2  # the clip's own counter, looped


async def test_bad_sources_and_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MediaError):
        Program("camera:0", SMALL_TIERS)
    with pytest.raises(MediaError):
        Program("testsrc", {"odd": TierSpec("odd", 321, 180, 100_000)})


async def test_missing_file_fails_at_start(tmp_path: Path) -> None:
    program = Program(f"file:{tmp_path / 'nope.mp4'}", SMALL_TIERS)
    with pytest.raises(MediaError):
        await program.start()
    await program.close()
