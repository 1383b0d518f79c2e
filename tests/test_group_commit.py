"""Concurrent requests share commits, and none is answered before its outcome is committed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from helpers import GatewayFactory, basic, make_config

from gateway.audit.fingerprint import fingerprint
from gateway.runtime import RUNTIME

CONCURRENT = 100


async def test_concurrent_deletes_share_commits(tmp_path: Path, gateway: GatewayFactory) -> None:
    """100 concurrent deletes make 200 records in far fewer than 100 transactions."""
    client = await gateway(make_config(tmp_path, stub={"generated_tokens": CONCURRENT}))
    writer = client.app[RUNTIME].writer
    before = writer.commits
    statuses = await asyncio.gather(
        *(client.delete(f"/v1/o/myorg/oauth2/accesstokens/load{i}", headers=basic("myname")) for i in range(CONCURRENT))
    )
    assert [200] * CONCURRENT == [response.status for response in statuses]
    with sqlite3.connect(tmp_path / "audit.db") as db:
        assert 2 * CONCURRENT == db.execute("SELECT count(*) FROM audit_events").fetchone()[0]
    assert writer.commits - before < CONCURRENT / 2


async def test_every_answer_finds_its_outcome_already_committed(tmp_path: Path, gateway: GatewayFactory) -> None:
    """The moment each of 100 concurrent callers gets its 200, another connection reads its deleted record."""
    client = await gateway(make_config(tmp_path, stub={"generated_tokens": CONCURRENT}))
    reader = sqlite3.connect(tmp_path / "audit.db")
    missing: list[str] = []

    async def delete(token: str) -> None:
        response = await client.delete(f"/v1/o/myorg/oauth2/accesstokens/{token}", headers=basic("myname"))
        assert 200 == response.status
        found = reader.execute(
            "SELECT count(*) FROM audit_events WHERE token_sha256 = ? AND outcome = 'deleted'", (fingerprint(token),)
        ).fetchone()[0]
        if found != 1:
            missing.append(token)

    try:
        await asyncio.gather(*(delete(f"load{i}") for i in range(CONCURRENT)))
    finally:
        reader.close()
    assert [] == missing
