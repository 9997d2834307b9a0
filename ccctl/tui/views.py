"""The columns of the dashboard's lists: units (with counts by state) and sites."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from ccctl.tui.fleet import Row
from ccctl.tui.style import sparkline
from ccctl.tui.widgets.rowlist import Column

_LEVEL_TITLES = {"province": "province", "district": "district", "commune": "commune"}


def _pct(row: Row) -> str:
    return "-" if row["ready_pct"] is None else f"{row['ready_pct']:.1f} %"


def _bar(row: Row, width: int = 10) -> str:
    if not row["sites"]:
        return ""
    filled = round((row["ok"] + row["degraded"]) * width / row["sites"])
    return "█" * filled + "░" * (width - filled)


def unit_columns(level: str, trend: Mapping[tuple[str, str], Sequence[float | None]] | None = None,
                 hours: int = 24) -> list[Column]:
    """Columns of the units under a place of ``level``: one row each, worst first by default;
    with ``trend`` ((scheme, code) -> share ready per hour), a sparkline of the last ``hours``."""
    columns = [
        Column("code", 6, lambda r: str(r["code"])),
        Column("unit", 30, lambda r: str(r["name"])),
        Column("scheme", 6, lambda r: str(r["scheme"])),
        Column("sites", 6, lambda r: f"{r['sites']:,}", right=True),
        Column("ok", 6, lambda r: f"{r['ok']:,}", right=True),
        Column("degr.", 6, lambda r: f"{r['degraded']:,}", right=True),
        Column("down", 6, lambda r: f"{r['down']:,}", right=True),
        Column("unchk", 6, lambda r: f"{r['unchecked']:,}", right=True),
        Column("ready %", 8, _pct, right=True),
        Column("", 10, _bar),
    ]
    if trend is not None:
        gaps = [None] * hours
        columns.append(Column(f"ready, last {hours} h", max(hours, 16),
                              lambda r: sparkline(list(trend.get((r["scheme"], r["code"]), gaps)))))
    return columns


def _checked(row: Row) -> str:
    ts = row.get("checked_at")
    return time.strftime("%m-%d %H:%M", time.gmtime(ts)) if ts else "never"


def site_columns() -> list[Column]:
    """Columns of a site list."""
    return [
        Column("state", 16, lambda r: str(r["state"])),
        Column("site", 16, lambda r: str(r["id"])),
        Column("name", 30, lambda r: str(r["name"])),
        Column("province", 14, lambda r: str(r["province_name"] or "")),
        Column("tier", 5, lambda r: str(r["tier"])),
        Column("checked", 11, _checked),
        Column("reason", 40, lambda r: str(r["reason"] or "")),
    ]
