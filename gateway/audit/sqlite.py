"""The SQLite audit store: one file per sidecar, WAL mode, append-only by trigger.

The triggers refuse UPDATE and DELETE so that no code path (ours or a careless operator's)
edits the trail by accident; they are not a defence against someone who can rewrite the file.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import aiosqlite

from gateway.audit.query import AuditFilter
from gateway.audit.record import STORED_FIELDS, AuditRecord
from gateway.audit.store import AuditStoreError
from gateway.audit.writer import BatchAppender, OpenAppender

APPLICATION_ID = 0x41475457  # "AGTW": marks the file as ours, so a foreign database is refused.
SCHEMA_VERSION = 1
TABLE = "audit_events"

_SCHEMA = f"""
CREATE TABLE {TABLE} (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    time TEXT NOT NULL,
    actor TEXT,
    client_ip TEXT,
    method TEXT NOT NULL,
    org TEXT,
    token_sha256 TEXT,
    token_hint TEXT,
    outcome TEXT NOT NULL,
    upstream_status INTEGER,
    error_code TEXT,
    latency_ms REAL,
    app TEXT,
    client_id TEXT,
    snapshot TEXT,
    token TEXT
);
CREATE INDEX {TABLE}_token ON {TABLE} (token_sha256);
CREATE INDEX {TABLE}_time ON {TABLE} (time);
CREATE INDEX {TABLE}_actor ON {TABLE} (actor, time);
CREATE INDEX {TABLE}_org ON {TABLE} (org, time);
CREATE INDEX {TABLE}_request ON {TABLE} (request_id);
CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE}
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE}
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""

SYNCHRONOUS = {"FULL": "FULL", "NORMAL": "NORMAL"}
"""The settings offered (``audit.synchronous``); the mapping keeps anything else out of the SQL."""

MAX_ROWS_PER_APPEND = 1024
"""One INSERT statement holds a whole batch (SQLite 3.32+ allows 32,766 parameters)."""
MINIMUM_SQLITE = (3, 32, 0)
WRITER_CACHE_KIB = 32 * 1024

_COLUMNS = ", ".join(AuditRecord._fields)
_EQUALITY_FILTERS = ("org", "token_sha256", "actor", "app", "client_id", "outcome")


@functools.lru_cache(maxsize=MAX_ROWS_PER_APPEND)
def _insert_statement(rows: int) -> str:
    row = f"({', '.join('?' * len(STORED_FIELDS))})"
    return f"INSERT INTO {TABLE} ({', '.join(STORED_FIELDS)}) VALUES {', '.join([row] * rows)}"


def _insert(records: Sequence[AuditRecord]) -> tuple[str, list[object]]:
    """One statement appending ``records`` in order; in autocommit mode, one transaction."""
    if not 0 < len(records) <= MAX_ROWS_PER_APPEND:
        raise ValueError(f"between 1 and {MAX_ROWS_PER_APPEND} records per append")
    return _insert_statement(len(records)), [value for record in records for value in record[:-1]]


class SQLiteAuditStore:
    """Appends are not re-entrant: one writer (see ``gateway.audit.writer``) calls them in turn.

    The connection is in autocommit mode and a batch is one multi-row INSERT, so appending a
    batch is a single statement, a single transaction, and a single trip to aiosqlite's thread
    (whose hand-offs, not SQLite, are the costly part on a busy host).
    """

    max_batch = MAX_ROWS_PER_APPEND

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(
        cls, path: Path, *, create: bool = True, busy_timeout: float = 5.0, synchronous: str = "FULL"
    ) -> SQLiteAuditStore:
        """Open (and with ``create``, initialise) the audit database at ``path``."""
        if not create and not path.is_file():
            raise AuditStoreError(f"no audit database at {path}")
        if sqlite3.sqlite_version_info < MINIMUM_SQLITE:
            raise AuditStoreError(f"the audit log needs SQLite 3.32 or newer; Python here has {sqlite3.sqlite_version}")
        try:
            db = await aiosqlite.connect(path, isolation_level=None, cached_statements=MAX_ROWS_PER_APPEND + 32)
        except sqlite3.Error as exc:
            raise AuditStoreError(f"cannot open {path}: {exc}") from None
        store = cls(db, path)
        try:
            await store._prepare(create=create, busy_timeout=busy_timeout, synchronous=synchronous)
        except BaseException:
            await db.close()
            raise
        return store

    async def _prepare(self, *, create: bool, busy_timeout: float, synchronous: str) -> None:
        try:
            await self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            application_id = await self._pragma("application_id")
            version = await self._pragma("user_version")
            if application_id == 0 and version == 0:
                async with self._db.execute("SELECT count(*) FROM sqlite_master") as cursor:
                    (objects,) = await cursor.fetchone() or (0,)
                if objects:
                    raise AuditStoreError(f"{self.path} is not a gateway audit database (it holds other tables)")
                if not create:
                    raise AuditStoreError(f"{self.path} is an empty database, not a gateway audit log")
                await self._db.executescript(f"BEGIN;{_SCHEMA}COMMIT;")
            elif application_id != APPLICATION_ID:
                raise AuditStoreError(f"{self.path} is not a gateway audit database (application_id {application_id})")
            elif version > SCHEMA_VERSION:
                raise AuditStoreError(
                    f"{self.path} has audit schema version {version}, newer than this gateway's {SCHEMA_VERSION}; upgrade the gateway"
                )
            if create:
                await self._db.execute("PRAGMA journal_mode = WAL")
                await self._db.execute(f"PRAGMA synchronous = {SYNCHRONOUS[synchronous]}")
        except sqlite3.Error as exc:
            raise AuditStoreError(f"cannot use {self.path}: {exc}") from None

    async def _pragma(self, name: str) -> int:
        async with self._db.execute(f"PRAGMA {name}") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def append(self, records: Sequence[AuditRecord]) -> None:
        statement, parameters = _insert(records)
        try:
            await self._db.execute(statement, parameters)
        except sqlite3.Error as exc:
            raise AuditStoreError(f"cannot write to {self.path}: {exc}") from None

    def batch_appender(self, *, busy_timeout: float = 5.0, synchronous: str = "FULL") -> OpenAppender:
        """For the writer thread: opens a connection of its own and appends batches on it.

        Autocommit, and a batch is one multi-row INSERT: a single statement, a single
        transaction, a single release of the GIL while SQLite writes and syncs.
        """
        path = self.path

        def open_appender() -> tuple[BatchAppender, Callable[[], None]]:
            try:
                db = sqlite3.connect(path, isolation_level=None, cached_statements=MAX_ROWS_PER_APPEND + 32)
                db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                db.execute(f"PRAGMA synchronous = {SYNCHRONOUS[synchronous]}")
                # A large page cache keeps the indexes' hot pages in memory as the log grows.
                db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            except sqlite3.Error as exc:
                raise AuditStoreError(f"cannot open {path} for writing: {exc}") from None

            def append(records: Sequence[AuditRecord]) -> None:
                statement, parameters = _insert(records)
                try:
                    db.execute(statement, parameters)
                except sqlite3.Error as exc:
                    raise AuditStoreError(f"cannot write to {path}: {exc}") from None

            return append, db.close

        return open_appender

    async def query(self, selection: AuditFilter) -> list[AuditRecord]:
        clauses: list[str] = []
        params: list[object] = []
        for column in _EQUALITY_FILTERS:
            value = getattr(selection, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        for clause, value in (
            ("time >= ?", selection.since),
            ("time < ?", selection.until),
            ("id < ?", selection.before_id),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit = "LIMIT ?" if selection.limit is not None else ""
        if selection.limit is not None:
            params.append(selection.limit)
        return await self._select(f"SELECT {_COLUMNS} FROM {TABLE} {where} ORDER BY id DESC {limit}", params)

    async def get(self, record_id: int) -> AuditRecord | None:
        records = await self._select(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ?", [record_id])
        return records[0] if records else None

    async def _select(self, sql: str, params: Sequence[object]) -> list[AuditRecord]:
        try:
            rows = await self._db.execute_fetchall(sql, params)
        except sqlite3.Error as exc:
            raise AuditStoreError(f"cannot read {self.path}: {exc}") from None
        return [AuditRecord._make(row) for row in rows]

    async def close(self) -> None:
        await self._db.close()
