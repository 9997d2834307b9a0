"""Edges in the registry: the media servers ccctl feeds (SQL for the ``edges`` table only).

An edge is a name, its kind (``janus``), the URL of its API, the path of the file holding its
admin key (never the key: it is read at use, see :mod:`ccctl.edges.keys`), its region as a
site filter (the sites it may serve) and its capacity in viewers (None: no limit but what
the edge itself reports).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ccctl.errors import NotFound, UsageError
from ccctl.registry.db import Database
from ccctl.registry.sites import SiteFilter, shorten

NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
KINDS = ("janus",)
_REGION_KEYS = ("province", "district", "unit", "tag", "tier", "search")
_COLUMNS = "name, kind, api_url, admin_key_file, region, capacity, created_at, updated_at"


@dataclass(frozen=True)
class Edge:
    """One registered edge."""

    name: str
    api_url: str
    admin_key_file: str
    region: dict[str, Any] = field(default_factory=dict)
    capacity: int | None = None
    kind: str = "janus"
    created_at: float = 0.0
    updated_at: float = 0.0

    def site_filter(self) -> SiteFilter:
        """The sites of this edge's region (every site when the region is empty)."""
        r = self.region
        return SiteFilter(ids=tuple(r.get("ids", ())), province=r.get("province"), district=r.get("district"),
                          unit=r.get("unit"), tag=r.get("tag"), tier=r.get("tier"), search=r.get("search"))

    def record(self) -> dict[str, Any]:
        """The edge as listings print it (the region as its filter's text)."""
        data = asdict(self)
        data["region"] = region_text(self.region)
        return data


def region_text(region: dict[str, Any]) -> str:
    """``province=01 tag=north`` for a region, ``all`` for none."""
    parts = [f"{k}={v}" for k, v in region.items() if k != "ids" and v]
    parts += [f"site={i}" for i in region.get("ids", ())]
    return " ".join(parts) or "all"


def check_edge(name: str, api_url: str, capacity: int | None) -> None:
    """UsageError for a bad name, API URL or capacity."""
    if not NAME.fullmatch(name):
        raise UsageError(f"bad edge name {shorten(name)} (lower-case letters, digits, '.', '_', '-'; at most 63)")
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"bad --api URL {shorten(api_url)} (http://HOST:PORT/janus)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"bad port in --api URL {shorten(api_url)}") from None
    if capacity is not None and capacity < 1:
        raise UsageError("--capacity must be at least 1 viewer")


def region_of(flt: SiteFilter) -> dict[str, Any]:
    """The stored form of a site filter (only what it sets)."""
    region: dict[str, Any] = {k: getattr(flt, k) for k in _REGION_KEYS if getattr(flt, k)}
    if flt.ids:
        region["ids"] = list(flt.ids)
    return region


def _to_edge(row: dict[str, Any]) -> Edge:
    row = dict(row)
    row["region"] = json.loads(row["region"] or "{}")
    return Edge(**row)


def add_edge(db: Database, edge: Edge) -> Edge:
    """Register an edge; UsageError if the name is taken."""
    check_edge(edge.name, edge.api_url, edge.capacity)
    if edge.kind not in KINDS:
        raise UsageError(f"unknown edge kind {shorten(edge.kind)} (known: {', '.join(KINDS)})")
    now = time.time()
    with db.transaction():
        db.lock("ccctl-edges")
        if db.query("SELECT 1 FROM edges WHERE name = ?", (edge.name,)):
            raise UsageError(f"edge {edge.name} exists already (remove it first)")
        db.execute(f"INSERT INTO edges ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (edge.name, edge.kind, edge.api_url, edge.admin_key_file,
                    json.dumps(edge.region, ensure_ascii=False, sort_keys=True), edge.capacity, now, now))
    return get_edge(db, edge.name)


def list_edges(db: Database) -> list[Edge]:
    """Every edge, by name."""
    return [_to_edge(r) for r in db.query_dicts(f"SELECT {_COLUMNS} FROM edges ORDER BY name")]


def get_edge(db: Database, name: str) -> Edge:
    """One edge by name, or NotFound."""
    rows = db.query_dicts(f"SELECT {_COLUMNS} FROM edges WHERE name = ?", (name,))
    if not rows:
        raise NotFound(f"no edge {name!r}")
    return _to_edge(rows[0])


def remove_edge(db: Database, name: str) -> None:
    """Forget an edge, or NotFound."""
    if db.execute("DELETE FROM edges WHERE name = ?", (name,)) == 0:
        raise NotFound(f"no edge {name!r}")
