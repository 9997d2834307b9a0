"""``edge status``'s probe: is an edge up, and how many viewers do ccctl's mountpoints have."""

from __future__ import annotations

import asyncio
from typing import Any

from ccctl.edges import EdgeError
from ccctl.edges.janus import MOUNT_PREFIX, JanusClient, derived
from ccctl.edges.keys import read_key
from ccctl.errors import UsageError
from ccctl.registry.edges import Edge


async def probe(edge: Edge) -> dict[str, Any]:
    """One edge's state: ``up``, ccctl's ``mountpoints`` on it and their ``viewers``
    (``info`` with each one's derived secret), ``room`` left under its capacity, ``error``."""
    row: dict[str, Any] = {"name": edge.name, "api_url": edge.api_url, "region": edge.record()["region"],
                           "capacity": edge.capacity, "up": False, "mountpoints": 0, "viewers": 0,
                           "room": None, "error": ""}
    try:
        key = read_key(edge.admin_key_file)
        async with JanusClient(edge.api_url, key) as client:
            mounts = [m for m in await client.list() if str(m.get("description", "")).startswith(MOUNT_PREFIX)]
            for m in mounts:
                info = await client.info(int(m["id"]), derived(key, "secret", str(m["description"])))
                row["viewers"] += int(info.get("viewers", 0))
            row["mountpoints"] = len(mounts)
            row["up"] = True
    except (EdgeError, UsageError) as exc:
        row["error"] = str(exc)
    if edge.capacity is not None:
        row["room"] = max(0, edge.capacity - row["viewers"])
    return row


async def probe_all(edges: list[Edge]) -> list[dict[str, Any]]:
    """Every edge probed at once, in the given order."""
    return list(await asyncio.gather(*(probe(e) for e in edges)))
