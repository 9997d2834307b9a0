"""A rehearsal: a short test broadcast (pattern with tone) to a meeting's audience, and which
sites actually received it.

The server's per-session stats are folded in while the rehearsal runs (``Observed``); a
site counts as having received what was sent when an RTCP receiver report came back from it
(its player got the packets and said so). What was sent follows its tier: picture and sound
(high, low) or sound only (audio). The server folds the audio and video receiver reports of a
session together, so "received" means the site reported back on what it was sent, not on
each kind separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COLUMNS = ["site_id", "site_name", "province_name", "verdict", "sent", "tier", "packets_sent", "fraction_lost",
           "rtt_ms", "contact_name", "contact_phone"]


@dataclass
class Observed:
    """What the server said of each site during the rehearsal, the best seen per site."""

    sites: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, sessions: list[dict[str, Any]]) -> None:
        """Fold one ``GET /api/broadcast`` sessions list in."""
        for s in sessions:
            site = self.sites.setdefault(s["site_id"], {"tier": s.get("tier"), "packets_sent": 0, "reported": False,
                                                        "fraction_lost": None, "rtt_ms": None})
            site["tier"] = s.get("tier") or site["tier"]
            site["packets_sent"] = max(site["packets_sent"], int(s.get("packets_sent") or 0))
            if s.get("rtt_ms") is not None or s.get("fraction_lost") is not None:
                site["reported"] = True
                site["fraction_lost"], site["rtt_ms"] = s.get("fraction_lost"), s.get("rtt_ms")

    def received(self) -> set[str]:
        """Sites that reported back on packets they were sent."""
        return {k for k, v in self.sites.items() if v["reported"] and v["packets_sent"] > 0}


def judge(members: list[dict[str, Any]], directory: dict[str, dict[str, Any]], seen: Observed) -> list[dict[str, Any]]:
    """One row per audience site: received, joined without reporting back, or absent; worst first."""
    received = seen.received()
    rows = []
    for m in members:
        info = directory.get(m["site_id"], {})
        obs = seen.sites.get(m["site_id"])
        if obs is None:
            verdict = "absent"
        elif m["site_id"] in received:
            verdict = "received"
        else:
            verdict = "joined, nothing reported back"
        tier = obs["tier"] if obs else None
        rows.append({"site_id": m["site_id"], "site_name": info.get("site_name", m["site_name"]),
                     "province_code": info.get("province_code", m["province_code"]),
                     "province_name": info.get("province_name"), "verdict": verdict,
                     "sent": None if tier is None else ("sound only" if tier == "audio" else "picture and sound"),
                     "tier": tier, "packets_sent": obs["packets_sent"] if obs else 0,
                     "fraction_lost": obs["fraction_lost"] if obs else None, "rtt_ms": obs["rtt_ms"] if obs else None,
                     "contact_name": info.get("contact_name"), "contact_phone": info.get("contact_phone")})
    order = {"absent": 0, "joined, nothing reported back": 1, "received": 2}
    rows.sort(key=lambda r: (order[r["verdict"]], r["province_code"] or "", r["site_id"]))
    return rows
