"""The SQLite audit store: one file per sidecar, WAL mode, append-only, hash-chained.

Three parts, each with its own connection: ``prepare`` checks, creates or upgrades the file;
``SQLiteAuditStore`` reads it (aiosqlite, for the HTTP API and the CLI); ``SQLiteAppender``
appends to it (plain sqlite3, owned by the recorder process or by a maintenance command). Triggers
refuse UPDATE and DELETE, so no code path edits the trail by accident; the hash chain is what
shows whether anyone did on purpose.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing, contextmanager, suppress
from functools import partial
from operator import itemgetter
from pathlib import Path
from urllib.parse import quote

import aiosqlite
import orjson

from gateway.audit import records
from gateway.audit.chain import EMPTY, ChainKey, Head, chained
from gateway.audit.fingerprint import fingerprint
from gateway.audit.query import AuditFilter
from gateway.audit.record import FIELDS, AuditRecord, Row
from gateway.audit.schema import (
    APPLICATION_ID,
    FIRST_ID,
    HEAD,
    INTENT_ROWS,
    INTENTS,
    MIGRATIONS,
    OLDEST_READABLE_VERSION,
    PRUNE_LIFTED,
    RECORDS,
    SCHEMA_VERSION,
    TABLE,
    create,
    restore_prune_rules,
)
from gateway.audit.sql import COMPARISONS, EQUALITY_FILTERS, STATS_EXPRESSIONS
from gateway.audit.store import AuditRecordError, AuditStoreError, ChainModeMismatch, PrunePlan, PruneResult

MAX_ROWS_PER_APPEND = 1024
"""One INSERT statement holds a whole batch (SQLite 3.32+ allows 32,766 parameters)."""
MINIMUM_SQLITE = (3, 32, 0)
WRITER_CACHE_KIB = 32 * 1024
VACUUM_PAGES = 256
"""Pages given back to the disk per step after a prune: 1 MiB of WAL at a time."""
READER_MMAP_BYTES = 256 * 1024 * 1024
"""Memory-mapped reads: fewer system calls when a walk reads the whole file."""
SYNCHRONOUS = {"FULL": "FULL", "NORMAL": "NORMAL"}
"""The settings offered (``audit.synchronous``); the mapping keeps anything else out of the SQL."""

_COLUMNS = ", ".join(AuditRecord._fields)
NUMERIC_FIELDS = ("upstream_status", "latency_ms")
"""The columns besides ``id`` that may hold a real number (a REAL column, and an INTEGER one that
keeps a real it cannot convert): ``rows_after`` sends their reals as exact text."""
_first = itemgetter(0)
_EXACT_REAL = "CASE typeof({0}) WHEN 'real' THEN json_array(printf('%!.20e', {0})) ELSE {0} END"
"""SQLite's JSON writes a real with 15 digits, which loses some doubles; 21 digits of ``printf``
give every one back exactly. Wrapped in a one-element array, so a string stays a string."""
_ONE_TABLE_HEAD = f"SELECT id, hash FROM {TABLE} ORDER BY id DESC LIMIT 1"
_ONE_TABLE_FIRST_ID = f"SELECT min(id) FROM {TABLE}"
"""Before version 5 (read as it is), all records are in one table."""


# Opening -------------------------------------------------------------------------------------


def existing(path: Path) -> str:
    """An SQLite URI that opens ``path`` only if it exists (``mode=rw``: never creates it)."""
    return f"file:{quote(str(path.absolute()))}?mode=rw"


def _connect(path: Path, busy_timeout: float, *, create: bool = True) -> sqlite3.Connection:
    """A connection to ``path``; without ``create``, one that never makes the file (SQLite's
    ``mode=rw``), should it have gone since it was looked for."""
    if sqlite3.sqlite_version_info < MINIMUM_SQLITE:
        raise AuditStoreError(f"the audit log needs SQLite 3.32 or newer; Python here has {sqlite3.sqlite_version}")
    try:
        db = sqlite3.connect(
            path if create else existing(path),
            isolation_level=None,
            cached_statements=MAX_ROWS_PER_APPEND + 32,
            uri=not create,
        )
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    except sqlite3.Error as exc:
        raise AuditStoreError(f"cannot open {path}: {exc}") from None
    return db


def prepare(
    path: Path,
    *,
    key: ChainKey | None,
    writable: bool,
    busy_timeout: float = 5.0,
    create: bool = True,
    chain_unchained: bool = False,
) -> None:
    """Check that ``path`` is our audit log; for a writer, upgrade an older one (and, with
    ``create``, make a new one: the gateway does, maintenance commands must find one).

    ``key`` is the chain key the caller will append or verify with; it must be the one the log
    was started with. Readers that neither append nor verify pass None.
    """
    may_create = writable and create
    if not may_create and not path.is_file():
        raise AuditStoreError(f"no audit database at {path}")
    db = _connect(path, busy_timeout, create=may_create)
    try:
        if writable and not may_create and db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            # Nothing is written to a file (not even WAL mode) before it is known to be a log.
            _check_and_upgrade(db, path, None, may_create=False, writable=False)
            raise AuditStoreError(f"{path} is not a gateway audit database")
        if writable:
            # Takes effect only on a new file (before its tables): pages that prune frees can then
            # be given back to the disk (``fold_wal``), where older files only reuse them.
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE" if writable else "BEGIN")
        try:
            _check_and_upgrade(db, path, key, may_create, writable, chain_unchained)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise AuditStoreError(f"cannot use {path}: {exc}") from None
    finally:
        db.close()


def _check_and_upgrade(
    db: sqlite3.Connection,
    path: Path,
    key: ChainKey | None,
    may_create: bool,
    writable: bool,
    chain_unchained: bool = False,
) -> None:
    """``may_create``: an empty file (0 bytes, or a database with nothing in it) may become a new
    log; otherwise it is refused, as a missing one is: a maintenance command never makes a log
    of a file that was not one."""
    application_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if application_id == 0 and version == 0:
        if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise AuditStoreError(f"{path} is not a gateway audit database (it holds other tables)")
        if not may_create or key is None:
            raise AuditStoreError(f"{path} is an empty database, not a gateway audit log")
        create(db, key)
        return
    if application_id != APPLICATION_ID:
        raise AuditStoreError(f"{path} is not a gateway audit database (application_id {application_id})")
    if version > SCHEMA_VERSION:
        raise AuditStoreError(
            f"{path} has audit schema version {version}, newer than this gateway's {SCHEMA_VERSION}; upgrade the gateway"
        )
    if version < SCHEMA_VERSION and (writable or version < OLDEST_READABLE_VERSION):
        if not writable or key is None:
            upgrade = "`gateway audit upgrade`" if version == 1 else "`gateway serve` on it once"
            raise AuditStoreError(
                f"{path} has audit schema version {version}; run {upgrade} to upgrade it to {SCHEMA_VERSION}"
            )
        if version == 1 and not chain_unchained:
            # Chaining a log that had none vouches for whatever it holds now. Whoever can write the
            # file could rebuild an edited keyed log as version 1 and let the next start sign it.
            raise AuditStoreError(
                f"{path} has audit schema version 1, from before the hash chain: chaining it now would vouch for "
                "records no one can check. If it really is that old, chain it on purpose with `gateway audit "
                "upgrade`; if it should not be, it was rewritten"
            )
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](db, key)
            version += 1
    if key is not None:
        mode, check = chain_mode(db)
        if mode != key.mode:
            given = "a chain key" if key.secret else "no chain key"
            raise ChainModeMismatch(
                f"{path} keeps a {mode} chain, but {given} is configured (audit.chain_key_env / chain_key_file)"
            )
        if check != key.check:
            raise ChainModeMismatch(f"{path} was written with another chain key than the one configured")


def chain_mode(db: sqlite3.Connection) -> tuple[str, str | None]:
    """The kind of chain the file says it keeps, and its key check (None without a key)."""
    return _one_mode(db.execute("SELECT mode, key_check FROM audit_chain").fetchall())


def _one_mode(rows: Sequence[Row]) -> tuple[str, str | None]:
    if len(rows) != 1 or not isinstance(rows[0][0], str) or not isinstance(rows[0][1], (str, type(None))):
        raise ChainModeMismatch(
            "the log's description of its chain (table audit_chain) is missing or not one row "
            "of text: the file was damaged or tampered with"
        )
    return rows[0][0], rows[0][1]


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
        return await asyncio.to_thread(_write_lock_problem, self.path)

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
        return _one_mode(await self._fetch("SELECT mode, key_check FROM audit_chain", []))

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
            raise AuditStoreError(f"cannot read {self.path}: {exc}") from None

    async def rows_after(self, after_id: int, limit: int) -> list[Row]:
        """Up to ``limit`` records after id ``after_id``, oldest first, as ``rows`` gives them.

        This is the shipper's read, and it runs in the gateway's process: SQLite builds the
        whole batch as one JSON value, so the read is one step of one statement. Read row by row
        it takes a step per row, and each step waits for the GIL that a busy event loop holds:
        1,000 rows took 0.1 to 2.7 s at full load, against 25 to 45 ms read as one value.
        """
        if self._json_batches:
            try:
                return await self._rows_as_json(after_id, limit)
            except AuditStoreError as exc:
                if "no such function" not in str(exc):
                    raise
                self._json_batches = False  # an SQLite built without JSON: the same rows, a step each
        async with aclosing(self.rows(AuditFilter(after_id=after_id, limit=None), size=limit)) as batches:
            async for batch in batches:
                return [tuple(row) for row in batch]
        return []

    async def _rows_as_json(self, after_id: int, limit: int) -> list[Row]:
        where, params = self._where(AuditFilter(after_id=after_id, limit=None))
        sql, params = self._both(self._row_columns, where, params)
        values = ", ".join(_EXACT_REAL.format(field) if field in NUMERIC_FIELDS else field for field in FIELDS)
        found = await self._fetch(
            # As bytes: orjson checks the UTF-8 itself, where sqlite3's own decoding error would quote the whole batch.
            f"SELECT CAST(json_group_array(json_array({values})) AS BLOB) FROM ({sql} ORDER BY id LIMIT ?)",
            [*params, limit],
        )
        try:
            batch = orjson.loads(found[0][0])
        except orjson.JSONDecodeError as exc:
            raise AuditStoreError(f"cannot read {self.path}: a record is not valid text ({exc})") from None
        numeric = [FIELDS.index(field) for field in NUMERIC_FIELDS]
        rows: list[Row] = []
        for row in batch:
            for index in numeric:
                if type(row[index]) is list:
                    row[index] = float(row[index][0])
            rows.append(tuple(row))
        rows.sort(key=_first)  # in id order already: SQLite aggregates its ordered subquery in order
        return rows

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
            raise AuditStoreError(f"cannot read {self.path}: {exc}") from None

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


def _write_lock_problem(database: Path) -> str | None:
    """Take the write lock and change a page on a connection of its own, then roll back.

    Taking the lock alone is not enough: a file that cannot be written (read-only, immutable)
    still grants it, and only a change shows the refusal. Rewriting the schema version with
    its own value is the smallest change, and the rollback leaves the file as it was.
    """
    if not database.is_file():
        return f"{database} does not exist"
    try:
        db = sqlite3.connect(database, timeout=0.2, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.execute(f"PRAGMA user_version = {int(version)}")
            db.execute("ROLLBACK")
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"cannot write to {database}: {exc}"
    return None


# Appending -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=MAX_ROWS_PER_APPEND)
def _insert_statement(rows: int) -> str:
    row = f"({', '.join('?' * len(AuditRecord._fields))})"
    return f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES {', '.join([row] * rows)}"


_RECORD_ERRORS = (TypeError, ValueError, OverflowError, sqlite3.InterfaceError)
"""What a record the store cannot take raises (text that is not valid Unicode, an integer past
64 bits): the fault of one record, not of the store."""


class _FileIdentity:
    """Which files a connection has open, to notice that the path now names another one, or none.

    A connection keeps writing to the file it opened even after it is removed or replaced; the
    records would then vanish with the unlinked inode. The database and its WAL are checked
    (a stat each) before every append, so nothing is committed to a file no one can read back.
    """

    def __init__(self, path: Path) -> None:
        self._paths = (path, path.with_name(path.name + "-wal"))
        self._known: list[tuple[int, int] | None] = [self._stat(name) for name in self._paths]

    @staticmethod
    def _stat(path: Path) -> tuple[int, int] | None:
        try:
            status = os.stat(path)
        except FileNotFoundError:
            return None
        return status.st_dev, status.st_ino

    def problem(self) -> str | None:
        """Why the open files are no longer the ones at their paths; None while they are."""
        for index, path in enumerate(self._paths):
            now, known = self._stat(path), self._known[index]
            if known is None:
                self._known[index] = now  # the WAL appears with the first write
                continue
            if now != known:
                change = "removed" if now is None else "replaced by another file"
                return (
                    f"{path} was {change} while the gateway had it open; nothing more is written to it. "
                    "Put the audit log back in place (or set audit.database to the new one) and restart the gateway"
                )
        return None


class SQLiteAppender:
    """Appends chained records: link the batch after the head, insert, commit.

    The batch is one multi-row INSERT with explicit ids, into the ``audit_events`` view, which
    puts each record in its table. Once this connection knows the head (it wrote it), that
    INSERT alone is the transaction, in autocommit: one statement instead of four (BEGIN, head,
    INSERT, COMMIT). The file refuses a record that does not take the next id after its head
    and link to it (``gateway.audit.schema.linear_trigger``): if another process appended or
    pruned meanwhile, the INSERT fails whole, and the batch is linked again after the real head
    inside an IMMEDIATE transaction. Either way the chain stays linear and ids never go back.
    """

    max_batch = MAX_ROWS_PER_APPEND

    def __init__(
        self, path: Path, key: ChainKey, *, busy_timeout: float = 5.0, synchronous: str = "FULL", max_bytes: int = 0
    ) -> None:
        """``max_bytes`` (0: none) caps the file as a full disk would: writes past it fail."""
        self.path = path
        self._key = key
        self._head: Head | None = None
        """The head this connection last wrote; None until it has written, or after a conflict."""
        self._db = _connect(path, busy_timeout, create=False)
        try:
            self._db.execute(f"PRAGMA synchronous = {SYNCHRONOUS[synchronous]}")
            if max_bytes:
                page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
                self._db.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")
            # A large page cache keeps the indexes' hot pages in memory as the log grows.
            self._db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            # A first read opens the WAL (and makes it, if it is not there yet), so the files
            # this connection will write to are known before anything is written.
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            self._db.close()
            raise AuditStoreError(f"cannot open {path} for writing: {exc}") from None
        self._files = _FileIdentity(path)

    def problem(self) -> str | None:
        """Why appending cannot work now (the file was removed or replaced), for readiness."""
        return self._files.problem()

    def append(self, records: Sequence[AuditRecord]) -> Head:
        if not 0 < len(records) <= MAX_ROWS_PER_APPEND:
            raise ValueError(f"between 1 and {MAX_ROWS_PER_APPEND} records per append")
        problem = self._files.problem()
        if problem is not None:
            raise AuditStoreError(problem)
        if self._head is not None:
            try:
                linked, head = chained(records, self._head, self._key)
                self._db.execute(_insert_statement(len(linked)), [value for record in linked for value in record])
                self._head = head
                return head
            except sqlite3.IntegrityError:
                self._head = None  # another process appended or pruned: link after the real head below
            except _RECORD_ERRORS as exc:
                raise AuditRecordError(f"a record cannot be stored: {type(exc).__name__}: {exc}") from None
            except sqlite3.Error as exc:
                raise AuditStoreError(f"cannot write to {self.path}: {exc}") from None
        try:
            with self._transaction("write to"):
                head = self._append(records)
        except _RECORD_ERRORS as exc:
            raise AuditRecordError(f"a record cannot be stored: {type(exc).__name__}: {exc}") from None
        self._head = head  # only once committed: a rolled-back head must not be built on
        return head

    def _append(self, records: Sequence[AuditRecord], after: Head | None = None) -> Head:
        """Inside a transaction: link after ``after``, or after the head as the file has it."""
        if after is None:
            row = self._db.execute(HEAD).fetchone()
            after = Head(*row) if row else EMPTY
        linked, head = chained(records, after, self._key)
        self._db.execute(_insert_statement(len(linked)), [value for record in linked for value in record])
        return head

    def plan_prune(self, before: str) -> PrunePlan:
        """What ``prune(before)`` would remove now, removing nothing."""
        self._db.execute("BEGIN")
        try:
            return self._plan(before)
        finally:
            self._db.execute("ROLLBACK")

    def _plan(self, before: str) -> PrunePlan:
        (first,) = self._db.execute(FIRST_ID).fetchone()
        if first is None:
            return PrunePlan(before, None, None, 0, 0)
        last = self._db.execute(HEAD).fetchone()[0]
        kept_from = self._db.execute(f"SELECT min(id) FROM {TABLE} WHERE time >= ?", (before,)).fetchone()[0]
        last_removed = (kept_from if kept_from is not None else last + 1) - 1
        if last_removed < first:
            return PrunePlan(before, first, None, 0, last - first + 1)
        oldest, newest = (
            self._db.execute(f"SELECT time FROM {TABLE} WHERE id = ?", (record_id,)).fetchone()[0]
            for record_id in (first, last_removed)
        )
        return PrunePlan(before, first, last_removed, last_removed - first + 1, last - last_removed, oldest, newest)

    def prune(self, before: str, *, actor: str, client_ip: str | None = None) -> PruneResult:
        """Remove the records at the start of the log older than ``before``, and say so.

        The removed records' last hash goes into a ``pruned`` checkpoint record appended to the
        chain (who, when, how many), from which ``verify`` starts. Records are removed from the
        start only, so what remains is still one unbroken chain. Removing comes first, so the
        pages it frees hold the checkpoint even when the file is at ``max_size_mb``.
        """
        problem = self._files.problem()
        if problem is not None:
            raise AuditStoreError(problem)
        with self._transaction("prune"):
            plan = self._plan(before)
            if plan.last_removed is None:
                return PruneResult(0, None)
            # The head before removing anything: even when every record goes, the checkpoint
            # takes the next id and links to the last hash, so ids never repeat and the chain
            # (and any head anchored outside) goes on.
            newest = Head(*self._db.execute(HEAD).fetchone())
            (removed_hash,) = self._db.execute(
                f"SELECT hash FROM {TABLE} WHERE id = ?", (plan.last_removed,)
            ).fetchone()
            # The rules against deleting and against appending off the head (which, with every
            # record removed, would be the genesis) are lifted only inside this transaction.
            for trigger in PRUNE_LIFTED:
                self._db.execute(f"DROP TRIGGER {trigger}")
            removed = sum(
                self._db.execute(f"DELETE FROM {table} WHERE id <= ?", (plan.last_removed,)).rowcount
                for table in (INTENTS, RECORDS)
            )
            details = {
                "pruned_through_id": plan.last_removed,
                "pruned_count": removed,
                "last_pruned_hash": removed_hash,
                "before": before,
            }
            checkpoint = records.checkpoint(actor, client_ip, details)
            head = self._append([checkpoint], after=newest)
            restore_prune_rules(self._db)
            result = PruneResult(removed, checkpoint._replace(id=head.id, hash=head.hash))
        self._head = head
        return result

    def fold_wal(self) -> None:
        """Give back to the disk the room a prune freed: the pages it emptied (a log made since
        ``auto_vacuum`` was set; an older one only reuses them), a batch at a time so the WAL
        stays small on a full disk, and the WAL itself. Best effort: a reader in the middle of
        a read only delays it to the next automatic checkpoint."""
        with suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            while self._db.execute("PRAGMA freelist_count").fetchone()[0]:
                if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # incremental
                    break
                self._db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextmanager
    def _transaction(self, action: str) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; on any failure, ROLLBACK and keep nothing."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):  # SQLite may already have rolled back (disk full)
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.InterfaceError:
            raise  # a record's value SQLite cannot bind: the caller's to report (_RECORD_ERRORS)
        except sqlite3.Error as exc:
            raise AuditStoreError(f"cannot {action} {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()
