"""The audit log cannot be written: full, or locked by another process. The caller gets 503,
nothing is forwarded, a log line says why, and service comes back by itself when the fault clears."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import GatewayFactory, Peer, basic, make_config, rows

from gateway.audit.backends import open_store
from gateway.audit.chain import ChainKey
from gateway.audit.record import AuditRecord
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.cli import main
from gateway.logs import flush_logs

NOTHING_FORWARDED = {
    "code": "gateway.audit_unavailable",
    "message": "The audit log cannot be written; nothing was forwarded",
    "contexts": [],
}


def fill(database: Path, megabytes: float) -> None:
    """Old records (from 2020) until the file holds ``megabytes``."""
    prepare(database, key=ChainKey(), writable=True)
    appender = SQLiteAppender(database, ChainKey())
    snapshot = json.dumps({"app": "app1", "padding": "x" * 2000})
    batch = [
        AuditRecord(
            request_id=f"old{i}",
            time=f"2020-01-01T00:00:{i % 60:02d}.000Z",
            actor="alice",
            client_ip="10.0.0.1",
            method="DELETE",
            org="myorg",
            token_sha256=f"{i:064x}",
            token_hint="0000",
            outcome="deleted",
            snapshot=snapshot,
        )
        for i in range(100)
    ]
    while database.stat().st_size < megabytes * 1024 * 1024:
        appender.append(batch)
    appender.close()


async def test_a_full_audit_log_means_503_until_pruning_frees_room(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, log_output: io.StringIO
) -> None:
    database = tmp_path / "audit.db"
    fill(database, 1.05)
    client = await gateway(make_config(tmp_path, upstream=peer.url, audit={"max_size_mb": 1}))
    # Pages with room left take a few more records; then the file is full.
    for attempt in range(500):
        forwarded_before = len(peer.requests)
        response = await client.delete(f"/v1/o/myorg/oauth2/accesstokens/token{attempt}", headers=basic("myname"))
        if response.status != 200:
            break
    body = await response.json()
    assert 503 == response.status
    flush_logs()
    failures = [json.loads(line) for line in log_output.getvalue().splitlines() if '"audit_write_failed"' in line]
    assert f"cannot write to {database}: database or disk is full" == failures[0]["error"]
    if failures[0]["stage"] == "intent":
        assert (NOTHING_FORWARDED, forwarded_before) == (body, len(peer.requests))
    else:  # the intent fitted, the outcome did not: the answer is withheld and the intent stays pending
        assert "outcome" == failures[0]["stage"]
        assert "the intent stays pending in the audit log" in body["message"]
    filled = rows(database, "time > '2021'")
    assert all(row["outcome"] in ("pending", "deleted") for row in filled)
    # The operator prunes (another process, as in real life); the gateway serves again without a restart.
    status = await asyncio.to_thread(
        main, ["audit", "prune", "--db", str(database), "--before", "2021-01-01", "--operator", "ops"]
    )
    assert 0 == status
    response = await client.delete("/v1/o/myorg/oauth2/accesstokens/tokenAfter", headers=basic("myname"))
    assert 200 == response.status
    assert ["pruned", "pending", "deleted"] == [row["outcome"] for row in rows(database)][len(filled) :]
    assert 0 == await asyncio.to_thread(
        main, ["audit", "verify", "--db", str(database), "--no-chain-key"]
    )  # nothing half-written


async def test_a_lock_held_by_another_process_means_503_then_recovery(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, log_output: io.StringIO
) -> None:
    client = await gateway(make_config(tmp_path, upstream=peer.url, audit={"busy_timeout": 0.1}))
    database = tmp_path / "audit.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); db.execute('BEGIN EXCLUSIVE');"
            "print('locked', flush=True); sys.stdin.readline()",
            str(database),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and "locked\n" == await asyncio.to_thread(holder.stdout.readline)
        response = await client.delete("/v1/o/myorg/oauth2/accesstokens/tokenA", headers=basic("myname"))
        assert (503, NOTHING_FORWARDED) == (response.status, await response.json())
        assert [] == peer.requests
    finally:
        holder.communicate("release\n", timeout=30)
    flush_logs()
    assert f"cannot write to {database}: database is locked" in log_output.getvalue()
    assert 200 == (await client.delete("/v1/o/myorg/oauth2/accesstokens/tokenA", headers=basic("myname"))).status
    assert ["pending", "deleted"] == [row["outcome"] for row in rows(database)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files; the permission check cannot be staged")
def test_a_read_only_audit_log_stops_start_up_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "audit.db"
    fill(database, 0.01)
    database.chmod(0o444)
    config = tmp_path / "gw.toml"
    config.write_text("[server]\nport = 0\n[audit]\ndatabase = 'audit.db'\n")
    assert 2 == main(["serve", "--config", str(config)])
    err = capsys.readouterr().err
    assert err.startswith(f"gateway: error: {config}: audit.database: ") and "readonly" in err
    assert 1 == len(err.splitlines())


def _replace_with_another_log(database: Path) -> None:
    other = database.with_name("other.db")
    fill(other, 0.01)
    os.replace(other, database)


def _remove_wal(database: Path) -> None:
    database.with_name(database.name + "-wal").unlink()


@pytest.mark.parametrize("change", ["removed", "replaced", "wal removed", "wal removed before any write"])
async def test_the_log_removed_or_replaced_while_serving_stops_forwarding(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, log_output: io.StringIO, change: str
) -> None:
    """Found by a hostile tester: deletes still answered 200 and their records vanished with the
    unlinked file; /readyz said ready. Now the next call is refused before anything is forwarded.
    Found again in review: a WAL removed before the gateway's first write went unnoticed."""
    database = tmp_path / "audit.db"
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    if change != "wal removed before any write":
        assert 200 == (await client.delete("/v1/o/myorg/oauth2/accesstokens/before", headers=basic("myname"))).status
    changes: dict[str, Callable[[Path], None]] = {
        "removed": Path.unlink,
        "replaced": _replace_with_another_log,
        "wal removed": _remove_wal,
    }
    changes.get(change, _remove_wal)(database)
    response = await client.delete("/v1/o/myorg/oauth2/accesstokens/after", headers=basic("myname"))
    assert (503, NOTHING_FORWARDED) == (response.status, await response.json())
    forwarded = [] if change == "wal removed before any write" else ["/v1/o/myorg/oauth2/accesstokens/before"]
    assert forwarded == [seen.path_qs for seen in peer.requests]
    what = (
        "audit.db-wal was removed"
        if change.startswith("wal removed")
        else f"audit.db was {'removed' if change == 'removed' else 'replaced by another file'}"
    )
    ready = await client.get("/readyz")
    body = await ready.json()
    assert (503, True) == (
        ready.status,
        body["checks"]["audit"].startswith(f"{tmp_path / what} while the gateway had it open"),
    )
    flush_logs()
    failures = [json.loads(line) for line in log_output.getvalue().splitlines() if '"audit_write_failed"' in line]
    assert [("intent", True)] == [(line["stage"], what in line["error"]) for line in failures]


def _mount_small_filesystem(where: Path, megabytes: int) -> None:
    where.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"a small filesystem cannot be mounted here ({result.stderr.strip()}); needs root")


async def test_prune_works_on_a_really_full_disk(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
    """Found by a hostile tester: on a full disk, the documented remedy (prune) itself failed
    with "database or disk is full". The reserve held back beside the log gives it room."""
    disk = tmp_path / "disk"
    _mount_small_filesystem(disk, 4)
    try:
        database = disk / "audit.db"
        client = await gateway(
            make_config(tmp_path, upstream=peer.url, audit={"database": str(database), "reserve_mb": 1})
        )
        assert (disk / "audit.db.reserve").stat().st_size == 1024 * 1024
        for attempt in range(5000):
            response = await client.delete(
                f"/v1/o/myorg/oauth2/accesstokens/token{attempt:05d}x", headers=basic("myname")
            )
            if response.status != 200:
                break
        assert 503 == response.status
        deleted = len(rows(database, "outcome = 'deleted'"))
        status = await asyncio.to_thread(
            main, ["audit", "prune", "--db", str(database), "--before", "2099-01-01", "--yes", "--operator", "ops"]
        )
        assert 0 == status
        response = await client.delete("/v1/o/myorg/oauth2/accesstokens/afterPrune", headers=basic("myname"))
        assert 200 == response.status
        assert ["pruned", "pending", "deleted"] == [row["outcome"] for row in rows(database)]
        assert 0 == await asyncio.to_thread(main, ["audit", "verify", "--db", str(database), "--no-chain-key"])
        assert deleted > 10
    finally:
        await client.close()
        subprocess.run(["umount", "-l", str(disk)], check=False)


async def test_prune_works_on_a_full_disk_again_and_again(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
    """Found in review: prune worked on a full disk once. Its freed pages stayed inside the
    file, the reserve never came back, and the next prune failed. Now a prune gives the pages
    back to the disk and takes the reserve again."""
    disk = tmp_path / "disk"
    _mount_small_filesystem(disk, 6)
    database = disk / "audit.db"
    client = await gateway(make_config(tmp_path, upstream=peer.url, audit={"database": str(database), "reserve_mb": 1}))
    try:
        served = 0
        for cycle in range(3):
            while (
                await client.delete(f"/v1/o/myorg/oauth2/accesstokens/t{served:06d}x", headers=basic("myname"))
            ).status == 200:
                served += 1
            kept = rows(database)
            before = kept[len(kept) * 3 // 4]["time"]  # three quarters go
            status = await asyncio.to_thread(
                main, ["audit", "prune", "--db", str(database), "--before", before, "--operator", "ops"]
            )
            assert 0 == status, cycle
            assert (disk / "audit.db.reserve").is_file(), cycle
            response = await client.delete(f"/v1/o/myorg/oauth2/accesstokens/t{served:06d}x", headers=basic("myname"))
            assert 200 == response.status, cycle
            served += 1
        assert 0 == await asyncio.to_thread(main, ["audit", "verify", "--db", str(database), "--no-chain-key"])
    finally:
        await client.close()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _reader_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if "_connection_worker_thread" in thread.name}


async def test_a_reader_cancelled_while_it_opens_leaves_no_thread_behind(tmp_path: Path) -> None:
    """A shipper stopped by SIGTERM while it opened the log left the reader's thread waiting, and
    the interpreter waits for it: `gateway serve` never exited. Cancelled at every point of the
    opening in turn (the cancellations kept, as a task keeps its own), no thread outlives it."""
    path = tmp_path / "audit.db"
    prepare(path, key=ChainKey(), writable=True)
    before = _reader_threads()
    kept: list[BaseException] = []
    for turns in range(300):
        opening = asyncio.create_task(open_store(path))
        for _ in range(turns):
            await asyncio.sleep(0)
        opening.cancel()
        try:
            await (await opening).close()
        except asyncio.CancelledError as exc:
            kept.append(exc)
    left = _reader_threads() - before
    for thread in left:
        await asyncio.to_thread(thread.join, 2)
    still_running = {thread for thread in left if thread.is_alive()}
    kept.clear()
    gc.collect()  # a failure here must not leave threads that keep pytest from exiting
    assert set() == still_running


def test_a_log_removed_without_its_write_ahead_log_stops_start_up_and_the_wal_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The WAL of a log whose gateway was killed holds its newest committed records; SQLite,
    making a new file under the old name, would discard them without a word."""
    database = tmp_path / "audit.db"
    wal = tmp_path / "audit.db-wal"
    prepare(database, key=ChainKey(), writable=True)
    appender = SQLiteAppender(database, ChainKey())
    appender.append(
        [
            AuditRecord(f"r{n}", "2026-01-01T00:00:00.000Z", "alice", None, "DELETE", "myorg", None, None, "pending")
            for n in range(3)
        ]
    )
    held = wal.read_bytes()  # as a SIGKILL leaves it: committed, not yet copied into the file
    appender.close()
    database.unlink()
    wal.write_bytes(held)
    config = tmp_path / "gw.toml"
    config.write_text("[server]\nport = 0\n[audit]\ndatabase = 'audit.db'\n")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    assert 2 == main(["serve", "--config", str(config)])

    expected = (
        f"gateway: error: {config}: audit.database: {database} is missing, but its write-ahead log {wal} "
        f"({len(held):,} bytes) is still there and may hold the log's newest records: restore audit.db, or move "
        "audit.db-wal and audit.db-shm away to start a new log\n"
    )
    assert ("", expected) == capsys.readouterr()
    assert before == {path.name: path.read_bytes() for path in tmp_path.iterdir()}
