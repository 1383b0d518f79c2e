"""The stub's login server: POST /oauth/token as login.apigee.com answers it, and the bearer tokens it issues."""

from __future__ import annotations

import base64
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import AppClient
from processes import started
from pytest_aiohttp import AiohttpClient

from gateway.stub import demo_seed, make_stub_app
from gateway.stub.settings import StubSettings

CLIENT = {"Authorization": "Basic ZWRnZWNsaTplZGdlY2xpc2VjcmV0"}  # edgecli:edgeclisecret, public
LOGIN = {"grant_type": "password", "username": "myname", "password": "mypass"}
DEVELOPERS = "/v1/organizations/myorg/developers"


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> AppClient:
    return await aiohttp_client(make_stub_app(demo_seed()))


async def login(
    client: AppClient, form: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    response = await client.post(
        "/oauth/token", data=LOGIN if form is None else form, headers=CLIENT if headers is None else headers
    )
    return response.status, await response.json(), response.headers


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


async def test_password_grant_answers_apigee_s_shape(client: AppClient) -> None:
    status, answer, headers = await login(client)
    assert (200, "application/json; charset=UTF-8", "no-store") == (
        status,
        headers["Content-Type"],
        headers["Cache-Control"],
    )
    assert ["access_token", "token_type", "refresh_token", "expires_in", "scope", "jti"] == list(answer)
    assert ("bearer", 1799) == (answer["token_type"], answer["expires_in"])
    issued = claims(answer["access_token"])
    assert ("myname", "edgecli", 1799) == (issued["user_name"], issued["client_id"], issued["exp"] - issued["iat"])


async def test_the_bearer_token_works_on_every_management_path(client: AppClient) -> None:
    _, answer, _ = await login(client)
    bearer = {"Authorization": f"Bearer {answer['access_token']}", "Accept": "application/json"}
    response = await client.get(DEVELOPERS, headers=bearer)
    assert (200, ["demo@example.com"]) == (response.status, await response.json())
    made = await client.post(
        DEVELOPERS, json={"email": "b@example.com", "firstName": "B", "lastName": "C", "userName": "b"}, headers=bearer
    )
    assert (201, "myname") == (made.status, (await made.json())["createdBy"])
    assert (
        200 == (await client.get("/v1/o/myorg/oauth2/accesstokens/taFM3LHUTQAFhL0dIFg81XhRc7vC", headers=bearer)).status
    )


async def test_an_expired_bearer_token_is_refused(aiohttp_client: AiohttpClient) -> None:
    """stub.token_lifetime = 0 issues tokens already expired: 401, saying so."""
    client = await aiohttp_client(make_stub_app(demo_seed(), settings=StubSettings(token_lifetime=0)))
    _, answer, _ = await login(client)
    assert 0 == answer["expires_in"]
    response = await client.get(
        DEVELOPERS, headers={"Authorization": f"Bearer {answer['access_token']}", "Accept": "application/json"}
    )
    assert 401 == response.status
    assert (
        'Bearer realm="Apigee stub", error="invalid_token", error_description="The access token expired"'
        == response.headers["WWW-Authenticate"]
    )
    assert {
        "code": "security.access_token_expired",
        "message": "Access Token expired",
        "contexts": [],
    } == await response.json()


async def test_refresh_grant_gives_a_new_pair_once(client: AppClient) -> None:
    _, first, _ = await login(client)
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    status, second, _ = await login(client, refresh)
    assert (200, "bearer") == (status, second["token_type"])
    assert second["access_token"] != first["access_token"]
    assert (401, {"error": "invalid_token", "error_description": "Invalid refresh token"}) == (
        await login(client, refresh)
    )[:2]
    assert 200 == (await client.get(DEVELOPERS, headers={"Authorization": f"Bearer {second['access_token']}"})).status


@pytest.mark.parametrize(
    "form, headers, status, error",
    [
        (LOGIN, {}, 401, {"error": "unauthorized", "error_description": "Bad credentials"}),
        (
            LOGIN,
            {"Authorization": aiohttp.encode_basic_auth("edgecli", "wrong")},
            401,
            {"error": "unauthorized", "error_description": "Bad credentials"},
        ),
        ({**LOGIN, "password": "wrong"}, None, 401, {"error": "unauthorized", "error_description": "Bad credentials"}),
        (
            {"grant_type": "password", "username": "myname"},
            None,
            401,
            {"error": "unauthorized", "error_description": "Bad credentials"},
        ),
        (
            {"username": "myname", "password": "mypass"},
            None,
            400,
            {"error": "invalid_request", "error_description": "Missing grant type"},
        ),
        (
            {"grant_type": "client_credentials"},
            None,
            400,
            {"error": "unsupported_grant_type", "error_description": "Unsupported grant type: client_credentials"},
        ),
        (
            {"grant_type": "refresh_token", "refresh_token": "nope"},
            None,
            401,
            {"error": "invalid_token", "error_description": "Invalid refresh token"},
        ),
    ],
    ids=["no-client", "wrong-client", "wrong-password", "no-password", "no-grant", "other-grant", "unknown-refresh"],
)
async def test_refusals_are_oauth_shaped(
    client: AppClient, form: dict[str, str], headers: dict[str, str] | None, status: int, error: dict[str, str]
) -> None:
    assert (status, error) == (await login(client, form, headers))[:2]


async def test_basic_credentials_still_work_beside_bearer_tokens(client: AppClient) -> None:
    response = await client.get(DEVELOPERS, headers={"Authorization": aiohttp.encode_basic_auth("myname", "mypass")})
    assert 200 == response.status


async def test_gateway_stub_takes_the_settings(tmp_path: Path) -> None:
    """gateway stub --action-status 200 --token-lifetime 0 --revoke-delay 0: a real subprocess honours each."""
    args = ("stub", "--port", "0", "--action-status", "200", "--token-lifetime", "0", "--revoke-delay", "0")
    async with started(*args, cwd=tmp_path) as stub, aiohttp.ClientSession() as session:
        basic = {"Authorization": aiohttp.encode_basic_auth("myname", "mypass"), "Accept": "application/json"}
        async with session.post(
            f"{stub.url}/v1/o/myorg/developers/demo@example.com?action=inactive", headers=basic
        ) as response:
            assert (200, "inactive") == (response.status, (await response.json())["status"])
        async with session.post(f"{stub.url}/oauth/token", data=LOGIN, headers=CLIENT) as response:
            token = (await response.json())["access_token"]
        async with session.get(stub.url + DEVELOPERS, headers={"Authorization": f"Bearer {token}"}) as response:
            assert 401 == response.status
        assert 0 == await stub.stop(signal.SIGTERM)


async def test_journal_and_faults_cover_the_login_and_management_paths(aiohttp_client: AiohttpClient) -> None:
    """A fault hits /oauth/token and the management paths alike; the journal shows them, secrets hidden."""
    client = await aiohttp_client(make_stub_app(demo_seed(), admin=True))
    assert (
        200
        == (await client.put("/_stub/fault", json={"kind": "status", "status": 503, "body": "{}", "times": 2})).status
    )
    assert (503, b"{}") == ((r := await client.post("/oauth/token", data=LOGIN, headers=CLIENT)).status, await r.read())
    body = {"email": "f@example.com", "firstName": "F", "lastName": "G", "userName": "f"}
    basic = {"Authorization": aiohttp.encode_basic_auth("myname", "mypass")}
    assert 503 == (await client.post(DEVELOPERS, json=body, headers=basic)).status
    assert 201 == (await client.post(DEVELOPERS, json=body, headers=basic)).status  # the fault is spent
    raw = await (await client.get("/_stub/requests")).read()
    journal = json.loads(raw)["requests"]
    assert [("POST", "/oauth/token"), ("POST", DEVELOPERS), ("POST", DEVELOPERS)] == [
        (e["method"], e["path"]) for e in journal
    ]
    assert b"mypass" not in raw and CLIENT["Authorization"].split()[1].encode() not in raw
    assert 3 == raw.count(b'["Authorization", "[redacted]"]')
