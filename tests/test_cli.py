"""The CLI contract through CliRunner: data-only stdout, formats, one-line errors, exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Ccctl


def test_units_list_json_and_folding(ccctl: Ccctl) -> None:
    rows = ccctl.json("units", "list", "--scheme", "2021", "--level", "province", "--search", "ho chi minh")
    assert [(r["code"], r["full_name"]) for r in rows] == [("79", "Thành phố Hồ Chí Minh")]
    assert set(rows[0]) >= {"scheme", "level", "code", "name", "full_name", "unit_type", "province_code"}
    communes = ccctl.json("units", "list", "--scheme", "2021", "--level", "commune", "--province", "dong thap")
    assert len(communes) == 143 and {r["province_code"] for r in communes} == {"87"}
    assert len(ccctl.json("units", "list", "--scheme", "2025", "--level", "commune")) == 3321


def test_units_load_twice_prints_counts(ccctl: Ccctl) -> None:
    for _ in range(2):
        rows = ccctl.json("units", "load", "--scheme", "2021", "--scheme", "2025")
        assert rows == [{"scheme": "2021", "province": 63, "district": 705, "commune": 10599},
                        {"scheme": "2025", "province": 34, "district": 0, "commune": 3321}]


def test_units_map(ccctl: Ccctl) -> None:
    rows = ccctl.json("units", "map", "26740")
    assert rows[0]["direction"] == "2021->2025" and rows[0]["old_name"] == "Phường Bến Nghé"
    result = ccctl("units", "map", "nope")
    assert result.exit_code == 4 and result.stdout == ""
    assert result.stderr.strip() == "Error: no 2021 or 2025 commune 'nope' in the mapping"


def test_sites_add_list_formats(ccctl: Ccctl) -> None:
    result = ccctl("sites", "add", "bn-1", "--name", "Điểm cầu Bến Nghé", "--unit", "26740", "--host", "127.0.0.9",
                   "--tags", "pilot", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["unit_name"] == "Phường Bến Nghé"
    assert "added site bn-1" in result.stderr
    rows = ccctl.json("sites", "list", "--province", "ho chi minh")
    assert [r["id"] for r in rows] == ["bn-1"] and rows[0]["tags"] == ["pilot"]
    as_csv = ccctl("sites", "list", "--csv")
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert parsed[0]["name"] == "Điểm cầu Bến Nghé" and parsed[0]["province_name"] == "Hồ Chí Minh"
    table = ccctl("sites", "list", "--search", "ben nghe")
    assert "Điểm cầu Bến Nghé" in table.stdout and table.stderr == ""
    assert ccctl.json("sites", "list", "--search", "phuc xa") == []


def test_errors_are_one_line_with_exit_codes(ccctl: Ccctl) -> None:
    bad_port = ccctl("sites", "add", "x", "--name", "X", "--unit", "26740", "--ssh-port", "99999")
    assert bad_port.exit_code == 2 and bad_port.stdout == ""
    assert bad_port.stderr == "Error: bad port 99999 (1-65535)\n"
    missing = ccctl("sites", "show", "ghost")
    assert missing.exit_code == 4 and missing.stderr == "Error: no site 'ghost'\n"
    bad_province = ccctl("sites", "list", "--province", "atlantis")
    assert bad_province.exit_code == 2 and "Traceback" not in bad_province.stderr


def test_remove_needs_yes_without_a_terminal(ccctl: Ccctl) -> None:
    ccctl("sites", "generate", "--province", "ca mau")
    assert ccctl("sites", "remove").exit_code == 2  # no filter: refused
    refused = ccctl("sites", "remove", "--district", "nam can")  # no terminal, no --yes: refused
    assert refused.exit_code == 2 and "pass --yes" in refused.stderr
    assert len(ccctl.json("sites", "list", "--province", "96")) == 101
    result = ccctl("sites", "remove", "--district", "nam can", "--yes")
    assert result.exit_code == 0, result.stderr
    remaining = ccctl.json("sites", "list", "--province", "96")
    assert len(remaining) == 101 - 8 and all(r["district_name"] != "Huyện Năm Căn" for r in remaining)


def test_generate_preset_and_summary(ccctl: Ccctl) -> None:
    assert ccctl("sites", "generate", "--preset", "directive-16").exit_code == 0
    summary = ccctl.json("sites", "summary")
    assert len(summary) == 19 and sum(r["sites"] for r in summary) == 2465


def test_import_all_or_nothing(ccctl: Ccctl, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("id,name,unit_code,host,ssh_port,tags\n"
                    "a-1,Điểm cầu Phúc Xá,00001,10.0.0.1,22,\"x,y\"\n"
                    "a-2,Điểm cầu Bến Nghé,26740,box-2.example.vn,2222,\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,unit_code,host,ssh_port\n"
                   "b-1,Một,00001,10.0.0.1,22\n"
                   "b-2,Hai,99999,10.0.0.2,22\n"
                   "b-1,Ba,00001,10.0.0.3,22\n"
                   "b-4,Bốn,00001,bad host,22\n"
                   "b-5,Năm,00001,10.0.0.5,0\n", encoding="utf-8")
    result = ccctl("sites", "import", str(bad))
    assert result.exit_code == 6
    lines = result.stderr.splitlines()
    assert lines[:4] == ["line 3: unknown unit code '99999' in scheme 2021",
                         "line 4: duplicate id 'b-1' (first on line 2)",
                         "line 5: bad host 'bad host'",
                         "line 6: bad port 0 (1-65535)"]
    assert lines[-1] == "Error: 4 bad row(s); nothing imported"
    assert ccctl.json("sites", "list") == []
    dry = ccctl("sites", "import", str(good), "--dry-run")
    assert dry.exit_code == 0 and ccctl.json("sites", "list") == []
    assert ccctl("sites", "import", str(good)).exit_code == 0
    assert [r["id"] for r in ccctl.json("sites", "list")] == ["a-1", "a-2"]
    again = ccctl("sites", "import", str(good))
    assert again.exit_code == 6 and "already registered" in again.stderr


def test_import_bad_encoding_and_missing_column(ccctl: Ccctl, tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,name,unit_code\nc-1,Điểm,00001\n".encode() + b"c-2,B\xe9n Tre,00001\n")  # 0xe9: Latin-1 é
    result = ccctl("sites", "import", str(latin))
    assert result.exit_code == 6 and result.stderr.startswith("line 3: not UTF-8")
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("id,name\nc-1,X\n", encoding="utf-8")
    result = ccctl("sites", "import", str(nocol))
    assert result.exit_code == 6 and "missing column unit_code" in result.stderr
    assert ccctl.json("sites", "list") == []


def test_export_import_round_trip_csv_and_excel(ccctl: Ccctl, tmp_path: Path) -> None:
    ccctl("sites", "generate", "--province", "bac lieu")
    ccctl("sites", "edit", "2021-31825", "--host", "127.3.0.1", "--ssh-port", "2222", "--tags", "đảo,pilot",
          "--contact-name", "Trần Thị Bé", "--contact-phone", "0912 345 678", "--link-kbps", "512",
          "--tier", "low", "--disable")
    before = ccctl.json("sites", "list", "--all-columns")
    for suffix in ("csv", "xlsx"):
        path = tmp_path / f"sites.{suffix}"
        assert ccctl("sites", "export", str(path)).exit_code == 0
        assert ccctl("sites", "remove", "--all", "--yes").exit_code == 0
        result = ccctl("sites", "import", str(path))
        assert result.exit_code == 0, result.stderr
        assert ccctl.json("sites", "list", "--all-columns") == before


def test_config_show_redacts_password(ccctl: Ccctl, tmp_path: Path) -> None:
    ccctl.db_url = f"sqlite:///{tmp_path / 'x.db'}"
    rows = {r["key"]: r["value"] for r in ccctl.json("config", "show")}
    assert rows["rollcall.concurrency"] == 64 and rows["ssh.verify_host_keys"] is True
    from ccctl.config import redact_url

    assert redact_url("postgresql://ops:s3cret@db/ccctl") == "postgresql://ops:***@db/ccctl"
    assert redact_url("postgresql://ops:p@ss@db/ccctl") == "postgresql://ops:***@db/ccctl"
    assert redact_url("postgresql://db/ccctl?user=ops&password=hunter2") == "postgresql://db/ccctl?user=ops&password=***"


def test_unexpected_os_error_is_one_line(ccctl: Ccctl, tmp_path: Path) -> None:
    ccctl("sites", "generate", "--province", "bac lieu")
    result = ccctl("sites", "export", str(tmp_path / "no" / "such" / "dir" / "x.csv"))
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_acting_commands_need_a_filter_or_all(ccctl: Ccctl) -> None:
    ccctl("sites", "generate", "--province", "bac lieu")
    count = len(ccctl.json("sites", "list"))
    for query in ("%", "_", "'", "--", ".*"):
        result = ccctl("sites", "remove", "--search", query, "--yes")
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "no letter or digit" in result.stderr
        listing = ccctl("sites", "list", "--search", query)
        assert listing.exit_code == 2 and listing.stdout == ""
    assert ccctl("sites", "remove", "--yes").exit_code == 2
    both = ccctl("sites", "remove", "--all", "--province", "bac lieu", "--yes")
    assert both.exit_code == 2 and "without filters" in both.stderr
    exec_all = ccctl("exec", "--", "true")
    assert exec_all.exit_code == 2 and "--all for every site" in exec_all.stderr
    assert len(ccctl.json("sites", "list")) == count
    huge = ccctl("sites", "list", "--search", "x" * 100_000)
    assert huge.exit_code == 2 and huge.stderr == "Error: --search is 100000 characters long; at most 200\n"
    province = ccctl("sites", "list", "--province", "9")
    assert province.exit_code == 2 and province.stderr == "Error: no province matches '9'\n"
    twice = ccctl("sites", "remove", "--province", "bac lieu", "--province", "ca mau", "--yes")
    assert twice.exit_code == 2 and "given 2 times" in twice.stderr  # click would keep the last
    assert len(ccctl.json("sites", "list")) == count
    assert ccctl("sites", "remove", "--all", "--yes").exit_code == 0
    assert ccctl.json("sites", "list") == []


def test_control_characters_and_huge_values_are_refused(ccctl: Ccctl, tmp_path: Path) -> None:
    for name, reason in (("Bến\x1b[2JNghé", "name holds control character U+001B at position 4"),
                         ("bell\x07", "name holds control character U+0007 at position 5"),
                         ("x" * 1_000_000, "name is 1000000 characters long (at most 200)")):
        result = ccctl("sites", "add", "s-1", "--name", name, "--unit", "26740")
        assert result.exit_code == 2 and result.stderr == f"Error: {reason}\n"
    nul = tmp_path / "nul.csv"
    nul.write_text("id,name,unit_code,contact_name\na-1,Một\x00,00001,\nb-1,Hai,00001," + "y" * 300 + "\n",
                   encoding="utf-8")
    result = ccctl("sites", "import", str(nul))
    assert result.exit_code == 6
    assert result.stderr.splitlines()[:2] == ["line 2: name holds control character U+0000 at position 4",
                                              "line 3: contact_name is 300 characters long (at most 200)"]
    assert ccctl.json("sites", "list") == []


def test_stored_control_characters_are_escaped_in_tables(ccctl: Ccctl) -> None:
    assert ccctl("sites", "add", "s-1", "--name", "Bến Nghé", "--unit", "26740").exit_code == 0
    from ccctl.registry import open_registry

    with open_registry(ccctl.db_url) as db:  # data stored before names were checked
        db.execute("UPDATE sites SET name = ? WHERE id = 's-1'", ("Bến\x1b]0;owned\x07Nghé",))
    table = ccctl("sites", "list")
    assert table.exit_code == 0 and "\x1b" not in table.stdout and "\x07" not in table.stdout
    assert "Bến\\x1b]0;owned\\x07Nghé" in table.stdout
    assert ccctl.json("sites", "list")[0]["name"] == "Bến\x1b]0;owned\x07Nghé"  # JSON stays raw


def test_config_show_keeps_the_sqlite_path(ccctl: Ccctl, tmp_path: Path) -> None:
    ccctl.db_url = f"sqlite:///{tmp_path / 'x.db'}"
    rows = {r["key"]: r["value"] for r in ccctl.json("config", "show")}
    assert rows["db_url"] == f"sqlite:///{tmp_path / 'x.db'}" and rows["db_url"].startswith("sqlite:////")


def _real_ccctl(home: Path, *args: str, stdout: int | None = None) -> subprocess.CompletedProcess[str]:
    """The console entry point in a process of its own (umask and file descriptors are real)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCCTL_")}
    env["CCCTL_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "ccctl", *args], env=env, stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=120, check=False)


def test_home_and_registry_are_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = _real_ccctl(home, "sites", "list", "--json", stdout=subprocess.PIPE)
    assert result.returncode == 0 and result.stdout == "[]\n", result.stderr
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "registry.db").stat().st_mode & 0o777 == 0o600
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    old.chmod(0o755)
    assert _real_ccctl(old, "sites", "list", "--json", stdout=subprocess.PIPE).returncode == 0
    assert old.stat().st_mode & 0o777 == 0o750


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before ccctl writes a byte: every write is EPIPE
    try:
        result = _real_ccctl(tmp_path / "home", "config", "show", stdout=write)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")
