"""The units' counts the fleet keeps from the changes (the provinces') are those a recount gives
(``ccctl.reports.level_counts``), at every place of both schemes, after floods of changes."""

from __future__ import annotations

import random

from ccctl.registry import Database
from ccctl.registry.overview import site_states
from ccctl.reports import level_counts
from ccctl.tui.fleet import Fleet, Place


def places(fleet: Fleet) -> list[Place]:
    """The country, every province and every district (2021) of the fleet."""
    country = Place("country")
    provinces = [Place("province", u["scheme"], u["code"], u["name"]) for u in fleet.units_under(country)]
    districts = [Place("district", u["scheme"], u["code"], u["name"])
                 for p in provinces for u in fleet.units_under(p) if u["level"] == "district"]
    return [country, *provinces, *districts]


def test_kept_counts_equal_a_recount_after_changes(dash_db: Database) -> None:
    fleet = Fleet()
    fleet.load(site_states(dash_db))
    ids = list(fleet.sites)
    rng = random.Random(2025)
    states = ["OK", "DEGRADED", "UNREACHABLE", "TIMEOUT", "UNCHECKED", "SOMETHING_NEW"]  # unknown: counted as ERROR
    for round_ in range(12):
        fleet.apply([{"site_id": rng.choice(ids), "state": rng.choice(states), "run_id": 10**6 + round_}
                     for _ in range(len(ids) // 3)])
        at = places(fleet)
        assert {p.scheme for p in at[1:]} == {"2021", "2025"} and any(p.level == "district" for p in at)
        for place in at:
            kept = fleet.units_under(place)
            assert kept == fleet.units_under(place, fleet.sites_in(place)), place
        country = fleet.units_under(Place("country"))
        recount = level_counts(fleet.order, "province")
        assert sorted((u["scheme"], u["code"], u["sites"], u["down"], u["error"]) for u in country) == \
            sorted((u["scheme"], u["code"], u["sites"], u["down"], u["error"]) for u in recount)
    assert sum(u["error"] for u in fleet.units_under(Place("country"))) > 0  # the unknown state was applied


def test_a_full_read_recounts(dash_db: Database) -> None:
    fleet = Fleet()
    rows = site_states(dash_db)
    fleet.load(rows)
    fleet.apply([{"site_id": r["id"], "state": "UNREACHABLE", "run_id": 10**6} for r in rows])
    assert all(u["down"] == u["sites"] for u in fleet.units_under(Place("country")))
    fleet.load(site_states(dash_db))  # the registry read afresh: counts from its rows, not the changes
    assert fleet.units_under(Place("country")) == fleet.units_under(Place("country"), fleet.order)
    assert not all(u["down"] == u["sites"] for u in fleet.units_under(Place("country")))
