"""Plain data shared by every part of ccctl: sites, endpoints, check results.

No I/O here, so that the CLI, the dashboard, tests and benchmarks can all build and
compare these objects without touching a database or the network.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

TIERS = ("high", "low", "audio")
SCHEMES = ("2021", "2025")


class CheckState(str, enum.Enum):
    """The one classified outcome of a site's roll-call; never an exception."""

    OK = "OK"
    DEGRADED = "DEGRADED"
    UNREACHABLE = "UNREACHABLE"
    TIMEOUT = "TIMEOUT"
    AUTH_FAILED = "AUTH_FAILED"
    HOSTKEY_MISMATCH = "HOSTKEY_MISMATCH"
    ERROR = "ERROR"

    @property
    def is_down(self) -> bool:
        """True for states that mean the site cannot take part in a conference."""
        return self not in (CheckState.OK, CheckState.DEGRADED)


@dataclass(frozen=True)
class Endpoint:
    """How to reach a site's box: address, SSH login and the host key to expect.

    ``host_key`` is an OpenSSH public key line (``ssh-ed25519 AAAA...``) or a reference
    ``known_hosts:/path/to/file``; ``key_path`` is the path of the private key to log in
    with (the key itself never enters the registry). ``known_hosts=None`` with
    ``verify_host_key=False`` is the operator's explicit opt-out of host-key checks.
    """

    host: str
    port: int = 22
    user: str = "ccctl"
    host_key: str | None = None
    key_path: str | None = None
    verify_host_key: bool = True


@dataclass
class Site:
    """A bridge point: one endpoint tied to an official administrative unit."""

    id: str
    name: str
    unit_code: str
    scheme: str = "2021"
    host: str | None = None
    ssh_port: int = 22
    ssh_user: str = "ccctl"
    host_key: str | None = None
    key_path: str | None = None
    tier: str = "high"
    link_kbps: int | None = None
    contact_name: str | None = None
    contact_phone: str | None = None
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    simulated: bool = False
    # Denormalised from the units table when the site is stored, for fast filters.
    province_code: str | None = None
    district_code: str | None = None
    province_name: str | None = None
    district_name: str | None = None
    unit_name: str | None = None

    def endpoint(self, verify_host_key: bool = True) -> Endpoint | None:
        """The site's SSH endpoint, or None when it has no address yet."""
        if not self.host:
            return None
        return Endpoint(
            host=self.host,
            port=self.ssh_port,
            user=self.ssh_user,
            host_key=self.host_key,
            key_path=self.key_path,
            verify_host_key=verify_host_key,
        )


@dataclass
class CheckResult:
    """One site's roll-call outcome, as stored in the registry's history."""

    site_id: str
    state: CheckState
    reason: str = ""
    stage: str = ""  # the stage that decided the state: tcp, ssh, media
    rtt_ms: float | None = None
    attempts: int = 1
    hard: bool = True  # SOFT (False) until retries are used up
    flapping: bool = False
    facts: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    duration_ms: float = 0.0
