"""The site orders the fleet ranks once at a read are those of sorting by the keys each time:
by name, by code and worst first (stable, by id within a state), reversed too, for every site
of the country and for a province, after changes of state."""

from __future__ import annotations

import random

from ccctl.registry import Database
from ccctl.registry.overview import site_states
from ccctl.reports import SEVERITY
from ccctl.tui.fleet import Fleet, Place

KEYS = {
    "name": lambda r: (r["name_fold"], r["id"]),
    "code": lambda r: r["id"],
    "worst": lambda r: (SEVERITY.get(r["state"], 0), r["id"]),
}


def test_ranked_orders_equal_sorting_by_the_keys(dash_db: Database) -> None:
    fleet = Fleet()
    fleet.load(site_states(dash_db))
    ids = list(fleet.sites)
    rng = random.Random(7)
    fleet.apply([{"site_id": rng.choice(ids), "state": rng.choice(["OK", "TIMEOUT", "DEGRADED", "NEW_STATE"]),
                  "run_id": 10**6} for _ in range(len(ids))])
    province = next(u for u in fleet.units_under(Place("country")) if u["scheme"] == "2021")
    fleet.flat = True
    for path in ([Place("country")], [Place("country"), Place("province", "2021", province["code"])]):
        fleet.path = path
        sites = fleet.sites_here()
        for sort, key in KEYS.items():
            for reverse in (False, True):
                fleet.sort, fleet.reverse = sort, reverse
                assert [r["id"] for r in fleet.rows()] == [r["id"] for r in sorted(sites, key=key, reverse=reverse)]


def test_typed_filters_equal_the_query_whatever_the_order_of_typing(dash_db: Database) -> None:
    """Typing, backspacing, inverting and typing again: each text's rows are those the query's
    predicate passes, in the list's order, whichever earlier text they were narrowed from."""
    from ccctl.tui.fleet import Query

    fleet = Fleet()
    fleet.load(site_states(dash_db))
    fleet.flat = True
    typed = ["b", "ba", "bac", "bac ", "bac l", "bac li", "bac l", "bac", "!bac", "!ba", "ba", "x", "xa t", "xa", "",
             "phuong 7", "phuong", "ph"]
    for sort in ("worst", "name"):
        fleet.sort, fleet.query.text = sort, ""
        every = fleet.rows()
        for text in typed:
            fleet.query.text = text
            passes = Query(text=text).predicate(True)
            assert [r["id"] for r in fleet.rows(3.0)] == [r["id"] for r in every if passes(r)], text
    fleet.query.text = "bac"
    assert 0 < len(fleet.rows(3.0)) < len(every)
