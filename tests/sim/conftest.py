"""Fixtures for the simulated fleet: a client key and a small running fleet on loopback.

The fleet binds port 0 on its own 127.x addresses, so tests never clash with a running demo
fleet or with each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio

from ccctl.sim.endpoint import SimEndpointSpec, loopback_address
from ccctl.sim.faults import Fault
from ccctl.sim.fleet import Fleet

# Far from index 0 so a demo fleet on the low addresses is never touched.
BASE_INDEX = 200_000

SITES: dict[str, Fault | None] = {
    "ok-1": None,
    "ok-2": None,
    "authfail-1": Fault("authfail"),
    "hostkey-1": Fault("hostkey"),
    "down-1": Fault("down"),
    "blackhole-1": Fault("blackhole"),
    "flap-1": Fault("flap"),
    "nocam-1": Fault("nocam"),
    "slow-1": Fault("slow", 300),
}


def make_specs(sites: dict[str, Fault | None], base: int = BASE_INDEX) -> list[SimEndpointSpec]:
    """One spec per site on consecutive loopback addresses, port 0."""
    return [
        SimEndpointSpec(site_id, loopback_address(base + i), 0, fault)
        for i, (site_id, fault) in enumerate(sites.items())
    ]


@pytest.fixture(scope="session")
def client_key() -> asyncssh.SSHKey:
    """The operator's login key, authorised on every simulated endpoint."""
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def client_public(client_key: asyncssh.SSHKey) -> str:
    """The OpenSSH public key line of ``client_key``."""
    return client_key.export_public_key("openssh").decode().strip()


@pytest_asyncio.fixture
async def fleet(tmp_path: Path, client_public: str) -> AsyncIterator[Fleet]:
    """A running fleet of the ``SITES`` endpoints, closed after the test."""
    async with Fleet(make_specs(SITES), client_public, tmp_path / "state") as running:
        yield running


Connector = Callable[..., Awaitable[asyncssh.SSHClientConnection]]


@pytest.fixture
def connect(fleet: Fleet, client_key: asyncssh.SSHKey) -> Connector:
    """Open a real SSH client connection to a fleet site, checking its published host key."""

    async def _connect(site_id: str, **kwargs: object) -> asyncssh.SSHClientConnection:
        host, port = fleet.address(site_id)
        options: dict[str, object] = {
            "username": "ccctl",
            "client_keys": [client_key],
            "known_hosts": ([asyncssh.import_public_key(fleet.published_host_key(site_id))],
                            [], []),
            "agent_path": None,
            "config": None,
            "connect_timeout": 5,
        }
        options.update(kwargs)
        return await asyncssh.connect(host, port, **options)  # type: ignore[arg-type]

    return _connect
