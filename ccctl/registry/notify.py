"""Changes announced by PostgreSQL: triggers that ``NOTIFY`` on every write a change stream
follows, and a listener that hears them on its own connection.

Several ccctl processes (servers, CLI runs, cron pulls) may share one PostgreSQL registry; a
server's change stream must learn of another's writes without reading the registry on a timer.
A row trigger on each table the stream follows (roll-call results, broadcast events, feed
events: pulls and alerts; meeting events: pre-checks done or failed, starts) calls
``pg_notify`` in the writer's own transaction, so the notification is sent when, and only if,
the write commits, whichever program wrote it. The payload is small (``{"table": ..., "id":
...}``: the run for a roll-call result, the row's id otherwise) and identical payloads of one
transaction are folded into one by PostgreSQL, so a run of 10,599 results announces itself once
per commit; the listener reads the rows itself. The channel is named after the registry's
schema, so two registries in one database never hear each other. SQLite has no such thing: its
readers keep reading on a timer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from ccctl.registry.db import Database

log = logging.getLogger(__name__)

TRIGGER = "ccctl_notify_v1"
FUNCTION = "ccctl_notify_change"
#: The tables whose writes are announced, and the column named in the payload.
WATCHED: dict[str, str] = {
    "rollcall_results": "run_id",
    "broadcast_events": "id",
    "feed_events": "id",
    "meeting_events": "id",  # a meeting's pre-check done or failed, its start, ...
}
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # reconnect delays, the last one repeated
# The channel of a schema: a fixed-length name (a channel is an identifier, at most 63 bytes).
_CHANNEL = "'ccctl_' || left(md5({schema}), 16)"


def install_triggers(db: Database) -> bool:
    """Make sure every watched table announces its writes (PostgreSQL; idempotent, safe when
    several processes start at once); True when the triggers had to be created."""
    if db.dialect != "postgresql":
        return False
    present = db.query("SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                       "WHERE t.tgname = ? AND c.relnamespace = current_schema()::regnamespace",
                       (TRIGGER,))[0][0]
    if present == len(WATCHED):
        return False
    with db.transaction():
        db.lock("ccctl-notify")
        db.execute(
            f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $body$ "
            f"BEGIN PERFORM pg_notify({_CHANNEL.format(schema='TG_TABLE_SCHEMA')}, "
            "json_build_object('table', TG_TABLE_NAME, 'id', to_jsonb(NEW) -> TG_ARGV[0])::text); "
            "RETURN NULL; END $body$")
        for table, column in WATCHED.items():
            db.execute(f"CREATE OR REPLACE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}('{column}')")
    return True


#: What :func:`events_after` reads: the tables of events with an id, and their columns.
EVENT_TABLES: dict[str, str] = {
    "feed_events": "id, feed, ts, kind, unit_code, indicator, detail",
    "meeting_events": "id, meeting_id, ts, kind, detail",
}


def last_event_id(db: Database, table: str) -> int:
    """The newest id of an event table (0 when empty)."""
    if table not in EVENT_TABLES:
        raise ValueError(table)
    return int(db.query(f"SELECT COALESCE(MAX(id), 0) FROM {table}")[0][0])


def events_after(db: Database, table: str, after_id: int, limit: int = 5000) -> list[dict[str, Any]]:
    """Rows of an event table (``EVENT_TABLES``) with an id above ``after_id``, oldest first."""
    if table not in EVENT_TABLES:
        raise ValueError(table)
    return db.query_dicts(f"SELECT {EVENT_TABLES[table]} FROM {table} WHERE id > ? ORDER BY id LIMIT ?",
                          (after_id, limit))


def channel(db: Database) -> str:
    """The channel this registry's triggers notify on."""
    return str(db.query(f"SELECT {_CHANNEL.format(schema='current_schema()')}")[0][0])


class Listener:
    """Hears the registry's change notifications on a connection of its own and calls
    ``on_change`` (from the event loop) for each one, and once after every (re)connection,
    since a write made while it was not listening was announced to nobody. A lost connection
    (a restarted server, a killed backend) is opened again after a short delay, for ever,
    until :meth:`close`; meanwhile ``listening`` is clear, and the change feed reads on a
    timer (as on SQLite) until it is set again."""

    def __init__(self, url: str, on_change: Callable[[dict[str, Any] | None], None]) -> None:
        self.url = url
        self.on_change = on_change
        self.connections = 0  # how many times it has (re)connected and listens
        self.backend_pid: int | None = None  # the server process of the listening connection
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening in the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    @staticmethod
    def _prepare(url: str) -> str:
        from ccctl.registry import open_registry

        with open_registry(url, 5000) as db:
            install_triggers(db)
            return channel(db)

    async def _run(self) -> None:
        import psycopg

        from ccctl.errors import CcctlError

        failures = 0
        while True:
            try:
                name = await asyncio.to_thread(self._prepare, self.url)
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=10)
                try:
                    await conn.execute(f'LISTEN "{name}"')
                    self.backend_pid = conn.info.backend_pid
                    self.connections += 1
                    self.listening.set()
                    failures = 0
                    self.on_change(None)  # what was written while nobody listened
                    async for note in conn.notifies():
                        try:
                            payload = json.loads(note.payload)
                        except ValueError:
                            payload = None
                        self.on_change(payload if isinstance(payload, dict) else None)
                    raise OSError("the notifications ended")  # the connection closed without an error
                finally:
                    self.listening.clear()
                    await conn.close()
            except (psycopg.Error, CcctlError, OSError) as exc:
                delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
                log.warning("registry listener: %s; listening again in %.1f s",
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, delay)
                await asyncio.sleep(delay)  # a reconnection delay, not a synchronisation
