"""`ccctl sim join` against a server on https (``serve --tls self-signed``).

The simulated sites find the server as the CLI does (its card: https, the certificate's
fingerprint pinned) and their receivers' WHEP requests go over https with that pin; a card whose
pin is not the server's certificate makes `sim join` refuse with exit 12 before any site is
started. A real detached server and real receiver processes; every wait is a bounded poll.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ccctl.media.tls import CARD_FILE, cert_fingerprint
from tests.conftest import Ccctl, free_port

from .test_join import TIMEOUT, sessions, sites, wait_for


@pytest.fixture
def tls_live(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Ccctl, str]]:
    """A detached https server (self-signed) with a live broadcast and two sites to join."""
    listen = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", listen)
    for site_id, tier in (("t-1", "low"), ("t-2", "audio")):
        assert ccctl("sites", "add", site_id, "--name", f"Điểm cầu {site_id}", "--unit", "26740",
                     "--tier", tier).exit_code == 0
    started = ccctl("serve", "--detach", "--tls", "self-signed")
    assert started.exit_code == 0, started.stderr
    try:
        assert ccctl("broadcast", "start").exit_code == 0
        yield ccctl, listen
    finally:
        ccctl("sim", "down")
        ccctl("serve", "--stop")


def test_sites_join_a_tls_server_with_its_certificate_pinned(tls_live: tuple[Ccctl, str]) -> None:
    ccctl, listen = tls_live
    joined = ccctl("sim", "join", "--wait", str(TIMEOUT), "--format", "json")
    assert joined.exit_code == 0, joined.stderr
    assert f"joining https://{listen}" in joined.stderr
    row = json.loads(joined.stdout)[0]
    assert (row["receivers"], row["joined"], row["refused"]) == (2, 2, 0)

    def receiving() -> dict[str, dict[str, Any]] | None:
        rows = sites(ccctl)
        return rows if all(r["receiving"] and r["packets_audio"] > 0 for r in rows.values()) else None

    rows = wait_for("both sites to receive over the https-negotiated sessions", receiving)
    assert rows["t-1"]["packets_video"] > 0 and not any(r["last_error"] for r in rows.values())
    assert set(sessions(ccctl)) == {"t-1", "t-2"}
    plan = json.loads(next((ccctl.home / "sim" / "join").glob("shard-*/plan.json")).read_text())
    assert plan["server"] == f"https://{listen}"
    assert plan["trust"]["fingerprint"] == cert_fingerprint(ccctl.home / "tls" / "self-signed.crt")
    left = ccctl("sim", "leave")
    assert left.exit_code == 0
    assert sessions(ccctl) == {}  # each receiver's DELETE went over https too


def test_a_pin_other_than_the_servers_certificate_is_refused(tls_live: tuple[Ccctl, str]) -> None:
    ccctl, _ = tls_live
    card = ccctl.home / CARD_FILE
    data = json.loads(card.read_text())
    data["fingerprint"] = "AB:" * 31 + "AB"  # this installation now trusts another certificate
    card.write_text(json.dumps(data))
    refused = ccctl("sim", "join", "--wait", "0")
    assert refused.exit_code == 12, refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("Error: ") and "not the pinned" in refused.stderr
    assert not list((ccctl.home / "sim" / "join").glob("shard-*/plan.json"))  # no site was started
