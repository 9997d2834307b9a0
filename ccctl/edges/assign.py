"""Which edge serves which site: the choice itself, with no I/O (the manager feeds it).

A site is served by an edge that is up, whose region holds the site, and that has room
(capacity less its load: the larger of the viewers the edge reports and the sites assigned
to it), or by ccctl itself (None) when there is none. A site keeps its edge while that edge
stays eligible (no needless moves); otherwise it goes to the eligible edge with the most room
(an edge without capacity counts as unlimited), then the fewest sites, then by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class EdgeLoad:
    """What the choice needs to know of one edge."""

    name: str
    up: bool
    sites: frozenset[str]  # its region's site ids
    capacity: int | None = None
    viewers: int = 0
    assigned: set[str] = field(default_factory=set)

    def room(self) -> float:
        """Viewers it may still take (infinite without a capacity; never below 0)."""
        if self.capacity is None:
            return float("inf")
        return max(0, self.capacity - max(self.viewers, len(self.assigned)))

    def serves(self, site: str) -> bool:
        """Whether the site may be served here at all (up, and of its region)."""
        return self.up and site in self.sites


def assign(site: str, edges: Mapping[str, EdgeLoad], current: str | None) -> str | None:
    """The edge for ``site`` (``current``: the one it has now), or None for ccctl itself.

    Records the choice in the chosen edge's ``assigned`` (and removes it from the old one's).
    """
    keep = edges.get(current) if current else None
    if keep is not None and keep.serves(site) and (site in keep.assigned or keep.room() > 0):
        keep.assigned.add(site)
        return keep.name
    if keep is not None:
        keep.assigned.discard(site)
    eligible = [e for e in edges.values() if e.serves(site) and e.room() > 0]
    if not eligible:
        return None
    best = min(eligible, key=lambda e: (-e.room(), len(e.assigned), e.name))
    best.assigned.add(site)
    return best.name
