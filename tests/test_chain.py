"""The hash chain: any edit, removal or reordering is caught and named; keys, anchors, pruning
and migration keep it honest. Tampering is done as an attacker would: plain SQL on the file."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import sqlite3
from pathlib import Path

import pytest
from audit_support import make_log, record, tamper, tampering
from helpers import ROOT, GatewayFactory, basic, make_config
from yarl import URL

from gateway.audit.chain import EMPTY, GENESIS, ChainKey, chained, record_hash
from gateway.audit.formats import as_row
from gateway.audit.record import CONTENT_FIELDS, EXTENSION_FIELDS, FIELDS, AuditRecord
from gateway.audit.schema import SCHEMA_V1
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.audit.store import AuditStoreError
from gateway.cli import main

KEY = b"k" * 32


def verify(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, str]:
    keyed = any(a.startswith("--chain-key") or a == "--no-chain-key" for a in args)
    status = main(["audit", "verify", "--db", str(path), *args, *(() if keyed else ("--no-chain-key",))])
    return status, capsys.readouterr().out.strip()


def test_intact_log_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_log(tmp_path / "a.db", 10)
    status, out = verify(capsys, tmp_path / "a.db")
    with sqlite3.connect(tmp_path / "a.db") as db:
        head = db.execute("SELECT hash FROM audit_events WHERE id = 10").fetchone()[0]
    assert (0, f"OK: 10 records verified (sha256 chain); head is record 10, hash {head}") == (status, out)


@pytest.mark.parametrize("column", [*CONTENT_FIELDS, "prev_hash", "hash"])
def test_editing_any_column_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str], column: str) -> None:
    make_log(tmp_path / "a.db", 10)
    value = "1" if column not in ("upstream_status", "latency_ms") else "404"
    tamper(tmp_path / "a.db", f"UPDATE audit_events SET {column} = '{value}' WHERE id = 5")
    status, out = verify(capsys, tmp_path / "a.db")
    assert 1 == status
    expected = "prev_hash does not link to record 4" if column == "prev_hash" else "content does not match its hash"
    assert out.startswith(f"TAMPERED: record 5: {expected}"), out


def test_removing_a_record_in_the_middle_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_log(tmp_path / "a.db", 10)
    tamper(tmp_path / "a.db", "DELETE FROM audit_events WHERE id = 4")
    assert (1, "TAMPERED: record 5: record 4 missing (removed from the log); 3 records checked") == verify(
        capsys, tmp_path / "a.db"
    )


def test_swapping_two_records_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exchanging the contents (and hashes) of records 3 and 7, ids kept, breaks the chain at 3."""
    make_log(tmp_path / "a.db", 10)
    columns = [*CONTENT_FIELDS, "prev_hash", "hash"]
    assignments = ", ".join(f"{c} = (SELECT {c} FROM saved WHERE saved.id = 10 - audit_events.id)" for c in columns)
    tamper(
        tmp_path / "a.db",
        "CREATE TEMP TABLE saved AS SELECT * FROM audit_events WHERE id IN (3, 7)",
        f"UPDATE audit_events SET {assignments} WHERE id IN (3, 7)",
    )
    status, out = verify(capsys, tmp_path / "a.db")
    assert (1, "TAMPERED: record 3: prev_hash does not link to record 2") == (status, out.split(" (")[0])


def test_tampering_past_the_first_batch_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """verify reads the log in batches; the chain carries over from one batch to the next."""
    path = tmp_path / "a.db"
    make_log(path, 5003)
    assert (0, f"OK: 5003 records verified (sha256 chain); head is record 5003, hash {_hash_of(path, 5003)}") == verify(
        capsys, path
    )
    edited = tmp_path / "edited.db"
    edited.write_bytes(path.read_bytes())
    tamper(path, "DELETE FROM audit_events WHERE id = 5001")
    assert (1, "TAMPERED: record 5002: record 5001 missing (removed from the log); 5000 records checked") == verify(
        capsys, path
    )
    tamper(edited, "UPDATE audit_events SET latency_ms = 1.6 WHERE id = 5003")
    assert (
        1,
        "TAMPERED: record 5003: content does not match its hash (the record was edited); 5002 records checked",
    ) == verify(capsys, edited)


def _hash_of(path: Path, record_id: int) -> str:
    with sqlite3.connect(path) as db:
        digest: str = db.execute("SELECT hash FROM audit_events WHERE id = ?", (record_id,)).fetchone()[0]
    return digest


def test_a_rebuilt_chain_passes_only_without_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Whoever edits a record and recomputes every hash defeats a plain chain, not a keyed one."""
    for name, key in (("plain.db", None), ("keyed.db", KEY)):
        make_log(tmp_path / name, 5, key)
        with tampering(tmp_path / name) as db:
            db.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = 2")
            previous = GENESIS
            for row in db.execute(f"SELECT {', '.join(CONTENT_FIELDS)}, id FROM audit_events ORDER BY id").fetchall():
                digest = record_hash(previous, AuditRecord(*row[:-1])._replace(id=row[-1]), ChainKey(None))
                db.execute("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE id = ?", (previous, digest, row[-1]))
                previous = digest
    assert 0 == verify(capsys, tmp_path / "plain.db")[0]
    config = tmp_path / "gw.toml"
    (tmp_path / "chain.key").write_bytes(KEY + b"\n")
    config.write_text("[audit]\ndatabase = 'keyed.db'\nchain_key_file = 'chain.key'\n")
    assert 1 == main(["audit", "verify", "--config", str(config)])
    assert capsys.readouterr().out.startswith(
        "TAMPERED: record 1: content does not match its hash (the record was edited, or the chain key is wrong)"
    )


def test_a_keyed_log_needs_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_log(tmp_path / "keyed.db", 3, KEY)
    for extra in ((), ("--no-chain-key",)):
        assert 2 == main(["audit", "verify", "--db", str(tmp_path / "keyed.db"), *extra])
        assert (
            f"gateway: error: {tmp_path / 'keyed.db'} keeps a hmac-sha256 chain, which cannot be checked without its key: "
            "pass --config with audit.chain_key_env or audit.chain_key_file, or --chain-key-file FILE / --chain-key-env VARIABLE\n"
        ) == capsys.readouterr().err
    config = tmp_path / "gw.toml"
    config.write_text("[audit]\ndatabase = 'keyed.db'\nchain_key_env = 'GW_TEST_CHAIN_KEY'\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GW_TEST_CHAIN_KEY", "another-key-of-enough-length")
        assert 1 == main(["audit", "verify", "--config", str(config)])
        assert capsys.readouterr().out.startswith(
            "TAMPERED: the log's chain key check does not match the key given: the log was rewritten under another key, "
            "or the key is not this log's; 0 records checked"
        )
        env.setenv("GW_TEST_CHAIN_KEY", KEY.decode())
        assert 0 == main(["audit", "verify", "--config", str(config)])
        assert capsys.readouterr().out.startswith("OK: 3 records verified (hmac-sha256 chain)")
        assert 0 == main(
            ["audit", "verify", "--db", str(tmp_path / "keyed.db"), "--chain-key-env", "GW_TEST_CHAIN_KEY"]
        )
        assert capsys.readouterr().out.startswith("OK: 3 records verified (hmac-sha256 chain)")
    (tmp_path / "chain.key").write_bytes(KEY + b"\n")
    assert 0 == main(
        ["audit", "verify", "--db", str(tmp_path / "keyed.db"), "--chain-key-file", str(tmp_path / "chain.key")]
    )
    assert capsys.readouterr().out.startswith("OK: 3 records verified (hmac-sha256 chain)")


def _rewrite_without_key(path: Path) -> None:
    """What someone who can write the file, but lacks the key, does: recompute every hash as
    plain SHA-256 and make the file say it never had a key."""
    with tampering(path) as db:
        db.execute("UPDATE audit_chain SET mode = 'sha256', key_check = NULL")
        previous = GENESIS
        for row in db.execute(f"SELECT {', '.join(CONTENT_FIELDS)}, id FROM audit_events ORDER BY id").fetchall():
            digest = record_hash(previous, AuditRecord(*row[:-1])._replace(id=row[-1]), ChainKey(None))
            db.execute("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE id = ?", (previous, digest, row[-1]))
            previous = digest


def test_a_keyed_log_rewritten_as_plain_never_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a hostile tester: the downgraded file said "sha256" and `verify --db` believed it."""
    path = tmp_path / "keyed.db"
    make_log(path, 5, KEY)
    _rewrite_without_key(path)
    assert 2 == main(["audit", "verify", "--db", str(path)])
    out, err = capsys.readouterr()
    assert ("", f"gateway: error: {path} says it keeps a plain sha256 chain (no key)") == (out, err.split(". ")[0])
    assert "pass --no-chain-key to check it as a plain chain, or its key (--chain-key-file FILE" in err
    expected = (
        "TAMPERED: the log says it keeps a sha256 chain, but it is expected keyed (hmac-sha256): a keyed log "
        "rewritten without its key, or not the log of this key; 0 records checked"
    )
    (tmp_path / "chain.key").write_bytes(KEY)
    assert (1, expected) == verify(capsys, path, "--chain-key-file", str(tmp_path / "chain.key"))
    config = tmp_path / "gw.toml"
    config.write_text("[audit]\ndatabase = 'keyed.db'\nchain_key_file = 'chain.key'\n")
    assert 1 == main(["audit", "verify", "--config", str(config)])
    assert expected == capsys.readouterr().out.strip()


def test_chain_key_options_belong_to_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_log(tmp_path / "a.db", 1)
    (tmp_path / "gw.toml").write_text("[audit]\ndatabase = 'a.db'\n")
    assert 2 == main(["audit", "verify", "--config", str(tmp_path / "gw.toml"), "--no-chain-key"])
    assert capsys.readouterr().err.startswith("gateway: error: --no-chain-key goes with --db")
    (tmp_path / "short.key").write_bytes(b"short")
    assert 2 == main(
        ["audit", "verify", "--db", str(tmp_path / "a.db"), "--chain-key-file", str(tmp_path / "short.key")]
    )
    assert "the chain key must be at least 16 bytes" in capsys.readouterr().err


def test_expect_head_catches_a_cut_off_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A log truncated before an anchored head is a valid chain, but not one that contains the anchor."""
    make_log(tmp_path / "a.db", 10)
    main(["audit", "head", "--db", str(tmp_path / "a.db")])
    head_id, head_hash = capsys.readouterr().out.split()
    assert "10" == head_id
    assert 0 == verify(capsys, tmp_path / "a.db", "--expect-head", head_hash)[0]
    tamper(tmp_path / "a.db", "DELETE FROM audit_events WHERE id > 7")
    assert 0 == verify(capsys, tmp_path / "a.db")[0]
    assert (
        1,
        f"TAMPERED: the expected head {head_hash} is not in the chain: records up to it were cut off, "
        "or the chain was rebuilt; 7 records checked",
    ) == verify(capsys, tmp_path / "a.db", "--expect-head", head_hash)


def test_prune_keeps_verify_green_and_is_audited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_log(tmp_path / "a.db", 10)
    assert 0 == main(["audit", "prune", "--db", str(tmp_path / "a.db"), "--before", "2026-01-05", "--operator", "ops"])
    assert "pruned 4 records before 2026-01-05T00:00:00.000Z; checkpoint is record 11\n" == capsys.readouterr().out
    assert verify(capsys, tmp_path / "a.db")[1].startswith("OK: 7 records verified")
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert (5, 11) == db.execute("SELECT min(id), max(id) FROM audit_events").fetchone()
        actor, outcome, snapshot = db.execute(
            "SELECT actor, outcome, snapshot FROM audit_events WHERE id = 11"
        ).fetchone()
    assert ("ops", "pruned") == (actor, outcome)
    assert '"pruned_through_id":4,"pruned_count":4' in snapshot
    # The checkpoint is what accounts for the missing start: removing it is caught.
    tamper(tmp_path / "a.db", "DELETE FROM audit_events WHERE id = 11")
    assert (
        1,
        "TAMPERED: record 5: records 1-4 missing, and no retention checkpoint accounts for them; 0 records checked",
    ) == verify(capsys, tmp_path / "a.db")


def test_pruning_again_and_nothing_to_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_log(tmp_path / "a.db", 10)
    for before in ("2026-01-03", "2026-01-06", "2026-01-06", "2000-01-01"):
        assert 0 == main(["audit", "prune", "--db", str(tmp_path / "a.db"), "--before", before])
    assert [
        "pruned 2 records before 2026-01-03T00:00:00.000Z; checkpoint is record 11",
        "pruned 3 records before 2026-01-06T00:00:00.000Z; checkpoint is record 12",
        "nothing to prune: no record before 2026-01-06T00:00:00.000Z",
        "nothing to prune: no record before 2000-01-01T00:00:00.000Z",
    ] == capsys.readouterr().out.splitlines()
    status, out = verify(capsys, tmp_path / "a.db")
    assert (0, True) == (status, out.startswith("OK: 7 records verified"))


def test_a_version_1_file_is_upgraded_and_chained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A log written before the chain existed gains one over its records, unchanged otherwise."""
    path = tmp_path / "old.db"
    v1 = [field for field in CONTENT_FIELDS if field not in EXTENSION_FIELDS]
    with sqlite3.connect(path) as db:
        for statement in SCHEMA_V1:
            db.execute(statement)
        for i in range(1, 6):
            db.execute(
                f"INSERT INTO audit_events ({', '.join(v1)}) VALUES ({', '.join('?' * len(v1))})",
                record(i)[: len(v1)],
            )
        before = db.execute(f"SELECT id, {', '.join(v1)} FROM audit_events ORDER BY id").fetchall()
    assert 2 == main(["audit", "verify", "--db", str(path)])
    assert "has audit schema version 1; run `gateway audit upgrade` to upgrade it to 5" in capsys.readouterr().err
    # The gateway does not chain it on its own (see the next test); the operator does, on purpose.
    with pytest.raises(AuditStoreError, match="from before the hash chain: chaining it now would vouch"):
        prepare(path, key=ChainKey(), writable=True)
    assert 0 == main(["audit", "upgrade", "--db", str(path)])
    assert capsys.readouterr().out.endswith("records from before the chain are chained as they are now\n")
    with sqlite3.connect(path) as db:
        assert 5 == db.execute("PRAGMA user_version").fetchone()[0]
        assert before == db.execute(f"SELECT id, {', '.join(v1)} FROM audit_events ORDER BY id").fetchall()
    appender = SQLiteAppender(path, ChainKey())
    appender.append([record(6)])
    appender.close()
    status, out = verify(capsys, path)
    assert (0, True) == (status, out.startswith("OK: 6 records verified"))


def test_newer_or_foreign_files_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_log(tmp_path / "a.db", 1)
    with sqlite3.connect(tmp_path / "a.db") as db:
        db.execute("PRAGMA user_version = 9")
    assert 2 == main(["audit", "verify", "--db", str(tmp_path / "a.db")])
    assert "has audit schema version 9, newer than this gateway's 5; upgrade the gateway" in capsys.readouterr().err
    with sqlite3.connect(tmp_path / "other.db") as db:
        db.execute("PRAGMA application_id = 7")
        db.execute("CREATE TABLE t (x)")
    assert 2 == main(["audit", "verify", "--db", str(tmp_path / "other.db")])
    assert "is not a gateway audit database (application_id 7)" in capsys.readouterr().err


async def test_concurrent_requests_make_one_linear_chain(tmp_path: Path, gateway: GatewayFactory) -> None:
    """200 concurrent deletes: 400 records, consecutive ids, each linked to the one before."""
    client = await gateway(make_config(tmp_path, stub={"generated_tokens": 200}))
    responses = await asyncio.gather(
        *(client.delete(f"/v1/o/myorg/oauth2/accesstokens/load{i}", headers=basic("myname")) for i in range(200))
    )
    assert {200} == {response.status for response in responses}
    with sqlite3.connect(tmp_path / "audit.db") as db:
        rows = db.execute("SELECT id, prev_hash, hash FROM audit_events ORDER BY id").fetchall()
    assert list(range(1, 401)) == [row[0] for row in rows]
    assert all(rows[i][1] == rows[i - 1][2] for i in range(1, len(rows)))
    assert 0 == await asyncio.to_thread(main, ["audit", "verify", "--db", str(tmp_path / "audit.db"), "--no-chain-key"])


def test_appenders_of_two_processes_keep_one_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The gateway's writer links batches after the head it last wrote; another writer's append
    (prune, reconcile) in between must make it link after the real head instead."""
    path = tmp_path / "a.db"
    make_log(path, 3)
    gateway, maintenance = SQLiteAppender(path, ChainKey()), SQLiteAppender(path, ChainKey())
    assert 4 == gateway.append([record(4)]).id
    assert 5 == gateway.append([record(5)]).id  # from the head it knows
    assert 6 == maintenance.append([record(6)]).id  # another connection moves the head on
    assert 8 == gateway.append([record(7), record(8)]).id  # the conflict is seen, the batch relinked
    gateway.close()
    maintenance.close()
    assert 0 == verify(capsys, path)[0]
    with sqlite3.connect(path) as db:
        assert [f"req-{i}" for i in range(1, 9)] == [
            row[0] for row in db.execute("SELECT request_id FROM audit_events ORDER BY id")
        ]


def test_pruning_everything_while_the_gateway_runs_keeps_ids_and_the_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: with every record removed, the checkpoint took id 1 and linked to the
    genesis value, so the running gateway's next batch (at the id after its cached head) left a gap."""
    path = tmp_path / "a.db"
    make_log(path, 3)
    gateway = SQLiteAppender(path, ChainKey())
    assert 4 == gateway.append([record(4)]).id
    maintenance = SQLiteAppender(path, ChainKey())
    result = maintenance.prune("2099-01-01T00:00:00.000Z", actor="ops")
    maintenance.close()
    assert (4, 5) == (result.removed, result.checkpoint.id if result.checkpoint else None)
    assert 6 == gateway.append([record(6)]).id
    gateway.close()
    status, out = verify(capsys, path)
    assert (0, "OK: 2 records verified") == (status, out.split(" (")[0])


async def test_log_size_counts_what_pruning_left_and_its_checkpoint(tmp_path: Path) -> None:
    """The progress lines' total comes from the ids alone (first kept to head), not count(*)."""
    path = tmp_path / "a.db"
    prepare(path, key=ChainKey(), writable=True)
    store = await SQLiteAuditStore.open(path)
    try:
        assert 0 == await store.size()
        make_log(path, 10)
        assert 10 == await store.size()
        appender = SQLiteAppender(path, ChainKey())
        assert 4 == appender.prune("2026-01-05", actor="ops").removed
        appender.close()
        with sqlite3.connect(path) as db:
            assert (7,) == db.execute("SELECT count(*) FROM audit_events").fetchone()
        assert 7 == await store.size()
    finally:
        await store.close()


def _head(capsys: pytest.CaptureFixture[str], path: Path) -> str:
    assert 0 == main(["audit", "head", "--db", str(path)])
    return capsys.readouterr().out.strip()


def test_expect_head_takes_what_head_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a hostile tester: `--expect-head "$(gateway audit head)"` said TAMPERED."""
    path = tmp_path / "a.db"
    make_log(path, 10)
    printed = _head(capsys, path)
    record_id, digest = printed.split()
    for anchor in (printed, digest, digest.upper(), f"  {record_id}   {digest.upper()}\n"):
        status, out = verify(capsys, path, "--expect-head", anchor)
        assert (0, True) == (status, out.startswith("OK: 10 records verified")), anchor
    assert out.endswith(f"; contains the expected head 10 {digest}")


@pytest.mark.parametrize("anchor", ["", "abc", "0" * 63, "g" * 64, "0 " + "a" * 64, "x " + "a" * 64, "1 2 " + "a" * 64])
def test_a_malformed_anchor_is_a_usage_error_not_tampering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], anchor: str
) -> None:
    make_log(tmp_path / "a.db", 2)
    with pytest.raises(SystemExit) as exit:
        main(["audit", "verify", "--db", str(tmp_path / "a.db"), "--no-chain-key", "--expect-head", anchor])
    out, err = capsys.readouterr()
    assert (2, "", "TAMPERED" not in err) == (exit.value.code, out, True)
    assert "argument --expect-head: " in err


def test_an_anchor_pruned_away_is_vouched_for_by_its_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a hostile tester: an anchor that was exactly the last pruned record said TAMPERED."""
    path = tmp_path / "a.db"
    make_log(path, 4)
    anchored = _head(capsys, path)
    make_more = SQLiteAppender(path, ChainKey())
    make_more.append([record(i) for i in range(5, 9)])
    make_more.close()
    assert 0 == main(["audit", "prune", "--db", str(path), "--before", "2026-01-05"])
    capsys.readouterr()
    for anchor in (anchored, anchored.split()[1]):
        status, out = verify(capsys, path, "--expect-head", anchor)
        assert (0, True) == (status, out.startswith("OK: 5 records verified")), out
    # A later prune removes that checkpoint's records too; its checkpoint still vouches for record 4.
    assert 0 == main(["audit", "prune", "--db", str(path), "--before", "2026-01-07"])
    capsys.readouterr()
    status, out = verify(capsys, path, "--expect-head", anchored)
    assert (0, True) == (status, out.startswith("OK: 4 records verified")), out
    # A wrong hash for that record is caught; an id no checkpoint ends at cannot be checked.
    status, out = verify(capsys, path, "--expect-head", f"4 {'b' * 64}")
    assert (1, True) == (
        status,
        out.startswith(
            f"TAMPERED: record 4 (pruned): the checkpoint that removed it gives its hash as {anchored.split()[1]}"
        ),
    )
    assert 2 == main(["audit", "verify", "--db", str(path), "--no-chain-key", "--expect-head", f"2 {'b' * 64}"])
    assert "the expected head is record 2, which a prune removed" in capsys.readouterr().err


def test_an_anchor_with_its_id_must_be_that_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.db"
    make_log(path, 5)
    digest = _hash_of(path, 3)
    assert 0 == verify(capsys, path, "--expect-head", f"3 {digest}")[0]
    status, out = verify(capsys, path, "--expect-head", f"4 {digest}")
    assert (1, "TAMPERED: record 4: its hash is not the expected head's") == (status, out.split(f" {digest}")[0])
    status, out = verify(capsys, path, "--expect-head", f"9 {digest}")
    assert (
        1,
        "TAMPERED: the expected head is record 9, past the end of the log (record 5): records up to it were cut off; 5 records checked",
    ) == (status, out)


def test_a_version_2_file_is_read_as_it_is_and_upgraded_by_a_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Versions 3 to 5 add a rule for appends, columns that older records leave null, and a
    table of their own for intents: readers take an older log as it is, writers upgrade it."""
    from gateway.audit.schema import MIGRATIONS

    path = tmp_path / "v2.db"
    linked, _ = chained([record(1), record(2)], EMPTY, ChainKey())
    with sqlite3.connect(path, isolation_level=None) as db:
        for statement in SCHEMA_V1:
            db.execute(statement)
        MIGRATIONS[1](db, ChainKey())
        columns = [field for field in FIELDS if field not in EXTENSION_FIELDS]  # version 2's
        for item in linked:
            values = dict(zip(FIELDS, as_row(item), strict=True))
            db.execute(
                f"INSERT INTO audit_events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [values[field] for field in columns],
            )
    status, out = verify(capsys, path)
    assert (0, True) == (status, out.startswith("OK: 2 records verified"))
    assert 0 == main(["audit", "query", "--db", str(path), "--action", "token.delete", "--format", "jsonl"])
    assert "" == capsys.readouterr().out
    assert 0 == main(["audit", "stats", "--db", str(path), "--by", "action"])
    assert "action  records\n------  -------\n-       2\n" == capsys.readouterr().out
    with sqlite3.connect(path) as db:
        assert 2 == db.execute("PRAGMA user_version").fetchone()[0]
    prepare(path, key=ChainKey(), writable=True)
    with sqlite3.connect(path) as db:
        assert 5 == db.execute("PRAGMA user_version").fetchone()[0]
        triggers = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert {"audit_intents_linear", "audit_records_linear"} <= triggers
    appender = SQLiteAppender(path, ChainKey())
    appender.append([record(3)._replace(action="token.delete", resource_type="access_token")])
    appender.close()
    status, out = verify(capsys, path)
    assert (0, True) == (status, out.startswith("OK: 3 records verified"))


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        (
            "UPDATE audit_events SET actor = X'00ff' WHERE id = 2",
            "record 2: holds a value of a type no record has (the record was edited)",
        ),
        (
            "UPDATE audit_events SET snapshot = X'7b7d' WHERE id = 2",
            "record 2: holds a value of a type no record has (the record was edited)",
        ),
    ],
)
def test_a_cell_no_record_can_hold_is_tampering_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], statement: str, problem: str
) -> None:
    """Found in review: a BLOB written into a column made verify and show raise TypeError."""
    path = tmp_path / "a.db"
    make_log(path, 3)
    tamper(path, statement)
    status, out = verify(capsys, path)
    assert (1, f"TAMPERED: {problem}; 1 records checked") == (status, out)
    for command in (["show", "2"], ["query", "--format", "json"], ["export"], ["query"]):
        assert 0 == main(["audit", *command, "--db", str(path)]), command
    assert "bytes, not text" in capsys.readouterr().out


def test_a_missing_chain_description_is_tampering(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found in review: an empty audit_chain table made verify raise IndexError, serve TypeError."""
    path = tmp_path / "a.db"
    make_log(path, 3)
    tamper(path, "DELETE FROM audit_chain")
    status, out = verify(capsys, path)
    assert 1 == status
    assert out.startswith("TAMPERED: the log's description of its chain (table audit_chain) is missing")
    assert 2 == main(["audit", "prune", "--db", str(path), "--before", "2026-01-02"])
    assert "audit_chain) is missing or not one row of text" in capsys.readouterr().err


def test_anchors_of_a_pruned_or_empty_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found in review: a hash-only anchor of a record removed inside a prune said TAMPERED (it
    cannot be told from a rebuilt chain: exit 2, asking for `ID HASH`); the empty log's head, as
    `audit head` prints it, was refused."""
    path = tmp_path / "a.db"
    prepare(path, key=ChainKey(), writable=True)
    empty = _head(capsys, path)
    assert f"0 {GENESIS}" == empty
    make_log(path, 6)
    for anchor in (empty, GENESIS):
        status, out = verify(capsys, path, "--expect-head", anchor)
        assert (0, True) == (status, out.startswith("OK: 6 records verified")), anchor
    middle = _hash_of(path, 3)
    assert 0 == main(["audit", "prune", "--db", str(path), "--before", "2026-01-05"])
    capsys.readouterr()
    assert 2 == main(["audit", "verify", "--db", str(path), "--no-chain-key", "--expect-head", middle])
    err = capsys.readouterr().err
    assert "were pruned: it may have been one of them. Give the anchor as `ID HASH`" in err
    assert 2 == main(["audit", "verify", "--db", str(path), "--no-chain-key", "--expect-head", f"3 {middle}"])
    assert "the expected head is record 3, which a prune removed" in capsys.readouterr().err


def test_a_keyed_log_rebuilt_as_version_1_is_not_signed_by_the_next_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: edit a keyed log, rebuild it as schema 1, and the next `serve` chained the
    edited records with the key; `verify --config` then said OK."""
    path = tmp_path / "keyed.db"
    make_log(path, 3, KEY)
    with tampering(path) as db:
        db.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = 2")
        db.execute("DROP TABLE audit_chain")
        db.execute("PRAGMA user_version = 1")
    (tmp_path / "chain.key").write_bytes(KEY)
    config = tmp_path / "gw.toml"
    config.write_text("[server]\nport = 0\n[audit]\ndatabase = 'keyed.db'\nchain_key_file = 'chain.key'\n")
    assert 2 == main(["serve", "--config", str(config)])
    assert (
        "has audit schema version 1, from before the hash chain: chaining it now would vouch" in capsys.readouterr().err
    )


def documented_canonical_form() -> tuple[list[str], list[str]]:
    """docs/audit-log.md's canonical form: the content fields in order, and those left out when all are null."""
    text = " ".join((ROOT / "docs" / "audit-log.md").read_text().split())
    listed = re.search(r"content fields in this order: `([^`]+)`", text)
    optional = re.search(r"The last four \(`([^`]+)`", text)
    assert listed is not None and optional is not None, "docs/audit-log.md no longer states the canonical form"
    return listed.group(1).split(", "), optional.group(1).split(", ")


def test_the_documented_canonical_fields_are_what_the_chain_hashes() -> None:
    fields, optional = documented_canonical_form()
    assert (list(CONTENT_FIELDS), list(EXTENSION_FIELDS)) == (fields, optional)


@pytest.mark.parametrize("key", [None, "a-chain-key-of-32-bytes-or-so-ok"])
async def test_real_records_hash_as_the_doc_describes(tmp_path: Path, gateway: GatewayFactory, key: str | None) -> None:
    """Recomputed from the doc's words alone (not chain.py): records with the extension fields
    (a revocation with its params) and without (a throttle summary has none)."""
    environ = {"CHAIN_KEY": key} if key else {}
    audit = {"chain_key_env": "CHAIN_KEY"} if key else {}
    client = await gateway(make_config(tmp_path, audit=audit, environ=environ))
    await client.post(
        "/v1/o/myorg/oauth2/accesstokens/taFM3LHUTQAFhL0dIFg81XhRc7vC?action=revoke&cascade=true",
        headers=basic("myname"),
    )
    await client.delete("/v1/o/myorg/oauth2/accesstokens/taFM3LHUTQAFhL0dIFg81XhRc7vC", headers=basic("myname"))
    await client.get(URL("/v1/o/myorg/apps/%2e%2e/x", encoded=True), headers=basic("myname"))  # refused: no action
    fields, optional = documented_canonical_form()
    with sqlite3.connect(tmp_path / "audit.db") as db:
        db.row_factory = sqlite3.Row
        rows = [dict(row) for row in db.execute("SELECT * FROM audit_events ORDER BY id")]
    assert any(row["params"] for row in rows), "no record with params to check"
    assert any(row["action"] is None for row in rows), "no record without the extension fields to check"
    for row in rows:
        values = [row[field] for field in fields]
        if all(row[field] is None for field in optional):
            values = values[: -len(optional)]
        data = row["prev_hash"].encode("ascii") + json.dumps(
            [row["id"], *values], separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
        digest = hmac.new(key.encode(), data, hashlib.sha256).hexdigest() if key else hashlib.sha256(data).hexdigest()
        assert digest == row["hash"], f"record {row['id']}"
