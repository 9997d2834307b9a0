"""`ccctl sim up/status/down` end to end: worker processes, registry endpoints, real logins."""

from __future__ import annotations

import json
from collections.abc import Iterator

import asyncssh
import pytest

from tests.conftest import Ccctl, free_port


@pytest.fixture
def sim_ccctl(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ccctl]:
    monkeypatch.setenv("CCCTL_SIM_PORT", str(free_port()))
    yield ccctl
    ccctl("sim", "down")


def test_up_records_endpoints_and_sites_answer(sim_ccctl: Ccctl) -> None:
    assert sim_ccctl("sites", "generate", "--province", "bac lieu").exit_code == 0
    result = sim_ccctl("sim", "up", "--detach", "--faults", "2021-31825=authfail,2021-31828=hostkey", "--processes", "2")
    assert result.exit_code == 0, result.stderr
    status = sim_ccctl.json("sim", "status")[0]
    assert status["running"] and status["workers_alive"] == 2 and status["endpoints"] == 64
    assert status["faults"] == {"authfail": 1, "hostkey": 1, "none": 62}
    sites = {s["id"]: s for s in sim_ccctl.json("sites", "list", "--all-columns")}
    assert all(s["simulated"] and s["host"].startswith("127.") for s in sites.values())
    assert len({s["host"] for s in sites.values()}) == 64
    again = sim_ccctl("sim", "up", "--detach")
    assert again.exit_code == 8 and "already running" in again.stderr

    async def login(site: dict) -> str:
        async with asyncssh.connect(site["host"], site["ssh_port"], username=site["ssh_user"],
                                    client_keys=[site["key_path"]],
                                    known_hosts=([asyncssh.import_public_key(site["host_key"])], [], [])) as conn:
            return (await conn.run("ccctl-diag", check=True)).stdout

    import asyncio

    facts = json.loads(asyncio.run(login(sites["2021-31834"])))
    assert facts["site_id"] == "2021-31834"
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(login(sites["2021-31828"]))
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(login(sites["2021-31825"]))
    down = sim_ccctl("sim", "down")
    assert down.exit_code == 0 and "stopped 2" in down.stderr
    assert sim_ccctl.json("sim", "status")[0]["running"] is False


def test_bad_fault_spec_is_one_line(sim_ccctl: Ccctl) -> None:
    sim_ccctl("sites", "generate", "--province", "bac lieu")
    result = sim_ccctl("sim", "up", "--detach", "--faults", "down=abc%")
    assert result.exit_code == 2 and result.stderr.startswith("Error: --faults: ") and result.stderr.count("\n") == 1
