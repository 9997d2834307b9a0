"""A thin connection layer over SQLite (stdlib) and PostgreSQL (psycopg 3).

SQL is written once with ``?`` placeholders and no literal ``%``; for PostgreSQL the
placeholders are rewritten. Writers take the database's write lock at the start of a
transaction (SQLite ``BEGIN IMMEDIATE`` with WAL and a busy timeout; PostgreSQL row and
advisory locks), so two ccctl processes changing the registry at once lose nothing.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ccctl.errors import RegistryError

_PLACEHOLDER = re.compile(r"\?")


class Database:
    """One open registry connection; use as a context manager or call ``close()``."""

    def __init__(self, url: str, busy_timeout_ms: int = 15000) -> None:
        self.url = url
        self._depth = 0
        if url.startswith("sqlite:///") or url == "sqlite://":
            self.dialect = "sqlite"
            path = url[len("sqlite:///"):] if url != "sqlite://" else ":memory:"
            if path != ":memory:":
                Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                self._conn: Any = sqlite3.connect(
                    path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
                )
                self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
                self._conn.execute("PRAGMA foreign_keys = ON")
            except sqlite3.Error as exc:
                raise RegistryError(f"cannot open SQLite registry {path}: {exc}") from None
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            try:
                import psycopg
            except ImportError:  # pragma: no cover - psycopg is a dependency
                raise RegistryError("PostgreSQL needs the psycopg package") from None
            try:
                self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
                self._conn.execute(f"SET lock_timeout = {int(busy_timeout_ms)}")
            except psycopg.Error as exc:
                raise RegistryError(f"cannot connect to PostgreSQL registry: {str(exc).strip().splitlines()[0]}") from None
        else:
            raise RegistryError(f"unsupported registry URL {url!r} (use sqlite:///PATH or postgresql://...)")

    def _sql(self, sql: str) -> str:
        if self.dialect == "postgresql":
            return _PLACEHOLDER.sub("%s", sql)
        return sql

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self.dialect == "postgresql":
            import psycopg

            return (psycopg.Error,)
        return (sqlite3.Error,)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        try:
            cur = self._conn.execute(self._sql(sql), tuple(params))
            return cur.rowcount
        except self._errors() as exc:
            raise RegistryError(f"registry error: {str(exc).strip().splitlines()[0]}") from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for many parameter rows."""
        try:
            if self.dialect == "postgresql":
                with self._conn.cursor() as cur:
                    cur.executemany(self._sql(sql), [tuple(r) for r in rows])
            else:
                self._conn.executemany(sql, rows)
        except self._errors() as exc:
            raise RegistryError(f"registry error: {str(exc).strip().splitlines()[0]}") from None

    def copy_rows(self, table: str, columns: Sequence[str], types: Sequence[str],
                  rows: Iterable[Sequence[Any]]) -> None:
        """Load rows into a table with PostgreSQL's ``COPY ... FROM STDIN`` in binary form
        (``types`` are the columns' PostgreSQL type names, e.g. ``text``, ``float8``): one
        stream, no statement per row. PostgreSQL only; inside the caller's transaction, if any.
        ``table`` and ``columns`` are the caller's own identifiers, never user input."""
        if self.dialect != "postgresql":
            raise RegistryError("COPY is a PostgreSQL bulk path; SQLite takes executemany")
        try:
            with self._conn.cursor() as cur:
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(list(types))
                    for row in rows:
                        copy.write_row(row)
        except self._errors() as exc:
            raise RegistryError(f"registry error: {str(exc).strip().splitlines()[0]}") from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query; return its rows as tuples."""
        try:
            cur = self._conn.execute(self._sql(sql), tuple(params))
            return list(cur.fetchall())
        except self._errors() as exc:
            raise RegistryError(f"registry error: {str(exc).strip().splitlines()[0]}") from None

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a query; return its rows as dicts keyed by column name."""
        try:
            cur = self._conn.execute(self._sql(sql), tuple(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except self._errors() as exc:
            raise RegistryError(f"registry error: {str(exc).strip().splitlines()[0]}") from None

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction holding the write lock from its first statement.

        Nested use joins the outer transaction. On any exception everything is rolled back.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        begin = "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN"
        self.execute(begin)
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._depth = 0
            self.execute("COMMIT")

    def lock(self, name: str) -> None:
        """Serialise writers of one kind inside the current transaction (PostgreSQL)."""
        if self.dialect == "postgresql":
            self.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (name,))

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
