"""The audit log's file and its one writer: what the audit recorder process loads.

``prepare`` checks, creates or upgrades the file; ``SQLiteAppender`` appends to it (plain
sqlite3, owned by the recorder process or by a maintenance command). Apart from the reader
(``gateway.audit.sqlite``), which needs aiosqlite and asyncio: the recorder starts without them,
in about a third less time, and while it (re)starts the gateway answers 503.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

from gateway.audit import records
from gateway.audit.chain import EMPTY, ChainKey, Head, chained
from gateway.audit.record import AuditRecord, Row
from gateway.audit.schema import (
    APPLICATION_ID,
    FIRST_ID,
    HEAD,
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
from gateway.audit.store import AuditRecordError, AuditStoreError, ChainModeMismatch, PrunePlan, PruneResult

MAX_ROWS_PER_APPEND = 1024
"""One INSERT statement holds a whole batch (SQLite 3.32+ allows 32,766 parameters)."""
MINIMUM_SQLITE = (3, 32, 0)
WRITER_CACHE_KIB = 32 * 1024
VACUUM_PAGES = 256
"""Pages given back to the disk per step after a prune: 1 MiB of WAL at a time."""
SYNCHRONOUS = {"FULL": "FULL", "NORMAL": "NORMAL"}
"""The settings offered (``audit.synchronous``); the mapping keeps anything else out of the SQL."""

_COLUMNS = ", ".join(AuditRecord._fields)


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
    if not path.exists():
        _no_orphaned_wal(path)
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


def _no_orphaned_wal(path: Path) -> None:
    """A log removed without its write-ahead log: the WAL may hold the newest committed records
    (those not yet copied into the file), and SQLite would discard it on making a new file there."""
    wal = path.with_name(path.name + "-wal")
    try:
        size = wal.stat().st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AuditStoreError(f"cannot use {path}: cannot look at {wal}: {exc.strerror}") from None
    if size:
        raise AuditStoreError(
            f"{path} is missing, but its write-ahead log {wal} ({size:,} bytes) is still there and may hold the "
            f"log's newest records: restore {path.name}, or move {wal.name} and {path.name}-shm away to start a new log"
        )


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
    return one_mode(db.execute("SELECT mode, key_check FROM audit_chain").fetchall())


def one_mode(rows: Sequence[Row]) -> tuple[str, str | None]:
    if len(rows) != 1 or not isinstance(rows[0][0], str) or not isinstance(rows[0][1], (str, type(None))):
        raise ChainModeMismatch(
            "the log's description of its chain (table audit_chain) is missing or not one row "
            "of text: the file was damaged or tampered with"
        )
    return rows[0][0], rows[0][1]


def write_lock_problem(database: Path) -> str | None:
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
