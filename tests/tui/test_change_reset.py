"""A change-stream client that falls so far behind that the ring of events moves past it while
the server writes to it is sent ``reset`` (it then re-reads the whole state), never a stream
that silently skips the events it lost."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ccctl.media import changes, state
from ccctl.media.changes import EVENTS_KEY, add_change_routes
from ccctl.registry import open_registry
from tests.tui.conftest import stalled_client

BOUND_S = 60.0  # a bound on each wait, not a synchronisation
EVENTS = 300
PAD = "x" * 65_536  # each event ~64 KiB: 300 of them are far more than the sockets hold


def test_pending_says_when_events_were_lost() -> None:
    feed = changes.ChangeFeed("sqlite://")
    feed.events = changes.deque(maxlen=3)
    for seq in range(1, 6):
        feed.events.append((seq, "broadcast", "{}"))
    feed.seq = 5  # the ring holds 3, 4 and 5
    assert [e[0] for e in feed.pending(2) or []] == [3, 4, 5]
    assert feed.pending(5) == []
    assert feed.pending(1) is None  # event 2 is gone


@pytest.mark.asyncio
async def test_a_client_the_ring_moved_past_gets_reset(dash_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes, "RING", 20)
    app = web.Application()
    add_change_routes(app, dash_db_url, lambda request: None)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    feed = app[EVENTS_KEY]
    reader, writer = await stalled_client(server.port, BOUND_S)  # a client that reads nothing for now
    try:
        with open_registry(dash_db_url) as db:
            broadcast = state.start_broadcast(db, "Họp", "testsrc", {})
            for batch in range(0, EVENTS, 10):
                with db.transaction():
                    db.executemany("INSERT INTO broadcast_events (broadcast_id, ts, site_id, kind, detail) "
                                   "VALUES (?, ?, ?, 'join', ?)",
                                   [(broadcast, 1.0, f"s{i}", json.dumps({"pad": PAD}))
                                    for i in range(batch, batch + 10)])
            total = int(db.query("SELECT count(*) FROM broadcast_events")[0][0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BOUND_S
        while feed.seq < total:  # a bounded poll: every event is in the ring (the last 20 kept)
            assert loop.time() < deadline, "the feed did not read the events"
            await asyncio.sleep(0.02)
        # Now read: ids in order without a gap, unless a reset stands between them.
        ids: list[tuple[str, int]] = []
        buffer = b""

        async def read_on() -> None:
            nonlocal buffer
            while not ids or ids[-1][1] < total:
                buffer += await reader.read(1 << 20)
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    fields = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line)
                    if "id" in fields:
                        ids.append((fields.get("event", ""), int(fields["id"].rsplit("-", 1)[1])))

        await asyncio.wait_for(read_on(), BOUND_S)
        assert any(name == "reset" for name, _ in ids), ids[:5]
        for (_, before), (name, after) in zip([("hello", 0), *ids], ids, strict=False):
            assert after == before + 1 or name == "reset", f"a gap from {before} to {after} without a reset"
    finally:
        writer.close()
        await server.close()
