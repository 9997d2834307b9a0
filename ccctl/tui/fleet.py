"""The dashboard's state of the fleet: every site's latest state, where the operator stands
(breadcrumbs), the filter and the sort, and the rows the current view shows.

Plain Python (no Textual), so the app, the tests and the benchmark drive the same logic. The
counts come from ``ccctl.reports``: the dashboard and the CLI's report count the same way.

Kept for speed at the country's scale (10,599 sites, thousands of changes a second): the sites
of each place (a drill-down looks them up, it does not scan every site), the counts by state of
the country and of each province (kept up to date by ``apply`` from the changes, so the
overview is made from them, never by recounting every site), and the last sorted list of each
view, which a keypress of the filter may narrow instead of filtering and sorting every site
again (``rows(max_age=...)``).
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ccctl.reports import DOWN_STATES, LEVEL_KEYS, SEVERITY, STATES, child_level, level_counts
from ccctl.textfold import fold

Row = dict[str, Any]
SORTS = ("worst", "name", "code")
PlaceKey = tuple[str, str | None, str | None]  # (level, scheme, code) of a place, as ``Place`` holds them


@dataclass
class Unit:
    """A unit one level under a place, with its counts by state (every state of ``STATES``)."""

    scheme: Any
    level: str
    key: tuple[Any, ...]  # its values of ``LEVEL_KEYS[level]``
    name: str
    counts: dict[str, int]
    fold: str = ""

    def row(self) -> Row:
        """The unit as ``ccctl.reports.level_counts`` gives it, with ``scheme`` and ``fold``."""
        counts = self.counts
        sites = sum(counts.values())
        record: Row = dict(zip(LEVEL_KEYS[self.level], self.key, strict=True))
        record["sites"] = sites
        record.update({s.lower(): counts[s] for s in STATES})
        record["down"] = sum(counts[s] for s in DOWN_STATES)
        record["ready_pct"] = round((counts["OK"] + counts["DEGRADED"]) * 100.0 / sites, 1) if sites else None
        record["level"] = self.level
        record["code"] = self.key[-1] if self.key else ""
        record["name"] = self.name
        record["scheme"] = self.scheme
        record["fold"] = self.fold
        return record


_KNOWN = frozenset(STATES)


def _counted(state: str) -> str:
    """The state a site is counted under (as ``count_states`` counts: unknown states as ERROR)."""
    return state if state in _KNOWN else "ERROR"


@dataclass(frozen=True)
class Place:
    """One step of the breadcrumbs: a unit of a level (the country has no scheme or code)."""

    level: str
    scheme: str | None = None
    code: str | None = None
    name: str = "Việt Nam"

    def holds(self, site: Row) -> bool:
        """True when ``site`` lies inside this place."""
        if self.level == "country":
            return True
        if site["scheme"] != self.scheme:
            return False
        if self.level == "province":
            return bool(site["province_code"] == self.code)
        if self.level == "district":
            return bool(site["district_code"] == self.code)
        return bool(site["unit_code"] == self.code)


@dataclass
class Query:
    """What narrows the current list: folded text (``!`` inverts), states, a tier."""

    text: str = ""
    states: frozenset[str] = frozenset()
    tier: str | None = None

    def predicate(self, is_site: bool) -> Callable[[Row], bool]:
        """The query as one function of a row (the folded words computed once, not per row)."""
        states, tier, text = self.states if is_site else frozenset(), self.tier if is_site else None, self.text
        invert = text.startswith("!")
        words = fold(text[1:] if invert else text).split()
        if not (states or tier or words):
            return lambda row: True
        if not (states or tier) and len(words) == 1:  # typing one word: the common case, kept lean
            word = words[0]
            return (lambda row: word not in row["fold"]) if invert else (lambda row: word in row["fold"])

        def passes(row: Row) -> bool:
            if states and row["state"] not in states:
                return False
            if tier and row["tier"] != tier:
                return False
            if not words:
                return True
            haystack = row["fold"]
            return all(w in haystack for w in words) != invert

        return passes


@dataclass
class Fleet:
    """Sites by id and the operator's position, filter and sort."""

    sites: dict[str, Row] = field(default_factory=dict)
    order: list[Row] = field(default_factory=list)
    path: list[Place] = field(default_factory=lambda: [Place("country")])
    query: Query = field(default_factory=Query)
    sort: str = "worst"
    reverse: bool = False
    flat: bool = False  # show the sites under the current place, not its units
    reused: bool = False  # the last ``rows`` narrowed a kept list (not recounted nor re-sorted)
    stale: bool = False  # ... and sites changed since that list was made
    generation: int = 0  # counts the loads and the applied changes
    _places: dict[tuple[str, str | None, str | None], list[Row]] = field(default_factory=dict, repr=False)
    _indexed: list[Row] | None = field(default=None, repr=False)  # the ``order`` the indexes were built for
    _counts: dict[str, int] = field(default_factory=dict, repr=False)
    _newest: float | None = field(default=None, repr=False)
    _ranked: bool = field(default=False, repr=False)  # the sites carry their sort ranks (ids unique)
    _views: dict[tuple[Any, ...], tuple[float, int, list[Row]]] = field(default_factory=dict, repr=False)
    _by_id: list[Row] = field(default_factory=list, repr=False)  # every site by id (when ranked)
    _by_name: list[Row] = field(default_factory=list, repr=False)  # every site by name then id
    _units: dict[PlaceKey, list[Unit]] = field(default_factory=dict, repr=False)  # place -> units one level under
    _unit_counts: dict[str, list[dict[str, int]]] = field(default_factory=dict, repr=False)  # site -> its units' counts
    # the text filters of one view's kept list: text -> (rows, their folded texts); "" is the list
    _texts: dict[str, tuple[list[Row], list[str]]] = field(default_factory=dict, repr=False)
    _texts_of: tuple[tuple[Any, ...], int] | None = field(default=None, repr=False)  # (view, id of its list)

    def load(self, rows: Iterable[Row]) -> None:
        """Replace every site (a full read of the registry)."""
        self.order = list(rows)
        self.sites = {r["id"]: r for r in self.order}
        for r in self.order:
            r["name_fold"] = fold(r["name"] or "")  # the name sort's key, folded once
        self._index()

    def _index(self) -> None:
        """The sites of each place, the counts by state and the newest check, from ``order``."""
        places: dict[tuple[str, str | None, str | None], list[Row]] = {}
        counts: dict[str, int] = {}
        for s in self.order:
            scheme = s["scheme"]
            places.setdefault(("province", scheme, s["province_code"]), []).append(s)
            places.setdefault(("district", scheme, s.get("district_code")), []).append(s)
            places.setdefault(("commune", scheme, s["unit_code"]), []).append(s)
            counts[s["state"]] = counts.get(s["state"], 0) + 1
        times = [s["checked_at"] for s in self.order if s["checked_at"] is not None]
        self._places, self._counts, self._newest = places, counts, max(times) if times else None
        self._count_units()
        self._indexed = self.order
        self._ranked = len(self.sites) == len(self.order) and all("name_fold" in s for s in self.order)
        if self._ranked:  # integer sort keys, ranked once: by id, and by name then id
            self._by_id = sorted(self.order, key=operator.itemgetter("id"))
            self._by_name = sorted(self.order, key=lambda r: (r["name_fold"], r["id"]))
            for i, s in enumerate(self._by_id):
                s["id_rank"] = i
            for i, s in enumerate(self._by_name):
                s["name_rank"] = i
        self.generation += 1
        self._views.clear()
        self._texts_of = None

    def _count_units(self) -> None:
        """The provinces with their counts by state, and for each site the counts it adds to.
        Only the country's units are kept: a province's or a district's (a few hundred sites
        at most) are recounted when shown, in well under a millisecond, and keeping every
        commune's counts would cost the read ~100 ms for ten thousand units."""
        provinces: dict[tuple[Any, ...], Unit] = {}
        refs: dict[str, list[dict[str, int]]] = {}
        blank = dict.fromkeys(STATES, 0)
        for s in self.order:
            scheme, code = s["scheme"], s["province_code"]
            key = (scheme, code if code is not None else "")
            unit = provinces.get(key)
            if unit is None:
                name = s.get("province_name") or ""
                unit = provinces[key] = Unit(scheme, "province", key, name, dict(blank))
                unit.fold = fold(f"{key[-1]} {name} {scheme}")
            unit.counts[_counted(s["state"])] += 1
            refs[s["id"]] = [unit.counts]
        self._units = {("country", None, None): sorted(provinces.values(), key=lambda u: (u.scheme or "", u.key))}
        self._unit_counts = refs

    def _fresh(self) -> None:
        if self._indexed is not self.order:  # ``order`` replaced other than by ``load``
            self._index()

    def apply(self, changes: Iterable[Row]) -> list[tuple[Row, str]]:
        """Merge newer results into the sites; return (site, previous state) of each change."""
        self._fresh()
        changed: list[tuple[Row, str]] = []
        counts = self._counts
        newest_lowered = applied = False
        for change in changes:
            site = self.sites.get(change["site_id"])
            if site is None:
                continue
            run_id = change.get("run_id")
            if site["run_id"] is not None and run_id is not None and run_id < site["run_id"]:
                continue  # an older run's result arriving late never overwrites a newer one
            applied = True
            before, checked = site["state"], site["checked_at"]
            for key in ("state", "reason", "stage", "rtt_ms", "run_id", "checked_at"):
                if key in change:
                    site[key] = change[key]
            if site["state"] != before:
                changed.append((site, before))
                counts[before] -= 1
                if not counts[before]:
                    del counts[before]
                counts[site["state"]] = counts.get(site["state"], 0) + 1
                was, now = _counted(before), _counted(site["state"])
                for unit in self._unit_counts.get(site["id"], ()):  # the units the site lies in
                    unit[was] -= 1
                    unit[now] += 1
            now_checked = site["checked_at"]
            if now_checked is not None and (self._newest is None or now_checked > self._newest):
                self._newest = now_checked
            elif checked is not None and checked == self._newest and now_checked != checked:
                newest_lowered = True  # the newest check went back (rare): look again below
        if applied:
            self.generation += 1
        if newest_lowered:
            times = [s["checked_at"] for s in self.order if s["checked_at"] is not None]
            self._newest = max(times) if times else None
        return changed

    @property
    def here(self) -> Place:
        """The place the operator stands in."""
        return self.path[-1]

    def showing_sites(self) -> bool:
        """True when the list holds sites (a commune, or the flat list of a wider place)."""
        return self.flat or self.here.level == "commune"

    def sites_here(self) -> list[Row]:
        """The sites inside the current place, registry order."""
        return self.sites_in(self.here)

    def sites_in(self, place: Place) -> list[Row]:
        """The sites inside ``place``, registry order (looked up, not scanned for)."""
        if place.level == "country":
            return self.order
        self._fresh()
        if place.level in ("province", "district", "commune"):
            return list(self._places.get((place.level, place.scheme, place.code), ()))
        return [s for s in self.order if place.holds(s)]

    def rows(self, max_age: float = 0.0) -> list[Row]:
        """The rows of the current view: units under the current place, or its sites.

        With ``max_age``, the view's sorted list kept from a call less than that many seconds
        ago (or from any time when no site changed since) is filtered by the text alone
        (narrowed further while the text only grows), neither recounted nor re-sorted;
        ``reused`` says whether it was, ``stale`` whether sites changed since: its rows may then
        show counts and an order up to ``max_age`` old, for the keypresses of the filter and
        the drill-down, until the caller's next repaint.
        """
        is_sites = self.showing_sites()
        query = self.query
        view = (tuple(self.path), is_sites, self.sort, self.reverse,
                (query.states, query.tier) if is_sites else None)
        kept = self._views.get(view)
        self.reused = max_age > 0 and kept is not None and (
            kept[1] == self.generation or time.monotonic() - kept[0] < max_age)
        self.stale = self.reused and kept is not None and kept[1] != self.generation
        if kept is None or not self.reused:
            if is_sites:
                sites = self.sites_here()
                passes = Query(states=query.states, tier=query.tier).predicate(True)
                base = self._sorted([s for s in sites if passes(s)], True)
            else:
                base = self._sorted(self.units_under(self.here), False)
            if len(self._views) > 16:
                self._views.clear()
            self._views[view] = (time.monotonic(), self.generation, base)
            self._texts_of = None
        else:
            base = kept[2]
        text = query.text
        if not fold(text.lstrip("!")).split():
            return list(base)
        return self._filtered(view, base, text)

    def _filtered(self, view: tuple[Any, ...], base: list[Row], text: str) -> list[Row]:
        """``base`` narrowed by the text filter. The results of the texts typed over the same
        list are kept: a text that only grew is filtered from the longest kept text it extends
        (what it matches holds every match of the longer one), and a text typed before (a
        backspace) is taken as it was."""
        if self._texts_of != (view, id(base)):
            self._texts = {"": (base, [r["fold"] for r in base])}
            self._texts_of = (view, id(base))
        texts = self._texts
        kept = texts.get(text)
        if kept is None:
            source = ""
            if not text.startswith("!"):
                for before in texts:
                    if len(before) > len(source) and not before.startswith("!") and text.startswith(before):
                        source = before
            rows, folds = texts[source]
            invert = text.startswith("!")
            words = fold(text[1:] if invert else text).split()
            picked = [i for i, f in enumerate(folds) if words[0] in f]
            for word in words[1:]:  # each further word narrows what the ones before matched
                picked = [i for i in picked if word in folds[i]]
            if invert:
                matched = set(picked)
                picked = [i for i in range(len(folds)) if i not in matched]
            kept = texts[text] = ([rows[i] for i in picked], [folds[i] for i in picked])
            if len(texts) > 64:  # a long session of typing: keep the list and this text only
                self._texts = {"": texts[""], text: kept}
        return list(kept[0])

    def units_under(self, place: Place, sites: list[Row] | None = None) -> list[Row]:
        """Counts by state of each unit one level under ``place`` (by each site's scheme), as
        ``level_counts`` gives them: from the counts kept by ``apply`` unless ``sites`` are given."""
        if sites is None:
            self._fresh()
            units = self._units.get((place.level, place.scheme, place.code))
            if units is not None or place.level == "country":
                kept: dict[Any, list[Row]] = {}
                for kept_unit in units or ():  # level_counts' order within each scheme: worst first, stable
                    kept.setdefault(kept_unit.scheme, []).append(kept_unit.row())
                out: list[Row] = []
                for members in kept.values():
                    members.sort(key=lambda r: (r["ready_pct"] if r["ready_pct"] is not None else 101.0, -r["down"]))
                    out += members
                return out
            sites = self.sites_in(place)
        rows: list[Row] = []
        by_scheme: dict[str | None, list[Row]] = {}
        for s in sites:
            by_scheme.setdefault(s["scheme"], []).append(s)
        for scheme, members in sorted(by_scheme.items(), key=lambda kv: kv[0] or ""):
            for unit in level_counts(members, child_level(place.level, scheme)):
                unit["scheme"] = scheme
                unit["fold"] = fold(f"{unit['code']} {unit['name']} {scheme}")
                rows.append(unit)
        return rows

    def _sorted(self, rows: list[Row], is_site: bool) -> list[Row]:
        if is_site and self._ranked:
            return self._sorted_sites(rows)
        if self.sort == "name":
            key: Any = (lambda r: (r["name_fold"], r["id"])) if is_site else \
                (lambda r: (fold(r["name"] or ""), r["code"]))
        elif self.sort == "code":
            key = (lambda r: r["id"]) if is_site else (lambda r: (r["scheme"], r["code"]))
        else:
            key = (lambda r: (SEVERITY.get(r["state"], 0), r["id"])) if is_site else \
                (lambda r: (r["ready_pct"] if r["ready_pct"] is not None else 101.0, -r["down"], r["scheme"],
                            r["code"]))
        return sorted(rows, key=key, reverse=self.reverse)

    def _sorted_sites(self, rows: list[Row]) -> list[Row]:
        """``_sorted`` for sites ranked by ``load`` (ids unique): the same order from integer
        keys ranked once (by id, by name then id) and, for the worst first, one stable sort by
        severity over the id order; ranks are unique, so the reverse is the reversed order."""
        every = len(rows) == len(self.order)  # every site: the orders ranked by ``load`` as they are
        if self.sort == "name":
            ordered = list(self._by_name) if every else sorted(rows, key=operator.itemgetter("name_rank"))
        else:
            ordered = list(self._by_id) if every else sorted(rows, key=operator.itemgetter("id_rank"))
            if self.sort == "worst":  # stable by severity: the id order within each, in one pass
                severity = SEVERITY.get
                buckets: dict[int, list[Row]] = {rank: [] for rank in sorted(set(SEVERITY.values()) | {0})}
                for r in ordered:
                    buckets[severity(r["state"], 0)].append(r)
                ordered = [r for bucket in buckets.values() for r in bucket]
        if self.reverse:
            ordered.reverse()
        return ordered

    def set_sort(self, sort: str) -> None:
        """Sort by ``sort``; asking for the same sort again reverses it."""
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}")
        self.reverse = (not self.reverse) if sort == self.sort else False
        self.sort = sort

    def enter(self, row: Row) -> bool:
        """Step into a unit row (units down to communes); False for a site row."""
        if "level" not in row:
            return False
        self.path.append(Place(row["level"], row["scheme"], row["code"], row["name"]))
        self.flat = False
        self.query = Query()
        return True

    def back(self) -> bool:
        """One step back along the breadcrumbs (the flat list first); False at the top."""
        if self.flat and self.here.level != "commune":
            self.flat = False
            return True
        if len(self.path) == 1:
            return False
        self.path.pop()
        self.flat = False
        self.query = Query()
        return True

    def go_province(self, query: str) -> Place | None:
        """Jump to the province whose code or folded name matches ``query``; None if none."""
        wanted = fold(query)
        hits: dict[tuple[str, str], Place] = {}
        for s in self.order:
            code, name = s["province_code"], s["province_name"] or ""
            if query.strip() == code or (wanted and wanted in fold(name)):
                hits.setdefault((s["scheme"], code), Place("province", s["scheme"], code, name))
        if not hits:
            return None
        place = hits[sorted(hits)[0]]  # the 2021 unit first when a code is in both schemes
        self.path = [self.path[0], place]
        self.flat = False
        self.query = Query()
        return place

    def breadcrumbs(self) -> str:
        """The path as the operator reads it: ``Việt Nam › Cà Mau › Xã Tân Hưng``."""
        names = [p.name if p.level == "country" else f"{p.name} ({p.scheme})" if p.level == "province" else p.name
                 for p in self.path]
        return " › ".join(names) + (" › sites" if self.flat and self.here.level != "commune" else "")

    def totals(self) -> dict[str, int]:
        """Counts by state over every site (the header's figures; kept by ``load`` and ``apply``)."""
        self._fresh()
        return dict(self._counts)

    def newest_check(self) -> float | None:
        """When the newest result was taken (for the data age), or None."""
        self._fresh()
        return self._newest
