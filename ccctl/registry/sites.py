"""Sites (bridge points): validation, storage, the shared site filters, generation.

A site is stored with its province and district codes denormalised from the units table
and a folded search text, so every filter is a plain indexed SQL condition.
"""

from __future__ import annotations

import ipaddress
import re
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from ccctl.errors import NotFound, UsageError
from ccctl.models import SCHEMES, TIERS, Site
from ccctl.registry.db import Database
from ccctl.registry.units import LIKE_ESCAPE, like_contains, require_scheme, resolve
from ccctl.textfold import fold

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_PUBKEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
                     r"sk-ecdsa-sha2-nistp256@openssh\.com)\s+[A-Za-z0-9+/]+={0,3}(\s+\S.*)?$")
_PHONE = re.compile(r"^\+?[0-9 ().-]{3,24}$")

# Columns of the sites table, in the order of import/export files.
FIELDS = ("id", "name", "scheme", "unit_code", "host", "ssh_port", "ssh_user", "host_key",
          "key_path", "tier", "link_kbps", "contact_name", "contact_phone", "tags", "enabled",
          "simulated")
EDITABLE = frozenset(FIELDS) - {"id"}

MAX_LINK_KBPS = 100_000_000  # 100 Gbit/s; the column is a 32-bit integer on PostgreSQL

DIRECTIVE_16 = ("70", "72", "74", "75", "77", "79", "80", "82", "83", "84", "86", "87", "89",
                "91", "92", "93", "94", "95", "96")


MAX_FILTER_LEN = 200
MAX_FILTER_IDS = 10_000
MAX_SEARCH_WORDS = 16


def shorten(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters, for one-line error messages."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 5]}...{text[-2:]}"


def check_host(host: str) -> str:
    """Return the host if it is an IP address or a valid DNS name; else raise ValueError."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_HOST_LABEL.match(p) for p in name.split(".")) \
            or name.split(".")[-1].isdigit():
        raise ValueError(f"bad host {shorten(host)}")
    return host


# Longest text each field takes (characters); others take DEFAULT_MAX_LEN. A name is a line of
# a display, a key path a path (PATH_MAX), a host key one OpenSSH public key line.
MAX_LEN = {"name": 200, "contact_name": 200, "key_path": 4096, "host_key": 8192, "tags": 2000}
DEFAULT_MAX_LEN = 256
MAX_TAGS = 32
MAX_TAG_LEN = 64
# C0 and C1 controls, DEL, line/paragraph separators and bidi overrides: nothing a name needs, and
# what would drive or garble the operator's terminal. Surrogates (undecodable bytes of an argument)
# and noncharacters (U+FFFE, U+FDD0...) are no text either, and an xlsx cannot hold them.
_NONCHARACTERS = "".join(chr(plane << 16 | low) for plane in range(17) for low in (0xFFFE, 0xFFFF))
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufdd0-\ufdef"
                      f"{_NONCHARACTERS}]")


def _check_text(key: str, value: Any) -> None:
    """ValueError if a text field is too long or holds a control character."""
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_text(key, item)
        return
    if not isinstance(value, str):
        return
    limit = MAX_LEN.get(key, DEFAULT_MAX_LEN)
    if len(value) > limit:
        raise ValueError(f"{key} is {len(value)} characters long (at most {limit})")
    bad = _CONTROL.search(value)
    if bad:
        what = "control character" if unicodedata.category(bad.group()) == "Cc" else "non-text character"
        raise ValueError(f"{key} holds {what} U+{ord(bad.group()):04X} at position {bad.start() + 1}")


def check_site_values(values: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise the fields of a site; raise ValueError with one short reason."""
    out = dict(values)
    for key, value in out.items():
        _check_text(key, value)
    if "id" in out:
        if not ID_RE.match(str(out["id"] or "")):
            raise ValueError(f"bad id {shorten(out['id'])} (letters, digits, . _ -, at most 64)")
    if "name" in out:
        out["name"] = str(out["name"] or "").strip()
        if not out["name"]:
            raise ValueError("empty name")
    if "scheme" in out and out["scheme"] not in SCHEMES:
        raise ValueError(f"bad scheme {shorten(out['scheme'])} (2021 or 2025)")
    if out.get("host") in ("", None):
        out["host"] = None
    elif "host" in out:
        out["host"] = check_host(str(out["host"]).strip())
    if "ssh_port" in out:
        try:
            port = int(str(out["ssh_port"]).strip() or 22)
        except ValueError:
            raise ValueError(f"bad port {shorten(out['ssh_port'])}") from None
        if not 1 <= port <= 65535:
            raise ValueError(f"bad port {port} (1-65535)")
        out["ssh_port"] = port
    if "ssh_user" in out:
        out["ssh_user"] = str(out["ssh_user"] or "").strip() or "ccctl"
        if not re.match(r"^[a-z_][a-z0-9_.-]{0,31}$", out["ssh_user"]):
            raise ValueError(f"bad ssh user {shorten(out['ssh_user'])}")
    for key in ("host_key", "key_path"):
        if key in out:
            text = str(out[key] or "").strip()
            if "PRIVATE KEY" in text:
                raise ValueError(f"{key} holds a private key; give the path of the key file instead")
            out[key] = text or None
    if out.get("host_key") and not (out["host_key"].startswith("known_hosts:") or _PUBKEY.match(out["host_key"])):
        raise ValueError("bad host_key (an OpenSSH public key line or known_hosts:PATH)")
    if "tier" in out:
        out["tier"] = str(out["tier"] or "high").strip().lower()
        if out["tier"] not in TIERS:
            raise ValueError(f"bad tier {shorten(out['tier'])} (high, low or audio)")
    if "link_kbps" in out:
        text = str(out["link_kbps"] if out["link_kbps"] is not None else "").strip()
        try:
            out["link_kbps"] = int(text) if text else None
        except ValueError:
            raise ValueError(f"bad link_kbps {shorten(text)}") from None
        if out["link_kbps"] is not None and not 0 < out["link_kbps"] <= MAX_LINK_KBPS:
            raise ValueError(f"link_kbps must be between 1 and {MAX_LINK_KBPS}")
    if "contact_phone" in out:
        phone = str(out["contact_phone"] or "").strip()
        if phone and not _PHONE.match(phone):
            raise ValueError(f"bad phone {shorten(phone)}")
        out["contact_phone"] = phone or None
    if "contact_name" in out:
        out["contact_name"] = str(out["contact_name"] or "").strip() or None
    if "tags" in out:
        tags = out["tags"]
        if isinstance(tags, str):
            tags = tags.split(",")
        out["tags"] = sorted({t.strip() for t in tags if t and t.strip()})
        if any("," in t for t in out["tags"]):
            raise ValueError("a tag cannot hold a comma")
        if len(out["tags"]) > MAX_TAGS or any(len(t) > MAX_TAG_LEN for t in out["tags"]):
            raise ValueError(f"at most {MAX_TAGS} tags of at most {MAX_TAG_LEN} characters")
    for key in ("enabled", "simulated"):
        if key in out:
            out[key] = parse_bool(out[key], key)
    return out


def parse_bool(value: Any, name: str) -> bool:
    """Booleans as files write them: yes/no, true/false, 1/0."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise ValueError(f"bad {name} {shorten(value)} (yes or no)")


@dataclass
class SiteFilter:
    """The site filters every command that acts on sites takes."""

    ids: tuple[str, ...] = ()
    province: str | None = None
    district: str | None = None
    unit: str | None = None
    tag: str | None = None
    tier: str | None = None
    search: str | None = None
    enabled_only: bool = False

    def is_empty(self) -> bool:
        """True when no filter narrows the selection (``enabled_only`` is not a choice of sites)."""
        return not any(getattr(self, f.name) for f in fields(self) if f.name != "enabled_only")

    def check(self) -> None:
        """UsageError for a filter that would select nothing meaningful, or too long to be one.

        A given filter must narrow: ``--search '%'`` folds to no word at all and used to select
        every site. Lengths are bounded so that a huge value is a usage error, not a database one.
        """
        if len(self.ids) > MAX_FILTER_IDS:
            raise UsageError(f"too many --site ids ({len(self.ids)}; at most {MAX_FILTER_IDS})")
        for site_id in self.ids:
            if not site_id.strip() or len(site_id) > 64:
                raise UsageError(f"bad site id {shorten(site_id)} (1 to 64 characters)")
        for name in ("province", "district", "unit", "tag", "tier", "search"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) > MAX_FILTER_LEN:
                raise UsageError(f"--{name} is {len(value)} characters long; at most {MAX_FILTER_LEN}")
            empty = not fold(value) if name in ("province", "district", "search") else not value.strip()
            if empty:
                raise UsageError(f"--{name} {shorten(value)} has no letter or digit to match")
        if self.search and len(fold(self.search).split()) > MAX_SEARCH_WORDS:
            raise UsageError(f"--search has more than {MAX_SEARCH_WORDS} words")


_SELECT = (
    "SELECT s.id, s.name, s.scheme, s.unit_code, s.host, s.ssh_port, s.ssh_user, s.host_key, "
    "s.key_path, s.tier, s.link_kbps, s.contact_name, s.contact_phone, s.tags, s.enabled, "
    "s.simulated, s.province_code, s.district_code, p.name AS province_name, "
    "d.full_name AS district_name, u.full_name AS unit_name FROM sites s "
    "LEFT JOIN units u ON u.scheme = s.scheme AND u.code = s.unit_code "
    "LEFT JOIN units p ON p.scheme = s.scheme AND p.level = 'province' AND p.code = s.province_code "
    "LEFT JOIN units d ON d.scheme = s.scheme AND d.level = 'district' AND d.code = s.district_code"
)


def _where(db: Database, flt: SiteFilter) -> tuple[str, list[Any]]:
    """SQL conditions and parameters for a filter; names resolve through the units table."""
    flt.check()
    where: list[str] = []
    params: list[Any] = []
    if flt.ids:
        where.append(f"s.id IN ({', '.join('?' for _ in flt.ids)})")
        params += list(flt.ids)
    for level, query in (("province", flt.province), ("district", flt.district)):
        if query:
            units = resolve(db, level, query)
            if not units:
                raise UsageError(f"no {level} matches {query!r}")
            where.append("(" + " OR ".join(f"(s.scheme = ? AND s.{level}_code = ?)" for _ in units) + ")")
            for u in units:
                params += [u["scheme"], u["code"]]
    if flt.unit:
        where.append("s.unit_code = ?")
        params.append(flt.unit.strip())
    if flt.tag:
        where.append(f"s.tags LIKE ? {LIKE_ESCAPE}")
        params.append(like_contains(f",{flt.tag.strip()},"))
    if flt.tier:
        if flt.tier not in TIERS:
            raise UsageError(f"bad tier {flt.tier!r} (high, low or audio)")
        where.append("s.tier = ?")
        params.append(flt.tier)
    if flt.search:
        for word in fold(flt.search).split():
            where.append(f"s.fold LIKE ? {LIKE_ESCAPE}")
            params.append(like_contains(word))
    if flt.enabled_only:
        where.append("s.enabled = 1")
    return (" WHERE " + " AND ".join(where)) if where else "", params


def _to_site(row: dict[str, Any]) -> Site:
    row = dict(row)
    row["tags"] = [t for t in (row["tags"] or "").split(",") if t]
    row["enabled"] = bool(row["enabled"])
    row["simulated"] = bool(row["simulated"])
    return Site(**row)


def select_sites(db: Database, flt: SiteFilter | None = None) -> list[Site]:
    """The sites a filter selects, ordered by province, district, unit and id."""
    where, params = _where(db, flt or SiteFilter())
    rows = db.query_dicts(f"{_SELECT}{where} ORDER BY s.scheme, s.province_code, s.district_code, s.unit_code, s.id", params)
    return [_to_site(r) for r in rows]


def get_site(db: Database, site_id: str) -> Site:
    """One site by id, or NotFound."""
    rows = db.query_dicts(f"{_SELECT} WHERE s.id = ?", (site_id,))
    if not rows:
        raise NotFound(f"no site {site_id!r}")
    return _to_site(rows[0])


_SITE_FIELDS = tuple(f.name for f in fields(Site))


def site_record(site: Site) -> dict[str, Any]:
    """A site as the plain dict listings print and files carry (tags as a list)."""
    data = {name: getattr(site, name) for name in _SITE_FIELDS}
    data["tags"] = list(site.tags)
    return data


class UnitIndex:
    """Units by (scheme, code), loaded once for validating many rows."""

    def __init__(self, db: Database) -> None:
        self.units: dict[tuple[str, str], tuple[str, str | None, str, str | None, str | None]] = {}
        names = {(s, c): n for s, c, n in db.query("SELECT scheme, code, name FROM units WHERE level != 'commune'")}
        for scheme, code, province, district, full in db.query(
            "SELECT scheme, code, province_code, district_code, full_name FROM units"
        ):
            self.units[(scheme, code)] = (province, district, full, names.get((scheme, province)),
                                          names.get((scheme, district)) if district else None)

    def locate(self, scheme: str, code: str) -> tuple[str, str | None, str, str | None, str | None]:
        """(province code, district code, unit name, province name, district name); ValueError if unknown."""
        try:
            return self.units[(scheme, code)]
        except KeyError:
            raise ValueError(f"unknown unit code {code!r} in scheme {scheme}") from None


def _row_for_db(values: dict[str, Any], index: UnitIndex, now: float) -> tuple[Any, ...]:
    province, district, unit_name, province_name, district_name = index.locate(values["scheme"], values["unit_code"])
    tags = values.get("tags") or []
    text = " ".join(str(x) for x in (values["id"], values["name"], unit_name, district_name, province_name,
                                     values.get("host"), " ".join(tags), values.get("contact_name")) if x)
    return (values["id"], values["name"], values["scheme"], values["unit_code"], province, district,
            values.get("host"), values["ssh_port"], values["ssh_user"], values.get("host_key"),
            values.get("key_path"), values["tier"], values.get("link_kbps"), values.get("contact_name"),
            values.get("contact_phone"), f",{','.join(tags)}," if tags else "", int(values["enabled"]),
            int(values["simulated"]), fold(text), now, now)


_INSERT = (
    "INSERT INTO sites (id, name, scheme, unit_code, province_code, district_code, host, ssh_port, "
    "ssh_user, host_key, key_path, tier, link_kbps, contact_name, contact_phone, tags, enabled, "
    "simulated, fold, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

DEFAULTS: dict[str, Any] = {"scheme": "2021", "ssh_port": 22, "ssh_user": "ccctl", "tier": "high",
                            "tags": [], "enabled": True, "simulated": False}


def complete(values: dict[str, Any]) -> dict[str, Any]:
    """Fill the defaults of absent or blank fields, then validate."""
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in values.items() if v is not None and v != ""})
    for key in FIELDS:
        merged.setdefault(key, None)
    if not merged.get("unit_code"):
        raise ValueError("missing unit_code")
    merged["unit_code"] = str(merged["unit_code"]).strip()
    return check_site_values(merged)


def insert_sites(db: Database, sites: Iterable[dict[str, Any]], replace: bool = False) -> int:
    """Insert validated site dicts in one transaction (all or nothing); return the count."""
    index = UnitIndex(db)
    now = time.time()
    rows = [_row_for_db(s, index, now) for s in sites]
    with db.transaction():
        if replace:
            db.executemany("DELETE FROM sites WHERE id = ?", [(r[0],) for r in rows])
        db.executemany(_INSERT, rows)
    return len(rows)


def add_site(db: Database, values: dict[str, Any]) -> Site:
    """Register one site; raise UsageError on bad values or an id already taken."""
    try:
        site = complete(values)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    require_scheme(db, site["scheme"])
    if db.query("SELECT 1 FROM sites WHERE id = ?", (site["id"],)):
        raise UsageError(f"site {site['id']!r} already exists")
    try:
        insert_sites(db, [site])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return get_site(db, site["id"])


def edit_site(db: Database, site_id: str, changes: dict[str, Any]) -> Site:
    """Change some fields of one site, atomically; return the site as stored."""
    unknown = set(changes) - EDITABLE
    if unknown:
        raise UsageError(f"cannot edit {', '.join(sorted(unknown))}")
    with db.transaction():
        current = site_record(get_site(db, site_id))
        merged = {k: current[k] for k in FIELDS}
        merged.update(changes)
        try:
            values = check_site_values(merged)
            row = _row_for_db(values, UnitIndex(db), time.time())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        created = db.query("SELECT created_at FROM sites WHERE id = ?", (site_id,))[0][0]
        db.execute("DELETE FROM sites WHERE id = ?", (site_id,))
        db.execute(_INSERT, (*row[:-2], created, row[-1]))
    return get_site(db, site_id)


def update_endpoints(db: Database, endpoints: dict[str, dict[str, Any]]) -> None:
    """Set host, port, host key, key path and the simulated mark of many sites at once."""
    now = time.time()
    with db.transaction():
        db.executemany(
            "UPDATE sites SET host = ?, ssh_port = ?, ssh_user = ?, host_key = ?, key_path = ?, "
            "simulated = ?, updated_at = ? WHERE id = ?",
            [(e["host"], e["ssh_port"], e["ssh_user"], e.get("host_key"), e.get("key_path"),
              int(e.get("simulated", False)), now, sid) for sid, e in endpoints.items()],
        )


def remove_sites(db: Database, ids: Iterable[str]) -> int:
    """Delete sites by id in one transaction; return how many went."""
    ids = list(ids)
    with db.transaction():
        db.executemany("DELETE FROM sites WHERE id = ?", [(i,) for i in ids])
    return len(ids)


def generate_sites(db: Database, scheme: str, provinces: Iterable[str]) -> tuple[int, int]:
    """One site per commune of the given provinces; return (created, already there)."""
    require_scheme(db, scheme)
    codes: list[str] = []
    for p in provinces:
        matches = resolve(db, "province", p, scheme)
        if len(matches) != 1:
            raise UsageError(f"no province matches {p!r} in scheme {scheme}" if not matches
                             else f"{p!r} matches several provinces; give its code")
        codes.append(matches[0]["code"])
    communes = db.query(
        f"SELECT code, full_name FROM units WHERE scheme = ? AND level = 'commune' "
        f"AND province_code IN ({', '.join('?' for _ in codes)}) ORDER BY code",
        [scheme, *codes],
    )
    existing = {r[0] for r in db.query("SELECT id FROM sites WHERE scheme = ?", (scheme,))}
    new = [complete({"id": f"{scheme}-{code}", "name": f"Điểm cầu {name}", "scheme": scheme, "unit_code": code})
           for code, name in communes if f"{scheme}-{code}" not in existing]
    insert_sites(db, new)
    return len(new), len(communes) - len(new)


def site_summary(db: Database, by: str = "province") -> list[dict[str, Any]]:
    """Sites per province (or district): counts, enabled and with an endpoint."""
    if by not in ("province", "district"):
        raise UsageError("--by takes province or district")
    key = "s.province_code" if by == "province" else "s.district_code"
    return db.query_dicts(
        f"SELECT s.scheme, {key} AS code, MAX(u.full_name) AS name, COUNT(*) AS sites, "
        f"SUM(s.enabled) AS enabled, SUM(CASE WHEN s.host IS NULL THEN 0 ELSE 1 END) AS with_endpoint "
        f"FROM sites s LEFT JOIN units u ON u.scheme = s.scheme AND u.level = ? AND u.code = {key} "
        f"GROUP BY s.scheme, {key} ORDER BY s.scheme, {key}",
        (by,),
    )
