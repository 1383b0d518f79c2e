"""Whatever an upstream puts in its answer, the record of it is stored, and one odd record never
fails another caller's: found by a hostile tester, whose lone surrogate (``"\\ud800"``, valid
JSON) made whole commit batches fail, so callers got 503 for tokens that were in fact deleted."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from aiohttp import web
from helpers import GatewayFactory, Peer, basic, make_config, rows

from gateway.audit.chain import ChainKey
from gateway.audit.fingerprint import fingerprint
from gateway.audit.record import AuditRecord
from gateway.audit.sqlite_file import prepare
from gateway.audit.store import AuditRecordError
from gateway.audit.writer import AuditWriter, RecorderSpec
from gateway.cli import main
from gateway.logs import flush_logs

POISON_SNAPSHOT = b'{"token":"poison","app":"\\ud800","clientId":"c\\udc00d","nested":{"note":"\\ud800x"}}'
POISON_ERROR = b'{"code":"\\ud800","message":"no"}'


async def test_a_lone_surrogate_in_a_snapshot_fails_no_caller(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, log_output: io.StringIO
) -> None:
    async def respond(request: web.Request) -> web.Response:
        token = request.path.rsplit("/", 1)[1]
        body = POISON_SNAPSHOT if token == "poison" else json.dumps({"token": token, "app": "app1"}).encode()
        return web.Response(body=body, content_type="application/json")

    peer.respond = respond
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    tokens = ["poison" if i == 20 else f"token{i}" for i in range(40)]
    responses = await asyncio.gather(
        *(client.delete(f"/v1/o/myorg/oauth2/accesstokens/{token}", headers=basic("myname")) for token in tokens)
    )
    assert [200] * 40 == [response.status for response in responses]
    assert POISON_SNAPSHOT == await responses[20].read()
    outcomes = rows(tmp_path / "audit.db", "outcome = 'deleted'")
    assert 40 == len(outcomes)
    poison = next(row for row in outcomes if row["token_hint"] == "" and row["app"] != "app1")
    # Text columns keep the value escaped; the snapshot keeps it exactly, as a JSON escape.
    assert ("\\ud800", fingerprint("c\udc00d")) == (poison["app"], poison["client_id"])
    assert {
        "token": "[redacted]",
        "app": "\ud800",
        "clientId": "[redacted]",
        "nested": {"note": "\ud800x"},
    } == json.loads(poison["snapshot"])
    assert poison["snapshot"].isascii()
    flush_logs()
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert [["app"]] == [line["escaped"] for line in lines if "escaped" in line]


async def test_a_lone_surrogate_in_an_error_code_is_passed_through_and_recorded(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, log_output: io.StringIO
) -> None:
    async def respond(request: web.Request) -> web.Response:
        return web.Response(status=404, body=POISON_ERROR, content_type="application/json")

    peer.respond = respond
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.delete("/v1/o/myorg/oauth2/accesstokens/gone", headers=basic("myname"))
    assert (404, POISON_ERROR) == (response.status, await response.read())
    (outcome,) = rows(tmp_path / "audit.db", "outcome = 'not_found'")
    assert "\\ud800" == outcome["error_code"]
    flush_logs()
    (line,) = [json.loads(line) for line in log_output.getvalue().splitlines() if '"request"' in line]
    assert (404, ["error_code"]) == (line["status"], line["escaped"])


def _record(index: int, actor: str = "alice") -> AuditRecord:
    return AuditRecord(
        request_id=f"r{index}",
        time="2026-01-01T00:00:00.000Z",
        actor=actor,
        client_ip=None,
        method="DELETE",
        org="myorg",
        token_sha256=None,
        token_hint=None,
        outcome="deleted",
    )


async def test_a_record_the_store_cannot_take_fails_alone(tmp_path: Path) -> None:
    """Whatever slips past the record's own checks: the batch it was in is written record by
    record, so only its caller hears of it."""
    path = tmp_path / "audit.db"
    prepare(path, key=ChainKey(), writable=True)
    writer = AuditWriter(RecorderSpec(path, ChainKey()))
    await writer.started()
    try:
        results = await asyncio.gather(
            *(writer.write(_record(i, actor="\ud800" if i == 5 else "alice")) for i in range(12)),
            return_exceptions=True,
        )
    finally:
        await writer.close()
    failed = [i for i, result in enumerate(results) if result is not None]
    assert [5] == failed
    assert isinstance(results[5], AuditRecordError)
    stored = rows(path)
    assert [f"r{i}" for i in range(12) if i != 5] == [row["request_id"] for row in stored]
    assert list(range(1, 12)) == [row["id"] for row in stored]
    assert writer.last_failure is None


NUMBERS = b'{"token":"numbers","big":18446744073709551617,"huge":1e999,"negative":-9223372036854775809,"long":0.12345678901234567890,"plain":1.5}'


async def test_numbers_a_double_cannot_hold_are_kept_exactly(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: 1e999 was stored as Infinity (not JSON, so every JSON output of the log
    was invalid), and an integer past 64 bits as a float of another value."""

    async def respond(request: web.Request) -> web.Response:
        return web.Response(body=NUMBERS, content_type="application/json")

    peer.respond = respond
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.delete("/v1/o/myorg/oauth2/accesstokens/numbers", headers=basic("myname"))
    assert (200, NUMBERS) == (response.status, await response.read())
    (outcome,) = rows(tmp_path / "audit.db", "outcome = 'deleted'")
    expected = (
        '{"token":"[redacted]","big":18446744073709551617,"huge":1e999,"negative":-9223372036854775809,'
        '"long":0.12345678901234567890,"plain":1.5}'
    )
    assert expected == outcome["snapshot"]
    for command in (["export"], ["query", "--format", "json"], ["show", str(outcome["id"])]):
        assert 0 == await asyncio.to_thread(main, ["audit", *command, "--db", str(tmp_path / "audit.db")])
        out = capsys.readouterr().out
        assert "1e999" in out and "18446744073709551617" in out and "Infinity" not in out, command
        json.loads(out.splitlines()[-1] if command == ["export"] else out, parse_constant=_not_json)


def _not_json(name: str) -> None:
    raise AssertionError(f"{name} in a JSON output")


async def test_nan_makes_a_snapshot_unreadable_not_null(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
    async def respond(request: web.Request) -> web.Response:
        return web.Response(body=b'{"token":"nan","n":NaN}', content_type="application/json")

    peer.respond = respond
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    assert 200 == (await client.delete("/v1/o/myorg/oauth2/accesstokens/nan", headers=basic("myname"))).status
    (outcome,) = rows(tmp_path / "audit.db", "outcome = 'deleted'")
    assert (None, "upstream.snapshot_unreadable") == (outcome["snapshot"], outcome["error_code"])
