"""The readiness report of a pre-check: who is ready, who is not and why, and whom to call.

A site is ``ready`` when its roll-call said OK, ``degraded`` when it can join with a problem
(no camera, disk full, slow link), ``down`` when it cannot, ``not_checked`` when the check
never reached it (it has left the registry, or the run was interrupted). Contacts come from
the registry as it is now: the person to call is the one on duty today.
"""

from __future__ import annotations

from typing import Any

from ccctl.models import CheckState
from ccctl.registry import meetings as store
from ccctl.registry.db import Database
from ccctl.registry.sites import SiteFilter, select_sites
from ccctl.rollcall.history import run_results

LEVELS = ("ready", "degraded", "down", "not_checked")
SITE_COLUMNS = ["site_id", "site_name", "province_name", "readiness", "state", "stage", "reason", "contact_name",
                "contact_phone"]
PROVINCE_COLUMNS = ["province_code", "province_name", "audience", *LEVELS, "ready_pct"]


def _level(state: str | None) -> str:
    if state is None:
        return "not_checked"
    if state == CheckState.OK.value:
        return "ready"
    if state == CheckState.DEGRADED.value:
        return "degraded"
    return "down"


def site_directory(db: Database, site_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Name, province and contact of each listed site still in the registry."""
    out: dict[str, dict[str, Any]] = {}
    chunk = 500  # keeps the IN (...) list within every backend's parameter limit
    for i in range(0, len(site_ids), chunk):
        for site in select_sites(db, SiteFilter(ids=tuple(site_ids[i:i + chunk]))):
            out[site.id] = {"site_name": site.name, "province_code": site.province_code,
                            "province_name": site.province_name, "district_name": site.district_name,
                            "contact_name": site.contact_name, "contact_phone": site.contact_phone,
                            "unit_code": site.unit_code, "scheme": site.scheme}
    return out


def site_readiness(db: Database, meeting_id: int, run_id: int | None) -> list[dict[str, Any]]:
    """Every audience site with its state in ``run_id`` (None: not checked) and its contact, worst first."""
    results = {r["site_id"]: r for r in run_results(db, run_id)} if run_id is not None else {}
    members = store.audience(db, meeting_id)
    directory = site_directory(db, [m["site_id"] for m in members])
    rows = []
    for m in members:
        info = directory.get(m["site_id"], {})
        result = results.get(m["site_id"])
        reason = result["reason"] if result else ("no longer in the registry" if not info else "not checked")
        rows.append({"site_id": m["site_id"], "site_name": info.get("site_name", m["site_name"]),
                     "province_code": info.get("province_code", m["province_code"]),
                     "province_name": info.get("province_name"),
                     "readiness": _level(result["state"] if result else None),
                     "state": result["state"] if result else None, "stage": result["stage"] if result else None,
                     "reason": reason, "contact_name": info.get("contact_name"),
                     "contact_phone": info.get("contact_phone")})
    order = {level: i for i, level in enumerate(reversed(LEVELS))}
    rows.sort(key=lambda r: (order[r["readiness"]], r["province_code"] or "", r["site_id"]))
    return rows


def province_readiness(site_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Counts per province of the audience by readiness, and the share ready, worst first."""
    groups: dict[str, dict[str, Any]] = {}
    for r in site_rows:
        code = r["province_code"] or ""
        g = groups.setdefault(code, {"province_code": code, "province_name": r["province_name"] or "", "audience": 0,
                                     **{level: 0 for level in LEVELS}})
        g["audience"] += 1
        g[r["readiness"]] += 1
    for g in groups.values():
        g["ready_pct"] = round((g["ready"] + g["degraded"]) * 100.0 / g["audience"], 1)
    return sorted(groups.values(), key=lambda g: (g["ready_pct"], g["province_code"]))


def not_ready(site_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sites to call: every audience site not plainly ready."""
    return [r for r in site_rows if r["readiness"] != "ready"]


def summary(site_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts kept on the check row and in its event: audience, each level, not ready."""
    counts = {level: sum(1 for r in site_rows if r["readiness"] == level) for level in LEVELS}
    return {"audience": len(site_rows), **counts, "not_ready": len(site_rows) - counts["ready"]}
