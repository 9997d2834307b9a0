"""Shared fixtures: real registries on SQLite files and, when CCCTL_TEST_PG is set (CI sets
it: scripts/services.sh starts a private PostgreSQL server), on PostgreSQL schemas."""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ccctl.cli import AppContext, cli
from ccctl.registry import Database, open_registry
from ccctl.registry.units import load_units

PG_URL = os.environ.get("CCCTL_TEST_PG")
NO_PG = "PostgreSQL tests need CCCTL_TEST_PG (scripts/test.sh starts a server and sets it)"


def _pg_schema_url(base: str) -> Iterator[str]:
    """A fresh schema in the test server, dropped afterwards; the URL selects it."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty registry URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        if not PG_URL:
            pytest.skip(NO_PG)
        yield from _pg_schema_url(PG_URL)


@pytest.fixture(scope="session")
def units_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite registry with both schemes of units loaded, copied by tests that need one."""
    path = tmp_path_factory.mktemp("template") / "registry.db"
    with open_registry(f"sqlite:///{path}") as db:
        load_units(db, "2021")
        load_units(db, "2025")
    return path


def _pg_database_url(base: str, name: str) -> str:
    """``base`` with its database replaced by ``name``."""
    head, sep, query = base.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}{sep}{query}"


@pytest.fixture(scope="session")
def pg_units_template() -> Iterator[str | None]:
    """A PostgreSQL database with both schemes of units loaded, the template of the tests'
    (copying it takes about 0.2 s; migrating and loading the units took about 1 s a test)."""
    if not PG_URL:
        yield None
        return
    import psycopg

    name = f"tmpl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        with open_registry(_pg_database_url(PG_URL, name)) as db:
            load_units(db, "2021")
            load_units(db, "2025")
        yield name
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def units_db_url(db_url: str, units_template: Path, pg_units_template: str | None) -> Iterator[str]:
    """A registry URL whose units are loaded (both schemes), on each backend: a copy of a
    template (on PostgreSQL a database of its own, dropped afterwards with whatever still
    holds a connection to it)."""
    if db_url.startswith("sqlite"):
        target = Path(db_url[len("sqlite:///"):])
        shutil.copy(units_template, target)
        yield db_url
        return
    import psycopg

    assert PG_URL and pg_units_template
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {pg_units_template} STRATEGY FILE_COPY")
    try:
        yield _pg_database_url(PG_URL, name)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def units_db(units_db_url: str) -> Iterator[Database]:
    """An open registry with units loaded."""
    with open_registry(units_db_url) as db:
        yield db


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every peer in this process gathers host candidates on 127.0.0.1 only (aioice would
    offer every interface of the machine)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Ccctl:
    """Runs ccctl commands through CliRunner against one home and registry."""

    def __init__(self, home: Path, db_url: str) -> None:
        self.home = home
        self.db_url = db_url

    def __call__(self, *args: str, input: str | None = None) -> Result:
        env = {"CCCTL_HOME": str(self.home), "CCCTL_DB": self.db_url}
        runner = CliRunner()
        return runner.invoke(cli, list(args), env=env, input=input, obj=AppContext())

    def json(self, *args: str) -> Any:
        """Run a command with --format json and return its parsed stdout."""
        result = self(*args, "--format", "json")
        assert result.exit_code == 0, (result.exit_code, result.stderr, result.exception)
        return json.loads(result.stdout)


@pytest.fixture
def ccctl(tmp_path: Path, units_template: Path) -> Ccctl:
    """The CLI on a SQLite registry with units loaded."""
    target = tmp_path / "registry.db"
    shutil.copy(units_template, target)
    return Ccctl(tmp_path / "home", f"sqlite:///{target}")
