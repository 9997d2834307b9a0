"""The core queries behind the dashboard and the reports, on a real SQLite registry."""

from __future__ import annotations

from ccctl.models import CheckState
from ccctl.registry import Database
from ccctl.registry.overview import (
    UNCHECKED,
    ChangeCursor,
    latest_run_id,
    place_points,
    results_since,
    site_history,
    site_point,
    site_states,
    sites_per_tier,
)
from ccctl.reports import child_level, count_states, level_counts, rollcall_frame, tier_summary, worst_sites
from tests.tui.conftest import planned_state, record_run


def test_site_states_and_level_counts(dash_db: Database) -> None:
    rows = site_states(dash_db)
    assert len(rows) == len({r["id"] for r in rows}) > 100
    assert {r["state"] for r in rows[-5:]} == {UNCHECKED}
    assert all(r["district_code"] is None for r in rows if r["scheme"] == "2025")
    assert all(r["district_code"] for r in rows if r["scheme"] == "2021")
    for i, row in enumerate(rows[:-5]):
        assert row["state"] == planned_state(i).value
    country = level_counts(rows, "country")
    assert len(country) == 1 and country[0]["sites"] == len(rows) and country[0]["unchecked"] == 5
    assert country[0]["ok"] + country[0]["degraded"] + country[0]["down"] + 5 == len(rows)
    provinces = level_counts(rows, "province")
    assert {(p["scheme"], p["code"]) for p in provinces} == {("2021", "95"), ("2021", "96"), ("2025", "96")}
    assert [p["ready_pct"] for p in provinces] == sorted(p["ready_pct"] for p in provinces)  # worst first
    assert sum(p["sites"] for p in provinces) == len(rows)
    assert any(p["name"] == "Bạc Liêu" for p in provinces)
    districts = level_counts([r for r in rows if r["scheme"] == "2021" and r["province_code"] == "95"], "district")
    assert districts and all(d["name"] for d in districts)
    assert child_level("province", "2025") == "commune" and child_level("province", "2021") == "district"
    assert child_level("commune", "2021") == "site"


def test_count_states_matches_the_report_frame(dash_db: Database) -> None:
    rows = [r for r in site_states(dash_db) if r["state"] != UNCHECKED]
    frame = rollcall_frame(rows, "province")
    counted = count_states(rows, ["province_code", "province_name"])
    assert list(frame["sites"]) == [c["sites"] for c in counted]
    assert list(frame["ready_pct"]) == [c["ready_pct"] for c in counted]
    assert list(frame.columns)[:4] == ["province_code", "province_name", "sites", "ok"]


def test_worst_sites_first(dash_db: Database) -> None:
    worst = worst_sites(site_states(dash_db), 3)
    assert [w["state"] for w in worst] == ["AUTH_FAILED"] * 3  # the fixture has 5; the hardest failure first
    assert [w["id"] for w in worst] == sorted(w["id"] for w in worst)


def test_results_since_reads_each_run_then_moves_on(dash_db: Database) -> None:
    cursor = ChangeCursor(latest_run_id(dash_db) + 1)
    assert results_since(dash_db, cursor) == []
    site = site_states(dash_db)[0]["id"]
    run = record_run(dash_db, {site: CheckState.TIMEOUT}, started_at=1_800_000_100.0)
    changes = results_since(dash_db, cursor)
    assert [(c["site_id"], c["state"], c["run_id"]) for c in changes] == [(site, "TIMEOUT", run)]
    assert cursor.run_id == run + 1 and results_since(dash_db, cursor) == []
    history = site_history(dash_db, site)
    assert [h["state"] for h in history] == ["TIMEOUT", "OK"] and history[0]["run_id"] == run


def test_tiers_and_points(dash_db: Database) -> None:
    expected = sites_per_tier(dash_db)
    assert expected == {"high": len(site_states(dash_db))}
    sessions = [{"tier": "high", "state": "connected", "kbps": 900.0, "packets_sent": 10},
                {"tier": "audio", "state": "connected", "kbps": 40.0, "packets_sent": 5, "fraction_lost": 0.02},
                {"tier": "high", "state": "new", "kbps": None, "packets_sent": 0}]
    summary = {r["tier"]: r for r in tier_summary(sessions, expected)}
    assert [r["tier"] for r in tier_summary(sessions, expected)] == ["high", "audio"]
    assert (summary["high"]["connected"], summary["high"]["expected"], summary["high"]["sites"]) == (1, expected["high"], 2)
    assert summary["audio"]["lost_pct_max"] == 2.0
    points = place_points()
    assert len([k for k in points if k[:2] == ("2021", "commune")]) > 10000
    assert len([k for k in points if k[:2] == ("2025", "commune")]) > 3000
    lat, lon = points[("2021", "commune", "00001")]  # Phúc Xá, Hà Nội
    assert 20.9 < lat < 21.2 and 105.7 < lon < 106.0
    sites = site_states(dash_db)
    assert all(site_point(points, s) is not None for s in sites)  # commune, else district, else province
    site = dict(sites[0], unit_code="no-such-commune")
    assert site_point(points, site) == points[("2021", "district", site["district_code"])]


def test_queries_on_each_backend(units_db: Database) -> None:
    """The same queries on SQLite and PostgreSQL (the units_db fixture runs both)."""
    from ccctl.registry.sites import generate_sites

    generate_sites(units_db, "2025", ["96"])
    rows = site_states(units_db)
    assert rows and {r["state"] for r in rows} == {UNCHECKED}
    cursor = ChangeCursor(latest_run_id(units_db))
    run = record_run(units_db, {rows[0]["id"]: CheckState.DEGRADED, rows[1]["id"]: CheckState.OK})
    assert sorted((c["site_id"], c["state"]) for c in results_since(units_db, cursor)) == sorted(
        [(rows[0]["id"], "DEGRADED"), (rows[1]["id"], "OK")])
    assert cursor.run_id == run + 1
    states = {r["id"]: r["state"] for r in site_states(units_db)}
    assert states[rows[0]["id"]] == "DEGRADED" and states[rows[2]["id"]] == UNCHECKED
    assert [h["state"] for h in site_history(units_db, rows[0]["id"])] == ["DEGRADED"]
    assert sites_per_tier(units_db) == {"high": len(rows)}
    (province,) = level_counts(site_states(units_db), "province")
    assert (province["sites"], province["ok"], province["degraded"], province["unchecked"]) == (len(rows), 1, 1,
                                                                                                   len(rows) - 2)


def test_a_running_run_is_read_as_it_grows_each_result_once(dash_db: Database) -> None:
    from ccctl.models import CheckResult
    from ccctl.rollcall.history import RunRecorder

    sites = [s["id"] for s in site_states(dash_db)][:4]
    cursor = ChangeCursor(latest_run_id(dash_db) + 1)
    recorder = RunRecorder(dash_db, {"stages": ["tcp"], "sites": 4})
    for site in sites[:2]:
        recorder.add(CheckResult(site_id=site, state=CheckState.OK, started_at=1_900_000_000.0))
    recorder.flush()
    assert [c["site_id"] for c in results_since(dash_db, cursor)] == sites[:2]
    assert results_since(dash_db, cursor) == []  # still running: nothing read twice
    for site in sites[2:]:
        recorder.add(CheckResult(site_id=site, state=CheckState.TIMEOUT, started_at=1_900_000_001.0))
    recorder.flush()
    assert sorted(c["site_id"] for c in results_since(dash_db, cursor)) == sorted(sites[2:])
    recorder.finish("finished", {"sites": 4})
    assert results_since(dash_db, cursor) == [] and cursor.run_id == recorder.run_id + 1 and not cursor.seen
