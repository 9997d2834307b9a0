"""Property tests of sites import and export (Hypothesis), on a real SQLite registry.

- Any valid registry (Vietnamese names, text starting with ``= + - @ '``, commas, quotes)
  goes through export -> import unchanged, as CSV and as xlsx.
- Any file, garbage included, is imported whole or refused whole with one-line reasons;
  nothing else (no traceback, no partial import).
- The fuzz target of ``benchmarks/fuzz.py`` runs a few hundred cases without a crash.
"""

from __future__ import annotations

import os
import shutil
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccctl.errors import CcctlError, ImportRejected
from ccctl.registry import Database, open_registry
from ccctl.registry.files import export_sites, import_sites
from ccctl.registry.sites import complete, insert_sites, select_sites, site_record

UNITS = ("00001", "26740", "29869", "31825")
# Hypothesis shares one registry between examples (emptied before each): say so to its check.
# CCCTL_FUZZ_EXAMPLES=2000 searches longer than the suite's default.
SHARED = settings(max_examples=int(os.environ.get("CCCTL_FUZZ_EXAMPLES", "40")), deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])

# Any character a name may hold: letters of every script, marks, symbols, punctuation, spaces;
# no control character, surrogate or line separator (those are refused on input).
text_chars = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Co", "Cn"),
                           blacklist_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
viet = st.sampled_from(list("ăâđêôơưĂÂĐÊÔƠƯáàảãạấầẩẫậắằẳẵặéèẻẽẹếềểễệíìỉĩịóòỏõọốồổỗộớờởỡợúùủũụứừửữựýỳỷỹỵ"))
prefix = st.sampled_from(["", "=", "+", "-", "@", "'", "''", "'=", " =", "=HYPERLINK(\"http://x\",\"a\")"])
body = st.text(st.one_of(text_chars, viet, st.sampled_from(list(",\"'; =+-@"))), max_size=30)


def _clean(text: str) -> str:
    return text.strip()


names = st.builds(lambda p, b: _clean(p + b), prefix, body).filter(bool).filter(lambda s: len(s) <= 200)
tags = st.lists(st.builds(lambda p, b: _clean((p + b).replace(",", "")), prefix, body)
                .filter(bool).filter(lambda s: len(s) <= 64), max_size=4, unique=True)


@st.composite
def registries(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A few valid sites as ``complete`` accepts them."""
    count = draw(st.integers(0, 6))
    sites = []
    for number in range(count):
        sites.append({
            "id": f"s-{number}" + draw(st.text(string.ascii_letters + string.digits + "._-", max_size=8)),
            "name": draw(names),
            "unit_code": draw(st.sampled_from(UNITS)),
            "host": draw(st.one_of(st.none(), st.ip_addresses(v=4).map(str), st.just("box-1.example.vn"))),
            "ssh_port": draw(st.integers(1, 65535)),
            "tier": draw(st.sampled_from(["high", "low", "audio"])),
            "link_kbps": draw(st.one_of(st.none(), st.integers(1, 100_000_000))),
            "contact_name": draw(st.one_of(st.none(), names)),
            "contact_phone": draw(st.one_of(st.none(), st.from_regex(r"\+?[0-9]{3,15}", fullmatch=True))),
            "key_path": draw(st.one_of(st.none(), st.just("/etc/ccctl/id_ed25519"))),
            "tags": draw(tags),
            "enabled": draw(st.booleans()),
            "simulated": draw(st.booleans()),
        })
    return sites


@pytest.fixture
def registry(tmp_path: Path, units_template: Path) -> Iterator[Database]:
    """One real SQLite registry with units, shared by the examples of a test."""
    shutil.copy(units_template, tmp_path / "registry.db")
    with open_registry(f"sqlite:///{tmp_path / 'registry.db'}") as db:
        yield db


def _records(db: Database) -> list[dict[str, Any]]:
    return [site_record(s) for s in select_sites(db)]


@SHARED
@given(sites=registries(), suffix=st.sampled_from([".csv", ".xlsx"]))
def test_export_import_round_trip(registry: Database, tmp_path: Path, sites: list[dict[str, Any]],
                                  suffix: str) -> None:
    registry.execute("DELETE FROM sites")
    unique = list({s["id"]: s for s in sites}.values())
    insert_sites(registry, [complete(s) for s in unique])
    before = _records(registry)
    path = tmp_path / f"sites{suffix}"
    assert export_sites(registry, path) == len(unique)
    registry.execute("DELETE FROM sites")
    assert import_sites(registry, path) == len(unique)
    assert _records(registry) == before


csv_fields = st.one_of(st.text(max_size=12), st.sampled_from(["id", "ID", "name", "unit_code", "26740", "00001",
                                                              "=1+1", "'", "\"", "a,b", "\r\n", "\x00", "yes"]))


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """CSV-like text: a header from known and unknown names, rows of random fields, random quoting."""
    header = draw(st.lists(st.sampled_from(["id", "name", "unit_code", "ID", "host", "tags", "nope", ""]),
                           min_size=1, max_size=6))
    lines = [",".join(header)]
    for _ in range(draw(st.integers(0, 5))):
        fields = draw(st.lists(csv_fields, max_size=len(header) + 2))
        quoted = [f'"{f}"' if draw(st.booleans()) else f for f in fields]
        lines.append(",".join(quoted))
    text = "\n".join(lines)
    return text.encode("utf-8") if draw(st.booleans()) else text.encode("utf-8", "replace") + draw(st.binary(max_size=20))


@st.composite
def xlsx_files(draw: st.DrawFn, tmp: Path) -> Path:
    """A workbook with random cell values of every type openpyxl writes."""
    from openpyxl import Workbook

    book = Workbook()
    cells = st.one_of(st.none(), st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
                      st.booleans(), st.text(text_chars, max_size=12), st.sampled_from(["id", "name", "unit_code"]))
    for _ in range(draw(st.integers(0, 5))):
        book.active.append(draw(st.lists(cells, max_size=6)))
    path = tmp / "random.xlsx"
    book.save(path)
    return path


def _refused_cleanly(exc: CcctlError) -> None:
    reasons = [r for _, r in exc.problems] if isinstance(exc, ImportRejected) else []
    for text in (str(exc), *reasons):
        assert "\n" not in text and "\r" not in text, text


def _import_whole_or_nothing(db: Database, path: Path) -> None:
    db.execute("DELETE FROM sites")
    try:
        count = import_sites(db, path)
    except CcctlError as exc:
        _refused_cleanly(exc)
        assert db.query("SELECT COUNT(*) FROM sites")[0][0] == 0
    else:
        assert db.query("SELECT COUNT(*) FROM sites")[0][0] == count


@SHARED
@given(data=st.one_of(csv_files(), st.binary(max_size=300)), suffix=st.sampled_from([".csv", ".xlsx", ".txt"]))
def test_any_file_is_imported_whole_or_refused_whole(registry: Database, tmp_path: Path, data: bytes,
                                                     suffix: str) -> None:
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(data)
    _import_whole_or_nothing(registry, path)


@SHARED
@given(data=st.data())
def test_any_workbook_is_imported_whole_or_refused_whole(registry: Database, tmp_path: Path,
                                                         data: st.DataObject) -> None:
    _import_whole_or_nothing(registry, data.draw(xlsx_files(tmp_path)))


def test_fuzz_target_runs_clean() -> None:
    from benchmarks.fuzz_imports import run

    result = run(300, seed=3, max_seconds=120)
    assert result["cases"] > 0 and result["accepted"] > 0 and result["rejected"] > 0
    assert (result["crashes"], result["multiline"], result["roundtrip_mismatch"]) == (0, 0, 0), result["samples"]
