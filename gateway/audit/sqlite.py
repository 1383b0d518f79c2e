"""The SQLite audit store: one file per sidecar, WAL mode, append-only, hash-chained.

Three parts, each with its own connection: ``prepare`` checks, creates or upgrades the file;
``SQLiteAuditStore`` reads it (aiosqlite, for the HTTP API and the CLI); ``SQLiteAppender``
appends to it (plain sqlite3, owned by the writer thread or by a maintenance command). Triggers
refuse UPDATE and DELETE, so no code path edits the trail by accident; the hash chain is what
shows whether anyone did on purpose.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from gateway.audit.chain import EMPTY, ChainKey, Head, chained
from gateway.audit.query import AuditFilter
from gateway.audit.record import FIELDS, AuditRecord, Outcome, Row, utc_timestamp
from gateway.audit.schema import APPLICATION_ID, MIGRATIONS, NO_DELETE_TRIGGER, SCHEMA_VERSION, TABLE, create
from gateway.audit.store import AuditStoreError

MAX_ROWS_PER_APPEND = 1024
"""One INSERT statement holds a whole batch (SQLite 3.32+ allows 32,766 parameters)."""
MINIMUM_SQLITE = (3, 32, 0)
WRITER_CACHE_KIB = 32 * 1024
READER_MMAP_BYTES = 256 * 1024 * 1024
"""Memory-mapped reads: fewer system calls when a walk reads the whole file."""
SYNCHRONOUS = {"FULL": "FULL", "NORMAL": "NORMAL"}
"""The settings offered (``audit.synchronous``); the mapping keeps anything else out of the SQL."""

_COLUMNS = ", ".join(AuditRecord._fields)
_ROW_COLUMNS = ", ".join(FIELDS)
_EQUALITY_FILTERS = ("org", "token_sha256", "actor", "app", "client_id", "outcome")
_HEAD = f"SELECT id, hash FROM {TABLE} ORDER BY id DESC LIMIT 1"


# Opening -------------------------------------------------------------------------------------


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    if sqlite3.sqlite_version_info < MINIMUM_SQLITE:
        raise AuditStoreError(f"the audit log needs SQLite 3.32 or newer; Python here has {sqlite3.sqlite_version}")
    try:
        db = sqlite3.connect(path, isolation_level=None, cached_statements=MAX_ROWS_PER_APPEND + 32)
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    except sqlite3.Error as exc:
        raise AuditStoreError(f"cannot open {path}: {exc}") from None
    return db


def prepare(path: Path, *, key: ChainKey | None, writable: bool, busy_timeout: float = 5.0) -> None:
    """Check that ``path`` is our audit log; for a writer, create it or upgrade an older one.

    ``key`` is the chain key the caller will append or verify with; it must be the one the log
    was started with. Readers that neither append nor verify pass None.
    """
    if not writable and not path.is_file():
        raise AuditStoreError(f"no audit database at {path}")
    db = _connect(path, busy_timeout)
    try:
        if writable:
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE" if writable else "BEGIN")
        try:
            _check_and_upgrade(db, path, key, writable)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise AuditStoreError(f"cannot use {path}: {exc}") from None
    finally:
        db.close()


def _check_and_upgrade(db: sqlite3.Connection, path: Path, key: ChainKey | None, writable: bool) -> None:
    application_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if application_id == 0 and version == 0:
        if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise AuditStoreError(f"{path} is not a gateway audit database (it holds other tables)")
        if not writable or key is None:
            raise AuditStoreError(f"{path} is an empty database, not a gateway audit log")
        create(db, key)
        return
    if application_id != APPLICATION_ID:
        raise AuditStoreError(f"{path} is not a gateway audit database (application_id {application_id})")
    if version > SCHEMA_VERSION:
        raise AuditStoreError(
            f"{path} has audit schema version {version}, newer than this gateway's {SCHEMA_VERSION}; upgrade the gateway"
        )
    if version < SCHEMA_VERSION:
        if not writable or key is None:
            raise AuditStoreError(
                f"{path} has audit schema version {version}; start `gateway serve` on it once to upgrade it to {SCHEMA_VERSION}"
            )
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](db, key)
            version += 1
    if key is not None:
        mode, check = db.execute("SELECT mode, key_check FROM audit_chain").fetchone()
        if mode != key.mode:
            given = "a chain key" if key.secret else "no chain key"
            raise AuditStoreError(f"{path} keeps a {mode} chain, but {given} is configured (audit.chain_key_env / chain_key_file)")
        if check != key.check:
            raise AuditStoreError(f"{path} was written with another chain key than the one configured")


# Reading -------------------------------------------------------------------------------------


class SQLiteAuditStore:
    """Reads the audit log without blocking the event loop."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(
        cls, path: Path, *, key: ChainKey | None = None, writable: bool = False, busy_timeout: float = 5.0
    ) -> SQLiteAuditStore:
        """Open for reading; ``writable`` also creates or upgrades the file, for the gateway."""
        await asyncio.to_thread(prepare, path, key=key, writable=writable, busy_timeout=busy_timeout)
        try:
            db = await aiosqlite.connect(path)
            await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            await db.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES}")
        except sqlite3.Error as exc:
            raise AuditStoreError(f"cannot open {path}: {exc}") from None
        return cls(db, path)

    async def query(self, selection: AuditFilter) -> list[AuditRecord]:
        where, params = _where(selection)
        order = "ORDER BY time DESC, id DESC"
        limit = ""
        if selection.limit is not None:
            limit, params = "LIMIT ?", [*params, selection.limit]
        return await self._select(f"SELECT {_COLUMNS} FROM {TABLE} {where} {order} {limit}", params)

    async def get(self, record_id: int) -> AuditRecord | None:
        records = await self._select(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ?", [record_id])
        return records[0] if records else None

    async def head(self) -> Head:
        rows = await self._fetch(_HEAD, [])
        if not rows:
            return EMPTY
        record_id, digest = rows[0]
        return Head(int(record_id), str(digest))

    async def first_id(self) -> int | None:
        rows = await self._fetch(f"SELECT min(id) FROM {TABLE}", [])
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
        where, params = _where(selection or AuditFilter())
        try:
            async with self._db.execute(f"SELECT {_ROW_COLUMNS} FROM {TABLE} {where} ORDER BY id", params) as cursor:
                while batch := await cursor.fetchmany(size):
                    yield batch  # type: ignore[misc]
        except sqlite3.Error as exc:
            raise AuditStoreError(f"cannot read {self.path}: {exc}") from None

    async def pending_without_outcome(self) -> list[AuditRecord]:
        return await self._last_of_their_request(("pending",))

    async def unsettled(self) -> list[AuditRecord]:
        """Calls whose fate is open: intents without an outcome, and ``unknown`` outcomes not
        settled since (a reconciled outcome shares the request id and comes later)."""
        return await self._last_of_their_request(("pending", "unknown"))

    async def _last_of_their_request(self, outcomes: tuple[str, ...]) -> list[AuditRecord]:
        marks = ", ".join("?" for _ in outcomes)
        return await self._select(
            f"SELECT {_COLUMNS} FROM {TABLE} AS record WHERE outcome IN ({marks}) AND NOT EXISTS "
            f"(SELECT 1 FROM {TABLE} AS later WHERE later.request_id = record.request_id AND later.id > record.id) "
            "ORDER BY id",
            list(outcomes),
        )

    async def later_outcome_for_token(self, token_sha256: str, after_id: int) -> AuditRecord | None:
        """The first deleted or not_found record for a token after ``after_id``."""
        records = await self._select(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE token_sha256 = ? AND id > ? AND outcome IN ('deleted', 'not_found') "
            "ORDER BY id LIMIT 1",
            [token_sha256, after_id],
        )
        return records[0] if records else None

    async def checkpoint_before(self, first_id: int) -> AuditRecord | None:
        """The retention checkpoint that accounts for the records before ``first_id``."""
        for record in await self._select(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE outcome = 'pruned' ORDER BY id DESC", []
        ):
            if record.snapshot and json.loads(record.snapshot).get("pruned_through_id") == first_id - 1:
                return record
        return None

    async def stats(self, by: str, selection: AuditFilter, *, include_intents: bool = False) -> list[tuple[str | None, int]]:
        """Record counts grouped by a field (or by day), largest first; intents left out unless asked."""
        expression = STATS_GROUPS[by]
        where, params = _where(selection)
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


STATS_GROUPS = {"actor": "actor", "org": "org", "app": "app", "outcome": "outcome", "day": "substr(time, 1, 10)"}


def _where(selection: AuditFilter) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    for column in _EQUALITY_FILTERS:
        value = getattr(selection, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if selection.since is not None:
        clauses.append("time >= ?")
        params.append(selection.since)
    if selection.until is not None:
        clauses.append("time < ?")
        params.append(selection.until)
    if selection.before is not None:
        clauses.append("(time, id) < (?, ?)")
        params.extend(selection.before)
    if selection.orgs is not None:
        clauses.append(f"org IN ({', '.join('?' * len(selection.orgs))})")
        params.extend(sorted(selection.orgs))
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


# Appending -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=MAX_ROWS_PER_APPEND)
def _insert_statement(rows: int) -> str:
    row = f"({', '.join('?' * len(AuditRecord._fields))})"
    return f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES {', '.join([row] * rows)}"


@dataclass(frozen=True)
class PruneResult:
    removed: int
    checkpoint: AuditRecord | None


class SQLiteAppender:
    """Appends chained records: read the head, link the batch after it, insert, commit.

    The batch is one multi-row INSERT with explicit ids. Once this connection knows the head
    (it wrote it), that INSERT alone is the transaction, in autocommit: one statement, so the
    writer thread gives up the GIL once per batch, not four times (BEGIN, head, INSERT, COMMIT;
    under load each handover waits for the event loop's thread, which cost 2 ms a batch). If
    another process appended meanwhile (prune, reconcile), the first id is taken and the INSERT
    fails whole on the primary key; then the batch is linked again after the real head, inside
    an IMMEDIATE transaction. Either way the chain stays linear.
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
        self._db = _connect(path, busy_timeout)
        try:
            self._db.execute(f"PRAGMA synchronous = {SYNCHRONOUS[synchronous]}")
            if max_bytes:
                page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
                self._db.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")
            # A large page cache keeps the indexes' hot pages in memory as the log grows.
            self._db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        except sqlite3.Error as exc:
            self._db.close()
            raise AuditStoreError(f"cannot open {path} for writing: {exc}") from None

    def append(self, records: Sequence[AuditRecord]) -> Head:
        if not 0 < len(records) <= MAX_ROWS_PER_APPEND:
            raise ValueError(f"between 1 and {MAX_ROWS_PER_APPEND} records per append")
        if self._head is not None:
            linked, head = chained(records, self._head, self._key)
            try:
                self._db.execute(_insert_statement(len(linked)), [value for record in linked for value in record])
                self._head = head
                return head
            except sqlite3.IntegrityError:
                self._head = None  # another process appended: link after the real head below
            except sqlite3.Error as exc:
                raise AuditStoreError(f"cannot write to {self.path}: {exc}") from None
        with self._transaction("write to"):
            head = self._append(records)
        self._head = head  # only once committed: a rolled-back head must not be built on
        return head

    def _append(self, records: Sequence[AuditRecord], after: Head | None = None) -> Head:
        """Inside a transaction: link after ``after``, or after the head as the file has it."""
        if after is None:
            row = self._db.execute(_HEAD).fetchone()
            after = Head(*row) if row else EMPTY
        linked, head = chained(records, after, self._key)
        self._db.execute(_insert_statement(len(linked)), [value for record in linked for value in record])
        return head

    def prune(self, before: str, *, actor: str, client_ip: str | None = None) -> PruneResult:
        """Remove the records at the start of the log older than ``before``, and say so.

        The removed records' last hash goes into a ``pruned`` checkpoint record appended to the
        chain (who, when, how many), from which ``verify`` starts. Records are removed from the
        start only, so what remains is still one unbroken chain.
        """
        with self._transaction("prune"):
            first, last = self._db.execute(f"SELECT min(id), max(id) FROM {TABLE}").fetchone()
            if first is None:
                return PruneResult(0, None)
            # The head before removing anything: even when every record goes, the checkpoint
            # takes the next id and links to the last hash, so ids never repeat and the chain
            # (and any head anchored outside) goes on.
            newest = Head(*self._db.execute(_HEAD).fetchone())
            kept = self._db.execute(f"SELECT min(id) FROM {TABLE} WHERE time >= ?", (before,)).fetchone()[0]
            last_removed = (kept if kept is not None else last + 1) - 1
            if last_removed < first:
                return PruneResult(0, None)
            (removed_hash,) = self._db.execute(f"SELECT hash FROM {TABLE} WHERE id = ?", (last_removed,)).fetchone()
            self._db.execute(f"DROP TRIGGER {TABLE}_no_delete")
            removed = self._db.execute(f"DELETE FROM {TABLE} WHERE id <= ?", (last_removed,)).rowcount
            self._db.execute(NO_DELETE_TRIGGER)
            details = {"pruned_through_id": last_removed, "pruned_count": removed, "last_pruned_hash": removed_hash,
                       "before": before}
            checkpoint = AuditRecord(
                request_id=f"prune-{int(time.time() * 1000):x}", time=utc_timestamp(), actor=actor, client_ip=client_ip,
                method="PRUNE", org=None, token_sha256=None, token_hint=None, outcome=Outcome.PRUNED.value,
                snapshot=json.dumps(details, separators=(",", ":")),
            )
            head = self._append([checkpoint], after=newest)
            result = PruneResult(removed, checkpoint._replace(id=head.id, hash=head.hash))
        self._head = head
        return result

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
        except sqlite3.Error as exc:
            raise AuditStoreError(f"cannot {action} {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()
