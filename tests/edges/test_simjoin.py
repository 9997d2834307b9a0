"""`ccctl sim join` through edges: a detached `ccctl serve`, two real Janus edges, simulated
sites playing from the edge ccctl names (or from ccctl itself when no edge has room), and
moving when their edge is killed. Every wait is on a condition with a deadline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ccctl.edges.local import JanusEdge
from tests.conftest import Ccctl, free_port
from tests.sim.test_join import sessions, sites, wait_for

TIMEOUT = 45.0


@pytest.fixture
def live(ccctl: Ccctl, two_edges: list[JanusEdge], monkeypatch: pytest.MonkeyPatch) -> Iterator[Ccctl]:
    """A detached server with a live broadcast, three low-tier sites and two edges of room 1."""
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", f"127.0.0.1:{free_port()}")
    for site in ("k-1", "k-2", "k-3"):
        assert ccctl("sites", "add", site, "--name", f"Điểm cầu {site}", "--unit", "26740", "--tier", "low").exit_code == 0
    for e in two_edges:
        admin = ["--admin-api", e.admin_url] if e.index == 0 else []  # e1: the sites' own word only
        added = ccctl("edge", "add", f"e{e.index}", "--api", e.url, "--admin-key-file", str(e.key_file), "--capacity", "1",
                      *admin)
        assert added.exit_code == 0, added.stderr
    started = ccctl("serve", "--detach")
    assert started.exit_code == 0, started.stderr
    try:
        assert ccctl("broadcast", "start").exit_code == 0
        yield ccctl
    finally:
        ccctl("sim", "down")
        ccctl("serve", "--stop")


def test_sim_sites_play_from_edges_and_move_when_one_dies(live: Ccctl, two_edges: list[JanusEdge]) -> None:
    joined = live("sim", "join", "--wait", str(TIMEOUT), "--format", "json")
    assert joined.exit_code == 0, (joined.stderr[-300:], sites(live))
    # (bytes are not counted on the edge path: aiortc's inbound statistics have no byte count)
    assert json.loads(joined.stdout)[0]["joined"] == 3

    def receiving() -> dict[str, dict[str, Any]] | None:
        rows = sites(live)
        ok = all(r["receiving"] and r["packets_audio"] > 0 and r["packets_video"] > 0 for r in rows.values())
        return rows if ok else None

    wait_for("every site to receive", receiving)
    # One site per edge (capacity 1 each), the third from ccctl itself (a WHEP session there);
    # broadcast status lists all three, with the edge serving each (e0's join confirmed by
    # e0's admin API, e1's on the site's word).
    rows = sessions(live)
    assert sorted(str(r.get("edge")) for r in rows.values()) == ["None", "e0", "e1"]
    on_e1 = next(site for site, r in rows.items() if r.get("edge") == "e1")
    moved = live("broadcast", "tier", on_e1, "audio")  # a switch on its edge connection
    assert moved.exit_code == 0 and "moved to audio (was low)" in moved.stderr, moved.stderr
    edges = wait_for("both edges to count their viewer", lambda: (
        rows := {r["name"]: r for r in live.json("edge", "status")}) and all(
        r["viewers"] == 1 for r in rows.values()) and rows)
    assert {r["name"] for r in edges.values()} == {"e0", "e1"}
    attendance = {r["site_id"]: r for r in live.json("broadcast", "attendance")}
    assert set(attendance) == {"k-1", "k-2", "k-3"} and all(r["connected"] for r in attendance.values())
    assert sorted(str(r["edge"]) for r in attendance.values()) == ["None", "e0", "e1"]

    # e0 dies: its site finds no room on e1 and comes to ccctl itself.
    two_edges[0].kill()
    after = wait_for("the site of e0 to play from ccctl", lambda: len(
        [r for r in sessions(live).values() if not r.get("edge")]) == 2 and (
        (rows := receiving()) is not None and sum(r["joins"] for r in rows.values()) == 4 and rows))
    moved = [r for r in after.values() if r["joins"] == 2]
    # Its last failure names e0: gone, or (asking again before ccctl's next probe) not answering.
    assert len(moved) == 1 and (moved[0]["last_error"] or "").startswith(("edge_gone: e0", "edge_join_failed: e0"))
