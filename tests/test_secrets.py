"""No password, Authorization value, access token or refresh token in clear, anywhere.

A whole session of a real `gateway serve` (and a real `gateway stub`) is played: deletions,
404s, every kind of bad credential, throttling, path tricks, an oversized header, upstream
faults, audit API and CLI queries by raw token, a graceful stop. Then every log line both
processes wrote, every CLI output and every column of every audit row is searched for the
secrets that went in.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from helpers import PASSWORDS, SAMPLE_PATH, USERS, GatewayFactory, Peer, basic, make_config, rows
from processes import completed, started

from gateway.audit.fingerprint import fingerprint, redact_snapshot

TOKENS = {
    "SecretAccessTokenAlpha0123456789": "SecretRefreshAlpha0123",
    "SecretAccessTokenBeta98765432100": "SecretRefreshBeta9876",
}
WRONG_PASSWORD = "Wrong-Pa55word-Never-Logged"
OVERSIZED = "Basic " + base64.b64encode(b"myname:" + b"x" * 15_000).decode()
"""An Authorization header too large for aiohttp, whose parser error quotes its first 100 bytes."""


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def secrets() -> list[str]:
    values = [*PASSWORDS.values(), WRONG_PASSWORD, *TOKENS, *TOKENS.values()]
    headers = [header(user, password) for user, password in PASSWORDS.items()] + [header("myname", WRONG_PASSWORD)]
    # A header appears either whole or as its base64 part; both are searched.
    return values + headers + [value.removeprefix("Basic ") for value in headers] + [OVERSIZED[6:66]]


async def test_a_whole_session_leaves_no_secret_in_logs_outputs_or_audit_rows(tmp_path: Path) -> None:
    users = "".join(
        f"[[users]]\nname = '{user['name']}'\npassword_hash = '{user['password_hash']}'\norgs = {list(user['orgs'])!r}\n"
        f"roles = {list(user['roles'])!r}\n"
        for user in USERS
    )
    async with started("stub", "--port", "0", "--admin", cwd=tmp_path) as stub:
        config = tmp_path / "gw.toml"
        config.write_text(
            f"[upstream]\nurl = '{stub.url}'\nread_timeout = 0.3\n[audit]\ndatabase = 'audit.db'\n"
            f"[throttle]\nmax_failures = 3\n[logging]\nformat = 'json'\nlevel = 'debug'\n{users}"
        )
        async with started("serve", "--config", str(config), "--port", "0", cwd=tmp_path) as gateway:
            async with aiohttp.ClientSession() as session:
                tokens = [{"token": token, "refreshToken": refresh, "app": "app1"} for token, refresh in TOKENS.items()]
                assert (
                    201
                    == (await session.post(f"{stub.url}/_stub/tokens", json={"org": "myorg", "tokens": tokens})).status
                )
                good = {"Authorization": header("myname", PASSWORDS["myname"])}
                first, second = (f"{gateway.url}/v1/o/myorg/oauth2/accesstokens/{token}" for token in TOKENS)
                assert 200 == (await session.delete(first, headers=good)).status
                assert 404 == (await session.delete(first, headers=good)).status
                assert (
                    200
                    == (
                        await session.get(
                            f"{gateway.url}/audit/events?token={next(iter(TOKENS))}",
                            headers={"Authorization": header("auditor", PASSWORDS["auditor"])},
                        )
                    ).status
                )
                await session.put(f"{stub.url}/_stub/fault", json={"kind": "reset", "times": 1})
                assert 502 == (await session.delete(second, headers=good)).status
                for bad in (
                    header("myname", WRONG_PASSWORD),
                    "Bearer " + next(iter(TOKENS)),
                    "Basic " + base64.b64encode(WRONG_PASSWORD.encode()).decode(),
                ):
                    assert 401 == (await session.delete(second, headers={"Authorization": bad})).status
                assert (
                    429
                    == (
                        await session.delete(second, headers={"Authorization": header("myname", WRONG_PASSWORD)})
                    ).status
                )
                for path in (
                    f"/v1/o/myorg/oauth2/accesstokens/{next(iter(TOKENS))}%2Fx",
                    f"/v1/o/myorg/apis/{next(iter(TOKENS))}",  # passed through (apps/{id} is audited, the id kept)
                    f"/v1/o/myorg/oauth2/accesstokens/{next(iter(TOKENS))}/x",
                    f"/oauth2/accesstokens/{next(iter(TOKENS))}",
                    f"/v1/o/myorg/apps?key={next(iter(TOKENS))}",
                ):
                    async with session.delete(gateway.url + path, headers=good) as refused:
                        assert refused.status in (400, 403, 404, 429)
            host, port = urlsplit(gateway.url).hostname, urlsplit(gateway.url).port
            with socket.create_connection((host, port)) as raw:
                raw.sendall(
                    f"DELETE /v1/o/myorg/oauth2/accesstokens/x HTTP/1.1\r\nHost: g\r\nAuthorization: {OVERSIZED}\r\n\r\n".encode()
                )
                assert b" 400 Bad Request" in raw.recv(100)
            assert 0 == await gateway.stop(signal.SIGTERM)
        assert 0 == await stub.stop(signal.SIGTERM)
    outputs = [
        await completed(*command, cwd=tmp_path)
        for command in (
            ("audit", "query", "--db", "audit.db", "--token", next(iter(TOKENS)), "--format", "json"),
            ("audit", "export", "--db", "audit.db"),
            ("audit", "show", "2", "--db", "audit.db"),
        )
    ]
    assert all(status == 0 for status, _ in outputs)
    with sqlite3.connect(tmp_path / "audit.db") as db:
        cells = [str(value) for row in db.execute("SELECT * FROM audit_events") for value in row]
    everything = {
        "gateway log": "\n".join(gateway.stderr),
        "stub log": "\n".join(stub.stderr),
        "CLI output": "\n".join(text for _, text in outputs),
        "audit rows": "\n".join(cells),
    }
    assert len(cells) > 100 and len(gateway.stderr) > 10  # the session did happen, and was recorded
    leaks = [(where, secret) for where, text in everything.items() for secret in secrets() if secret in text]
    assert [] == leaks


LONG = "Secret0123456789abcdefWXYZ"
"""Long enough to keep a hint: its last 4 characters."""
HINTED = "[redacted …WXYZ]"


@pytest.mark.parametrize(
    ("snapshot", "stored"),
    [
        pytest.param(
            {"token": LONG, "refreshToken": "short", "app": "app1", "tokenType": "BearerToken"},
            {"token": HINTED, "refreshToken": "[redacted]", "app": "app1", "tokenType": "BearerToken"},
            id="apigee token",
        ),
        pytest.param(
            {"access_token": LONG, "token_type": "Bearer", "refresh_token": LONG, "expires_in": 3599},
            {"access_token": HINTED, "token_type": "Bearer", "refresh_token": HINTED, "expires_in": 3599},
            id="oauth2 rfc6749",
        ),
        pytest.param(
            {"accessToken": LONG, "idToken": LONG, "id_token": LONG, "clientId": "app-key"},
            {"accessToken": HINTED, "idToken": HINTED, "id_token": HINTED, "clientId": "[redacted]"},
            id="camel case",
        ),
        pytest.param(
            {
                "oauth_token": LONG,
                "oauth_token_secret": LONG,
                "oauth_verifier": "1234",
                "oauth_callback_confirmed": "true",
            },
            {
                "oauth_token": HINTED,
                "oauth_token_secret": HINTED,
                "oauth_verifier": "[redacted]",
                "oauth_callback_confirmed": "true",
            },
            id="oauth1 token",
        ),
        pytest.param(
            {"consumerKey": LONG, "consumerSecret": LONG, "secret": LONG, "status": "approved"},
            {"consumerKey": HINTED, "consumerSecret": HINTED, "secret": HINTED, "status": "approved"},
            id="oauth1 consumer",
        ),
        pytest.param(
            {"client_secret": LONG, "clientSecret": LONG, "password": "hunter2", "name": "svc"},
            {"client_secret": HINTED, "clientSecret": HINTED, "password": "[redacted]", "name": "svc"},
            id="client credentials",
        ),
        pytest.param(
            {
                "TOKEN": LONG,
                "Refresh-Token": LONG,
                "CLIENT_SECRET": LONG,
                "client-Secret": LONG,
                "PassWord": LONG,
                "Access_Token": LONG,
                "consumer_key": LONG,
            },
            {
                "TOKEN": HINTED,
                "Refresh-Token": HINTED,
                "CLIENT_SECRET": HINTED,
                "client-Secret": HINTED,
                "PassWord": HINTED,
                "Access_Token": HINTED,
                "consumer_key": HINTED,
            },
            id="any case, _ and - ignored",
        ),
        pytest.param(
            {
                "app": {
                    "credentials": [
                        {
                            "consumerKey": LONG,
                            "apiProducts": [{"apiproduct": "p", "status": "ok"}],
                            "consumerSecret": LONG,
                        }
                    ]
                },
                "tokens": [[{"accessToken": LONG}], []],
            },
            {
                "app": {
                    "credentials": [
                        {
                            "consumerKey": HINTED,
                            "apiProducts": [{"apiproduct": "p", "status": "ok"}],
                            "consumerSecret": HINTED,
                        }
                    ]
                },
                "tokens": [[{"accessToken": HINTED}], []],
            },
            id="objects in arrays in objects",
        ),
        pytest.param(
            {"secret": 12345, "password": {"value": LONG}, "token": None, "accessToken": [LONG], "refreshToken": True},
            {
                "secret": "[redacted]",
                "password": "[redacted]",
                "token": None,
                "accessToken": "[redacted]",
                "refreshToken": True,
            },
            id="values that are not strings",
        ),
        pytest.param(
            {"attributes": [{"name": "refresh_token", "value": LONG}, {"name": "att_n1", "value": "att_v1"}]},
            {"attributes": [{"name": "refresh_token", "value": HINTED}, {"name": "att_n1", "value": "att_v1"}]},
            id="apigee name-value attributes",
        ),
        pytest.param(
            {"tokenType": "x", "secretName": "y", "passwordPolicy": "z", "tokens": 3},
            {"tokenType": "x", "secretName": "y", "passwordPolicy": "z", "tokens": 3},
            id="names that only contain a secret name",
        ),
    ],
)
def test_secret_fields_are_redacted_at_any_depth_keeping_key_order(
    snapshot: dict[str, Any], stored: dict[str, Any]
) -> None:
    redacted = redact_snapshot(snapshot)
    assert stored == redacted
    assert json.dumps(stored) == json.dumps(redacted)  # the same keys in the same order, at every level
    assert LONG not in json.dumps(redacted)


def test_raw_token_storage_keeps_the_tokens_but_no_other_secret() -> None:
    """audit.store_raw_tokens opts in to tokens in clear (for reconcile), not to an app's secrets."""
    snapshot = {
        "token": LONG,
        "refresh_token": LONG,
        "oauth_token": LONG,
        "consumerKey": LONG,
        "consumerSecret": LONG,
        "oauth_token_secret": LONG,
        "password": LONG,
        "attributes": [{"name": "client_secret", "value": LONG}],
    }
    assert {
        "token": LONG,
        "refresh_token": LONG,
        "oauth_token": LONG,
        "consumerKey": HINTED,
        "consumerSecret": HINTED,
        "oauth_token_secret": HINTED,
        "password": HINTED,
        "attributes": [{"name": "client_secret", "value": HINTED}],
    } == redact_snapshot(snapshot, keep_tokens=True)


async def test_secrets_in_other_snapshot_shapes_never_reach_the_audit_log(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    """Found by a tester: an OAuth 1.0 body's consumerSecret was stored in clear."""
    body = {
        "consumerKey": LONG,
        "app": "app1",
        "clientId": "ck",
        "credentials": [{"consumerSecret": LONG, "secret": LONG}],
        "nested": {"access_token": LONG, "deeper": [{"Refresh_Token": LONG}]},
    }

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(body)

    peer.respond = answer
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.delete(SAMPLE_PATH, headers=basic("myname"))
    assert (200, json.dumps(body).encode()) == (response.status, await response.read())  # the caller gets it all
    outcome = rows(tmp_path / "audit.db")[-1]
    # The consumer key (clientId) is a credential: its fingerprint only, in the column and the snapshot.
    assert ("deleted", "app1", fingerprint("ck")) == (outcome["outcome"], outcome["app"], outcome["client_id"])
    assert {
        "consumerKey": HINTED,
        "app": "app1",
        "clientId": "[redacted]",
        "credentials": [{"consumerSecret": HINTED, "secret": HINTED}],
        "nested": {"access_token": HINTED, "deeper": [{"Refresh_Token": HINTED}]},
    } == json.loads(outcome["snapshot"])
    assert not any(LONG in str(value) for row in rows(tmp_path / "audit.db") for value in row.values())


@pytest.mark.parametrize("depth", [300, 1000])
async def test_a_deeply_nested_snapshot_is_still_recorded(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, depth: int
) -> None:
    """Neither the redaction walk nor the serialisation may exhaust the stack once the token is gone:
    300 levels are stored (redacted); 1000, more than Python's encoder can nest, are left out and said so."""
    body = ('{"token":"' + LONG + '","a":' + "[" * depth + '{"secret":"' + LONG + '"}' + "]" * depth + "}").encode()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    peer.respond = answer
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.delete(SAMPLE_PATH, headers=basic("myname"))
    assert (200, body) == (response.status, await response.read())
    outcome = rows(tmp_path / "audit.db")[-1]
    if depth == 300:
        expected = '{"token":"' + HINTED + '","a":' + "[" * depth + '{"secret":"' + HINTED + '"}' + "]" * depth + "}"
        assert ("deleted", None, expected) == (outcome["outcome"], outcome["error_code"], outcome["snapshot"])
    else:
        assert ("deleted", "upstream.snapshot_unreadable", None) == (
            outcome["outcome"],
            outcome["error_code"],
            outcome["snapshot"],
        )
