"""Migration statements written per dialect (``PerDialect``), on a real SQLite file and a
real PostgreSQL schema: each runs on its own dialect only, the version moves on both, and a
step that fails halfway leaves the registry as it was."""

from __future__ import annotations

import pytest

from ccctl.errors import RegistryError
from ccctl.registry import Database, open_registry, schema
from ccctl.registry.schema import LATEST, PerDialect, current_version, migrate


def _tables(db: Database) -> set[str]:
    if db.dialect == "sqlite":
        return {r[0] for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {r[0] for r in db.query("SELECT table_name FROM information_schema.tables "
                                   "WHERE table_schema = current_schema()")}


def _fillfactor(db: Database) -> str | None:
    """The feed value table's fillfactor on PostgreSQL (None: the default)."""
    rows = db.query("SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relname = 'feed_values'")
    options = dict(o.split("=", 1) for o in rows[0][0] or [])
    return options.get("fillfactor")


def test_migration_9_sets_the_fillfactor_on_postgresql_only(db_url: str) -> None:
    with Database(db_url) as db:
        assert migrate(db, target=8) == 8
        if db.dialect == "postgresql":
            assert _fillfactor(db) is None
        before = _tables(db)
    with open_registry(db_url) as db:  # an older registry opens and takes step 9
        assert current_version(db) == LATEST >= 9
        assert _tables(db) == before
        if db.dialect == "postgresql":
            assert _fillfactor(db) == "50"
        db.execute("INSERT INTO feeds (name, source, every_s, format, level, scheme, alerts, options, created_at) "
                   "VALUES ('f', '-', 60, 'csv', 'province', '2021', '[]', '{}', 0)")
        db.execute("INSERT INTO feed_values (feed, indicator, unit_code, day, value) VALUES ('f', 'n', '96', "
                   "'2021-10-15', 1)")
        assert db.query("SELECT value FROM feed_values")[0][0] == 1


@pytest.fixture
def extra_step(monkeypatch: pytest.MonkeyPatch) -> list[schema.Statement]:
    """One more migration step after the shipped ones, filled in by the test."""
    step: list[schema.Statement] = []
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, step])
    monkeypatch.setattr(schema, "LATEST", LATEST + 1)
    return step


def test_a_per_dialect_statement_runs_on_its_dialect_only(db_url: str, extra_step: list[schema.Statement]) -> None:
    extra_step += ["CREATE TABLE on_both (x INTEGER)",
                   PerDialect(sqlite="CREATE TABLE on_sqlite (x INTEGER)", postgresql="CREATE TABLE on_pg (x {real})"),
                   PerDialect(postgresql="CREATE INDEX on_both_x ON on_both (x)")]
    with open_registry(db_url) as db:
        assert migrate(db, target=LATEST + 1) == LATEST + 1
        assert current_version(db) == LATEST + 1
        made = _tables(db) & {"on_both", "on_sqlite", "on_pg"}
        assert made == ({"on_both", "on_sqlite"} if db.dialect == "sqlite" else {"on_both", "on_pg"})


def test_a_step_failing_in_a_per_dialect_statement_changes_nothing(db_url: str,
                                                                   extra_step: list[schema.Statement]) -> None:
    extra_step += ["CREATE TABLE made_first (x INTEGER)",
                   PerDialect(sqlite="ALTER TABLE no_such_table ADD COLUMN y INTEGER",
                              postgresql="ALTER TABLE no_such_table SET (fillfactor = 50)")]
    with open_registry(db_url) as db:
        with pytest.raises(RegistryError, match="no_such_table"):
            migrate(db, target=LATEST + 1)
        assert current_version(db) == LATEST
        assert "made_first" not in _tables(db)


def test_a_per_dialect_statement_needs_one_dialect_and_knows_them() -> None:
    with pytest.raises(ValueError, match="at least one dialect"):
        PerDialect()
    with pytest.raises(RegistryError, match="mysql"):
        PerDialect(sqlite="SELECT 1").for_dialect("mysql")
    assert schema.statements(9, "sqlite") == []
    assert schema.statements(9, "postgresql") == ["ALTER TABLE feed_values SET (fillfactor = 50)"]
    assert schema.statements(5, "sqlite") != schema.statements(5, "postgresql")  # {real}, {serial} filled
