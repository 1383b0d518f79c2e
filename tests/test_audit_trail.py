"""No delete without a trail: the intent is durable before forwarding, the outcome before replying."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import SAMPLE, SAMPLE_PATH, GatewayFactory, Peer, basic, make_config, rows, write_locked

from gateway.audit.fingerprint import fingerprint

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_intent_is_committed_before_the_upstream_sees_the_call(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    """When the upstream receives the DELETE, another connection already reads the pending intent."""
    database = tmp_path / "audit.db"
    seen_by_upstream: list[list[dict[str, Any]]] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        seen_by_upstream.append(rows(database))
        return web.Response(body=b'{"token": "x"}', content_type="application/json")

    peer.respond = answer
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    assert 200 == (await client.delete(SAMPLE_PATH, headers=basic("myname"))).status
    [[intent]] = seen_by_upstream
    assert ("pending", "myname", fingerprint(SAMPLE)) == (intent["outcome"], intent["actor"], intent["token_sha256"])


async def test_every_forwarded_call_gets_an_intent_and_an_outcome(tmp_path: Path, gateway: GatewayFactory) -> None:
    """A delete and a repeat: two pairs of records sharing request ids, snapshot redacted."""
    client = await gateway(make_config(tmp_path))
    await client.delete(SAMPLE_PATH, headers=basic("myname"))
    await client.delete(SAMPLE_PATH, headers=basic("myname"))
    intent, deleted, intent2, not_found = rows(tmp_path / "audit.db")
    assert intent["request_id"] == deleted["request_id"] != intent2["request_id"] == not_found["request_id"]
    common = {
        "actor": "myname",
        "client_ip": "127.0.0.1",
        "method": "DELETE",
        "org": "myorg",
        "token_sha256": fingerprint(SAMPLE),
        "token_hint": "c7vC",
        "token": None,
        "action": "token.delete",
        "resource_type": "access_token",
        "resource": "oauth2/accesstokens/{token}",
        "params": None,
    }
    for record in (intent, deleted, intent2, not_found):
        assert common == {key: record[key] for key in common}
        assert ISO_MS.fullmatch(record["time"])
    assert (None, None, None, None) == (
        intent["upstream_status"],
        intent["latency_ms"],
        intent["snapshot"],
        intent["app"],
    )
    # The consumer key the token was issued to is a credential too: its fingerprint only.
    assert ("deleted", 200, "app1", fingerprint("fGytmxA5UDajPMdOA5E3bebiBOBPikOT"), None) == (
        deleted["outcome"],
        deleted["upstream_status"],
        deleted["app"],
        deleted["client_id"],
        deleted["error_code"],
    )
    assert deleted["latency_ms"] > 0
    snapshot = json.loads(deleted["snapshot"])
    assert ("[redacted …c7vC]", "[redacted]", "[redacted …ikOT]", "password") == (
        snapshot["token"],
        snapshot["refreshToken"],
        snapshot["clientId"],
        snapshot["grantType"],
    )
    assert ("not_found", 404, "keymanagement.service.invalid_account_name", None) == (
        not_found["outcome"],
        not_found["upstream_status"],
        not_found["error_code"],
        not_found["snapshot"],
    )


async def test_raw_tokens_are_kept_only_when_opted_in(tmp_path: Path, gateway: GatewayFactory) -> None:
    client = await gateway(make_config(tmp_path, audit={"store_raw_tokens": True}))
    await client.delete(SAMPLE_PATH, headers=basic("myname"))
    intent, deleted = rows(tmp_path / "audit.db")
    assert SAMPLE == intent["token"] == deleted["token"]
    assert ("taFM3LHUTQAFhL0dIFg81XhRc7vC", "1h11770Z") == tuple(
        json.loads(deleted["snapshot"])[k] for k in ("token", "refreshToken")
    )


async def test_unwritable_audit_log_means_503_and_nothing_forwarded(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    """If the intent cannot be committed (database locked), the caller gets 503 and the upstream nothing."""
    client = await gateway(make_config(tmp_path, upstream=peer.url, audit={"busy_timeout": 0.05}))
    with write_locked(tmp_path / "audit.db"):
        response = await client.delete(SAMPLE_PATH, headers=basic("myname"))
    assert 503 == response.status
    assert {
        "code": "gateway.audit_unavailable",
        "message": "The audit log cannot be written; nothing was forwarded",
        "contexts": [],
    } == await response.json()
    assert [] == peer.requests
    assert [] == rows(tmp_path / "audit.db")
    # Once the lock is gone the gateway serves again by itself.
    assert 200 == (await client.delete(SAMPLE_PATH, headers=basic("myname"))).status
    assert ["pending", "deleted"] == [row["outcome"] for row in rows(tmp_path / "audit.db")]


def _answer_200(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b'{"token": "x"}', content_type="application/json")


def _hang_up(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()  # no answer: the gateway's outcome would be 'unknown'
    return web.Response()


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        pytest.param(
            _answer_200,
            "The upstream answered 200, but the outcome could not be recorded; the intent stays pending in the audit log",
            id="success withheld",
        ),
        pytest.param(  # found in review: this one was answered 502 although its outcome was not written
            _hang_up,
            "The upstream could not be reached or gave no valid answer (the upstream closed the connection without "
            "answering), and the outcome could not be recorded; the intent stays pending in the audit log",
            id="no 502 either",
        ),
    ],
)
async def test_no_reply_before_the_outcome_is_committed(
    tmp_path: Path,
    gateway: GatewayFactory,
    peer: Peer,
    upstream: Callable[[web.Request], web.StreamResponse],
    message: str,
) -> None:
    """If the outcome cannot be committed, the upstream's answer (or the gateway's 502) is
    withheld: 503, and the intent stays pending."""
    database = tmp_path / "audit.db"
    lock = sqlite3.connect(database, isolation_level=None)

    async def lock_then_answer(request: web.Request) -> web.StreamResponse:
        lock.execute("BEGIN EXCLUSIVE")  # taken after the intent, released after the reply
        return upstream(request)

    peer.respond = lock_then_answer
    client = await gateway(make_config(tmp_path, upstream=peer.url, audit={"busy_timeout": 0.05}))
    try:
        response = await client.delete(SAMPLE_PATH, headers=basic("myname"))
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert (503, message) == (response.status, (await response.json())["message"])
    assert ["pending"] == [row["outcome"] for row in rows(database)]


async def test_records_cannot_be_updated_or_deleted(tmp_path: Path, gateway: GatewayFactory) -> None:
    """The table refuses edits: the trail is append-only even for careless SQL."""
    client = await gateway(make_config(tmp_path))
    await client.delete(SAMPLE_PATH, headers=basic("myname"))
    with sqlite3.connect(tmp_path / "audit.db") as db:
        for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
            with pytest.raises(sqlite3.IntegrityError, match="audit records are append-only"):
                db.execute(statement)
