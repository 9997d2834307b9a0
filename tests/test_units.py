"""Official units: exact counts, idempotent loading, folded search, the 2021 -> 2025 map."""

from __future__ import annotations

import pytest

from ccctl.errors import NotFound
from ccctl.registry import Database, open_registry
from ccctl.registry.units import list_units, load_units, map_unit, resolve


def _count(db: Database, scheme: str, level: str) -> int:
    return int(db.query("SELECT COUNT(*) FROM units WHERE scheme = ? AND level = ?", (scheme, level))[0][0])


def test_official_counts_and_idempotent_load(db_url: str) -> None:
    with open_registry(db_url) as db:
        assert load_units(db, "2021") == {"province": 63, "district": 705, "commune": 10599}
        assert load_units(db, "2025") == {"province": 34, "commune": 3321}
        before = db.query("SELECT scheme, level, code, name, full_name, unit_type FROM units ORDER BY 1, 2, 3")
        load_units(db, "2021")
        load_units(db, "2025")
        after = db.query("SELECT scheme, level, code, name, full_name, unit_type FROM units ORDER BY 1, 2, 3")
        assert before == after
        assert (_count(db, "2021", "province"), _count(db, "2021", "district"), _count(db, "2021", "commune")) == (63, 705, 10599)
        assert (_count(db, "2025", "province"), _count(db, "2025", "commune")) == (34, 3321)
        mapped = db.query("SELECT COUNT(*) FROM unit_map")[0][0]
        load_units(db, "2025")
        assert db.query("SELECT COUNT(*) FROM unit_map")[0][0] == mapped


def test_gso_codes_types_and_hierarchy(units_db: Database) -> None:
    ben_nghe = resolve(units_db, "commune", "26740", "2021")
    assert ben_nghe[0]["full_name"] == "Phường Bến Nghé"
    assert ben_nghe[0]["unit_type"] == "Phường"
    assert ben_nghe[0]["district_code"] == "760" and ben_nghe[0]["province_code"] == "79"
    types = {r[0] for r in units_db.query("SELECT DISTINCT unit_type FROM units WHERE scheme = '2021' AND level = 'commune'")}
    assert types == {"Xã", "Phường", "Thị trấn"}
    types_2025 = {r[0] for r in units_db.query(
        "SELECT DISTINCT unit_type FROM units WHERE scheme = '2025' AND level = 'commune'")}
    assert types_2025 == {"Xã", "Phường", "Đặc khu"}


@pytest.mark.parametrize("query, code", [("ho chi minh", "79"), ("HO CHI MINH", "79"), ("Hồ Chí Minh", "79"),
                                         ("dong thap", "87"), ("Đồng Tháp", "87"), ("ca mau", "96"), ("79", "79")])
def test_province_names_fold(units_db: Database, query: str, code: str) -> None:
    matches = resolve(units_db, "province", query, "2021")
    assert [m["code"] for m in matches] == [code]


def test_list_units_filters(units_db: Database) -> None:
    hcm = list_units(units_db, scheme="2021", level="commune", province="ho chi minh")
    assert len(hcm) == 312
    assert all(r["province_code"] == "79" for r in hcm)
    found = list_units(units_db, scheme="2021", search="ben nghe")
    assert any(r["full_name"] == "Phường Bến Nghé" for r in found)
    assert list_units(units_db, scheme="2025", level="province", search="thanh pho ho chi minh")[0]["code"] == "79"
    with pytest.raises(NotFound):
        list_units(units_db, province="atlantis")


def test_map_both_ways(units_db: Database) -> None:
    forward = map_unit(units_db, "26740")  # Phường Bến Nghé, 2021
    assert forward and all(r["old_code"] == "26740" for r in forward)
    new_code = forward[0]["new_code"]
    assert forward[0]["new_province"] == "Thành phố Hồ Chí Minh"
    back = map_unit(units_db, new_code, "2025")
    assert {r["direction"] for r in back} == {"2025<-2021"}
    assert "26740" in {r["old_code"] for r in back}
    assert len(back) > 1  # 2025 wards merged several 2021 ones
    with pytest.raises(NotFound):
        map_unit(units_db, "99999")
