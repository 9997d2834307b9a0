"""With several broadcasts live, the header shows the highest level's and names the others
(id, title, level), from the real server's answers; a broadcast that ends leaves the line."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ccctl.tui.feeds import broadcast_status
from ccctl.tui.widgets.header import broadcast_lines
from tests.test_whip import Api, in_process_server

pytestmark = [pytest.mark.usefixtures("loopback_ice"), pytest.mark.asyncio]  # loopback_ice: tests/conftest.py


@pytest_asyncio.fixture
async def api(units_db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The server with bn-1 (Hồ Chí Minh) and px-1 (Hà Nội) (tests/test_whip.py)."""
    async with in_process_server(units_db_url, tmp_path) as server:
        yield server


async def start(api: Api, title: str, sites: list[str] | None = None) -> int:
    body = {"source": "testsrc", "title": title, **({"sites": sites} if sites is not None else {})}
    response = await api.client.post("/api/broadcast", json=body, headers=api.control)
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def test_the_header_names_the_other_live_broadcasts(api: Api) -> None:
    base, token = api.url("/").rstrip("/"), api.control["Authorization"].split()[1]
    read = functools.partial(broadcast_status, Path(), "", 10.0, base, token)
    province = await start(api, "Họp tỉnh Hồ Chí Minh", ["bn-1"])
    alone = await asyncio.to_thread(read)
    assert alone["id"] == province and alone["others"] == []
    assert not any("also live" in part for part in broadcast_lines(alone, []))
    centre = await start(api, "Hội nghị toàn quốc")
    both = await asyncio.to_thread(read)
    assert both["id"] == centre
    assert [(o["id"], o["title"]) for o in both["others"]] == [(province, "Họp tỉnh Hồ Chí Minh")]
    line = broadcast_lines(both, [])
    assert line[0].startswith("on air: Hội nghị toàn quốc")
    level = alone["level"]  # the server's name for the level of a one-site audience
    assert f"also live: #{province} Họp tỉnh Hồ Chí Minh ({level})" in line
    stopped = await api.client.delete(f"/api/broadcast?broadcast={province}", headers=api.control)
    assert stopped.status == 200, await stopped.text()
    after = await asyncio.to_thread(read)
    assert after["id"] == centre and after["others"] == []
