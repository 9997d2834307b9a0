"""``--record``: the program as sent, muxed to a file that plays back with both streams."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
import pytest

from ccctl.media.core import MediaCore
from ccctl.media.program import read_counter
from ccctl.media.tiers import MediaError

from .conftest import SMALL_TIERS

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("name", ["program.ts", "program.mkv"])
async def test_recording_plays_back_video_and_sound(tmp_path: Path, name: str) -> None:
    core = MediaCore("testsrc", tiers=SMALL_TIERS)
    await core.start()
    path = tmp_path / name
    try:
        await core.record(str(path))
        with pytest.raises(MediaError, match="already recording"):
            await core.record(str(tmp_path / "again.ts"))
        deadline = time.monotonic() + 20
        assert core.recorder is not None
        while core.recorder.packets < 80:  # bounded wait for a condition: ~1 s of program
            assert time.monotonic() < deadline, "the recorder wrote too little"
            await asyncio.sleep(0.1)
    finally:
        await core.close()
    with av.open(str(path)) as f:
        kinds = {s.type: s.codec_context.name for s in f.streams}
        assert kinds == {"video": "h264", "audio": "opus"}
        frames = list(f.decode(video=0))
    assert {(fr.width, fr.height) for fr in frames} == {(320, 180)}  # the best tier
    counters = [read_counter(fr) for fr in frames]
    assert len(counters) >= 10 and counters == sorted(counters)
    with av.open(str(path)) as f:
        assert sum(fr.samples for fr in f.decode(audio=0)) >= 48_000 // 2


async def test_unwritable_recording_path_is_one_clear_error(tmp_path: Path) -> None:
    core = MediaCore("testsrc", tiers=SMALL_TIERS)
    await core.start()
    try:
        with pytest.raises(MediaError, match="no such directory"):
            await core.record(str(tmp_path / "missing" / "x.ts"))
        assert core.recorder is None and core.program_stats()["high"]["subscribers"] == 0
    finally:
        await core.close()
