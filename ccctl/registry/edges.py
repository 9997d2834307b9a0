"""Edges in the registry: the media servers ccctl feeds (SQL for the ``edges`` table only).

An edge is a name, its kind (``janus``), the URL of its API, the path of the file holding its
admin key (never the key: it is read at use, see :mod:`ccctl.edges.keys`), its region as a
site filter (the sites it may serve), its capacity in viewers (None: no limit but what
the edge itself reports), the URL of Janus's admin API (optional: ccctl reads the edge's
viewers there) and whether the RTP ccctl sends it is SRTP.
"""

from __future__ import annotations

import ipaddress
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
_COLUMNS = "name, kind, api_url, admin_key_file, region, capacity, created_at, updated_at, admin_url, srtp"


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
    admin_url: str | None = None  # Janus's admin API (http://HOST:7088/admin): its viewers, for attendance
    srtp: bool | None = None  # RTP to it is SRTP; None: on unless the API's host is a loopback address

    def uses_srtp(self) -> bool:
        """Whether ccctl protects the RTP it sends here (see :attr:`srtp`)."""
        if self.srtp is not None:
            return self.srtp
        host = urlsplit(self.api_url).hostname or ""
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host != "localhost"

    def site_filter(self) -> SiteFilter:
        """The sites of this edge's region (every site when the region is empty)."""
        r = self.region
        return SiteFilter(ids=tuple(r.get("ids", ())), province=r.get("province"), district=r.get("district"),
                          unit=r.get("unit"), tag=r.get("tag"), tier=r.get("tier"), search=r.get("search"))

    def record(self) -> dict[str, Any]:
        """The edge as listings print it (the region as its filter's text)."""
        data = asdict(self)
        data["region"] = region_text(self.region)
        data["srtp"] = self.uses_srtp()
        return data


def region_text(region: dict[str, Any]) -> str:
    """``province=01 tag=north`` for a region, ``all`` for none."""
    parts = [f"{k}={v}" for k, v in region.items() if k != "ids" and v]
    parts += [f"site={i}" for i in region.get("ids", ())]
    return " ".join(parts) or "all"


def _check_url(url: str, option: str, example: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"bad {option} URL {shorten(url)} ({example})")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"bad port in {option} URL {shorten(url)}") from None


def check_edge(name: str, api_url: str, capacity: int | None, admin_url: str | None = None) -> None:
    """UsageError for a bad name, API URL, admin API URL or capacity."""
    if not NAME.fullmatch(name):
        raise UsageError(f"bad edge name {shorten(name)} (lower-case letters, digits, '.', '_', '-'; at most 63)")
    _check_url(api_url, "--api", "http://HOST:PORT/janus")
    if admin_url is not None:
        _check_url(admin_url, "--admin-api", "http://HOST:7088/admin")
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
    row["srtp"] = None if row["srtp"] is None else bool(row["srtp"])
    return Edge(**row)


def add_edge(db: Database, edge: Edge) -> Edge:
    """Register an edge; UsageError if the name is taken."""
    check_edge(edge.name, edge.api_url, edge.capacity, edge.admin_url)
    if edge.kind not in KINDS:
        raise UsageError(f"unknown edge kind {shorten(edge.kind)} (known: {', '.join(KINDS)})")
    now = time.time()
    with db.transaction():
        db.lock("ccctl-edges")
        if db.query("SELECT 1 FROM edges WHERE name = ?", (edge.name,)):
            raise UsageError(f"edge {edge.name} exists already (remove it first)")
        db.execute(f"INSERT INTO edges ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (edge.name, edge.kind, edge.api_url, edge.admin_key_file,
                    json.dumps(edge.region, ensure_ascii=False, sort_keys=True), edge.capacity, now, now,
                    edge.admin_url, None if edge.srtp is None else int(edge.srtp)))
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
