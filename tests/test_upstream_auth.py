"""upstream.auth = "oauth2": the gateway logs its own account in at Apigee's token endpoint
(here the real stub's, behind a small peer that counts and can fail the token requests) and
calls the management API with ``Authorization: Bearer``."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers import SAMPLE, SAMPLE_PATH, GatewayFactory, Peer, make_config

from gateway.audit.chain import ChainKey
from gateway.audit.fingerprint import fingerprint
from gateway.audit.record import AuditRecord
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.cli import main
from gateway.config import Config
from gateway.logs import flush_logs, get_logger
from gateway.passwords import hash_password
from gateway.runtime import RUNTIME
from gateway.stub import demo_seed, make_stub_app
from gateway.upstream import make_session
from gateway.upstream_auth import RETRY_AFTER, LoginError, LoginSettings, OAuthLogin
from gateway.upstream_client import UpstreamClient

SERVICE_PASSWORD = "mypass"
"""The stub's demo account, which the gateway logs in as."""
CALLER_PASSWORD = "caller-Secret-pw"
CALLER = {
    "name": "caller",
    "password_hash": hash_password(CALLER_PASSWORD, log2_n=10),
    "orgs": ["myorg"],
    "roles": ["revoke", "read", "manage"],
}
"""A gateway user the stub does not know: if its Basic credentials went upstream, the stub would refuse them."""
CALLER_AUTH = {"Authorization": "Basic " + base64.b64encode(f"caller:{CALLER_PASSWORD}".encode()).decode()}
CLIENT_BASIC = "Basic ZWRnZWNsaTplZGdlY2xpc2VjcmV0"  # edgecli:edgeclisecret, Apigee's public client
DEVELOPERS = "/v1/o/myorg/developers"
Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class LoginServer:
    """Apigee's login server as the gateway meets it: the real stub's ``POST /oauth/token``,
    behind a peer that records each request (and the stub's answer), or answers as told."""

    server: TestServer
    stub: str
    forms: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    issued: list[dict[str, Any]] = field(default_factory=list)
    answer: Answer | None = None
    """Answers instead of the stub when set (a failure to rehearse)."""

    @property
    def url(self) -> str:
        return str(self.server.make_url("/oauth/token"))

    @property
    def grants(self) -> list[str]:
        return [form.get("grant_type", "") for form in self.forms]


@pytest.fixture
async def stub(aiohttp_server: Any) -> TestServer:
    return await aiohttp_server(make_stub_app(demo_seed()))  # type: ignore[no-any-return]


@pytest.fixture
async def login_server(aiohttp_server: Any, stub: TestServer) -> LoginServer:
    holder: list[LoginServer] = []

    async def token(request: web.Request) -> web.StreamResponse:
        me = holder[0]
        body = await request.read()
        me.forms.append(dict(parse_qsl(body.decode())))
        me.headers.append(dict(request.headers))
        if me.answer is not None:
            return await me.answer(request)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{me.stub}/oauth/token",
                data=body,
                headers={
                    name: request.headers[name] for name in ("Authorization", "Content-Type") if name in request.headers
                },
            ) as response:
                answer = await response.read()
                if response.status == 200:
                    me.issued.append(json.loads(answer))
                return web.Response(status=response.status, body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    server = await aiohttp_server(app)
    holder.append(LoginServer(server, str(stub.make_url("")).rstrip("/")))
    return holder[0]


def oauth_config(tmp_path: Path, url: str, token_url: str | None, **upstream: Any) -> Config:
    table = {
        "url": url,
        "auth": "oauth2",
        "service_user": "myname",
        "service_password_env": "SVC_PW",
        **({"oauth_token_url": token_url} if token_url is not None else {}),
        **upstream,
    }
    return make_config(tmp_path, upstream=table, users=[CALLER], environ={"SVC_PW": SERVICE_PASSWORD})


def audit_rows(database: Path) -> list[dict[str, Any]]:
    if not database.exists():
        return []
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM audit_events ORDER BY id")]


def log_events(stream: Any) -> list[dict[str, Any]]:
    flush_logs()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def answering(status: int, body: bytes | dict[str, Any]) -> Answer:
    """A fixed answer of the token endpoint (a JSON object, or raw bytes)."""

    async def answer(request: web.Request) -> web.Response:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        return web.Response(status=status, body=raw, content_type="application/json")

    return answer


def refuse(status: int, error: str) -> Answer:
    return answering(status, {"error": error, "error_description": "Bad credentials"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestTheGatewayCallsWithABearerToken:
    async def test_the_embedded_stub_takes_the_bearer_of_its_own_token_endpoint(
        self, tmp_path: Path, gateway: GatewayFactory
    ) -> None:
        """upstream.url = "stub" with no token URL: the stub's /oauth/token; the caller's own
        credentials (unknown to the stub) never go upstream, yet the deletion goes through."""
        client = await gateway(oauth_config(tmp_path, "stub", None))
        response = await client.delete(SAMPLE_PATH, headers=CALLER_AUTH)
        assert (200, SAMPLE) == (response.status, (await response.json())["token"])
        assert [("pending", "caller"), ("deleted", "caller")] == [
            (row["outcome"], row["actor"]) for row in audit_rows(tmp_path / "audit.db")
        ]

    async def test_password_grant_on_first_call_then_the_bearer_on_forwards_and_pre_reads(
        self, tmp_path: Path, gateway: GatewayFactory, login_server: LoginServer, peer: Peer
    ) -> None:
        client = await gateway(oauth_config(tmp_path, peer.url, login_server.url))
        assert [] == login_server.forms  # nothing asked before the first call
        revoke = await client.post(f"{SAMPLE_PATH}?action=revoke", headers=CALLER_AUTH)
        listed = await client.get(DEVELOPERS, headers=CALLER_AUTH)
        assert (200, 200) == (revoke.status, listed.status)
        assert [{"grant_type": "password", "username": "myname", "password": SERVICE_PASSWORD}] == login_server.forms
        [sent] = login_server.headers
        assert (CLIENT_BASIC, "application/x-www-form-urlencoded", "application/json;charset=utf-8") == (
            sent["Authorization"],
            sent["Content-Type"],
            sent["Accept"],
        )
        bearer = f"Bearer {login_server.issued[0]['access_token']}"
        assert [("GET", bearer), ("POST", bearer), ("GET", bearer)] == [
            (seen.method, seen.headers["Authorization"]) for seen in peer.requests
        ]

    async def test_fifty_concurrent_calls_share_one_login(
        self, tmp_path: Path, gateway: GatewayFactory, login_server: LoginServer, stub: TestServer
    ) -> None:
        client = await gateway(oauth_config(tmp_path, str(stub.make_url("")).rstrip("/"), login_server.url))
        answers = await asyncio.gather(*(client.get(DEVELOPERS, headers=CALLER_AUTH) for _ in range(50)))
        assert [200] * 50 == [answer.status for answer in answers]
        assert ["password"] == login_server.grants

    async def test_a_401_to_the_token_renews_it_for_the_next_call_and_the_write_is_not_retried(
        self, tmp_path: Path, gateway: GatewayFactory, login_server: LoginServer, peer: Peer
    ) -> None:
        async def revoked_once(request: web.Request) -> web.Response:
            if len(peer.requests) == 1:
                return web.Response(status=401, body=b'{"code":"keymanagement.service.invalid_access_token"}')
            return web.Response(status=200, body=b'{"token":"x"}', content_type="application/json")

        peer.respond = revoked_once
        client = await gateway(oauth_config(tmp_path, peer.url, login_server.url))
        first = await client.delete(SAMPLE_PATH, headers=CALLER_AUTH)
        assert (401, 1) == (first.status, len(peer.requests))  # Apigee's answer, and the DELETE sent once
        second = await client.delete(SAMPLE_PATH, headers=CALLER_AUTH)
        assert 200 == second.status
        assert ["password", "refresh_token"] == login_server.grants
        assert [f"Bearer {issued['access_token']}" for issued in login_server.issued] == [
            seen.headers["Authorization"] for seen in peer.requests
        ]


class TestWhenNoTokenCanBeHad:
    @pytest.mark.parametrize(
        ("answer", "error_code", "reason"),
        [
            (
                refuse(401, "unauthorized"),
                "upstream.login_refused",
                "refused the gateway's login as myname (401 unauthorized)",
            ),
            (refuse(400, "invalid_request"), "upstream.login_refused", "(400 invalid_request)"),
            (answering(200, b"{not json"), "upstream.login_failed", "the token endpoint's answer is not JSON"),
            (
                answering(200, {"access_token": "a b", "token_type": "bearer", "expires_in": 1799}),
                "upstream.login_failed",
                "the token endpoint's answer has no usable access_token",
            ),
            (
                answering(200, {"access_token": "abc", "token_type": "mac", "expires_in": 1799}),
                "upstream.login_failed",
                "the token endpoint's answer is not a bearer token (token_type)",
            ),
            (answering(503, b"down"), "upstream.login_failed", "the token endpoint answered 503"),
        ],
    )
    async def test_502_nothing_forwarded_no_intent_and_one_log_line(
        self,
        tmp_path: Path,
        gateway: GatewayFactory,
        login_server: LoginServer,
        peer: Peer,
        log_output: Any,
        answer: Answer,
        error_code: str,
        reason: str,
    ) -> None:
        login_server.answer = answer
        client = await gateway(oauth_config(tmp_path, peer.url, login_server.url))
        response = await client.delete(SAMPLE_PATH, headers=CALLER_AUTH)
        body = await response.json()
        assert (502, "gateway.upstream_unavailable") == (response.status, body["code"])
        assert reason in body["message"] and body["message"].endswith("; nothing was forwarded")
        assert ([], []) == (peer.requests, audit_rows(tmp_path / "audit.db"))
        events = log_events(log_output)
        [failed] = [event for event in events if event["event"] == "upstream_token_failed"]
        assert ("error", "password", login_server.url) == (failed["level"], failed["grant"], failed["token_url"])
        assert reason in failed["reason"]
        [request] = [event for event in events if event["event"] == "request"]
        assert (502, error_code) == (request["status"], request["error_code"])

    async def test_token_endpoint_down_refuses_audited_and_passed_through_calls(
        self, tmp_path: Path, gateway: GatewayFactory, peer: Peer, unused_tcp_port: int
    ) -> None:
        client = await gateway(oauth_config(tmp_path, peer.url, f"http://127.0.0.1:{unused_tcp_port}/oauth/token"))
        for method, path in (("DELETE", SAMPLE_PATH), ("POST", f"{SAMPLE_PATH}?action=revoke"), ("GET", DEVELOPERS)):
            response = await client.request(method, path, headers=CALLER_AUTH)
            body = await response.json()
            assert (502, "gateway.upstream_unavailable") == (response.status, body["code"]), path
            assert "cannot obtain an upstream token: cannot connect" in body["message"]
        assert ([], []) == (peer.requests, audit_rows(tmp_path / "audit.db"))

    async def test_a_token_endpoint_that_does_not_answer_is_bounded_by_the_upstream_timeouts(
        self, tmp_path: Path, gateway: GatewayFactory, login_server: LoginServer, peer: Peer
    ) -> None:
        never = asyncio.Event()

        async def hang(request: web.Request) -> web.Response:
            await never.wait()
            raise AssertionError("unreachable")

        login_server.answer = hang
        client = await gateway(oauth_config(tmp_path, peer.url, login_server.url, read_timeout=0.2))
        response = await client.delete(SAMPLE_PATH, headers=CALLER_AUTH)
        body = await response.json()
        assert (504, "gateway.upstream_unavailable") == (response.status, body["code"])
        assert "cannot obtain an upstream token: no answer within the read timeout" in body["message"]
        assert ([], []) == (peer.requests, audit_rows(tmp_path / "audit.db"))

    async def test_readiness_names_the_login_problem_and_recovers(
        self, tmp_path: Path, gateway: GatewayFactory, login_server: LoginServer, peer: Peer
    ) -> None:
        login_server.answer = refuse(401, "unauthorized")
        client = await gateway(oauth_config(tmp_path, peer.url, login_server.url))
        client.app[RUNTIME].readiness.cache_seconds = 0
        response = await client.get("/readyz")
        checks = (await response.json())["checks"]
        assert (503, "ok", "ok") == (response.status, checks["audit"], checks["upstream"])
        assert checks["upstream_auth"].startswith("cannot obtain an upstream token: the token endpoint refused")
        login_server.answer = None
        response = await client.get("/readyz")
        assert (200, {"audit": "ok", "upstream": "ok", "upstream_auth": "ok"}) == (
            response.status,
            (await response.json())["checks"],
        )

    async def test_readiness_has_no_login_check_without_oauth2(
        self, tmp_path: Path, gateway: GatewayFactory, stub_url: str
    ) -> None:
        client = await gateway(make_config(tmp_path, upstream=stub_url))
        response = await client.get("/readyz")
        assert {"audit": "ok", "upstream": "ok"} == (await response.json())["checks"]


async def test_no_token_password_or_client_secret_is_logged(
    tmp_path: Path, gateway: GatewayFactory, login_server: LoginServer, peer: Peer, log_output: Any
) -> None:
    """A login, a 401 that renews the token, a refused refresh and a refused login: the log
    says what happened, and holds none of the secrets that went by."""
    peer.respond = answering(401, {"code": "keymanagement.service.invalid_access_token"})
    client = await gateway(oauth_config(tmp_path, peer.url, login_server.url))
    await client.delete(SAMPLE_PATH, headers=CALLER_AUTH)  # password grant; the 401 marks the token
    login_server.answer = refuse(401, "invalid_token")  # the refresh is refused, then the login
    response = await client.delete(SAMPLE_PATH, headers=CALLER_AUTH)
    assert 502 == response.status
    events = log_events(log_output)
    assert [
        "upstream_token_obtained",
        "upstream_token_rejected",
        "upstream_token_refresh_refused",
        "upstream_token_failed",
    ] == [event["event"] for event in events if event["event"].startswith("upstream_token")]
    text = log_output.getvalue()
    issued = login_server.issued[0]
    for secret in (
        SERVICE_PASSWORD,
        CALLER_PASSWORD,
        CALLER_AUTH["Authorization"][6:],
        issued["access_token"],
        issued["refresh_token"],
        "edgeclisecret",
        CLIENT_BASIC[6:],
    ):
        assert secret not in text


class TestOAuthLogin:
    """The token's life, against the real stub's token endpoint, with the clock in the test's hand."""

    @pytest.fixture
    async def session(self) -> Any:
        async with make_session(
            connect_timeout=2, read_timeout=2, total_timeout=5, verify_tls=True, ca_bundle=None
        ) as session:
            yield session

    def login(self, login_server: LoginServer, session: UpstreamClient, clock: FakeClock) -> OAuthLogin:
        settings = LoginSettings(login_server.url, "myname", SERVICE_PASSWORD)
        return OAuthLogin(settings, session, get_logger(), clock=clock)

    async def accepted(self, stub: TestServer, authorization: str) -> int:
        async with aiohttp.ClientSession() as session:
            async with session.get(
                stub.make_url(DEVELOPERS), headers={"Authorization": authorization, "Accept": "application/json"}
            ) as response:
                return response.status

    async def test_the_token_is_reused_until_shortly_before_it_expires_then_refreshed(
        self, login_server: LoginServer, session: UpstreamClient, stub: TestServer
    ) -> None:
        """The stub's tokens live 1799 s: renewed 60 s before, with the refresh grant."""
        clock = FakeClock()
        login = self.login(login_server, session, clock)
        first = await login.authorization()
        clock.now += 1738
        assert first == await login.authorization()
        assert ["password"] == login_server.grants
        clock.now += 1
        renewed = await login.authorization()
        assert ["password", "refresh_token"] == login_server.grants
        assert renewed == f"Bearer {login_server.issued[1]['access_token']}" != first
        assert (200, 2) == (await self.accepted(stub, renewed), login.token_requests)

    async def test_fifty_concurrent_calls_share_one_refresh(
        self, login_server: LoginServer, session: UpstreamClient
    ) -> None:
        clock = FakeClock()
        login = self.login(login_server, session, clock)
        await login.authorization()
        clock.now += 1780
        headers = await asyncio.gather(*(login.authorization() for _ in range(50)))
        assert ["password", "refresh_token"] == login_server.grants
        assert {f"Bearer {login_server.issued[1]['access_token']}"} == set(headers)

    async def test_a_refused_refresh_falls_back_to_the_password_grant(
        self, login_server: LoginServer, session: UpstreamClient, stub: TestServer
    ) -> None:
        """The stub takes each refresh token once: used up by someone else, it is refused (401 invalid_token)."""
        clock = FakeClock()
        login = self.login(login_server, session, clock)
        await login.authorization()
        async with aiohttp.ClientSession() as other:
            used = await other.post(
                stub.make_url("/oauth/token"),
                data={"grant_type": "refresh_token", "refresh_token": login_server.issued[0]["refresh_token"]},
                headers={"Authorization": CLIENT_BASIC},
            )
            assert 200 == used.status
        clock.now += 1780
        renewed = await login.authorization()
        assert ["password", "refresh_token", "password"] == login_server.grants
        assert (renewed, 200) == (
            f"Bearer {login_server.issued[-1]['access_token']}",
            await self.accepted(stub, renewed),
        )

    async def test_a_failed_renewal_keeps_the_old_token_while_it_lasts(
        self, login_server: LoginServer, session: UpstreamClient
    ) -> None:
        """Renewal fails 60 s before expiry: the old token serves on, renewal is retried every
        RETRY_AFTER seconds meanwhile, and once the token has expired the failure is the call's."""
        clock = FakeClock()
        login = self.login(login_server, session, clock)
        first = await login.authorization()
        login_server.answer = answering(500, b"")
        clock.now += 1740
        assert first == await login.authorization()
        assert first == await login.authorization()  # within RETRY_AFTER: not asked again
        assert ["password", "refresh_token"] == login_server.grants
        clock.now += RETRY_AFTER
        assert first == await login.authorization()
        assert ["password", "refresh_token", "refresh_token"] == login_server.grants
        clock.now += 60
        with pytest.raises(LoginError) as failure:
            await login.authorization()
        assert ("login_failed", False) == (failure.value.kind, failure.value.sent)
        assert "cannot obtain an upstream token: the token endpoint answered 500" == await login.problem()

    async def test_a_short_lived_token_is_renewed_halfway(
        self, login_server: LoginServer, session: UpstreamClient
    ) -> None:
        count = iter(range(1, 100))

        async def short(request: web.Request) -> web.Response:
            body = {"access_token": f"tok{next(count)}", "token_type": "bearer", "expires_in": 10, "refresh_token": "r"}
            return web.json_response(body)

        login_server.answer = short
        clock = FakeClock()
        login = self.login(login_server, session, clock)
        assert "Bearer tok1" == await login.authorization()
        clock.now += 4.9
        assert "Bearer tok1" == await login.authorization()
        clock.now += 0.1
        assert "Bearer tok2" == await login.authorization()
        assert ["password", "refresh_token"] == login_server.grants

    @pytest.mark.parametrize(
        ("expires_in", "renewed_after"),
        [
            (0, 5.0),
            (-1, 5.0),
            (-1e9, 5.0),
            (3, 5.0),
            (..., 1739.0),
            (None, 1739.0),
            ("soon", 1739.0),
            (True, 1739.0),
            ([60], 1739.0),
            ("1799", 1739.0),
            (" 30 ", 15.0),
            (1e308, 86340.0),
            (2**62, 86340.0),
        ],
        ids=repr,
    )
    async def test_a_lifetime_out_of_bounds_or_unusable_is_held_to_sane_bounds(
        self, login_server: LoginServer, session: UpstreamClient, expires_in: object, renewed_after: float
    ) -> None:
        """``expires_in`` 0 or negative would mean a login for every call; missing or huge, none until
        the management API refused the token. Held to 10 s .. 1 day (renewed halfway, or 60 s before),
        and a value that is no number of seconds counts as Apigee's 1799 s."""

        async def odd(request: web.Request) -> web.Response:
            body = {"access_token": f"tok{len(login_server.forms)}", "token_type": "Bearer"}
            return web.json_response(body if expires_in is ... else {**body, "expires_in": expires_in})

        login_server.answer = odd
        clock = FakeClock()
        login = self.login(login_server, session, clock)
        assert "Bearer tok1" == await login.authorization()
        clock.now += renewed_after - 0.01
        assert ("Bearer tok1", 1) == (await login.authorization(), login.token_requests)
        clock.now += 0.01
        assert ("Bearer tok2", 2) == (await login.authorization(), login.token_requests)
        assert ["password", "password"] == login_server.grants  # no refresh token: the password grant again


class TestConfig:
    @pytest.mark.parametrize(
        ("upstream", "environ", "error"),
        [
            (
                "auth = 'oauth2'\nservice_password_env = 'SVC_PW'",
                {"SVC_PW": "x"},
                'upstream.service_user: required when upstream.auth = "oauth2"',
            ),
            (
                "auth = 'oauth2'\nservice_user = 'svc'",
                {},
                'upstream.service_password_env: required when upstream.auth = "oauth2"',
            ),
            (
                "auth = 'oauth2'\nservice_user = 'svc'\nservice_password_env = 'SVC_PW'",
                {},
                "upstream.service_password_env: environment variable SVC_PW is not set or empty",
            ),
            (
                "oauth_token_url = 'ftp://login.example.com/oauth/token'",
                {},
                'upstream.oauth_token_url: expected "" or an http(s) URL such as "https://login.apigee.com/oauth/token", got "ftp://login.example.com/oauth/token"',
            ),
            (
                "oauth_token_url = 'https://svc:pw@login.example.com/oauth/token'",
                {},
                "upstream.oauth_token_url: must not contain credentials; the account is service_user, its password service_password_env",
            ),
            (
                "oauth_token_url = 'https://login.example.com/oauth/token?x=1'",
                {},
                'upstream.oauth_token_url: expected "" or an http(s) URL',
            ),
            ("oauth_client_id = 'a:b'", {}, "upstream.oauth_client_id: expected a non-empty user name without ':'"),
            (
                "auth = 'oauth2'\nservice_user = 'svc'\nservice_password_env = 'SVC_PW'\noauth_client_id = 'mine'",
                {"SVC_PW": "x"},
                'upstream.oauth_client_secret_env: required when upstream.oauth_client_id is not "edgecli" (its secret is public)',
            ),
            (
                "auth = 'oauth2'\nservice_user = 'svc'\nservice_password_env = 'SVC_PW'\noauth_client_id = 'mine'\n"
                "oauth_client_secret_env = 'CLIENT_SECRET'",
                {"SVC_PW": "x"},
                "upstream.oauth_client_secret_env: environment variable CLIENT_SECRET is not set or empty",
            ),
        ],
    )
    def test_config_check_names_the_key_in_one_line(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        upstream: str,
        environ: dict[str, str],
        error: str,
    ) -> None:
        for name in ("SVC_PW", "CLIENT_SECRET"):
            monkeypatch.delenv(name, raising=False)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        config = tmp_path / "gw.toml"
        config.write_text(f"[upstream]\n{upstream}\n")
        assert 2 == main(["config", "check", str(config)])
        out, err = capsys.readouterr()
        assert ("", 1) == (out, err.count("\n"))
        assert err.startswith(f"gateway: error: {config}: {error}")

    def test_the_secrets_variables_may_start_with_gateway(self, tmp_path: Path) -> None:
        """Like GATEWAY_CHAIN_KEY: the variables the config names for its secrets are not unknown keys."""
        config = make_config(
            tmp_path,
            upstream={
                "url": "stub",
                "auth": "oauth2",
                "service_user": "myname",
                "service_password_env": "GATEWAY_SVC_PW",
                "oauth_client_id": "mine",
                "oauth_client_secret_env": "GATEWAY_CLIENT_SECRET",
            },
            environ={"GATEWAY_SVC_PW": "pw", "GATEWAY_CLIENT_SECRET": "client-secret"},
        )
        assert ("pw", "client-secret") == (config.service_password, config.oauth_client_secret)

    def test_config_check_says_where_the_login_goes_and_hides_the_secrets(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("SVC_PW", "Service-Pw-Not-Shown")
        monkeypatch.setenv("CLIENT_SECRET", "Client-Secret-Not-Shown")
        config = tmp_path / "gw.toml"
        config.write_text(
            "[upstream]\nauth = 'oauth2'\nservice_user = 'svc'\nservice_password_env = 'SVC_PW'\n"
            "oauth_client_id = 'mine'\noauth_client_secret_env = 'CLIENT_SECRET'\n"
        )
        assert 0 == main(["config", "check", str(config)])
        out = capsys.readouterr().out
        assert "# service password: read from $SVC_PW" in out
        assert (
            '# OAuth 2.0 login: svc at the embedded stub\'s /oauth/token, client "mine" (secret read from $CLIENT_SECRET)'
            in out
        )
        assert "Service-Pw-Not-Shown" not in out and "Client-Secret-Not-Shown" not in out


class TestReconcile:
    """`gateway audit reconcile` asks the upstream as `serve` would: with oauth2, by bearer."""

    def config(self, tmp_path: Path, stub: TestServer, token_url: str) -> Path:
        path = tmp_path / "gw.toml"
        path.write_text(
            f"[upstream]\nurl = '{str(stub.make_url('')).rstrip('/')}'\nauth = 'oauth2'\nservice_user = 'myname'\n"
            f"service_password_env = 'SVC_PW'\noauth_token_url = '{token_url}'\n[audit]\ndatabase = 'audit.db'\n"
            f"[[users]]\nname = 'caller'\npassword_hash = '{CALLER['password_hash']}'\norgs = ['myorg']\n"
        )
        records = [
            AuditRecord(
                request_id="a",
                time="2026-01-01T00:00:00.000Z",
                actor="caller",
                client_ip="10.0.0.1",
                method="DELETE",
                org="myorg",
                token_sha256=fingerprint(SAMPLE),
                token_hint=SAMPLE[-4:],
                outcome="pending",
                token=SAMPLE,
            )
        ]
        prepare(tmp_path / "audit.db", key=ChainKey(), writable=True)
        appender = SQLiteAppender(tmp_path / "audit.db", ChainKey())
        appender.append(records)
        appender.close()
        return path

    async def test_reconcile_logs_in_and_asks_with_the_bearer(
        self,
        tmp_path: Path,
        stub: TestServer,
        login_server: LoginServer,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        config = self.config(tmp_path, stub, login_server.url)
        monkeypatch.setenv("SVC_PW", SERVICE_PASSWORD)
        args = ["audit", "reconcile", "--config", str(config), "--operator", "ops"]
        assert 0 == await asyncio.to_thread(main, args)
        assert ["record 1 (request a): not_deleted, recorded as 2", "1 settled, 0 still open"] == (
            capsys.readouterr().out.splitlines()
        )
        assert ["password"] == login_server.grants

    async def test_a_refused_login_is_one_error_line(
        self,
        tmp_path: Path,
        stub: TestServer,
        login_server: LoginServer,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        config = self.config(tmp_path, stub, login_server.url)
        monkeypatch.setenv("SVC_PW", "Wrong-Password-Not-Shown")
        args = ["audit", "reconcile", "--config", str(config), "--operator", "ops"]
        assert 2 == await asyncio.to_thread(main, args)
        out, err = capsys.readouterr()
        assert ("", 1) == (out, err.count("\n"))
        assert err.startswith(
            "gateway: error: cannot obtain an upstream token: the token endpoint refused the gateway's login as myname (401 unauthorized)"
        )
        assert "Wrong-Password-Not-Shown" not in err
