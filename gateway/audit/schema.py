"""The audit database's schema, its version, and the migrations between versions.

A file carries ``PRAGMA application_id`` (so a foreign SQLite file is refused) and
``PRAGMA user_version`` (the schema version). Opening an older file upgrades it in place, inside
one transaction; a newer or foreign one stops with a clear error. Each past version's schema
stays here verbatim: the migration tests build real files from it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from gateway.audit.chain import GENESIS, ChainKey, link
from gateway.audit.record import CONTENT_FIELDS, EXTENSION_FIELDS, AuditRecord

APPLICATION_ID = 0x41475457  # "AGTW"
TABLE = "audit_events"
SCHEMA_VERSION = 4
OLDEST_READABLE_VERSION = 2
"""Readers (queries, verify) take files from this version on as they are: later versions add
only rules for writers, so a reader never has to upgrade a file it only reads."""

NO_UPDATE_TRIGGER = f"""CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE}
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END"""
NO_DELETE_TRIGGER = f"""CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE}
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END"""
"""Dropped and recreated, in one transaction, only by pruning (``SQLiteAppender.prune``)."""
LINEAR_TRIGGER = f"""CREATE TRIGGER {TABLE}_linear BEFORE INSERT ON {TABLE}
WHEN NEW.id IS NOT coalesce((SELECT max(id) FROM {TABLE}), 0) + 1
  OR NEW.prev_hash IS NOT coalesce((SELECT hash FROM {TABLE} ORDER BY id DESC LIMIT 1), '{GENESIS}')
BEGIN SELECT RAISE(ABORT, 'audit chain conflict: a record must take the next id and link to the head'); END"""
"""The file itself keeps the chain linear: whichever process appends (the gateway, a second
gateway, prune, reconcile, a script), a record that does not take the next id after the head
and link to the head's hash is refused. A writer that trusted a stale head learns of it here
and links again; ids never go back, even after a prune removed the newest records."""

SCHEMA_V1 = [
    f"""CREATE TABLE {TABLE} (
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
)""",
    f"CREATE INDEX {TABLE}_token ON {TABLE} (token_sha256)",
    f"CREATE INDEX {TABLE}_time ON {TABLE} (time)",
    f"CREATE INDEX {TABLE}_actor ON {TABLE} (actor, time)",
    f"CREATE INDEX {TABLE}_org ON {TABLE} (org, time)",
    f"CREATE INDEX {TABLE}_request ON {TABLE} (request_id)",
    NO_UPDATE_TRIGGER,
    NO_DELETE_TRIGGER,
    f"PRAGMA application_id = {APPLICATION_ID}",
    "PRAGMA user_version = 1",
]


def create(db: sqlite3.Connection, key: ChainKey) -> None:
    """A new, empty audit log at the current version (inside the caller's transaction)."""
    for statement in SCHEMA_V1:
        db.execute(statement)
    for version in range(1, SCHEMA_VERSION):
        MIGRATIONS[version](db, key)


def _migrate_v1_to_v2(db: sqlite3.Connection, key: ChainKey) -> None:
    """Version 2 adds the hash chain and indexes shaped for the questions people ask.

    Every existing record is chained in id order; its content is not changed. The indexes
    serve token; actor + time; org + outcome + time; all newest first by time.
    """
    db.execute(f"ALTER TABLE {TABLE} ADD COLUMN prev_hash TEXT")
    db.execute(f"ALTER TABLE {TABLE} ADD COLUMN hash TEXT")
    db.execute(f"DROP INDEX {TABLE}_token")
    db.execute(f"DROP INDEX {TABLE}_org")
    db.execute(f"CREATE INDEX {TABLE}_token ON {TABLE} (token_sha256, time)")
    db.execute(f"CREATE INDEX {TABLE}_org ON {TABLE} (org, outcome, time)")
    db.execute("CREATE TABLE audit_chain (mode TEXT NOT NULL, key_check TEXT)")
    db.execute("INSERT INTO audit_chain (mode, key_check) VALUES (?, ?)", (key.mode, key.check))
    db.execute(f"DROP TRIGGER {TABLE}_no_update")
    columns = ", ".join(field for field in CONTENT_FIELDS if field not in EXTENSION_FIELDS)  # version 1's
    previous_hash, last_id = GENESIS, 0
    while rows := db.execute(
        f"SELECT id, {columns} FROM {TABLE} WHERE id > ? ORDER BY id LIMIT 10000", (last_id,)
    ).fetchall():
        for row in rows:
            linked = link(AuditRecord(*row[1:]), row[0], previous_hash, key)
            db.execute(
                f"UPDATE {TABLE} SET prev_hash = ?, hash = ? WHERE id = ?", (linked.prev_hash, linked.hash, row[0])
            )
            previous_hash = linked.hash  # type: ignore[assignment]
        last_id = rows[-1][0]
    db.execute(NO_UPDATE_TRIGGER)
    db.execute("PRAGMA user_version = 2")


def _migrate_v2_to_v3(db: sqlite3.Connection, key: ChainKey) -> None:
    """Version 3 makes the file refuse appends that do not continue the chain (``LINEAR_TRIGGER``)."""
    db.execute(LINEAR_TRIGGER)
    db.execute("PRAGMA user_version = 3")


def _migrate_v3_to_v4(db: sqlite3.Connection, key: ChainKey) -> None:
    """Version 4 says what each call does and acts on, for every credential change the gateway
    audits (not only token deletions). Existing records keep null in the new columns, and the
    chain hashes a record without them as before (``gateway.audit.chain``): nothing is rewritten."""
    for column in EXTENSION_FIELDS:
        db.execute(f"ALTER TABLE {TABLE} ADD COLUMN {column} TEXT")
    db.execute(f"CREATE INDEX {TABLE}_action ON {TABLE} (action, time)")
    db.execute("PRAGMA user_version = 4")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection, ChainKey], None]] = {
    1: _migrate_v1_to_v2,
    2: _migrate_v2_to_v3,
    3: _migrate_v3_to_v4,
}
"""``MIGRATIONS[v]`` upgrades a file from version v to v + 1, inside the caller's transaction."""
