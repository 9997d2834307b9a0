"""Loopback addressing and the diagnostics answer, without any network."""

from __future__ import annotations

import ipaddress

import pytest

from ccctl.sim.endpoint import diagnostics, loopback_address
from ccctl.sim.faults import Fault


@pytest.mark.parametrize(
    ("index", "address"),
    [
        (0, "127.1.0.1"),
        (1, "127.1.0.2"),
        (253, "127.1.0.254"),
        (254, "127.1.1.1"),
        (254 * 256, "127.2.0.1"),
        (255 * 256 * 254 - 1, "127.255.255.254"),
    ],
)
def test_loopback_address_mapping(index: int, address: str) -> None:
    assert loopback_address(index) == address


def test_loopback_addresses_are_distinct_and_usable() -> None:
    addresses = [loopback_address(i) for i in range(0, 200_000, 7)]
    assert len(set(addresses)) == len(addresses)
    for text in addresses:
        octets = [int(part) for part in text.split(".")]
        assert ipaddress.ip_address(text).is_loopback
        assert octets[1] != 0
        assert octets[3] not in (0, 255)


@pytest.mark.parametrize("index", [-1, 255 * 256 * 254])
def test_loopback_address_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        loopback_address(index)


def test_diagnostics_are_stable_and_plausible() -> None:
    first = diagnostics("hn-001")
    assert first == diagnostics("hn-001")
    assert first != diagnostics("hn-002")
    assert list(first) == ["agent_version", "uptime_s", "camera", "microphone",
                           "disk_free_pct", "load1", "site_id"]
    assert first["agent_version"] == "1.4.2"
    assert first["site_id"] == "hn-001"
    assert first["camera"] is True and first["microphone"] is True
    assert isinstance(first["uptime_s"], int) and first["uptime_s"] >= 3600
    assert 20 <= first["disk_free_pct"] <= 90
    assert 0 < first["load1"] < 2


@pytest.mark.parametrize("site_id", [f"s{i}" for i in range(20)])
def test_diagnostics_faults(site_id: str) -> None:
    assert diagnostics(site_id, Fault("nocam"))["camera"] is False
    assert diagnostics(site_id, Fault("nomic"))["microphone"] is False
    assert diagnostics(site_id, Fault("diskfull"))["disk_free_pct"] < 5
    assert diagnostics(site_id, Fault("slow", 100)) == diagnostics(site_id)
