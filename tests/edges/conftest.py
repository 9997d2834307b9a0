"""Fixtures for the edge tests: real Janus edges in their own network namespaces."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aioice.ice
import pytest
import pytest_asyncio

from ccctl.edges.local import JanusEdge, why_unavailable


@pytest.fixture
def edges_available() -> None:
    """Skip (with the reason) where real Janus edges cannot run."""
    reason = why_unavailable()
    if reason:
        pytest.skip(reason)


@pytest_asyncio.fixture
async def two_edges(edges_available: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[JanusEdge]]:
    """Two Janus edges, each in its own namespace, ready; torn down afterwards. aiortc gathers
    host candidates on the test's ends of the edges' veths only, so nothing else is used."""
    edges: list[JanusEdge] = []
    try:
        for i in range(2):
            edges.append(JanusEdge(i, tmp_path / f"edge{i}").open())
        await asyncio.gather(*(e.ready() for e in edges))
        monkeypatch.setattr(aioice.ice, "get_host_addresses",
                            lambda use_ipv4, use_ipv6: [e.local_addr for e in edges])
        yield edges
    finally:
        for e in edges:
            e.close()


@pytest.fixture
def no_leftover_namespaces() -> Iterator[None]:
    """Check after the test that it left no edge namespace behind."""
    yield
    import os

    from ccctl.sim.netns import namespaces

    assert not [n for n in namespaces() if n.startswith(f"ccctl-{os.getpid()}-e")]
