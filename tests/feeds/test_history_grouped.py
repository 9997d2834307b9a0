"""A feed's history summed up to districts or provinces by the database (risk levels: the
worst), and its indicators found by a skip scan, on SQLite and PostgreSQL: the same answers
as grouping the stored values by hand."""

from __future__ import annotations

import random

from ccctl.feeds import views
from ccctl.feeds.spec import FeedSpec
from ccctl.registry import Database
from ccctl.registry import feeds as store

DAYS = ["2021-10-13", "2021-10-14", "2021-10-15"]


def _fill(db: Database) -> tuple[list[tuple[str, str, str, float]], dict[str, tuple[str, str | None]]]:
    """A commune feed over three days for the communes of two provinces and one code the
    registry does not know; the values stored, and each commune's (province, district)."""
    places = {c: (p, d) for c, p, d in db.query(
        "SELECT code, province_code, district_code FROM units WHERE scheme = '2021' AND level = 'commune' "
        "AND province_code IN ('96', '95')")}
    rnd = random.Random(3)
    values = [(ind, unit, day, float(rnd.randint(1, 4) if ind == "risk_level" else rnd.randint(0, 999)))
              for unit in [*sorted(places), "99999"] for day in DAYS for ind in ("new_cases", "risk_level")]
    store.add_feed(db, FeedSpec("communes", "/dev/null", level="commune"))
    store.store_pull(db, "communes", values, DAYS[-1], 400, None, None, None, [], len(values))
    return values, places


def _by_hand(values: list[tuple[str, str, str, float]], places: dict[str, tuple[str, str | None]], indicator: str,
             index: int, since: str = "", units: set[str] | None = None) -> dict[str, list[tuple[str, float]]]:
    sums: dict[tuple[str, str], float] = {}
    for ind, unit, day, value in values:
        if ind != indicator or day < since or (units and unit not in units):
            continue
        key = ((places[unit][index] or unit) if unit in places else unit, day)
        sums[key] = max(sums.get(key, 0.0), value) if indicator == "risk_level" else sums.get(key, 0.0) + value
    out: dict[str, list[tuple[str, float]]] = {}
    for (place, day), value in sorted(sums.items()):
        out.setdefault(place, []).append((day, value))
    return out


def test_history_grouped_by_the_database_matches_grouping_by_hand(units_db: Database) -> None:
    values, places = _fill(units_db)
    for indicator in ("new_cases", "risk_level"):
        for by, index in (("province", 0), ("district", 1)):
            got = views.history(units_db, "communes", indicator, by=by)
            assert got == _by_hand(values, places, indicator, index)
            assert list(got) == sorted(got)
        assert set(views.history(units_db, "communes", indicator, by="province")) == {"95", "96", "99999"}
    some = set(sorted(places)[:5])
    got = views.history(units_db, "communes", "new_cases", by="province", since="14/10/2021", units=sorted(some))
    assert got == _by_hand(values, places, "new_cases", 0, "2021-10-14", some)
    assert all(days[0][0] == "2021-10-14" for days in got.values())
    # Not grouped: each commune's own series, oldest first.
    own = views.history(units_db, "communes", "new_cases", units=["99999"])
    assert own == {"99999": [(d, v) for i, u, d, v in values if u == "99999" and i == "new_cases"]}


def test_indicators_are_each_found_once(units_db: Database) -> None:
    assert store.indicators(units_db, "nothing") == []
    _fill(units_db)
    assert store.indicators(units_db, "communes") == ["new_cases", "risk_level"]
    store.add_feed(units_db, FeedSpec("other", "/dev/null"))
    store.store_pull(units_db, "other", [("a", "96", DAYS[0], 1.0), ("c", "96", DAYS[0], 2.0), ("b", "95", DAYS[1], 3.0)],
                     DAYS[1], 400, None, None, None, [], 3)
    assert store.indicators(units_db, "other") == ["a", "b", "c"]
    assert store.indicators(units_db, "communes") == ["new_cases", "risk_level"]
