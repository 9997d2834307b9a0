"""Unit names as real sheets spell them join to the official units (real registry, both backends)."""

from __future__ import annotations

import unicodedata

import pytest

from ccctl.feeds.join import UnitJoiner
from ccctl.feeds.pull import _joiner
from ccctl.feeds.spec import FeedSpec
from ccctl.registry import Database


def joiner(db: Database, level: str, scheme: str = "2021") -> UnitJoiner:
    return _joiner(db, FeedSpec("t", "x", level=level, scheme=scheme))


def code(j: UnitJoiner, text: str, **parents: str) -> str:
    hit = j.join(text, parents)
    assert not isinstance(hit, str), hit
    return hit.code


PROVINCES = [
    ("Hoà Bình", "17"), ("Hòa Bình", "17"), ("HOÀ BÌNH", "17"), ("tỉnh hoà bình", "17"), ("Tinh Hoa Binh", "17"),
    (unicodedata.normalize("NFD", "Tỉnh Hòa Bình"), "17"), ("Khánh Hoà", "56"), ("Thanh Hoá", "38"),
    ("TP. Hồ Chí Minh", "79"), ("Thành phố Hồ Chí Minh", "79"), ("TP.HCM", "79"), ("Tp Ho Chi Minh", "79"),
    ("Bà Rịa - Vũng Tàu", "77"), ("Bà Rịa–Vũng Tàu", "77"), ("Bà Rịa — Vũng Tàu", "77"), ("  Bà  Rịa-Vũng   Tàu ", "77"),
    ("Ðồng Tháp", "87"), ("1", "01"), ("01", "01"), ("79", "79"), ("Thừa Thiên - Huế", "46"),
]


@pytest.mark.parametrize(("text", "expected"), PROVINCES)
def test_province_spellings_join(units_db: Database, text: str, expected: str) -> None:
    assert code(joiner(units_db, "province"), text) == expected


def test_district_spellings(units_db: Database) -> None:
    j = joiner(units_db, "district")
    assert code(j, "Thuỷ Nguyên") == code(j, "Thủy Nguyên") == code(j, "Huyện Thuỷ Nguyên")
    # "Quản Bạ" is a name, not "Quận Bạ": its first word is not dropped as a prefix.
    assert code(j, "Quản Bạ") == code(j, "Huyện Quản Bạ") == code(j, "quan ba")
    # Only Hồ Chí Minh has a Quận 1; 01 and 1 are the same number.
    assert code(j, "Quận 01") == code(j, "Quận 1") == "760"
    # The type tells Thị xã Sơn Tây (Hà Nội) from Huyện Sơn Tây (Quảng Ngãi); the bare name cannot.
    assert code(j, "Thị xã Sơn Tây") == code(j, "thi xa son tay") == "269"
    assert code(j, "Huyện Sơn Tây") == "530"
    assert code(j, "Sơn Tây", province="Quảng Ngãi") == "530"
    bare = j.join("Sơn Tây")
    assert isinstance(bare, str) and bare.startswith("2 districts are named 'Sơn Tây'")


def test_communes_of_the_same_name_need_their_province_and_district(units_db: Database) -> None:
    j = joiner(units_db, "commune")
    ambiguous = j.join("Phường 1")
    assert isinstance(ambiguous, str) and "are named 'Phường 1'" in ambiguous and "add a province" in ambiguous
    one = code(j, "Phường 01", province="Cà Mau", district="TP. Cà Mau")
    assert one == code(j, "phuong 1", province="96", district="Thành phố Cà Mau")
    # A parent that contradicts the name is a problem, not a silent match.
    wrong = j.join("Phường 1", {"province": "Hà Giang"})
    assert isinstance(wrong, str) and "in province 'Hà Giang'" in wrong


def test_unknown_names_and_codes_say_why(units_db: Database) -> None:
    j = joiner(units_db, "province")
    assert j.join("Atlantis") == "no province of scheme 2021 has the name 'Atlantis'"
    assert j.join("99") == "no province of scheme 2021 has the code '99'"


def test_2025_scheme(units_db: Database) -> None:
    j = joiner(units_db, "province", "2025")
    assert code(j, "Thành phố Huế") == code(j, "Huế") == code(j, "Hue")
    assert isinstance(j.join("Bà Rịa - Vũng Tàu"), str)  # merged into Hồ Chí Minh in 2025


def test_names_that_fold_alike_are_told_apart_by_their_marks(units_db: Database) -> None:
    j = joiner(units_db, "commune")
    # Two wards of one district fold to "sa pa"; their marks (wherever the tone sits) decide.
    assert code(j, "Phường Sa Pa", province="Lào Cai") == "03001"
    assert code(j, "Phường Sa Pả", province="Lào Cai") == "03002"
    assert code(j, unicodedata.normalize("NFD", "phường sa pả"), province="10") == "03002"
    plain = j.join("Phuong Sa Pa", {"province": "Lào Cai"})
    assert isinstance(plain, str) and plain.startswith("2 communes are named")
