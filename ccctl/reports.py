"""Aggregations of site states shared by the CLI's reports and the dashboard.

Counts by state per place (country, province, district, commune), worst first; the worst
sites; connected / expected per broadcast tier. Plain Python over rows of dicts, so the
dashboard can recount thousands of sites per tick without pandas; ``rollcall_frame`` wraps
the same counts in a pandas frame for the ``report`` command. No printing here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ccctl.errors import UsageError
from ccctl.models import TIERS, CheckState

if TYPE_CHECKING:
    import pandas as pd

DOWN_STATES = [s.value for s in CheckState if s.is_down]
UNCHECKED = "UNCHECKED"  # a site no roll-call has checked yet (ccctl.registry.overview)
STATES = [s.value for s in CheckState] + [UNCHECKED]
# Worst first: a site down for a hard reason before one merely slow, unchecked before OK.
SEVERITY = {state: rank for rank, state in enumerate(
    ["HOSTKEY_MISMATCH", "AUTH_FAILED", "UNREACHABLE", "TIMEOUT", "ERROR", "DEGRADED", UNCHECKED, "OK"])}

# The places a site belongs to, from the widest; a 2025-scheme site has no district.
LEVELS = ("country", "province", "district", "commune")
LEVEL_KEYS: dict[str, tuple[str, ...]] = {
    "country": (),
    "province": ("scheme", "province_code"),
    "district": ("scheme", "province_code", "district_code"),
    "commune": ("scheme", "unit_code"),
}
LEVEL_NAMES = {"country": None, "province": "province_name", "district": "district_name", "commune": "unit_name"}


def child_level(level: str, scheme: str | None) -> str:
    """The level under ``level`` for sites of ``scheme`` (2025 goes province -> commune)."""
    if level == "country":
        return "province"
    if level == "province":
        return "commune" if scheme == "2025" else "district"
    if level == "district":
        return "commune"
    return "site"


def count_states(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Counts by state per group of ``keys``, worst first (share ready up, sites down down).

    Each group has its key values, ``sites``, one count per state (lowercase), ``ok``,
    ``degraded``, ``down`` (every down state), ``unchecked`` and ``ready_pct`` (OK and
    DEGRADED over all sites). Groups are in key order before the stable worst-first sort, so
    ties keep that order.
    """
    groups: dict[tuple[Any, ...], dict[str, int]] = {}
    for row in rows:
        key = tuple(row[k] if row[k] is not None else "" for k in keys)
        counts = groups.get(key)
        if counts is None:
            counts = groups[key] = dict.fromkeys(STATES, 0)
        state = row["state"]
        counts[state if state in counts else "ERROR"] += 1
    out: list[dict[str, Any]] = []
    for key in sorted(groups):
        counts = groups[key]
        sites = sum(counts.values())
        record: dict[str, Any] = dict(zip(keys, key, strict=True))
        record["sites"] = sites
        record.update({s.lower(): counts[s] for s in STATES})
        record["down"] = sum(counts[s] for s in DOWN_STATES)
        record["ready_pct"] = round((counts["OK"] + counts["DEGRADED"]) * 100.0 / sites, 1) if sites else None
        out.append(record)
    out.sort(key=lambda r: (r["ready_pct"] if r["ready_pct"] is not None else 101.0, -r["down"]))
    return out


def level_counts(rows: Iterable[Mapping[str, Any]], level: str) -> list[dict[str, Any]]:
    """Counts by state per unit of ``level`` (one row for ``country``), worst first, each
    with ``level``, ``name`` and ``code`` (``province_code``, ``district_code`` or the commune's)."""
    if level not in LEVELS:
        raise UsageError(f"unknown level {level!r}: use {', '.join(LEVELS)}")
    rows = list(rows)
    keys = LEVEL_KEYS[level]
    name_of = LEVEL_NAMES[level]
    names: dict[tuple[Any, ...], str] = {}
    if name_of is not None:
        for row in rows:
            names.setdefault(tuple(row[k] or "" for k in keys), row.get(name_of) or "")
    out = count_states(rows, keys)
    for record in out:
        record["level"] = level
        record["code"] = record[keys[-1]] if keys else ""
        record["name"] = names.get(tuple(record[k] for k in keys), "") if keys else "Việt Nam"
    return out


def worst_sites(rows: Iterable[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """The ``n`` sites in the worst states (down first, then degraded, unchecked), stable by id."""
    ranked = sorted(rows, key=lambda r: (SEVERITY.get(r["state"], 0), r["id"]))
    return ranked[:n]


def tier_summary(sessions: Iterable[Mapping[str, Any]], expected: Mapping[str, int] | None = None
                 ) -> list[dict[str, Any]]:
    """The broadcast per tier, best tier first: sessions, connected / expected, link figures.

    ``sessions`` are the server's (``GET /api/broadcast``); ``expected`` the enabled sites per
    registry tier (``ccctl.registry.overview.sites_per_tier``).
    """
    expected = expected or {}
    rows: dict[str, dict[str, Any]] = {}
    for s in sessions:
        row = rows.setdefault(s["tier"], {"tier": s["tier"], "sites": 0, "connected": 0, "kbps_sum": 0.0,
                                          "packets_sent": 0, "lost_pct_max": 0.0, "rtt_ms_max": 0.0})
        row["sites"] += 1
        row["connected"] += s["state"] == "connected"
        row["kbps_sum"] += s.get("kbps") or 0.0
        row["packets_sent"] += s.get("packets_sent") or 0
        row["lost_pct_max"] = max(row["lost_pct_max"], round((s.get("fraction_lost") or 0.0) * 100, 1))
        row["rtt_ms_max"] = max(row["rtt_ms_max"], s.get("rtt_ms") or 0.0)
    order = {t: i for i, t in enumerate(TIERS)}
    out = []
    for tier in sorted(set(rows) | set(expected), key=lambda t: order.get(t, 9)):
        row = rows.get(tier) or {"tier": tier, "sites": 0, "connected": 0, "kbps_sum": 0.0, "packets_sent": 0,
                                 "lost_pct_max": 0.0, "rtt_ms_max": 0.0}
        row["expected"] = int(expected.get(tier, 0))
        row["kbps_avg"] = round(row.pop("kbps_sum") / row["sites"], 1) if row["sites"] else 0.0
        out.append(row)
    return out


def rollcall_frame(results: list[dict[str, Any]], by: str = "province") -> pd.DataFrame:
    """Per-province (or district) counts by state and share ready, worst first."""
    import pandas as pd

    if by not in ("province", "district"):
        raise UsageError("--by takes province or district")
    keys = [f"{by}_code", f"{by}_name"] if by == "province" else \
        ["province_code", "province_name", "district_code", "district_name"]
    lower_down = [s.lower() for s in DOWN_STATES]
    columns = keys + ["sites", "ok", "degraded", "down"] + lower_down + ["ready_pct"]
    return pd.DataFrame.from_records(count_states(results, keys), columns=columns)


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Plain Python records (ints, floats, strings) of a frame, for JSON and tables."""
    records: list[dict[str, Any]] = []
    for row in frame.to_dict("records"):
        records.append({str(k): (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    return records
