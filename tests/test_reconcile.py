"""Pending intents without an outcome: reported at start-up, settled by `gateway audit reconcile`."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import sqlite3
from pathlib import Path

import aiohttp
import pytest
import structlog
from helpers import GatewayFactory, basic, make_config
from pytest_aiohttp import AiohttpServer

from gateway.audit.chain import ChainKey
from gateway.audit.fingerprint import fingerprint
from gateway.audit.record import AuditRecord
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.cli import main
from gateway.logs import configure_logging, flush_logs
from gateway.runtime import RUNTIME
from gateway.stub import demo_seed, make_stub_app


def intent(request_id: str, token: str, *, raw: bool, outcome: str = "pending") -> AuditRecord:
    return AuditRecord(
        request_id=request_id,
        time="2026-01-01T00:00:00.000Z",
        actor="alice",
        client_ip="10.0.0.1",
        method="DELETE",
        org="myorg",
        token_sha256=fingerprint(token),
        token_hint=token[-4:],
        outcome=outcome,
        token=token if raw else None,
    )


def write(path: Path, records: list[AuditRecord]) -> None:
    prepare(path, key=ChainKey(), writable=True)
    appender = SQLiteAppender(path, ChainKey())
    appender.append(records)
    appender.close()


async def test_reconcile_against_the_stub(
    tmp_path: Path, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stub = await aiohttp_server(make_stub_app(dataclasses.replace(demo_seed(), generated=10)))
    stub_url = str(stub.make_url("")).rstrip("/")
    database = tmp_path / "audit.db"
    write(
        database,
        [
            intent("done", "load9", raw=False),
            intent("done", "load9", raw=False, outcome="deleted"),  # a complete pair
            intent("a", "load1", raw=True),  # still upstream -> not_deleted
            intent("b", "load2", raw=True),  # deleted upstream meanwhile -> deleted
            intent("c", "load3", raw=False),  # a later successful delete -> the pending one did not
            intent("c2", "load3", raw=False),
            intent("c2", "load3", raw=False, outcome="deleted"),
            intent("d", "load4", raw=False),  # raw token from the operator's file -> asked upstream
            intent("e", "load5", raw=False),  # nothing to go on -> stays pending
            intent("f", "load6", raw=True),
            intent("f", "load6", raw=True, outcome="unknown"),  # sent, no answer
        ],
    )
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{stub_url}/v1/o/myorg/oauth2/accesstokens/load2", headers=basic("myname")) as gone:
            assert 200 == gone.status
    (tmp_path / "tokens.txt").write_text("load4\nunrelatedToken\n")
    monkeypatch.setenv("GATEWAY_UPSTREAM_PASSWORD", "mypass")
    args = [
        "audit",
        "reconcile",
        "--db",
        str(database),
        "--upstream",
        stub_url,
        "--user",
        "myname",
        "--tokens-file",
        str(tmp_path / "tokens.txt"),
        "--operator",
        "ops",
    ]
    assert 1 == await asyncio.to_thread(main, args)
    assert [
        "record 3 (request a): not_deleted, recorded as 12",
        "record 4 (request b): deleted, recorded as 13",
        "record 5 (request c): not_deleted, recorded as 14",
        "record 8 (request d): not_deleted, recorded as 15",
        "record 11 (request f): not_deleted, recorded as 16",
        "record 9 (request e): still open: the raw token is not stored, not in --tokens-file, and no later record "
        "for it exists; give it with --tokens-file",
        "5 settled, 1 still open",
    ] == capsys.readouterr().out.splitlines()
    with sqlite3.connect(database) as db:
        added = db.execute(
            "SELECT request_id, outcome, upstream_status, error_code, snapshot FROM audit_events WHERE id > 11 ORDER BY id"
        ).fetchall()
    assert [
        ("a", "not_deleted", 200),
        ("b", "deleted", 404),
        ("c", "not_deleted", None),
        ("d", "not_deleted", 200),
        ("f", "not_deleted", 200),
    ] == [row[:3] for row in added]
    assert {"reconciled"} == {row[3] for row in added}
    assert {"reconciled_by": "ops", "intent_id": 5, "later_record": 7, "later_outcome": "deleted"} == json.loads(
        added[2][4]
    )
    assert 0 == await asyncio.to_thread(main, ["audit", "verify", "--db", str(database), "--no-chain-key"])
    # Once settled, an intent is no longer pending: a second run only reports the last one.
    assert 1 == await asyncio.to_thread(main, args)


NO_UPSTREAM = "give --upstream URL (or a --config whose upstream.url is the Apigee it went to)"


@pytest.mark.parametrize(
    ("options", "password", "reasons"),
    [
        pytest.param(
            ["--tokens-file", "{tokens}"],
            None,
            [f"the raw token is known, but there is no upstream to ask: {NO_UPSTREAM}"] * 2
            + [
                "the raw token is not stored, not in --tokens-file, and no later record for it exists; give it with "
                f"--tokens-file, and the upstream to ask with {NO_UPSTREAM.removeprefix('give ')}"
            ],
            id="--db without --upstream ignores nothing silently",
        ),
        pytest.param(
            ["--upstream", "{stub}"],
            None,
            [
                "the upstream answered 401 to GET on the token: no credentials were sent: give --user (password in "
                '$GATEWAY_UPSTREAM_PASSWORD) or a --config with upstream.auth = "service"'
            ]
            + ["the raw token is not stored and no later record for it exists; give it with --tokens-file"] * 2,
            id="without --user",
        ),
        pytest.param(
            ["--upstream", "{stub}", "--user", "myname", "--tokens-file", "{tokens}"],
            "wrong",
            ["the upstream answered 401 to GET on the token: it refused the credentials of --user myname; check them"]
            * 2
            + [
                "the raw token is not stored, not in --tokens-file, and no later record for it exists; give it with --tokens-file"
            ],
            id="wrong password",
        ),
    ],
)
async def test_what_stays_open_says_what_would_settle_it(
    tmp_path: Path,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    password: str | None,
    reasons: list[str],
) -> None:
    """Found by a tester: with --db, --tokens-file was ignored while the message asked for it; without
    --user the report was a bare 'upstream answered 401'."""
    stub = await aiohttp_server(make_stub_app(dataclasses.replace(demo_seed(), generated=10)))
    database = tmp_path / "audit.db"
    write(database, [intent("a", "load1", raw=True), intent("b", "load2", raw=False), intent("c", "load3", raw=False)])
    (tmp_path / "tokens.txt").write_text("load2\n")
    if password is not None:
        monkeypatch.setenv("GATEWAY_UPSTREAM_PASSWORD", password)
    replace = {"{tokens}": str(tmp_path / "tokens.txt"), "{stub}": str(stub.make_url("")).rstrip("/")}
    args = ["audit", "reconcile", "--db", str(database), "--operator", "ops", *(replace.get(o, o) for o in options)]
    assert 1 == await asyncio.to_thread(main, args)
    expected = [
        f"record {n} (request {r}): still open: {reason}"
        for n, r, reason in zip((1, 2, 3), "abc", reasons, strict=True)
    ]
    assert [*expected, "0 settled, 3 still open"] == capsys.readouterr().out.splitlines()


async def test_start_up_warns_of_pending_intents(tmp_path: Path, gateway: GatewayFactory) -> None:
    write(
        tmp_path / "audit.db",
        [
            intent("x", "load1", raw=False),
            intent("y", "load2", raw=False),
            intent("y", "load2", raw=False, outcome="deleted"),
        ],
    )
    output = io.StringIO()
    configure_logging("json", "info", output)
    try:
        client = await gateway(make_config(tmp_path))
        pending_check = client.app[RUNTIME].pending_check
        assert pending_check is not None
        await pending_check
        flush_logs()
    finally:
        structlog.reset_defaults()
    events = [json.loads(line) for line in output.getvalue().splitlines()]
    warning = next(event for event in events if event["event"] == "pending_intents_without_outcome")
    assert (1, 1, "warning") == (warning["count"], warning["first_id"], warning["level"])


async def test_the_head_is_logged_for_anchoring(tmp_path: Path, gateway: GatewayFactory) -> None:
    output = io.StringIO()
    configure_logging("json", "info", output)
    try:
        client = await gateway(make_config(tmp_path, audit={"head_log_records": 2}))
        await client.delete("/v1/o/myorg/oauth2/accesstokens/taFM3LHUTQAFhL0dIFg81XhRc7vC", headers=basic("myname"))
        flush_logs()
    finally:
        structlog.reset_defaults()
    heads = [json.loads(line) for line in output.getvalue().splitlines() if '"audit_head"' in line]
    with sqlite3.connect(tmp_path / "audit.db") as db:
        last_id, last_hash = db.execute("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
    assert (last_id, last_hash) == (heads[-1]["record_id"], heads[-1]["hash"])
