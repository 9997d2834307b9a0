"""``ccctl edge``: add, list, status, remove on a real registry, status against real Janus edges."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from ccctl.edges.feed import EdgeFeed
from ccctl.edges.local import ADMIN_KEY, JanusEdge
from ccctl.media.program import Program
from ccctl.registry import open_registry
from ccctl.registry.edges import get_edge, list_edges
from tests.conftest import Ccctl
from tests.edges.test_feed import TIERS


def key_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "edge.key"
    path.write_text(ADMIN_KEY + "\n")
    path.chmod(mode)
    return path


def test_add_list_remove(ccctl: Ccctl, tmp_path: Path) -> None:
    key = key_file(tmp_path)
    result = ccctl("edge", "add", "hn-1", "--api", "http://10.213.100.2:8088/janus", "--admin-key-file", str(key),
                   "--province", "Hà Nội", "--capacity", "300", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["region"] == "province=Hà Nội"
    rows = ccctl.json("edge", "list")
    assert [(r["name"], r["capacity"], r["admin_key_file"]) for r in rows] == [("hn-1", 300, str(key))]
    # The key itself is nowhere in the registry, only its path.
    with open_registry(ccctl.db_url) as db:
        dump = json.dumps([e.record() for e in list_edges(db)], ensure_ascii=False)
        assert ADMIN_KEY not in dump and get_edge(db, "hn-1").region == {"province": "Hà Nội"}
    csv = ccctl("edge", "list", "--format", "csv")
    assert csv.exit_code == 0 and csv.stdout.splitlines()[0].startswith("name,kind,api_url")
    again = ccctl("edge", "add", "hn-1", "--api", "http://10.213.100.2:8088/janus", "--admin-key-file", str(key))
    assert again.exit_code == 2 and "exists already" in again.stderr
    assert ccctl("edge", "remove", "hn-1", "--yes").exit_code == 0
    assert ccctl.json("edge", "list") == []
    gone = ccctl("edge", "remove", "hn-1", "--yes")
    assert gone.exit_code == 4 and "no edge" in gone.stderr
    # SRTP: on by default for an edge whose API is not on loopback, off for one on loopback,
    # as chosen otherwise; the admin API's URL is kept as given.
    assert ccctl("edge", "add", "far", "--api", "http://10.213.100.2:8088/janus", "--admin-key-file", str(key),
                 "--admin-api", "http://10.213.100.2:7088/admin").exit_code == 0
    assert ccctl("edge", "add", "near", "--api", "http://127.0.0.1:8088/janus", "--admin-key-file", str(key)).exit_code == 0
    assert ccctl("edge", "add", "lab", "--api", "http://10.0.0.9:8088/janus", "--admin-key-file", str(key),
                 "--no-srtp").exit_code == 0
    rows = {r["name"]: r for r in ccctl.json("edge", "list")}
    assert {n: (r["srtp"], r["admin_url"]) for n, r in rows.items()} == {
        "far": (True, "http://10.213.100.2:7088/admin"), "near": (False, None), "lab": (False, None)}


@pytest.mark.parametrize(("args", "message"), [
    (["--api", "ftp://x/janus"], "bad --api URL"),
    (["--api", "http://10.0.0.1:99999/janus"], "bad port"),
    (["--api", "http://10.0.0.1:8088/janus", "--capacity", "0"], "at least 1"),
    (["--api", "http://10.0.0.1:8088/janus", "--admin-api", "10.0.0.1:7088"], "bad --admin-api URL"),
])
def test_bad_input_is_one_line_and_adds_nothing(ccctl: Ccctl, tmp_path: Path, args: list[str], message: str) -> None:
    result = ccctl("edge", "add", "e1", "--admin-key-file", str(key_file(tmp_path)), *args)
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert ccctl.json("edge", "list") == []


def test_a_key_file_others_can_read_is_refused(ccctl: Ccctl, tmp_path: Path) -> None:
    result = ccctl("edge", "add", "e1", "--api", "http://10.0.0.1:8088/janus",
                   "--admin-key-file", str(key_file(tmp_path, 0o644)))
    assert result.exit_code == 2 and "chmod 600" in result.stderr
    missing = ccctl("edge", "add", "e1", "--api", "http://10.0.0.1:8088/janus", "--admin-key-file", str(tmp_path / "no"))
    assert missing.exit_code == 2 and "admin key file" in missing.stderr
    assert ccctl.json("edge", "list") == []


def test_status_of_live_and_dead_edges(ccctl: Ccctl, two_edges: list[JanusEdge]) -> None:
    for e in two_edges:
        assert ccctl("edge", "add", f"e{e.index}", "--api", e.url, "--admin-key-file", str(e.key_file),
                     "--capacity", "10").exit_code == 0

    # A broadcast feeding e0, in a thread of its own (the CLI runs its own event loop here).
    opened, done = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    async def broadcast() -> None:
        program = Program("testsrc", TIERS, fps=15)
        await program.start()
        try:
            with open_registry(ccctl.db_url) as db:
                feed = await EdgeFeed(get_edge(db, "e0"), program, broadcast_id=3).open()
            opened.set()
            await asyncio.to_thread(done.wait, 60)
            await feed.close()
        finally:
            await program.close()

    def run() -> None:
        try:
            asyncio.run(broadcast())
        except BaseException as exc:  # reported by the test below
            failed.append(exc)
            opened.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert opened.wait(60) and not failed, failed
        rows = ccctl.json("edge", "status")
    finally:
        done.set()
        thread.join(60)
    assert [(r["name"], r["up"], r["mountpoints"], r["viewers"], r["room"]) for r in rows] == [
        ("e0", True, 3, 0, 10), ("e1", True, 0, 0, 10)]
    assert ccctl.json("edge", "status", "e0")[0]["mountpoints"] == 0  # the broadcast over, none left
    two_edges[1].kill()
    rows = ccctl.json("edge", "status")
    assert rows[0]["up"] is True and rows[1]["up"] is False and "not answering" in rows[1]["error"]
