"""The remote console: ``dashboard --server URL --token-file F`` reads everything from a real
server (overview, change stream, a site's detail), offers only the actions the server carries,
and is refused without a valid token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from ccctl.commands.dashboard import check_remote, read_token
from ccctl.errors import CcctlError, UsageError
from ccctl.media.tokens import control_token, load_secret
from ccctl.models import CheckState
from ccctl.registry import open_registry
from ccctl.tui.app import Dashboard
from tests.tui.conftest import record_run
from tests.tui.pilot import SIZE, until


@pytest.mark.asyncio
async def test_remote_console(server: TestServer, dash_db_url: str, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{server.port}"
    token = control_token(load_secret(tmp_path / "server-home"))
    laptop = tmp_path / "laptop"  # no registry, no secret: everything comes from the server
    app = Dashboard("sqlite:///nowhere-on-this-laptop.db", laptop, "127.0.0.1:9", poll_s=0.2, server_poll_s=0.2,
                    server_url=base, token=token)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded and app.stream_state == "live", "the overview and the stream")
        assert len(app.fleet.order) > 100 and app.rowlist.rows[0]["level"] == "province"
        assert app.widget("#header", object).server == "up"
        site = app.fleet.order[0]["id"]
        with open_registry(dash_db_url) as db:
            record_run(db, {site: CheckState.HOSTKEY_MISMATCH}, started_at=1_900_000_000.0)
        await until(pilot, lambda: app.fleet.sites[site]["state"] == "HOSTKEY_MISMATCH", "the change, streamed")
        await pilot.press("s")
        first = app.rowlist.rows[0]["id"]
        await until(pilot, lambda: first in app.details, "a site's detail from the server")
        assert app.details[first][1] and app.details[first][0] is not None
        assert not app.check_action("recheck", ()) and not app.check_action("revoke", ())
        assert app.check_action("floor", ())
        palette = {c.title for c in app.get_system_commands(app.screen)}
        assert "Give the floor" in palette and "Re-check" not in palette and "Revoke" not in palette
    assert not (laptop / "secret").exists()  # the laptop made no secret of its own


@pytest.mark.asyncio
async def test_remote_needs_a_valid_token(server: TestServer, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{server.port}"
    good = control_token(load_secret(tmp_path / "server-home"))
    await asyncio.to_thread(check_remote, base, good)
    with pytest.raises(CcctlError, match="refused the control token"):
        await asyncio.to_thread(check_remote, base, "x" * 64)
    token_file = tmp_path / "token"
    token_file.write_text(f"{good}\n")
    assert read_token(token_file) == good
    token_file.write_text("\n")
    with pytest.raises(UsageError, match="holds no token"):
        read_token(token_file)
