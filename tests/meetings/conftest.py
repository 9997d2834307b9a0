"""A simulated fleet (worker process, asyncssh servers on 127.x) under a registry on each
backend, with contacts on the sites a meeting will expect, and a fixed local clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ccctl.config import load_config
from ccctl.meetings.times import parse_local
from ccctl.registry import open_registry
from ccctl.registry.sites import edit_site
from ccctl.rollcall.session import RollcallOptions, options_from_config
from tests.conftest import Ccctl, free_port

TZ = "Asia/Ho_Chi_Minh"
START = "2026-12-05 08:00"
FAULTS = "2021-31816=authfail,2021-31822=down,2021-31828=nocam"
AUDIENCE = ["2021-31813", "2021-31816", "2021-31819", "2021-31822", "2021-31825", "2021-31828"]
CONTACTS = {site: (f"Kỹ thuật viên {i}", f"+84 91 000 00{i:02d}") for i, site in enumerate(AUDIENCE)}


def at(local: str) -> float:
    """The injected clock: a local wall time in Hồ Chí Minh as a UTC epoch."""
    return parse_local(local, TZ)


@pytest.fixture
def fleet(units_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ccctl]:
    """Bạc Liêu's sites on ``units_db_url``, simulated, three of the audience with a fault."""
    monkeypatch.setenv("CCCTL_SIM_PORT", str(free_port()))
    cli = Ccctl(tmp_path / "home", units_db_url)
    cli.home.mkdir(parents=True, exist_ok=True)
    # A loaded machine's slow event loop must not make a healthy site DEGRADED "slow box".
    (cli.home / "ccctl.toml").write_text("[rollcall]\nexec_warn_ms = 60000.0\n")
    assert cli("sites", "generate", "--province", "bac lieu").exit_code == 0
    result = cli("sim", "up", "--detach", "--faults", FAULTS, "--processes", "1")
    assert result.exit_code == 0, result.stderr
    with open_registry(units_db_url) as db:
        for site, (name, phone) in CONTACTS.items():
            edit_site(db, site, {"contact_name": name, "contact_phone": phone})
    yield cli
    cli("sim", "down")


def fleet_options(cli: Ccctl) -> RollcallOptions:
    """Roll-call options of the fleet's home: generous stage timeout, no retries."""
    config = load_config(env={"CCCTL_HOME": str(cli.home)})
    return options_from_config(config, timeout_s=10.0, retries=0)


@pytest.fixture
def served(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch) -> Ccctl:
    """Two sites to invite (no SSH endpoint: their checks end at once) and a free listen address
    for a server the test starts."""
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", f"127.0.0.1:{free_port()}")
    for site, unit in (("bn-1", "26740"), ("bl-1", "31813")):
        added = ccctl("sites", "add", site, "--name", f"Điểm cầu {site}", "--unit", unit)
        assert added.exit_code == 0, added.stderr
    return ccctl
