"""Schema 5: intents in a narrow table with two indexes (token, actor) instead of six, every other record in the
indexed table, one id sequence and one chain across both, ``audit_events`` a view of the two.

A log written under schema 4 is migrated in place, and every reader (the store's methods, the
CLI's query, show, export, stats, verify and head, reconcile's questions, the fleet shipper's
walk and the HTTP API) gives exactly what it gave before.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from audit_support import make_version_4_log, tamper
from helpers import GatewayFactory, basic, make_config

from gateway.audit.chain import ChainKey
from gateway.audit.formats import as_json
from gateway.audit.query import AuditFilter
from gateway.audit.record import AuditRecord
from gateway.audit.records import json_default
from gateway.audit.schema import INTENTS, RECORDS
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.audit.store import STATS_GROUPS
from gateway.cli import main

TOKEN_A, TOKEN_B = "a" * 64, "b" * 64


def _call(request_id: str, day: int, outcome: str, **fields: Any) -> AuditRecord:
    base: dict[str, Any] = {
        "request_id": request_id,
        "time": f"2026-01-{day:02d}T10:00:00.000Z",
        "actor": "alice",
        "client_ip": "10.0.0.1",
        "method": "DELETE",
        "org": "myorg",
        "token_sha256": TOKEN_A,
        "token_hint": "aaaa",
        "outcome": outcome,
        "action": "token.delete",
        "resource_type": "access_token",
        "resource": "oauth2/accesstokens/{token}",
    }
    return AuditRecord(**{**base, **fields})


MIXED = [
    _call("r1", 1, "pending"),  # 1 intent
    _call("r1", 1, "deleted", upstream_status=200, latency_ms=3.5, app="app1", client_id="c1", snapshot='{"a":1}'),
    _call("r2", 2, "pending", snapshot='{"pre":"image"}', params='{"cascade":"true"}', org="otherorg"),  # 3
    _call("r3", 2, "denied", actor=None, error_code="gateway.unauthorized", token_sha256=None, token_hint=None),
    _call("r4", 3, "pending", token_sha256=TOKEN_B, token_hint="bbbb"),  # 5: no outcome, as 3 and 9
    _call("r5", 3, "pending", actor="bob"),  # 6
    _call("r5", 3, "unknown", actor="bob", error_code="upstream.timeout", latency_ms=30000.0),
    AuditRecord("throttle-1", "2026-01-04T00:00:00.000Z", None, "10.0.0.9", "THROTTLE", None, None, None, "denied"),
    _call("r6", 4, "pending", error_code="odd"),  # 9: pending, but not as an intent reads: stays indexed
    _call("r7", 5, "pending", action="app.delete", resource_type="app", token_sha256=None, token_hint=None),  # 10
    _call("r7", 5, "deleted", action="app.delete", resource_type="app", token_sha256=None, upstream_status=200),
    _call("r8", 6, "deleted", upstream_status=200, latency_ms=1.0),  # 12: a later deletion of TOKEN_A
]
INTENT_IDS = [1, 3, 5, 6, 10]


async def _observe(path: Path) -> dict[str, Any]:
    """Everything the store answers about the log, as the readers ask it."""
    store = await SQLiteAuditStore.open(path)
    try:
        seen: dict[str, Any] = {
            "head": await store.head(),
            "first_id": await store.first_id(),
            "size": await store.size(),
            "chain_mode": await store.chain_mode(),
            "pending": await store.pending_without_outcome(),
            "unsettled": await store.unsettled(),
            "later": await store.later_outcome_for_token(TOKEN_A, 2),
            "later_none": await store.later_outcome_for_token(TOKEN_B, 1),
            "get": [await store.get(record_id) for record_id in range(len(MIXED) + 2)],
        }
        selections = {
            "all": AuditFilter(),
            "pending": AuditFilter(outcome="pending"),
            "deleted": AuditFilter(outcome="deleted"),
            "token": AuditFilter(token_sha256=TOKEN_A),
            "actor": AuditFilter(actor="bob"),
            "org": AuditFilter(org="otherorg"),
            "orgs": AuditFilter(orgs=frozenset({"myorg"})),
            "app": AuditFilter(app="app1"),
            "client": AuditFilter(client_id="c1"),
            "action": AuditFilter(action="app.delete"),
            "window": AuditFilter(since="2026-01-02T00:00:00.000Z", until="2026-01-04T00:00:00.000Z"),
            "limit": AuditFilter(limit=4),
            "page": AuditFilter(before=("2026-01-03T10:00:00.000Z", 6), limit=3),
            "after": AuditFilter(after_id=4),
        }
        for name, selection in selections.items():
            seen[f"query {name}"] = await store.query(selection)
            seen[f"rows {name}"] = [row async for batch in store.rows(selection, size=2) for row in batch]
        for group in STATS_GROUPS:
            seen[f"stats {group}"] = await store.stats(group, AuditFilter())
            seen[f"stats {group} with intents"] = await store.stats(group, AuditFilter(), include_intents=True)
        return seen
    finally:
        await store.close()


def _cli(capsys: pytest.CaptureFixture[str], path: Path) -> dict[str, tuple[int, str]]:
    """What the read-only commands print about the log."""
    commands = {
        "verify": ["verify", "--no-chain-key"],
        "head": ["head"],
        "query json": ["query", "--format", "json", "--limit", "100"],
        "query table": ["query", "--limit", "100"],
        "query csv": ["query", "--format", "csv", "--outcome", "pending"],
        "query token": ["query", "--format", "jsonl", "--token-sha256", TOKEN_A],
        "export jsonl": ["export", "--format", "jsonl"],
        "export csv": ["export", "--format", "csv", "--since", "2026-01-03"],
        "export ocsf": ["export", "--format", "ocsf"],
        "stats": ["stats", "--by", "outcome"],
        "stats intents": ["stats", "--by", "day", "--outcome", "pending"],
        **{f"show {i}": ["show", str(i)] for i in range(1, len(MIXED) + 1)},
    }
    printed = {}
    for name, args in commands.items():
        status = main(["audit", args[0], "--db", str(path), *args[1:]])
        printed[name] = (status, capsys.readouterr().out)
    return printed


def _raw(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM audit_events ORDER BY id").fetchall()


def _ids(path: Path, table: str) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute(f"SELECT id FROM {table} ORDER BY id")]


def test_a_version_4_log_migrates_in_place_and_reads_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.db"
    make_version_4_log(path, MIXED)
    observed, printed, raw = asyncio.run(_observe(path)), _cli(capsys, path), _raw(path)
    assert (0, True) == (printed["verify"][0], printed["verify"][1].startswith("OK: 12 records verified"))
    assert [3, 5, 9] == [record.id for record in observed["pending"]]
    assert [3, 5, 7, 9] == [record.id for record in observed["unsettled"]]
    assert 12 == observed["later"].id

    prepare(path, key=ChainKey(), writable=True)

    with sqlite3.connect(path) as db:
        assert 5 == db.execute("PRAGMA user_version").fetchone()[0]
        indexes = db.execute(f"SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{INTENTS}'")
        assert [(f"{INTENTS}_token",), (f"{INTENTS}_actor",)] == indexes.fetchall()
    assert INTENT_IDS == _ids(path, INTENTS)
    assert sorted(set(range(1, 13)) - set(INTENT_IDS)) == _ids(path, RECORDS)
    assert raw == _raw(path)  # the view reads as the table did, column for column
    assert observed == asyncio.run(_observe(path))
    assert printed == _cli(capsys, path)


async def test_the_http_api_reads_a_migrated_log_as_before(tmp_path: Path, gateway: GatewayFactory) -> None:
    path = tmp_path / "audit.db"
    make_version_4_log(path, MIXED)
    store = await SQLiteAuditStore.open(path)
    try:
        expected = [
            orjson.loads(orjson.dumps(as_json(r), default=json_default)) for r in await store.query(AuditFilter())
        ]
    finally:
        await store.close()
    client = await gateway(make_config(tmp_path))  # the gateway upgrades the log as it starts
    with sqlite3.connect(path) as db:
        assert 5 == db.execute("PRAGMA user_version").fetchone()[0]
    response = await client.get("/audit/events", params={"limit": "100"}, headers=basic("auditor"))
    assert 200 == response.status
    assert expected == (await response.json())["events"]
    one = await client.get("/audit/events/3", headers=basic("auditor"))
    assert expected[[event["id"] for event in expected].index(3)] == await one.json()


async def test_the_gateway_writes_intents_to_the_narrow_table(tmp_path: Path, gateway: GatewayFactory) -> None:
    client = await gateway(make_config(tmp_path))
    response = await client.delete(
        "/v1/o/myorg/oauth2/accesstokens/taFM3LHUTQAFhL0dIFg81XhRc7vC", headers=basic("myname")
    )
    assert 200 == response.status
    with sqlite3.connect(tmp_path / "audit.db") as db:
        assert [(1, "c7vC")] == db.execute(f"SELECT id, token_hint FROM {INTENTS}").fetchall()
        assert [(2, "deleted")] == db.execute(f"SELECT id, outcome FROM {RECORDS}").fetchall()
        assert ["pending", "deleted"] == [row[0] for row in db.execute("SELECT outcome FROM audit_events ORDER BY id")]


def test_both_tables_are_append_only_and_held_to_the_one_head(tmp_path: Path) -> None:
    """Even SQL that bypasses the view cannot edit, delete, or append off the head of the
    chain the two tables share."""
    path = tmp_path / "audit.db"
    make_version_4_log(path, MIXED[:2])
    prepare(path, key=ChainKey(), writable=True)
    with sqlite3.connect(path) as db:
        for statement in (
            f"UPDATE {INTENTS} SET actor = 'x'",
            f"DELETE FROM {INTENTS}",
            f"UPDATE {RECORDS} SET actor = 'x'",
            f"DELETE FROM {RECORDS}",
            "UPDATE audit_events SET actor = 'x'",
            "DELETE FROM audit_events",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="audit records are append-only"):
                db.execute(statement)
        head = db.execute("SELECT hash FROM audit_events WHERE id = 2").fetchone()[0]
        columns = "id, request_id, time, method, prev_hash, hash"
        for table in (INTENTS, RECORDS):
            # id 2 is taken (in the other table for intents); 4 skips one; 3 off the wrong hash
            for record_id, prev_hash in ((2, head), (4, head), (3, "0" * 64)):
                with pytest.raises(sqlite3.IntegrityError, match="audit chain"):
                    db.execute(
                        f"INSERT INTO {table} ({columns}) VALUES (?, 'r', 't', 'DELETE', ?, 'h')",
                        (record_id, prev_hash),
                    )
        db.execute(f"INSERT INTO {INTENTS} ({columns}) VALUES (3, 'r', 't', 'DELETE', ?, 'h3')", (head,))
        with pytest.raises(sqlite3.IntegrityError, match="audit chain"):
            db.execute(f"INSERT INTO {RECORDS} ({columns}) VALUES (4, 'r', 't', 'DELETE', ?, 'h')", (head,))


def test_prune_across_both_tables_keeps_the_chain_verifiable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.db"
    make_version_4_log(path, MIXED)
    assert 0 == main(["audit", "prune", "--db", str(path), "--before", "2026-01-03"])
    assert "pruned 4 records before 2026-01-03T00:00:00.000Z; checkpoint is record 13\n" == capsys.readouterr().out
    assert [5, 6, 10] == _ids(path, INTENTS)
    assert [7, 8, 9, 11, 12, 13] == _ids(path, RECORDS)  # 13: the checkpoint, after the head
    assert 0 == main(["audit", "verify", "--db", str(path), "--no-chain-key"])
    assert capsys.readouterr().out.startswith("OK: 9 records verified")
    appender = SQLiteAppender(path, ChainKey())
    appender.append([_call("r9", 7, "pending"), _call("r9", 7, "deleted", upstream_status=200)])
    appender.close()
    assert [5, 6, 10, 14] == _ids(path, INTENTS)
    assert 0 == main(["audit", "verify", "--db", str(path), "--no-chain-key"])
    assert capsys.readouterr().out.startswith("OK: 11 records verified")
    tamper(path, "DELETE FROM audit_events WHERE id = 10")  # an intent, in the middle
    assert 1 == main(["audit", "verify", "--db", str(path), "--no-chain-key"])
    assert "record 11" in capsys.readouterr().out
