"""The audit recorder process: the gateway starts, watches and restarts it; if it dies, no call
is forwarded without a committed intent, and no caller hears 200 without a committed outcome."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from helpers import GatewayFactory, Peer, basic, make_config

from gateway import errors
from gateway.audit import writer as writer_module
from gateway.audit.chain import ChainKey
from gateway.audit.fingerprint import fingerprint
from gateway.audit.record import AuditRecord
from gateway.audit.sqlite_file import prepare
from gateway.audit.store import AuditStoreError
from gateway.audit.writer import AuditWriter, RecorderSpec
from gateway.cli import main
from gateway.logs import flush_logs
from gateway.runtime import RUNTIME

LOAD = 400


def _committed(database: Path, outcome: str) -> set[str]:
    with sqlite3.connect(database) as db:
        return {row[0] for row in db.execute("SELECT token_sha256 FROM audit_events WHERE outcome = ?", (outcome,))}


async def test_a_recorder_killed_mid_load_loses_no_answered_outcome(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    """SIGKILL while hundreds of deletes are in flight: every 200 has its committed ``deleted``
    record, every call that reached the upstream has its committed intent, the others got the
    503 of an audit log that cannot be written, and the chain verifies."""
    monkeypatch.setattr(writer_module, "RESTART_MIN", 2.0)  # a window to see it down
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    writer = client.app[RUNTIME].writer
    assert writer.pid is not None

    async def delete(i: int) -> tuple[str, int, bytes]:
        token = f"load{i}"
        response = await client.delete(f"/v1/o/myorg/oauth2/accesstokens/{token}", headers=basic("myname"))
        return token, response.status, await response.read()

    calls = [asyncio.create_task(delete(i)) for i in range(LOAD)]
    await writer.until(lambda: writer.commits >= 2)  # each call needs two: most are still on their way
    os.kill(writer.pid, signal.SIGKILL)
    results = await asyncio.gather(*calls)

    database = tmp_path / "audit.db"
    deleted, intents = _committed(database, "deleted"), _committed(database, "pending")
    answered = [token for token, status, _ in results if status == 200]
    refused = [(status, body) for _, status, body in results if status != 200]
    assert answered and refused, "the kill should land mid-load"
    assert [t for t in answered if fingerprint(t) not in deleted] == []
    forwarded = [seen.path_qs.rsplit("/", 1)[1] for seen in peer.requests]
    assert [t for t in forwarded if fingerprint(t) not in intents] == []
    assert {503} == {status for status, _ in refused}
    assert {errors.AUDIT_UNAVAILABLE.code} == {json.loads(body)["code"] for _, body in refused}

    ready = await client.get("/readyz")
    body = await ready.json()
    assert (503, True) == (ready.status, "the audit recorder process was killed by SIGKILL" in body["checks"]["audit"])
    refused_now = await client.delete("/v1/o/myorg/oauth2/accesstokens/after", headers=basic("myname"))
    assert 503 == refused_now.status
    assert "after" not in [seen.path_qs.rsplit("/", 1)[1] for seen in peer.requests]
    flush_logs()
    died = [json.loads(line) for line in log_output.getvalue().splitlines() if '"audit_recorder_died"' in line]
    assert ["was killed by SIGKILL"] == [line["reason"] for line in died]

    assert 0 == await asyncio.to_thread(main, ["audit", "verify", "--db", str(database), "--no-chain-key"])


async def test_the_gateway_restarts_its_recorder_and_serves_again(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, log_output: io.StringIO
) -> None:
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    writer = client.app[RUNTIME].writer
    first = writer.pid
    assert first is not None
    assert 200 == (await client.delete("/v1/o/myorg/oauth2/accesstokens/one", headers=basic("myname"))).status
    os.kill(first, signal.SIGKILL)
    await writer.until(lambda: writer.restarts == 1 and writer.problem() is None)
    assert writer.pid not in (None, first)
    assert 200 == (await client.get("/readyz")).status
    assert 200 == (await client.delete("/v1/o/myorg/oauth2/accesstokens/two", headers=basic("myname"))).status
    database = tmp_path / "audit.db"
    assert {fingerprint("one"), fingerprint("two")} == _committed(database, "deleted")
    flush_logs()
    assert '"audit_recorder_restarted"' in log_output.getvalue()


async def test_the_recorder_refuses_to_start_on_a_log_it_cannot_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    prepare(path, key=ChainKey(), writable=True)
    writer = AuditWriter(RecorderSpec(tmp_path / "missing" / "audit.db", ChainKey()))
    try:
        with pytest.raises(AuditStoreError, match="cannot open"):
            await writer.started()
    finally:
        await writer.close()


async def test_closing_commits_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    prepare(path, key=ChainKey(), writable=True)
    writer = AuditWriter(RecorderSpec(path, ChainKey()))
    await writer.started()
    record = AuditRecord("r", "2026-01-01T00:00:00.000Z", "a", None, "DELETE", "o", None, None, "denied")
    writes = [asyncio.create_task(writer.write(record)) for _ in range(50)]
    await asyncio.sleep(0)  # queued, not yet answered
    await writer.close()
    assert [None] * 50 == await asyncio.gather(*writes)
    with sqlite3.connect(path) as db:
        assert 50 == db.execute("SELECT count(*) FROM audit_events").fetchone()[0]


async def test_a_recorder_that_cannot_be_started_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.db"
    prepare(path, key=ChainKey(), writable=True)
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-such-python"))
    writer = AuditWriter(RecorderSpec(path, ChainKey()))
    try:
        with pytest.raises(AuditStoreError, match="the audit recorder process could not be started: FileNotFoundError"):
            await writer.started()
        with pytest.raises(AuditStoreError, match="could not be started"):
            await writer.write(
                AuditRecord("r", "2026-01-01T00:00:00.000Z", "a", None, "DELETE", "o", None, None, "denied")
            )
    finally:
        await writer.close()
