"""The dashboard while things change: results arriving from another writer, a re-check run
from the dashboard with live progress, a locked registry that recovers, the server's control
API up then gone, the event log's ring buffer and the map."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from ccctl.config import load_config
from ccctl.models import CheckState
from ccctl.registry import open_registry
from ccctl.registry.overview import site_states
from ccctl.registry.sites import update_endpoints
from ccctl.rollcall.session import options_from_config
from ccctl.tui.widgets.eventlog import EventLog
from ccctl.tui.widgets.header import Header
from tests.tui.conftest import record_run
from tests.tui.pilot import SIZE, make_app, until


@pytest.mark.asyncio
async def test_results_from_another_writer_change_the_overview(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        first = app.rowlist.rows[0]
        with open_registry(dash_db_url) as db:
            ids = [s["id"] for s in site_states(db) if s["scheme"] == first["scheme"]
                   and s["province_code"] == first["code"]]
            record_run(db, {i: CheckState.OK for i in ids}, started_at=1_900_000_000.0)
        # The province was the worst; once all its sites are OK it goes to the bottom.
        await until(pilot, lambda: app.rowlist.rows[-1]["code"] == first["code"]
                    and app.rowlist.rows[-1]["ready_pct"] == 100.0, "the province to recover")
        lines = [text for text, _ in app.widget("#log", EventLog).lines]
        assert any("-> OK" in line for line in lines)


@pytest.mark.asyncio
async def test_recheck_from_the_dashboard(dash_db_url: str, tmp_path: Path) -> None:
    connections = 0

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with open_registry(dash_db_url) as db:
        sites = [s for s in site_states(db) if s["state"] == "UNREACHABLE"][:3]
        update_endpoints(db, {s["id"]: {"host": "127.0.0.1", "ssh_port": port, "ssh_user": "ccctl"} for s in sites})
    options = options_from_config(load_config(env={}), stages="tcp", timeout_s=5.0, retries=0,
                                  verify_host_keys=False)
    app = make_app(dash_db_url, tmp_path / "home", rollcall_options=options)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded, "the first read of the registry")
            await pilot.press("s", "colon", *"state UNREACHABLE", "enter")
            target = sites[0]["id"]
            app.rowlist.cursor = next(i for i, r in enumerate(app.rowlist.rows) if r["id"] == target)
            await pilot.press("c")
            await until(pilot, lambda: app.fleet.sites[target]["state"] == "OK", "the re-check's result")
            await until(pilot, lambda: all(r["id"] != target for r in app.rowlist.rows), "the list to drop it")
            assert connections >= 1
            await until(pilot, lambda: not app.recheck_line, "the re-check to end")
            lines = [text for text, _ in app.widget("#log", EventLog).lines]
            assert any("ROLLCALL" in line for line in lines) and any(f"{target}" in line and "-> OK" in line
                                                                     for line in lines)
        with open_registry(dash_db_url) as db:
            assert {s["id"]: s["state"] for s in site_states(db)}[target] == "OK"  # recorded as a run
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_locked_registry_shows_and_recovers(dash_db_url: str, tmp_path: Path) -> None:
    path = dash_db_url[len("sqlite:///"):]
    # Another process's connection takes the file for itself (exclusive locking mode keeps the
    # lock after its write), as a stuck writer would; the dashboard starts meanwhile.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
    holder.execute("COMMIT")
    app = make_app(dash_db_url, tmp_path / "home")
    try:
        async with app.run_test(size=SIZE) as pilot:
            header = app.widget("#header", Header)
            await until(pilot, lambda: "locked" in header.registry, "the registry shown locked")
            await pilot.press("question_mark")  # the screen still answers
            assert type(app.screen).__name__ == "HelpScreen"
            await pilot.press("escape")
            assert not app.loaded and app.rowlist.rows == []
            holder.close()
            await until(pilot, lambda: app.loaded and header.registry == "ok", "the registry read after all")
            assert app.rowlist.rows
            lines = [text for text, _ in app.widget("#log", EventLog).lines]
            assert any("locked" in line for line in lines) and any("readable again" in line for line in lines)
    finally:
        holder.close()


@pytest.mark.asyncio
async def test_control_actions_against_a_real_server(dash_db_url: str, tmp_path: Path) -> None:
    from ccctl.media.server import create_app
    from ccctl.media.tokens import generation

    home = tmp_path / "home"
    server = TestServer(create_app(dash_db_url, home), host="127.0.0.1")
    await server.start_server()
    app = make_app(dash_db_url, home)
    app.listen = f"127.0.0.1:{server.port}"
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        header = app.widget("#header", Header)
        await until(pilot, lambda: header.server == "up", "the server shown up")
        assert header.broadcast == ["no live broadcast"]
        await pilot.press("s")
        site = app.rowlist.current()
        assert site is not None
        with open_registry(dash_db_url) as db:
            before = generation(db, site["id"])
        await pilot.press("f")  # the server refuses: the site is not in a broadcast
        await until(pilot, lambda: "floor" in str(app.query_one("#status").render()), "the floor's answer")
        assert "server said" in str(app.query_one("#status").render())
        assert "no live broadcast" in str(app.query_one("#status").render())
        await pilot.press("colon", *"move audio", "enter")  # the server refuses: not connected
        await until(pilot, lambda: "tier" in str(app.query_one("#status").render()), "the tier's answer")
        assert "is not connected to a live broadcast" in str(app.query_one("#status").render())
        await pilot.press("F")
        await until(pilot, lambda: str(app.query_one("#status").render()).startswith("release"),
                    "the release's answer")
        assert "no live broadcast" in str(app.query_one("#status").render())
        await pilot.press("x", "y")  # revoke, confirmed
        await until(pilot, lambda: "revoked" in str(app.query_one("#status").render()), "the revocation")
        with open_registry(dash_db_url) as db:
            assert generation(db, site["id"]) == before + 1
        await server.close()
        await until(pilot, lambda: header.server.startswith("down"), "the server shown down")


@pytest.mark.asyncio
async def test_event_log_is_a_ring_buffer_and_the_map_draws_every_site(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        log = app.widget("#log", EventLog)
        for i in range(10_050):
            log.add(f"line {i}")
        assert len(log.lines) == 10_000 and log.lines[-1][0].endswith("line 10049")
        assert log.lines[0][0].endswith("line 50")
        await pilot.press("colon", *"prov 95", "enter", "m")
        screen = app.screen
        assert type(screen).__name__ == "MapScreen"
        await until(pilot, lambda: len(screen.points()) == len(app.fleet.order), "every site on the map")  # type: ignore[attr-defined]
        lit = [p for p in screen.points() if p[3]]  # type: ignore[attr-defined]
        assert len(lit) == sum(1 for s in app.fleet.order if s["scheme"] == "2021" and s["province_code"] == "95")
        await pilot.pause()
        text = screen.query_one("#map").render().plain  # type: ignore[union-attr]
        assert "Hoàng Sa (Việt Nam)" in text and "Trường Sa (Việt Nam)" in text
        await pilot.press("escape")
        assert type(app.screen).__name__ == "MainScreen"
