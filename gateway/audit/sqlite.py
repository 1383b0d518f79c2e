"""The SQLite audit store: one file per sidecar, WAL mode, append-only, hash-chained.

Three parts, each with its own connection: ``prepare`` checks, creates or upgrades the file;
``SQLiteAuditStore`` (here) reads it (aiosqlite, for the HTTP API, the CLI and the shipper);
``SQLiteAppender`` appends to it (plain sqlite3, owned by the recorder process or by a
maintenance command). The first and the last are in ``gateway.audit.sqlite_file``, which the
recorder loads without this module. Triggers refuse UPDATE and DELETE, so no code path edits the
trail by accident; the hash chain is what shows whether anyone did on purpose.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from functools import partial
from pathlib import Path

import aiosqlite

from gateway.audit.chain import EMPTY, ChainKey, Head
from gateway.audit.fingerprint import fingerprint
from gateway.audit.json_batches import INLINE_BYTES, NotValidText, batch_sql, decode
from gateway.audit.query import AuditFilter
from gateway.audit.record import FIELDS, AuditRecord, Row
from gateway.audit.schema import (
    FIRST_ID,
    HEAD,
    INTENT_ROWS,
    INTENTS,
    RECORDS,
    TABLE,
)
from gateway.audit.sql import COMPARISONS, EQUALITY_FILTERS, STATS_EXPRESSIONS
from gateway.audit.sqlite_file import SQLiteAppender, existing, one_mode, prepare, write_lock_problem
from gateway.audit.store import AuditStoreError

READER_MMAP_BYTES = 256 * 1024 * 1024
"""Memory-mapped reads: fewer system calls when a walk reads the whole file."""

_ONE_TABLE_HEAD = f"SELECT id, hash FROM {TABLE} ORDER BY id DESC LIMIT 1"
_ONE_TABLE_FIRST_ID = f"SELECT min(id) FROM {TABLE}"
"""Before version 5 (read as it is), all records are in one table."""


# Reading -------------------------------------------------------------------------------------


class SQLiteAuditStore:
    """Reads the audit log without blocking the event loop."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        key: ChainKey | None,
        busy_timeout: float,
        present: frozenset[str],
        split: bool = True,
    ) -> None:
        self._db = db
        self.path = path
        self._key = key
        self._busy_timeout = busy_timeout
        # A reader takes a log of an older version as it is (a writer upgrades it first): the
        # fields it lacks read as null, and filtering on them matches nothing.
        self._as = {field: field if field in present else f"NULL AS {field}" for field in FIELDS}
        self._columns = ", ".join(self._as[field] for field in AuditRecord._fields)
        self._row_columns = ", ".join(self._as[field] for field in FIELDS)
        self._where = partial(_where, present=present)
        self._present = present
        self._split = split
        self._json_batches = True
        """False once this SQLite turned out to lack its JSON functions (``rows_after``)."""
        """Version 5 and later: intents and other records in two tables (``gateway.audit.schema``)."""

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        key: ChainKey | None = None,
        writable: bool = False,
        create: bool = True,
        busy_timeout: float = 5.0,
        chain_unchained: bool = False,
    ) -> SQLiteAuditStore:
        """Open for reading; ``writable`` also upgrades an older file (and, with ``create``,
        makes a new one), for whoever appends."""
        await asyncio.to_thread(
            prepare,
            path,
            key=key,
            writable=writable,
            create=create,
            busy_timeout=busy_timeout,
            chain_unchained=chain_unchained,
        )
        db = aiosqlite.connect(existing(path), uri=True)  # made (or found) by prepare: never made here
        try:
            await db
            await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            await db.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES}")
            present = frozenset(row[1] for row in await db.execute_fetchall(f"PRAGMA table_info({TABLE})"))
            split = bool(
                await db.execute_fetchall("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (INTENTS,))
            )
        except BaseException as exc:
            # Cancelled or failed half-way, the connection's thread must still end: a thread left
            # waiting keeps the process from exiting after SIGTERM.
            db.stop()
            if isinstance(exc, sqlite3.Error):
                raise AuditStoreError(f"cannot open {path}: {exc}") from None
            raise
        return cls(db, path, key, busy_timeout, present, split)

    def appender(self, *, synchronous: str = "FULL", max_bytes: int = 0) -> SQLiteAppender:
        if self._key is None:
            raise AuditStoreError(f"{self.path} was opened to read only; appending needs its chain key")
        return SQLiteAppender(
            self.path, self._key, busy_timeout=self._busy_timeout, synchronous=synchronous, max_bytes=max_bytes
        )

    async def write_problem(self) -> str | None:
        return await asyncio.to_thread(write_lock_problem, self.path)

    async def query(self, selection: AuditFilter) -> list[AuditRecord]:
        where, params = self._where(selection)
        sql, params = self._both(self._columns, where, params)
        limit: list[object] = [] if selection.limit is None else [selection.limit]
        return await self._select(f"{sql} ORDER BY time DESC, id DESC {'LIMIT ?' if limit else ''}", [*params, *limit])

    def _both(self, columns: str, where: str, params: list[object]) -> tuple[str, list[object]]:
        """One SELECT over every record: from version 5, each table queried on its own and the
        two merged (``UNION ALL`` with the caller's ORDER BY), so each uses its own index or id
        order; the view would collect and sort everything first."""
        if not self._split:
            return f"SELECT {columns} FROM {TABLE} {where}", params
        return (
            f"SELECT {columns} FROM {RECORDS} {where} UNION ALL SELECT {columns} FROM {INTENT_ROWS} {where}",
            [*params, *params],
        )

    async def get(self, record_id: int) -> AuditRecord | None:
        records = await self._select(f"SELECT {self._columns} FROM {TABLE} WHERE id = ?", [record_id])
        return records[0] if records else None

    async def head(self) -> Head:
        rows = await self._fetch(HEAD if self._split else _ONE_TABLE_HEAD, [])
        if not rows:
            return EMPTY
        record_id, digest = rows[0]
        return Head(int(record_id), str(digest))

    async def chain_mode(self) -> tuple[str, str | None]:
        """The kind of chain the file says it keeps, and its key check: the file's word only."""
        return one_mode(await self._fetch("SELECT mode, key_check FROM audit_chain", []))

    async def pruned_hash(self, record_id: int) -> str | None:
        """The hash of a removed record, as the checkpoint of the prune that ended at it gives it."""
        for record in await self._select(
            f"SELECT {self._columns} FROM {TABLE} WHERE outcome = 'pruned' ORDER BY id DESC", []
        ):
            details = json.loads(record.snapshot or "{}")
            if details.get("pruned_through_id") == record_id:
                return str(details["last_pruned_hash"])
        return None

    async def first_id(self) -> int | None:
        rows = await self._fetch(FIRST_ID if self._split else _ONE_TABLE_FIRST_ID, [])
        first = rows[0][0]
        return None if first is None else int(first)

    async def size(self) -> int:
        """Records in the log: its ids run unbroken from the first kept one to the head, so two
        index lookups tell, where count(*) would read the whole file."""
        first = await self.first_id()
        return 0 if first is None else (await self.head()).id - first + 1

    async def rows(self, selection: AuditFilter | None = None, size: int = 5000) -> AsyncGenerator[list[Row], None]:
        """Every matching record, oldest first, as plain rows in ``FIELDS`` order, a batch at a time.

        Walks over millions of records (verify, export) spend their time here: one trip to the
        reader thread per batch, and tuples as SQLite gives them (no record objects) keep it
        fast and its memory flat. ``FIELDS`` order puts ``id`` and the content first, which is
        what the chain hashes.
        """
        where, params = self._where(selection or AuditFilter())
        sql, params = self._both(self._row_columns, where, params)
        try:
            async with self._db.execute(f"{sql} ORDER BY id", params) as cursor:
                while batch := await cursor.fetchmany(size):
                    yield batch  # type: ignore[misc]
        except sqlite3.Error as exc:
            raise self._read_error(exc) from None

    async def rows_after(self, after_id: int, limit: int) -> list[Row]:
        """Up to ``limit`` records after id ``after_id``, oldest first, as ``rows`` gives them:
        the shipper's read, in the gateway's busy process, so read as JSON that SQLite builds
        (``gateway.audit.json_batches``). Records that JSON cannot carry exactly, and an SQLite
        without its JSON or math functions, are read row by row: slower, the same rows."""
        if self._json_batches:
            found = await self._rows_as_json(after_id, limit)
            if found is not None:
                return found
        async with aclosing(self.rows(AuditFilter(after_id=after_id, limit=None), size=limit)) as batches:
            async for batch in batches:
                return [tuple(row) for row in batch]
        return []

    async def _rows_as_json(self, after_id: int, limit: int) -> list[Row] | None:
        """The rows, or None where only the row walk can read them."""
        where, params = self._where(AuditFilter(after_id=after_id, limit=None))
        sql, params = self._both(self._row_columns, where, params)
        try:
            chunks = await self._db.execute_fetchall(batch_sql(f"{sql} ORDER BY id LIMIT ?"), [*params, limit])
        except sqlite3.Error as exc:
            if "no such function" in str(exc):
                self._json_batches = False
                return None
            if "too big" in str(exc):
                return None
            raise self._read_error(exc) from None
        try:
            read = list(chunks)
            if sum(len(chunk) for chunk, _ in read) < INLINE_BYTES:
                return decode(read)  # type: ignore[arg-type]
            return await asyncio.to_thread(decode, read)  # type: ignore[arg-type]
        except NotValidText as exc:
            raise self._read_error(exc) from None

    async def pending_without_outcome(self) -> list[AuditRecord]:
        return await self._last_of_their_request(("pending",))

    async def unsettled(self) -> list[AuditRecord]:
        """Calls whose fate is open: intents without an outcome, and ``unknown`` outcomes not
        settled since (a reconciled outcome shares the request id and comes later)."""
        return await self._last_of_their_request(("pending", "unknown"))

    async def _last_of_their_request(self, outcomes: tuple[str, ...]) -> list[AuditRecord]:
        marks = ", ".join("?" for _ in outcomes)
        return await self._select(
            f"SELECT {self._columns} FROM {TABLE} AS record WHERE outcome IN ({marks}) AND NOT EXISTS "
            f"(SELECT 1 FROM {TABLE} AS later WHERE later.request_id = record.request_id AND later.id > record.id) "
            "ORDER BY id",
            list(outcomes),
        )

    async def later_outcome_for_token(self, token_sha256: str, after_id: int) -> AuditRecord | None:
        """The first deleted or not_found record for a token after ``after_id``."""
        records = await self._select(
            f"SELECT {self._columns} FROM {TABLE} WHERE token_sha256 = ? AND id > ? AND outcome IN ('deleted', 'not_found') "
            "ORDER BY id LIMIT 1",
            [token_sha256, after_id],
        )
        return records[0] if records else None

    async def checkpoint_before(self, first_id: int) -> AuditRecord | None:
        """The retention checkpoint that accounts for the records before ``first_id``."""
        for record in await self._select(
            f"SELECT {self._columns} FROM {TABLE} WHERE outcome = 'pruned' ORDER BY id DESC", []
        ):
            if record.snapshot and json.loads(record.snapshot).get("pruned_through_id") == first_id - 1:
                return record
        return None

    async def stats(
        self, by: str, selection: AuditFilter, *, include_intents: bool = False
    ) -> list[tuple[str | None, int]]:
        """Record counts grouped by a field (or by day), largest first; intents left out unless asked."""
        expression = STATS_EXPRESSIONS[by] if by == "day" or by in self._present else "NULL"
        where, params = self._where(selection)
        if not include_intents:
            where = f"{where} AND outcome != 'pending'" if where else "WHERE outcome != 'pending'"
        rows = await self._fetch(
            f"SELECT {expression} AS grouped, count(*) FROM {TABLE} {where} GROUP BY grouped ORDER BY 2 DESC, 1", params
        )
        return [(None if row[0] is None else str(row[0]), int(row[1])) for row in rows]

    async def _select(self, sql: str, params: Sequence[object]) -> list[AuditRecord]:
        return [AuditRecord._make(row) for row in await self._fetch(sql, params)]

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[Row]:
        try:
            return list(await self._db.execute_fetchall(sql, params))  # type: ignore[arg-type]
        except sqlite3.Error as exc:
            raise self._read_error(exc) from None

    def _read_error(self, exc: Exception) -> AuditStoreError:
        """Why a read failed, never quoting a record: sqlite3 quotes the text it could not decode
        as UTF-8, and that text may be a secret written into an edited file."""
        reason = str(exc).split(" with text '", 1)[0] if "Could not decode to UTF-8" in str(exc) else str(exc)
        return AuditStoreError(f"cannot read {self.path}: {reason}")

    async def close(self) -> None:
        await self._db.close()


def _where(selection: AuditFilter, *, present: frozenset[str]) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    for column in EQUALITY_FILTERS:
        value = getattr(selection, column)
        if value is not None:
            clauses.append(f"{column} = ?" if column in present else "NULL = ?")
            params.append(value)
    if selection.client_id is not None:
        clauses.append("client_id IN (?, ?)")
        params.extend((fingerprint(selection.client_id), selection.client_id))
    for name, condition in COMPARISONS:
        value = getattr(selection, name)
        if value is not None:
            clauses.append(condition.format("?"))
            params.append(value)
    if selection.before is not None:
        clauses.append("(time, id) < (?, ?)")
        params.extend(selection.before)
    if selection.orgs is not None:
        clauses.append(f"org IN ({', '.join('?' * len(selection.orgs))})")
        params.extend(sorted(selection.orgs))
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
