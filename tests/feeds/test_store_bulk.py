"""Storing a pull in bulk (COPY into a temporary table then one merge on PostgreSQL, one
prepared statement on SQLite): all or nothing, and a value stored again unchanged is not
rewritten."""

from __future__ import annotations

from typing import Any

import pytest

from ccctl.errors import RegistryError
from ccctl.feeds.spec import FeedSpec
from ccctl.registry import Database
from ccctl.registry import feeds as store

UNITS = [f"{n:02d}" for n in range(1, 97)]


def _values(day: str, base: float) -> list[tuple[str, str, str, Any]]:
    return [(ind, unit, day, base + n) for ind in ("new_cases", "deaths") for n, unit in enumerate(UNITS)]


def _stored(db: Database) -> dict[tuple[str, str, str], float]:
    return {(i, u, d): v for i, u, d, v in db.query("SELECT indicator, unit_code, day, value FROM feed_values "
                                                    "WHERE feed = 'bulk'")}


def _store(db: Database, values: list[tuple[str, str, str, Any]], newest: str) -> None:
    store.store_pull(db, "bulk", values, newest, 400, None, None, None, [("pull_ok", None, None, "test")], len(values))


def test_a_store_failing_half_way_keeps_the_last_good_data(units_db: Database) -> None:
    store.add_feed(units_db, FeedSpec("bulk", "/dev/null"))
    good = _values("2021-10-14", 10.0)
    _store(units_db, good, "2021-10-14")
    before = _stored(units_db)
    _, state = store.get_feed(units_db, "bulk")
    events = len(store.feed_events(units_db, "bulk"))
    # Changed values, a new day, then a row the database refuses (no value) far into the stream.
    bad = _values("2021-10-14", 20.0) + _values("2021-10-15", 30.0)
    bad[300] = (*bad[300][:3], None)
    with pytest.raises(RegistryError, match="registry error"):
        _store(units_db, bad, "2021-10-15")
    assert _stored(units_db) == before
    assert store.get_feed(units_db, "bulk")[1] == state
    assert len(store.feed_events(units_db, "bulk")) == events
    # The connection is usable again, and a good pull goes in whole.
    _store(units_db, bad[:300], "2021-10-15")
    assert _stored(units_db) == {**before, **{(i, u, d): v for i, u, d, v in bad[:300]}}
    assert store.get_feed(units_db, "bulk")[1]["newest_day"] == "2021-10-15"


def test_a_repull_updates_what_changed_and_adds_what_is_new(units_db: Database) -> None:
    store.add_feed(units_db, FeedSpec("bulk", "/dev/null"))
    first = _values("2021-10-14", 10.0)
    _store(units_db, first, "2021-10-14")
    versions = _row_versions(units_db)
    second = [(i, u, d, v + 100 if u == "79" else v) for i, u, d, v in first] + _values("2021-10-15", 5.0)
    _store(units_db, second, "2021-10-15")
    assert _stored(units_db) == {(i, u, d): v for i, u, d, v in second}
    if versions:  # PostgreSQL: an unchanged value is not rewritten (its row version stays)
        after = _row_versions(units_db)
        changed = {k for k in versions if versions[k] != after[k]}
        assert changed == {("new_cases", "79", "2021-10-14"), ("deaths", "79", "2021-10-14")}


def _row_versions(db: Database) -> dict[tuple[str, str, str], str]:
    if db.dialect != "postgresql":
        return {}
    return {(i, u, d): x for i, u, d, x in db.query("SELECT indicator, unit_code, day, xmin::text FROM feed_values "
                                                    "WHERE feed = 'bulk'")}


def test_new_and_stored_days_mix_per_indicator(units_db: Database) -> None:
    """A pull holding days before, at and after each indicator's newest stored day (which
    differ per indicator) stores each value once, whatever newest day its caller names."""
    store.add_feed(units_db, FeedSpec("bulk", "/dev/null"))
    # The feed's recorded newest day is only what callers said: here too old on purpose.
    _store(units_db, [("new_cases", "96", "2021-10-15", 1.0), ("deaths", "96", "2021-10-12", 2.0)], "2021-10-10")
    mixed = [("new_cases", "96", "2021-10-14", 3.0),   # before new_cases' newest day, missing
             ("new_cases", "96", "2021-10-15", 4.0),   # at it, changed
             ("new_cases", "95", "2021-10-15", 5.0),   # at it, missing
             ("new_cases", "96", "2021-10-16", 6.0),   # after it
             ("deaths", "96", "2021-10-12", 2.0),      # deaths' newest day, unchanged
             ("deaths", "96", "2021-10-14", 7.0),      # after deaths' newest day, before new_cases'
             ("active", "96", "2021-10-13", 8.0)]      # an indicator never stored
    _store(units_db, mixed, "2021-10-13")
    assert _stored(units_db) == {(i, u, d): v for i, u, d, v in mixed}
