"""A real SQLite registry for the dashboard: units loaded, sites generated for two 2021
provinces and one 2025 province, and one recorded roll-call with a known mix of states."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from ccctl.models import CheckResult, CheckState
from ccctl.registry import Database, open_registry
from ccctl.registry.sites import generate_sites, select_sites
from ccctl.rollcall.history import RunRecorder

# Bạc Liêu and Cà Mau in the 2021 scheme; Cà Mau (which took in Bạc Liêu) in the 2025 one.
PROVINCES_2021 = ("95", "96")
PROVINCES_2025 = ("96",)


def planned_state(index: int) -> CheckState:
    """The state the fixture's run gives the index-th site: mostly OK, some of each other state."""
    if index % 10 == 3:
        return CheckState.UNREACHABLE
    if index % 10 == 7:
        return CheckState.DEGRADED
    if index % 50 == 11:
        return CheckState.AUTH_FAILED
    return CheckState.OK


def record_run(db: Database, states: dict[str, CheckState], started_at: float = 1_800_000_000.0) -> int:
    """One finished roll-call run with the given states at ``started_at``, written through the real recorder."""
    recorder = RunRecorder(db, {"stages": ["tcp"], "sites": len(states)})
    for site_id, state in states.items():
        recorder.add(CheckResult(site_id=site_id, state=state, reason="" if state is CheckState.OK else "seeded",
                                 stage="tcp", rtt_ms=12.5, started_at=started_at, duration_ms=40.0))
    recorder.finish("finished", {"sites": len(states)})
    # The run itself at its results' time, as a run taken then would be (the recorder stamps
    # the real clock; the dashboard's history reads runs by their time).
    db.execute("UPDATE rollcall_runs SET started_at = ?, finished_at = ? WHERE id = ?",
               (started_at, started_at + 0.04, recorder.run_id))
    return recorder.run_id


@pytest.fixture
def dash_db_url(tmp_path: Path, units_template: Path) -> str:
    """A registry URL with sites and one roll-call (all but the last 5 sites checked)."""
    path = tmp_path / "registry.db"
    shutil.copy(units_template, path)
    url = f"sqlite:///{path}"
    with open_registry(url) as db:
        generate_sites(db, "2021", PROVINCES_2021)
        generate_sites(db, "2025", PROVINCES_2025)
        ids = [s.id for s in select_sites(db)]
        record_run(db, {site_id: planned_state(i) for i, site_id in enumerate(ids[:-5])})
    return url


@pytest.fixture
def dash_db(dash_db_url: str) -> Iterator[Database]:
    """The same registry, open."""
    with open_registry(dash_db_url) as db:
        yield db


@pytest_asyncio.fixture
async def server(dash_db_url: str, tmp_path: Path) -> AsyncIterator[TestServer]:
    """The real server app on a loopback port, over the dashboard's registry (its own home)."""
    from ccctl.media.server import create_app

    srv = TestServer(create_app(dash_db_url, tmp_path / "server-home"), host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


async def stalled_client(port: int, bound_s: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A change-stream client with a 4 KiB receive buffer that has read the ``hello`` and
    nothing since: the server must not buffer for it while it does not read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"event: hello"), bound_s)
    return reader, writer
