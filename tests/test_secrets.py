"""No password, Authorization value, access token or refresh token in clear, anywhere.

A whole session of a real `gateway serve` (and a real `gateway stub`) is played: deletions,
404s, every kind of bad credential, throttling, path tricks, an oversized header, upstream
faults, audit API and CLI queries by raw token, a graceful stop. Then every log line both
processes wrote, every CLI output and every column of every audit row is searched for the
secrets that went in.
"""

from __future__ import annotations

import base64
import signal
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from conftest import PASSWORDS, USERS
from processes import completed, started

TOKENS = {"SecretAccessTokenAlpha0123456789": "SecretRefreshAlpha0123", "SecretAccessTokenBeta98765432100": "SecretRefreshBeta9876"}
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
                assert 201 == (await session.post(f"{stub.url}/_stub/tokens", json={"org": "myorg", "tokens": tokens})).status
                good = {"Authorization": header("myname", PASSWORDS["myname"])}
                first, second = (f"{gateway.url}/v1/o/myorg/oauth2/accesstokens/{token}" for token in TOKENS)
                assert 200 == (await session.delete(first, headers=good)).status
                assert 404 == (await session.delete(first, headers=good)).status
                assert 200 == (await session.get(f"{gateway.url}/audit/events?token={next(iter(TOKENS))}",
                                                 headers={"Authorization": header("auditor", PASSWORDS["auditor"])})).status
                await session.put(f"{stub.url}/_stub/fault", json={"kind": "reset", "times": 1})
                assert 502 == (await session.delete(second, headers=good)).status
                for bad in (header("myname", WRONG_PASSWORD), "Bearer " + next(iter(TOKENS)),
                            "Basic " + base64.b64encode(WRONG_PASSWORD.encode()).decode()):
                    assert 401 == (await session.delete(second, headers={"Authorization": bad})).status
                assert 429 == (await session.delete(second, headers={"Authorization": header("myname", WRONG_PASSWORD)})).status
                for path in (f"/v1/o/myorg/oauth2/accesstokens/{next(iter(TOKENS))}%2Fx",
                             f"/v1/o/myorg/apps/{next(iter(TOKENS))}", f"/v1/o/myorg/oauth2/accesstokens/{next(iter(TOKENS))}/x",
                             f"/oauth2/accesstokens/{next(iter(TOKENS))}", f"/v1/o/myorg/apps?key={next(iter(TOKENS))}"):
                    async with session.delete(gateway.url + path, headers=good) as refused:
                        assert refused.status in (400, 404, 429)
            host, port = urlsplit(gateway.url).hostname, urlsplit(gateway.url).port
            with socket.create_connection((host, port)) as raw:
                raw.sendall(f"DELETE /v1/o/myorg/oauth2/accesstokens/x HTTP/1.1\r\nHost: g\r\nAuthorization: {OVERSIZED}\r\n\r\n".encode())
                assert b" 400 Bad Request" in raw.recv(100)
            assert 0 == await gateway.stop(signal.SIGTERM)
        assert 0 == await stub.stop(signal.SIGTERM)
    outputs = [await completed(*command, cwd=tmp_path) for command in (
        ("audit", "query", "--db", "audit.db", "--token", next(iter(TOKENS)), "--format", "json"),
        ("audit", "export", "--db", "audit.db"),
        ("audit", "show", "2", "--db", "audit.db"),
    )]
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
