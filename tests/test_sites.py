"""Sites in the registry: validation, filters with folded names, edit, remove, generate,
concurrent writers and migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import re
from pathlib import Path

import pytest

from ccctl.errors import RegistryError, UnitsMissing, UsageError
from ccctl.registry import Database, open_registry
from ccctl.registry.schema import LATEST, current_version, migrate
from ccctl.registry.sites import (
    DIRECTIVE_16,
    SiteFilter,
    add_site,
    edit_site,
    generate_sites,
    get_site,
    remove_sites,
    select_sites,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl box"


def _add(db: Database, site_id: str, unit: str, **extra: object) -> None:
    add_site(db, {"id": site_id, "name": f"Điểm cầu {site_id}", "unit_code": unit, **extra})


def test_add_show_and_validation(units_db: Database) -> None:
    _add(units_db, "bn-1", "26740", host="10.1.2.3", ssh_port="2200", host_key=KEY, tags="biên giới,pilot",
         contact_name="Nguyễn Văn A", contact_phone="+84 912 345 678", tier="low")
    site = get_site(units_db, "bn-1")
    assert (site.province_code, site.district_code, site.unit_name) == ("79", "760", "Phường Bến Nghé")
    assert site.ssh_port == 2200 and site.tags == ["biên giới", "pilot"] and site.tier == "low"
    assert site.endpoint() is not None and site.endpoint().host_key == KEY  # type: ignore[union-attr]
    bad = [({"host": "not a host!"}, "bad host"), ({"ssh_port": "70000"}, "bad port"),
           ({"unit_code": "99999"}, "unknown unit"), ({"tier": "ultra"}, "bad tier"),
           ({"host_key": "-----BEGIN OPENSSH PRIVATE KEY-----"}, "private key"),
           ({"contact_phone": "call me"}, "bad phone")]
    for values, reason in bad:
        with pytest.raises(UsageError, match=reason):
            add_site(units_db, {"id": "x-1", "name": "X", "unit_code": "26740", **values})
    with pytest.raises(UsageError, match="already exists"):
        _add(units_db, "bn-1", "26740")
    assert [s.id for s in select_sites(units_db)] == ["bn-1"]


def test_filters(units_db: Database) -> None:
    _add(units_db, "hcm-1", "26740", tags="pilot")
    _add(units_db, "hcm-2", "26740", tier="audio")
    _add(units_db, "dt-1", "29869")  # Đồng Tháp, 2021
    _add(units_db, "hn-1", "00001")  # Phúc Xá, Hà Nội
    ids = lambda flt: [s.id for s in select_sites(units_db, flt)]  # noqa: E731
    assert ids(SiteFilter(province="ho chi minh")) == ["hcm-1", "hcm-2"]
    assert ids(SiteFilter(province="dong thap")) == ["dt-1"]
    assert ids(SiteFilter(province="Đồng Tháp")) == ["dt-1"]
    assert ids(SiteFilter(district="quan 1", province="79")) == ["hcm-1", "hcm-2"]
    assert ids(SiteFilter(unit="00001")) == ["hn-1"]
    assert ids(SiteFilter(tag="pilot")) == ["hcm-1"]
    assert ids(SiteFilter(tier="audio")) == ["hcm-2"]
    assert ids(SiteFilter(search="phuc xa")) == ["hn-1"]
    assert ids(SiteFilter(search="ben nghe ho chi minh")) == ["hcm-1", "hcm-2"]
    assert ids(SiteFilter(ids=("dt-1", "hn-1"))) == ["hn-1", "dt-1"]
    with pytest.raises(UsageError, match="no province"):
        select_sites(units_db, SiteFilter(province="atlantis"))


def test_edit_and_remove(units_db: Database) -> None:
    _add(units_db, "s-1", "26740")
    site = edit_site(units_db, "s-1", {"host": "127.0.0.5", "tags": "a,b", "enabled": False, "unit_code": "00001"})
    assert (site.host, site.tags, site.enabled, site.province_code) == ("127.0.0.5", ["a", "b"], False, "01")
    assert select_sites(units_db, SiteFilter(province="ha noi"))[0].id == "s-1"
    with pytest.raises(UsageError):
        edit_site(units_db, "s-1", {"ssh_port": "0"})
    assert get_site(units_db, "s-1").ssh_port == 22  # the failed edit changed nothing
    assert remove_sites(units_db, ["s-1"]) == 1
    assert select_sites(units_db) == []


def test_generate_directive_16(units_db: Database) -> None:
    created, kept = generate_sites(units_db, "2021", DIRECTIVE_16)
    assert (created, kept) == (2465, 0)
    assert generate_sites(units_db, "2021", DIRECTIVE_16) == (0, 2465)
    assert len(select_sites(units_db, SiteFilter(province="ca mau"))) == 101


def test_generate_needs_units(db_url: str) -> None:
    with open_registry(db_url) as db, pytest.raises(UnitsMissing):
        generate_sites(db, "2021", ["79"])


def _writer(url: str, prefix: str, count: int) -> None:
    with open_registry(url) as db:
        for i in range(count):
            add_site(db, {"id": f"{prefix}-{i}", "name": f"{prefix} {i}", "unit_code": "26740"})


def test_two_processes_write_at_once_and_lose_nothing(units_db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(units_db_url, p, 60)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with open_registry(units_db_url) as db:
        assert len(select_sites(db)) == 120


def test_older_registry_opens_in_newer(db_url: str) -> None:
    db = Database(db_url)
    assert migrate(db, target=1) == 1
    db.execute("CREATE TABLE IF NOT EXISTS probe_marker (x INTEGER)")
    db.close()
    with open_registry(db_url) as db:
        assert current_version(db) == LATEST
        assert db.query("SELECT COUNT(*) FROM rollcall_runs")[0][0] == 0


def test_newer_registry_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with open_registry(url) as db:
        db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(RegistryError, match="newer"):
        open_registry(url)


@pytest.mark.parametrize("query", ["%", "_", "'", "--", ".*", "  ", "%%_"])
def test_a_search_that_folds_to_nothing_is_refused(units_db: Database, query: str) -> None:
    _add(units_db, "a-1", "26740")
    with pytest.raises(UsageError, match="no letter or digit"):
        select_sites(units_db, SiteFilter(search=query))


def test_like_wildcards_in_filters_are_literal(units_db: Database) -> None:
    _add(units_db, "a-1", "26740", tags="pilot")
    _add(units_db, "a-2", "26740", tags="p_lot")
    ids = lambda flt: [s.id for s in select_sites(units_db, flt)]  # noqa: E731
    assert ids(SiteFilter(tag="p_lot")) == ["a-2"]
    assert ids(SiteFilter(tag="%")) == []


def test_province_code_matches_exactly_and_names_by_whole_words(units_db: Database) -> None:
    _add(units_db, "hcm-1", "26740")  # province 79
    _add(units_db, "dt-1", "29869")  # province 87
    _add(units_db, "hn-1", "00001")  # province 01
    ids = lambda flt: [s.id for s in select_sites(units_db, flt)]  # noqa: E731
    for query in ("9", "7", "0", "1"):
        with pytest.raises(UsageError, match="no province matches"):
            select_sites(units_db, SiteFilter(province=query))
    assert ids(SiteFilter(province="79")) == ["hcm-1"] and ids(SiteFilter(province="01")) == ["hn-1"]
    assert ids(SiteFilter(district="quan 1")) == ["hcm-1"]  # not Quận 10, 11, 12
    with pytest.raises(UsageError, match="no province matches"):
        select_sites(units_db, SiteFilter(province="thap"[:3]))  # "tha" is no whole word of a name


def test_long_filters_are_usage_errors(units_db: Database) -> None:
    for flt in (SiteFilter(search="x" * 100_000), SiteFilter(province="y" * 300),
                SiteFilter(search=" ".join("w" * 20)), SiteFilter(ids=("a",) * 10_001), SiteFilter(ids=("z" * 65,))):
        with pytest.raises(UsageError):
            select_sites(units_db, flt)


@pytest.mark.parametrize("name, reason", [("a\x1b[31m", "control character U+001B at position 2"),
                                          ("\x00", "control character U+0000 at position 1"),
                                          ("a\u202eb", "non-text character U+202E"),
                                          ("a\ufffe", "non-text character U+FFFE"),
                                          ("a\udcff", "non-text character U+DCFF"),
                                          ("a\U0010ffff", "non-text character U+10FFFF"),
                                          ("n" * 201, "name is 201 characters long")])
def test_names_refuse_control_and_non_text_characters(units_db: Database, name: str, reason: str) -> None:
    with pytest.raises(UsageError, match=re.escape(reason)):
        _add(units_db, "a-1", "26740", name=name)
    with pytest.raises(UsageError, match=re.escape(reason.replace("name", "contact_name"))):
        _add(units_db, "a-1", "26740", contact_name=name)
    assert select_sites(units_db) == []
