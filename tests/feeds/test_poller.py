"""The poller ``serve`` runs: each feed pulled on its interval, failures recorded, no stall."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccctl.feeds.poller import FeedPoller
from ccctl.feeds.spec import FeedSpec
from ccctl.registry import feeds as store
from ccctl.registry import open_registry

FIXTURES = Path(__file__).resolve().parents[2] / "configs" / "feeds"


@pytest.mark.asyncio
async def test_feeds_are_pulled_on_their_intervals(units_db_url: str, tmp_path: Path) -> None:
    with open_registry(units_db_url) as db:
        store.add_feed(db, FeedSpec("fast", str(FIXTURES / "cases-long.csv"), every_s=0.2))
        store.add_feed(db, FeedSpec("slow", str(FIXTURES / "covid-provinces.json"), every_s=3600))
        store.add_feed(db, FeedSpec("broken", str(tmp_path / "missing.csv"), every_s=0.2))
    poller = FeedPoller(units_db_url)
    poller.start()
    try:
        def enough(results: list[tuple[str, str, str]]) -> bool:
            fast = sum(1 for name, status, _ in results if name == "fast" and status == "ok")
            broken = sum(1 for name, status, _ in results if name == "broken" and status == "failed")
            return fast >= 3 and broken >= 2

        await poller.wait_for(enough, timeout=120)
    finally:
        await poller.stop()
    slow = [r for r in poller.results if r[0] == "slow"]
    assert [s for _, s, _ in slow] == ["ok"]  # once: its interval is an hour
    broken = [d for n, s, d in poller.results if n == "broken"]
    assert all("no such file or folder" in d for d in broken)
    with open_registry(units_db_url) as db:
        _, state = store.get_feed(db, "broken")
        assert "no such file or folder" in state["last_error"]
        assert len([e for e in store.feed_events(db, "fast") if e["kind"] == "pull_ok"]) >= 3
        assert len(store.latest_values(db, "slow")) > 0
