"""The registry's schema as numbered migrations, applied in order on open.

A plain versioned scheme: ``meta.schema_version`` holds the last applied step; each step
is a list of statements valid on SQLite and PostgreSQL (``{serial}`` and ``{real}`` are
filled per dialect), or of ``PerDialect`` statements where the two differ (a storage
parameter PostgreSQL has and SQLite has not). A registry made by an older ccctl opens in a
newer one; one made by a newer ccctl is refused rather than damaged.
"""

from __future__ import annotations

from dataclasses import dataclass

from ccctl.errors import RegistryError
from ccctl.registry.db import Database

DIALECTS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class PerDialect:
    """One migration statement written per dialect; a dialect left ``None`` runs nothing
    (``PerDialect(postgresql="ALTER TABLE ... SET (fillfactor = 50)")`` is PostgreSQL only).
    The version still moves on every dialect, so one number means one schema step."""

    sqlite: str | None = None
    postgresql: str | None = None

    def __post_init__(self) -> None:
        if self.sqlite is None and self.postgresql is None:
            raise ValueError("a PerDialect statement needs a statement for at least one dialect")

    def for_dialect(self, dialect: str) -> str | None:
        """The statement to run on ``dialect``, or None."""
        if dialect not in DIALECTS:
            raise RegistryError(f"no migration statements for dialect {dialect!r}")
        return self.sqlite if dialect == "sqlite" else self.postgresql


Statement = str | PerDialect

MIGRATIONS: list[list[Statement]] = [
    # 1: administrative units, their 2021 -> 2025 mapping, and sites.
    [
        """CREATE TABLE units (
            scheme TEXT NOT NULL, level TEXT NOT NULL, code TEXT NOT NULL,
            name TEXT NOT NULL, full_name TEXT NOT NULL, unit_type TEXT NOT NULL,
            parent_code TEXT, province_code TEXT NOT NULL, district_code TEXT,
            fold TEXT NOT NULL,
            PRIMARY KEY (scheme, level, code))""",
        "CREATE INDEX units_by_code ON units (scheme, code)",
        """CREATE TABLE unit_map (
            old_code TEXT NOT NULL, new_code TEXT NOT NULL, is_default INTEGER NOT NULL,
            PRIMARY KEY (old_code, new_code))""",
        "CREATE INDEX unit_map_new ON unit_map (new_code)",
        """CREATE TABLE sites (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, scheme TEXT NOT NULL, unit_code TEXT NOT NULL,
            province_code TEXT NOT NULL, district_code TEXT,
            host TEXT, ssh_port INTEGER NOT NULL, ssh_user TEXT NOT NULL,
            host_key TEXT, key_path TEXT, tier TEXT NOT NULL, link_kbps INTEGER,
            contact_name TEXT, contact_phone TEXT, tags TEXT NOT NULL,
            enabled INTEGER NOT NULL, simulated INTEGER NOT NULL,
            fold TEXT NOT NULL, created_at {real} NOT NULL, updated_at {real} NOT NULL)""",
        "CREATE INDEX sites_by_province ON sites (scheme, province_code)",
        "CREATE INDEX sites_by_district ON sites (scheme, district_code)",
        "CREATE INDEX sites_by_unit ON sites (unit_code)",
    ],
    # 2: roll-call history, streamed in as results arrive.
    [
        """CREATE TABLE rollcall_runs (
            id {serial}, started_at {real} NOT NULL, finished_at {real},
            status TEXT NOT NULL, params TEXT NOT NULL, summary TEXT)""",
        """CREATE TABLE rollcall_results (
            run_id INTEGER NOT NULL REFERENCES rollcall_runs (id) ON DELETE CASCADE,
            site_id TEXT NOT NULL, state TEXT NOT NULL, hard INTEGER NOT NULL,
            flapping INTEGER NOT NULL, stage TEXT NOT NULL, reason TEXT NOT NULL,
            rtt_ms {real}, attempts INTEGER NOT NULL, facts TEXT NOT NULL,
            started_at {real} NOT NULL, duration_ms {real} NOT NULL,
            PRIMARY KEY (run_id, site_id))""",
        "CREATE INDEX rollcall_results_site ON rollcall_results (site_id, run_id)",
    ],
    # 3: broadcasts, their events (join, leave, tier, floor) and per-site token generations.
    [
        """CREATE TABLE broadcasts (
            id {serial}, title TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL,
            started_at {real} NOT NULL, ended_at {real}, floor_site TEXT, params TEXT NOT NULL)""",
        """CREATE TABLE broadcast_events (
            id {serial}, broadcast_id INTEGER NOT NULL REFERENCES broadcasts (id) ON DELETE CASCADE,
            ts {real} NOT NULL, site_id TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL)""",
        "CREATE INDEX broadcast_events_by_broadcast ON broadcast_events (broadcast_id, site_id, ts)",
        """CREATE TABLE site_tokens (
            site_id TEXT PRIMARY KEY, generation INTEGER NOT NULL)""",
    ],
    # 4: meetings: their audience (kept as planned), pre-checks claimed by one tick, events.
    [
        """CREATE TABLE meetings (
            id {serial}, title TEXT NOT NULL, starts_at {real} NOT NULL, tz TEXT NOT NULL,
            source TEXT NOT NULL, record INTEGER NOT NULL, status TEXT NOT NULL, filters TEXT NOT NULL,
            broadcast_id INTEGER, recording TEXT, created_at {real} NOT NULL, updated_at {real} NOT NULL)""",
        "CREATE INDEX meetings_by_start ON meetings (starts_at)",
        """CREATE TABLE meeting_sites (
            meeting_id INTEGER NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
            site_id TEXT NOT NULL, site_name TEXT NOT NULL, province_code TEXT,
            PRIMARY KEY (meeting_id, site_id))""",
        """CREATE TABLE meeting_checks (
            id {serial}, meeting_id INTEGER NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
            offset_s INTEGER NOT NULL, due_at {real} NOT NULL, status TEXT NOT NULL,
            claimed_by TEXT, started_at {real}, finished_at {real}, late_s {real}, run_id INTEGER,
            summary TEXT, note TEXT)""",
        "CREATE INDEX meeting_checks_due ON meeting_checks (status, due_at)",
        """CREATE TABLE meeting_events (
            id {serial}, meeting_id INTEGER NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
            ts {real} NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL)""",
        "CREATE INDEX meeting_events_by_meeting ON meeting_events (meeting_id, ts)",
    ],
    # 5: data feeds from the national platforms, their history per indicator, unit and
    # day, and their events (pulls, failures, alerts).
    [
        """CREATE TABLE feeds (
            name TEXT PRIMARY KEY, source TEXT NOT NULL, every_s {real} NOT NULL,
            format TEXT NOT NULL, level TEXT NOT NULL, scheme TEXT NOT NULL, unit_column TEXT,
            alerts TEXT NOT NULL, options TEXT NOT NULL, created_at {real} NOT NULL,
            last_pull_at {real}, last_ok_at {real}, last_error TEXT, last_error_at {real},
            etag TEXT, last_modified TEXT, cursor TEXT, newest_day TEXT, row_count INTEGER)""",
        """CREATE TABLE feed_values (
            feed TEXT NOT NULL REFERENCES feeds (name) ON DELETE CASCADE,
            indicator TEXT NOT NULL, unit_code TEXT NOT NULL, day TEXT NOT NULL,
            value {real} NOT NULL,
            PRIMARY KEY (feed, indicator, unit_code, day))""",
        "CREATE INDEX feed_values_by_day ON feed_values (feed, indicator, day)",
        """CREATE TABLE feed_events (
            id {serial}, feed TEXT NOT NULL, ts {real} NOT NULL, kind TEXT NOT NULL,
            unit_code TEXT, indicator TEXT, detail TEXT NOT NULL)""",
        "CREATE INDEX feed_events_by_feed ON feed_events (feed, ts)",
    ],
    # 6: edges: media servers ccctl feeds and drives. The admin key is never stored: only the
    # path of the file holding it. ``region`` is a JSON site filter; ``capacity`` in viewers.
    [
        """CREATE TABLE edges (
            name TEXT PRIMARY KEY, kind TEXT NOT NULL, api_url TEXT NOT NULL,
            admin_key_file TEXT NOT NULL, region TEXT NOT NULL, capacity INTEGER,
            created_at {real} NOT NULL, updated_at {real} NOT NULL)""",
    ],
    # 7: edges: the URL of Janus's admin API (its viewers, read by ccctl; NULL: none) and
    # whether RTP to the edge is SRTP (NULL: on unless the API's host is a loopback address).
    [
        "ALTER TABLE edges ADD COLUMN admin_url TEXT",
        "ALTER TABLE edges ADD COLUMN srtp INTEGER",
    ],
    # 8: a broadcast's audience, when it is not every enabled site (``params.audience`` says
    # which): the sites allowed to join it and counted in its attendance.
    [
        """CREATE TABLE broadcast_sites (
            broadcast_id INTEGER NOT NULL REFERENCES broadcasts (id) ON DELETE CASCADE,
            site_id TEXT NOT NULL,
            PRIMARY KEY (broadcast_id, site_id))""",
    ],
    # 9: PostgreSQL keeps half of each new page of feed values free, so a re-pull that
    # changes a day's values rewrites them in place of their page (HOT: no index entry
    # written), about half the cost of updating every value. Pages already written keep their
    # fill until rewritten (new days, the ones re-pulled, go to new pages); nothing is
    # rewritten at migration. SQLite has no such setting: the step is a version bump there.
    [
        PerDialect(postgresql="ALTER TABLE feed_values SET (fillfactor = 50)"),
    ],
]

LATEST = len(MIGRATIONS)


def statements(step: int, dialect: str) -> list[str]:
    """The SQL migration ``step`` (1-based) runs on ``dialect``, placeholders filled."""
    out = []
    for statement in MIGRATIONS[step - 1]:
        sql = statement.for_dialect(dialect) if isinstance(statement, PerDialect) else statement
        if sql is not None:
            out.append(_fill(sql, dialect))
    return out


def _fill(sql: str, dialect: str) -> str:
    if dialect == "postgresql":
        return sql.replace("{serial}", "BIGSERIAL PRIMARY KEY").replace("{real}", "DOUBLE PRECISION")
    return sql.replace("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT").replace("{real}", "REAL")


def current_version(db: Database) -> int:
    """The schema version of an open registry (0 when empty)."""
    if db.dialect == "sqlite":
        exists = db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
    else:
        exists = db.query("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'meta'")
    if not exists:
        return 0
    rows = db.query("SELECT value FROM meta WHERE key = 'schema_version'")
    return int(rows[0][0]) if rows else 0


def migrate(db: Database, target: int = LATEST) -> int:
    """Apply every missing step up to ``target``; return the version now in force."""
    if current_version(db) == target:
        return target
    with db.transaction():
        db.lock("ccctl-migrate")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        version = current_version(db)
        if version > LATEST:
            raise RegistryError(
                f"registry schema version {version} is newer than this ccctl knows ({LATEST}); upgrade ccctl"
            )
        for step in range(version, target):
            for sql in statements(step + 1, db.dialect):
                db.execute(sql)
        if target > version:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(target),),
            )
        return max(version, target)
