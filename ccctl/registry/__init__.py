"""The registry: administrative units, sites and history, on SQLite or PostgreSQL."""

from __future__ import annotations

from ccctl.registry.db import Database
from ccctl.registry.schema import migrate


def open_registry(url: str, busy_timeout_ms: int = 15000) -> Database:
    """Open the registry at ``url`` and bring its schema up to date."""
    db = Database(url, busy_timeout_ms)
    try:
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


__all__ = ["Database", "open_registry"]
