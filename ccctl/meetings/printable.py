"""The printable meeting report: one self-contained HTML page (no script, no CDN, no font to
fetch) with the attendance chart per province and the country map of the audience, both
inline SVG drawn here, and the tables the room prints or sends.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from ccctl.meetings.times import local_text
from ccctl.registry import meetings as store
from ccctl.registry.db import Database

COLOURS = {"present": "#2e7d32", "late": "#f9a825", "absent": "#c62828"}
LABELS = {"present": "Có mặt (present)", "late": "Muộn (late)", "absent": "Vắng (absent)"}
# The mainland's extent (degrees), so every report draws the country at the same place.
LAT = (8.3, 23.6)
LON = (102.0, 109.8)


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def province_chart(provinces: list[dict[str, Any]], width: int = 760) -> str:
    """Horizontal stacked bars, one per province: present, late, absent (share of its audience)."""
    rows = sorted(provinces, key=lambda p: p["province_name"] or p["province_code"])
    label_w, bar_h, gap, top = 190, 18, 6, 28
    plot_w = width - label_w - 80
    height = top + len(rows) * (bar_h + gap) + 10
    out = [f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="Attendance per province">']
    x = label_w
    for status in ("present", "late", "absent"):
        out.append(f'<rect x="{x}" y="4" width="12" height="12" fill="{COLOURS[status]}"/>'
                   f'<text x="{x + 16}" y="14" font-size="12">{_e(LABELS[status])}</text>')
        x += 150
    for i, p in enumerate(rows):
        y = top + i * (bar_h + gap)
        out.append(f'<text x="{label_w - 6}" y="{y + 13}" font-size="12" text-anchor="end">'
                   f'{_e(p["province_name"] or p["province_code"])}</text>')
        x0 = float(label_w)
        for status in ("present", "late", "absent"):
            n = int(p[status])
            if n:
                w = plot_w * n / p["audience"]
                out.append(f'<rect class="bar {status}" data-province="{_e(p["province_code"])}" data-count="{n}" '
                           f'x="{x0:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{COLOURS[status]}">'
                           f'<title>{_e(p["province_name"])}: {n} {status}</title></rect>')
                x0 += w
        out.append(f'<text x="{label_w + plot_w + 6}" y="{y + 13}" font-size="12">'
                   f'{p["attended_pct"]:.0f}% ({p["present"] + p["late"]}/{p["audience"]})</text>')
    out.append("</svg>")
    return "".join(out)


def country_map(sites: list[dict[str, Any]], points: dict[tuple[str, str], tuple[float, float]],
                backdrop: list[tuple[float, float]], height: int = 720) -> tuple[str, int]:
    """Every district as a grey dot (the country's shape), every audience site coloured by its
    attendance; returns the SVG and how many sites had no coordinates."""
    k = math.cos(math.radians(sum(LAT) / 2))
    scale = height / (LAT[1] - LAT[0])
    width = int((LON[1] - LON[0]) * k * scale)

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return (lon - LON[0]) * k * scale, (LAT[1] - lat) * scale

    out = [f'<svg id="map" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="Map of the audience by attendance">',
           f'<rect width="{width}" height="{height}" fill="#eef4f8"/>']
    out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="#b0bec5"/>' for x, y in (xy(*p) for p in backdrop)]
    missing = 0
    for status in ("present", "late", "absent"):  # absent drawn last, on top
        for s in sites:
            if s["status"] != status:
                continue
            point = points.get((str(s.get("scheme")), str(s.get("unit_code"))))
            if point is None:
                missing += 1
                continue
            x, y = xy(*point)
            out.append(f'<circle class="site {status}" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{COLOURS[status]}" '
                       f'stroke="#fff" stroke-width="0.8"><title>{_e(s["site_name"])}: {status}</title></circle>')
    out.append("</svg>")
    return "".join(out), missing


def _table(rows: list[dict[str, Any]], columns: list[str], cls: str) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else ""
    return value


STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 24px 0 8px; }
.meta { color: #555; } .totals span { display: inline-block; margin-right: 18px; font-weight: bold; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; } th { background: #f0f0f0; }
.figures { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
@media print { body { margin: 10mm; } h2 { page-break-after: avoid; } table { page-break-inside: auto; } }
"""


def render(db: Database, meeting_id: int, now: float, sites: list[dict[str, Any]],
           provinces: list[dict[str, Any]], checks: list[dict[str, Any]]) -> str:
    """The report page as one HTML string."""
    from ccctl.meetings.attendance import PROVINCE_COLUMNS, SITE_COLUMNS, to_call

    m = store.get_meeting(db, meeting_id)
    points, backdrop = store.unit_points()
    map_svg, missing = country_map(sites, points, backdrop)
    totals = {s: sum(1 for r in sites if r["status"] == s) for s in ("present", "late", "absent")}
    calls = to_call(sites, m["broadcast_id"] is not None)
    check_cols = ["offset", "due_at", "status", "started_at", "late_s", "run_id", "ready", "not_ready", "note"]
    call_cols = ["site_id", "site_name", "province_name", "status", "left_early", "precheck", "precheck_reason",
                 "contact_name", "contact_phone"]
    parts = [
        "<!DOCTYPE html>", '<html lang="vi"><head><meta charset="utf-8">',
        f"<title>{_e(m['title'])}: báo cáo điểm danh</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(m['title'])}</h1>",
        f'<p class="meta">Meeting {m["id"]}, {_e(local_text(m["starts_at"], m["tz"]))} ({_e(m["tz"])}); '
        f"status {_e(m['status'])}; broadcast {_e(m['broadcast_id'] or '-')}; "
        f"report made {_e(local_text(now, m['tz']))}.</p>",
        '<p class="totals">' + "".join(f'<span style="color:{COLOURS[s]}">{_e(LABELS[s])}: {n}</span>'
                                       for s, n in totals.items()) + f"<span>Audience: {len(sites)}</span></p>",
        '<div class="figures"><div><h2>Attendance per province</h2>', province_chart(provinces),
        "</div><div><h2>Map</h2>", map_svg,
        f'<p class="meta">{missing} site(s) without coordinates not drawn.</p>' if missing else "", "</div></div>",
        "<h2>Whom to call</h2>", _table(calls, call_cols, "calls") if calls else "<p>Nobody.</p>",
        "<h2>Provinces</h2>", _table(provinces, PROVINCE_COLUMNS, "provinces"),
        "<h2>Pre-checks</h2>", _table(checks, check_cols, "checks") if checks else "<p>No pre-check.</p>",
        "<h2>Sites</h2>", _table(sites, SITE_COLUMNS, "sites"),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(db: Database, meeting_id: int, path: Path, now: float, sites: list[dict[str, Any]],
                 provinces: list[dict[str, Any]], checks: list[dict[str, Any]]) -> None:
    """Write the report page to ``path`` (atomically: a reader never sees half a page)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(db, meeting_id, now, sites, provinces, checks), encoding="utf-8")
    tmp.replace(path)
