"""The chain stays one linear chain whatever other processes do to the file while the gateway
runs: prune (once or twice), reconcile, a second gateway. Ids never go back."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path

import pytest
from aiohttp import ClientSession
from audit_support import make_log, record
from helpers import AppClient, GatewayFactory, basic, make_config
from processes import completed, started

from gateway.audit.chain import ChainKey
from gateway.audit.sqlite_file import SQLiteAppender
from gateway.cli import main


def ids_and_links(path: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, prev_hash, hash FROM audit_events ORDER BY id").fetchall()


def assert_linear(path: Path) -> None:
    """Ids rise by one (the id is each table's rowid: insertion order) and each record links to the one before."""
    rows = ids_and_links(path)
    assert [row[0] for row in rows] == list(range(rows[0][0], rows[0][0] + len(rows)))
    assert all(rows[i][1] == rows[i - 1][2] for i in range(1, len(rows)))


def test_pruning_twice_under_a_running_writer_keeps_one_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a hostile tester: the writer trusted its cached head; a second prune removed the
    first checkpoint, so its next id was free again and the writer appended behind it."""
    path = tmp_path / "a.db"
    make_log(path, 2)
    gateway = SQLiteAppender(path, ChainKey())
    assert 3 == gateway.append([record(3)]).id
    for _ in range(2):
        assert 0 == main(["audit", "prune", "--db", str(path), "--before", "2099-01-01", "--yes"])
    assert 6 == gateway.append([record(6)]).id
    gateway.close()
    assert_linear(path)
    capsys.readouterr()
    assert 0 == main(["audit", "verify", "--db", str(path), "--no-chain-key"])
    assert capsys.readouterr().out.startswith("OK: 2 records verified")


def test_every_writer_is_held_to_the_head_by_the_file_itself(tmp_path: Path) -> None:
    """Not only the gateway's appender: any INSERT that does not continue the chain is refused by
    SQLite, so no process (old version, script, second gateway) can fork or rewind the ids."""
    path = tmp_path / "a.db"
    make_log(path, 3)
    columns = "id, request_id, time, method, outcome, prev_hash, hash"
    with sqlite3.connect(path) as db:
        head = db.execute("SELECT hash FROM audit_events WHERE id = 3").fetchone()[0]
        for record_id, prev_hash in ((3, head), (2, head), (5, head), (4, "0" * 64)):
            with pytest.raises(sqlite3.IntegrityError, match="audit chain"):
                db.execute(
                    f"INSERT INTO audit_events ({columns}) VALUES (?, 'r', 't', 'DELETE', 'deleted', ?, 'h')",
                    (record_id, prev_hash),
                )
        db.execute(f"INSERT INTO audit_events ({columns}) VALUES (4, 'r', 't', 'DELETE', 'deleted', ?, 'h')", (head,))


async def _delete_all(base: str, tokens: list[str]) -> list[int]:
    async with ClientSession() as session:

        async def one(token: str) -> int:
            async with session.delete(
                f"{base}/v1/o/myorg/oauth2/accesstokens/{token}", headers=basic("myname")
            ) as response:
                await response.read()
                return response.status

        return list(await asyncio.gather(*(one(token) for token in tokens)))


async def test_prune_and_reconcile_while_serving(tmp_path: Path) -> None:
    """The repro, with real processes: serve; delete; prune twice; reconcile; delete; verify."""
    (tmp_path / "gw.toml").write_text("[audit]\ndatabase = 'audit.db'\n[stub]\ngenerated_tokens = 100\n")
    async with started("serve", "--config", "gw.toml", "--port", "0", cwd=tmp_path) as gateway:
        assert [200] == await _delete_all(gateway.url, ["load0"])
        for _ in range(2):
            status, out = await completed(
                "audit", "prune", "--db", "audit.db", "--before", "2099-01-01", "--yes", cwd=tmp_path
            )
            assert 0 == status, out
        status, out = await completed("audit", "reconcile", "--db", "audit.db", cwd=tmp_path)
        assert 0 == status, out
        assert {200} == set(await _delete_all(gateway.url, [f"load{i}" for i in range(1, 40)]))
        status, out = await completed(
            "audit", "prune", "--db", "audit.db", "--before", "2099-01-01", "--yes", cwd=tmp_path
        )
        assert 0 == status, out
        assert {200} == set(await _delete_all(gateway.url, [f"load{i}" for i in range(40, 60)]))
    assert_linear(tmp_path / "audit.db")
    status, out = await completed("audit", "verify", "--db", "audit.db", "--no-chain-key", cwd=tmp_path)
    assert (0, "OK: 41 records verified") == (status, out.split(" (")[0])


async def test_two_gateways_on_one_file_keep_one_chain(
    tmp_path: Path, gateway: GatewayFactory, log_output: io.StringIO
) -> None:
    """A second gateway on the same file is safe: both append to one linear chain."""
    config = make_config(tmp_path, stub={"generated_tokens": 200})
    first, second = await gateway(config), await gateway(config)

    async def delete(client: AppClient, index: int) -> int:
        response = await client.delete(f"/v1/o/myorg/oauth2/accesstokens/load{index}", headers=basic("myname"))
        return response.status

    statuses = await asyncio.gather(*(delete(first if i % 2 else second, i) for i in range(60)))
    assert 0 == await asyncio.to_thread(
        main, ["audit", "prune", "--db", str(tmp_path / "audit.db"), "--before", "2099-01-01", "--yes"]
    )
    statuses += await asyncio.gather(*(delete(first if i % 2 else second, i) for i in range(60, 120)))
    assert {200} == set(statuses)
    assert_linear(tmp_path / "audit.db")
    assert 121 == len(ids_and_links(tmp_path / "audit.db"))
