"""The audit database's schema, its version, and the migrations between versions.

A file carries ``PRAGMA application_id`` (so a foreign SQLite file is refused) and
``PRAGMA user_version`` (the schema version). Opening an older file upgrades it in place, inside
one transaction; a newer or foreign one stops with a clear error. Each past version's schema
stays here verbatim: the migration tests build real files from it.

From version 5 the records live in two tables that share one id sequence, and ``audit_events``
is a view of both: ``audit_intents`` holds intents (the request path's first write) with only the columns an intent
has and two indexes instead of six (by token, by actor: ``INTENT_INDEXES``); ``audit_records``
holds every other record, with all of them. The view routes an INSERT to the right table (``INSTEAD OF`` triggers), refuses
UPDATE and DELETE, and reads as the one table of version 4, column for column, so scripts and
readers written against ``audit_events`` see the same rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from gateway.audit.chain import GENESIS, ChainKey, link
from gateway.audit.record import CONTENT_FIELDS, EXTENSION_FIELDS, AuditRecord

APPLICATION_ID = 0x41475457  # "AGTW"
TABLE = "audit_events"
"""Every record: the table until version 4, the view of both tables from version 5."""
INTENTS = "audit_intents"
RECORDS = "audit_records"
SCHEMA_VERSION = 5
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


V4_COLUMNS: tuple[str, ...] = (
    "id",
    *(field for field in CONTENT_FIELDS if field not in EXTENSION_FIELDS),
    "prev_hash",
    "hash",
    *EXTENSION_FIELDS,
)
"""The columns of version 4's table, in its order (each version added its own at the end): the
view of version 5 keeps this order, so ``SELECT *`` reads as before."""
INTENT_CONSTANTS: dict[str, str] = {
    "outcome": "'pending'",
    "upstream_status": "NULL",
    "error_code": "NULL",
    "latency_ms": "NULL",
    "app": "NULL",
    "client_id": "NULL",
}
"""What every intent says alike, so its table does not store it: an intent is pending and has
no answer yet. A pending record that says anything else goes to the other table."""
INTENT_COLUMNS: tuple[str, ...] = tuple(column for column in V4_COLUMNS if column not in INTENT_CONSTANTS)
INTENT_ROWS = (
    "(SELECT "
    + ", ".join(f"{INTENT_CONSTANTS[c]} AS {c}" if c in INTENT_CONSTANTS else c for c in V4_COLUMNS)
    + f" FROM {INTENTS})"
)
"""The intents as rows of the view, for readers that query the two tables apart (a merge in id
order keeps a walk over millions of records streaming, where the view would sort them)."""
HEAD = (
    f"SELECT id, hash FROM (SELECT id, hash FROM {INTENTS} ORDER BY id DESC LIMIT 1) "
    f"UNION ALL SELECT id, hash FROM (SELECT id, hash FROM {RECORDS} ORDER BY id DESC LIMIT 1) "
    "ORDER BY id DESC LIMIT 1"
)
"""The head (id and hash of the newest record) of a version 5 file: one index step per table."""
FIRST_ID = f"SELECT min(id) FROM (SELECT min(id) AS id FROM {INTENTS} UNION ALL SELECT min(id) FROM {RECORDS})"
"""The oldest record kept (null: none): one index step per table."""


_INTENT_TYPES = {
    "id": "INTEGER PRIMARY KEY",
    "request_id": "TEXT NOT NULL",
    "time": "TEXT NOT NULL",
    "method": "TEXT NOT NULL",
}
"""The intent table's columns as version 1 declared them; every other one is TEXT."""


def _is_intent(prefix: str) -> str:
    """Whether a row (``NEW.`` in a trigger, nothing in a query) is an intent: pending, with
    none of what only an answer brings."""
    return " AND ".join(f"{prefix}{column} IS {value}" for column, value in INTENT_CONSTANTS.items())


def _guards(table: str) -> list[str]:
    """A table's own rules, so that even SQL that bypasses the view cannot edit, delete or
    append off the head: the head is the newest record of either table."""
    return [
        f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
        f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
        linear_trigger(table),
    ]


def linear_trigger(table: str) -> str:
    """Version 5's ``LINEAR_TRIGGER`` for one of the two tables: the next id after the newest
    record of either, linked to its hash."""
    return f"""CREATE TRIGGER {table}_linear BEFORE INSERT ON {table}
WHEN NEW.id IS NOT max(coalesce((SELECT max(id) FROM {INTENTS}), 0), coalesce((SELECT max(id) FROM {RECORDS}), 0)) + 1
  OR NEW.prev_hash IS NOT coalesce((SELECT hash FROM ({HEAD})), '{GENESIS}')
BEGIN SELECT RAISE(ABORT, 'audit chain conflict: a record must take the next id and link to the head'); END"""


PRUNE_LIFTED = tuple(f"{table}_{rule}" for table in (INTENTS, RECORDS) for rule in ("no_delete", "linear"))
"""The triggers a prune drops inside its own transaction, and puts back (``restore_prune_rules``)."""


def restore_prune_rules(db: sqlite3.Connection) -> None:
    """Put back the rules a prune lifted (``PRUNE_LIFTED``), inside its transaction."""
    for table in (INTENTS, RECORDS):
        _, no_delete, linear = _guards(table)
        db.execute(no_delete)
        db.execute(linear)


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


INTENT_INDEXES = (
    f"CREATE INDEX {INTENTS}_token ON {INTENTS} (token_sha256, time)",
    f"CREATE INDEX {INTENTS}_actor ON {INTENTS} (actor, time)",
)
"""The two questions the trail is kept for, "who cut this token" and "what did this user do this
week", read intents too (a pending intent is the trace of a call whose fate is unknown). Without
these, each read every intent: 110 ms and 89 ms on a log of 1,000,000 records (bench/query.py),
against 0.1-0.4 ms with them, and growing with the log. The other four indexes stay off."""


def _migrate_v4_to_v5(db: sqlite3.Connection, key: ChainKey) -> None:
    """Version 5 keeps intents apart from the other records (see the module's docstring).

    The table becomes ``audit_records`` (its indexes keep their names), the intents move to
    ``audit_intents`` with their ids, and ``audit_events`` becomes the view of both. No value
    changes, so every hash stays valid and the chain reads as before.
    """
    for rule in ("no_update", "no_delete", "linear"):
        db.execute(f"DROP TRIGGER IF EXISTS {TABLE}_{rule}")
    db.execute(f"ALTER TABLE {TABLE} RENAME TO {RECORDS}")
    declared = ", ".join(f"{column} {_INTENT_TYPES.get(column, 'TEXT')}" for column in INTENT_COLUMNS)
    db.execute(f"CREATE TABLE {INTENTS} ({declared})")
    columns = ", ".join(INTENT_COLUMNS)
    db.execute(f"INSERT INTO {INTENTS} ({columns}) SELECT {columns} FROM {RECORDS} WHERE {_is_intent('')} ORDER BY id")
    db.execute(f"DELETE FROM {RECORDS} WHERE {_is_intent('')}")
    for statement in INTENT_INDEXES:
        db.execute(statement)
    everything = ", ".join(V4_COLUMNS)
    db.execute(f"CREATE VIEW {TABLE} AS SELECT {everything} FROM {RECORDS} UNION ALL SELECT * FROM {INTENT_ROWS}")
    for table in (INTENTS, RECORDS):
        for statement in _guards(table):
            db.execute(statement)
    news = ", ".join(f"NEW.{column}" for column in INTENT_COLUMNS)
    db.execute(
        f"CREATE TRIGGER {TABLE}_intent INSTEAD OF INSERT ON {TABLE} WHEN {_is_intent('NEW.')} "
        f"BEGIN INSERT INTO {INTENTS} ({columns}) VALUES ({news}); END"
    )
    all_news = ", ".join(f"NEW.{column}" for column in V4_COLUMNS)
    db.execute(
        f"CREATE TRIGGER {TABLE}_record INSTEAD OF INSERT ON {TABLE} WHEN NOT ({_is_intent('NEW.')}) "
        f"BEGIN INSERT INTO {RECORDS} ({everything}) VALUES ({all_news}); END"
    )
    for statement in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER {TABLE}_no_{statement.lower()} INSTEAD OF {statement} ON {TABLE} "
            "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END"
        )
    db.execute("PRAGMA user_version = 5")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection, ChainKey], None]] = {
    1: _migrate_v1_to_v2,
    2: _migrate_v2_to_v3,
    3: _migrate_v3_to_v4,
    4: _migrate_v4_to_v5,
}
"""``MIGRATIONS[v]`` upgrades a file from version v to v + 1, inside the caller's transaction."""
