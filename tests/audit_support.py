"""Audit logs built directly through the store, for the tests of what reads them (verify, query,
prune, the HTTP API): records of known content, chained and committed as the gateway would."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.audit.chain import EMPTY, ChainKey, chained
from gateway.audit.record import FIELDS, AuditRecord
from gateway.audit.schema import INTENTS, MIGRATIONS, RECORDS, SCHEMA_V1, TABLE, V4_COLUMNS
from gateway.audit.sqlite_file import SQLiteAppender, prepare


def record(i: int) -> AuditRecord:
    """The ``i``-th record of a test log: a deletion on 2026-01-``i``, odd ones in ``myorg``,
    even ones in ``otherorg``, its token fingerprint ``i`` in hex."""
    return AuditRecord(
        request_id=f"req-{i}",
        time=f"2026-01-{i:02d}T00:00:00.000Z",
        actor="alice",
        client_ip="10.0.0.1",
        method="DELETE",
        org="myorg" if i % 2 else "otherorg",
        token_sha256=f"{i:064x}",
        token_hint=f"{i:04d}",
        outcome="deleted",
        upstream_status=200,
        latency_ms=1.5,
        app="app1",
        client_id="c1",
        snapshot='{"app":"app1"}',
    )


def make_log(path: Path, count: int, key: bytes | None = None) -> None:
    """An audit log at ``path`` holding records 1 to ``count``, chained with ``key`` (or plain)."""
    prepare(path, key=ChainKey(key), writable=True)
    appender = SQLiteAppender(path, ChainKey(key))
    for first in range(1, count + 1, appender.max_batch):
        appender.append([record(i) for i in range(first, min(first + appender.max_batch, count + 1))])
    appender.close()


def make_version_4_log(path: Path, records: list[AuditRecord], key: bytes | None = None) -> None:
    """A log as gateways before schema 5 wrote it (one table, every record in it), holding
    ``records`` chained in order with ``key``: built from the past versions' schema verbatim."""
    linked, _ = chained(records, EMPTY, ChainKey(key))
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN")
        for statement in SCHEMA_V1:
            db.execute(statement)
        for version in (1, 2, 3):
            MIGRATIONS[version](db, ChainKey(key))
        for item in linked:
            values = dict(zip(FIELDS, (item.id, *item[:-1]), strict=True))
            db.execute(
                f"INSERT INTO {TABLE} ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
                [values[field] for field in FIELDS],
            )
        db.execute("COMMIT")
        assert 4 == db.execute("PRAGMA user_version").fetchone()[0]


@contextmanager
def tampering(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the log at ``path`` on which plain SQL edits, deletes and reorders
    records through ``audit_events``, as an attacker with write access to the file would: the
    rules against it dropped and, from schema 5 (where ``audit_events`` is a view of two
    tables), an edit or removal carried to whichever table holds the record (an edited intent
    that no longer reads as one moves to the other table)."""
    with sqlite3.connect(path) as db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            if name.endswith(("_no_update", "_no_delete", "_linear")):
                db.execute(f"DROP TRIGGER {name}")
        if db.execute("SELECT type FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone() == ("view",):
            gone = f"DELETE FROM {RECORDS} WHERE id = OLD.id; DELETE FROM {INTENTS} WHERE id = OLD.id;"
            news = ", ".join(f"NEW.{column}" for column in V4_COLUMNS)
            db.execute(
                f"CREATE TEMP TRIGGER tamper_update INSTEAD OF UPDATE ON main.{TABLE} BEGIN {gone} "
                f"INSERT INTO {TABLE} ({', '.join(V4_COLUMNS)}) VALUES ({news}); END"
            )
            db.execute(f"CREATE TEMP TRIGGER tamper_delete INSTEAD OF DELETE ON main.{TABLE} BEGIN {gone} END")
        yield db


def tamper(path: Path, *statements: str) -> None:
    """Run ``statements`` on the log at ``path`` as an attacker would (``tampering``)."""
    with tampering(path) as db:
        for statement in statements:
            db.execute(statement)
