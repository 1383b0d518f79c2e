"""The stub's OAuth tokens: approve, revoke, update, bulk revoke, search, authorization codes, OAuth 1.0a."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp
import pytest
from helpers import AppClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from gateway.stub import make_stub_app
from gateway.stub.seed import DEMO_APP_ID, SAMPLE_TOKEN, demo_data, parse_seed
from gateway.stub.settings import StubSettings

AUTH = {"Authorization": aiohttp.encode_basic_auth("myname", "mypass")}
JSON = {**AUTH, "Accept": "application/json"}
SAMPLE = SAMPLE_TOKEN["token"]
TOKENS = "/v1/o/myorg/oauth2/accesstokens/"
POLL_LIMIT = 5.0
"""Seconds a test waits at most for the stub's asynchronous work."""

OAUTH1_ACCESS = {
    "app": "myApp",
    "appUserId": "Developer@apigee.com",
    "attributes": [],
    "consumerKey": "mlfBg7NH9tCua8wUhuamKHeTdfHxMB0A",
    "consumerSecret": "iF1lDg239ngfhLWH",
    "createdAt": 1343037194128,
    "expiresAt": 1343038994128,
    "scope": "global",
    "secret": "HJ3Gl6KTF01pAH24GAAdGfb8dOq1",
    "status": "approved",
    "token": "kNw6eQrL5G7etEBcvqvRTL01E5rY",
}
OAUTH1_REQUEST = {
    "app": "myApp",
    "callbackUrl": "api.company.com",
    "consumerKey": "Lmupmwb5mD6CAEl6vqii1kojTGMiCnWj",
    "secret": "kSdnf7pBZADjxg5qfMkHhDVTumR5",
    "status": "approved",
    "token": "1wXHJFNXLA0Haeg4lVMToZWJHaFM",
}
CODE = {
    "attributes": [],
    "client_id": "kjvzAT2kR03jcZGQDod6VtMt8Lj0Ce6c",
    "code": "m9PEEI6I",
    "scope": "",
    "status": "active",
}


def seed(generated: int = 0) -> Any:
    data = demo_data()
    data["orgs"]["myorg"].update(
        {
            "authorizationcodes": [dict(CODE)],
            "oauth1accesstokens": [dict(OAUTH1_ACCESS)],
            "oauth1requesttokens": [dict(OAUTH1_REQUEST)],
        }
    )
    return dataclasses.replace(parse_seed(data, source="test seed"), generated=generated)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> AppClient:
    return await aiohttp_client(make_stub_app(seed(generated=20), admin=True, settings=StubSettings(revoke_delay=0.05)))


async def call(
    client: AppClient, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    response = await client.request(method, path, json=body, headers=JSON if headers is None else headers)
    raw = await response.read()
    return response.status, (await response.json(content_type=None) if raw else None)


def error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "contexts": []}


async def tokens_of(client: AppClient) -> dict[str, dict[str, Any]]:
    """The admin API's view of the organisation's tokens, by token."""
    status, org = await call(client, "GET", "/_stub/orgs/myorg", headers={})
    assert 200 == status
    return {entry["token"]: entry for entry in org["tokens"]}


async def make_tokens(client: AppClient, app_id: str = DEMO_APP_ID, **options: Any) -> list[dict[str, Any]]:
    status, made = await call(client, "POST", f"/_stub/orgs/myorg/apps/{app_id}/tokens", options, headers={})
    assert 201 == status, made
    tokens: list[dict[str, Any]] = made["tokens"]
    return tokens


class TestOneToken:
    async def test_revoke_and_approve_answer_204_and_change_the_status(self, client: AppClient) -> None:
        for action, status in (("revoke", "revoked"), ("approve", "approved")):
            response = await client.post(f"{TOKENS}{SAMPLE}?action={action}", headers=AUTH)
            assert (204, b"") == (response.status, await response.read())
            token = (await call(client, "GET", TOKENS + SAMPLE))[1]
            assert status == token["status"]
        assert list(SAMPLE_TOKEN) == list(token)  # the form given is kept

    async def test_cascade_applies_the_action_to_the_refresh_token(self, client: AppClient) -> None:
        assert 204 == (await client.post(f"{TOKENS}{SAMPLE}?action=revoke", headers=AUTH)).status
        assert "approved" == (await tokens_of(client))[SAMPLE]["refreshTokenStatus"]
        assert 204 == (await client.post(f"{TOKENS}{SAMPLE}?action=revoke&cascade=true", headers=AUTH)).status
        assert ("revoked", "revoked") == ((t := (await tokens_of(client))[SAMPLE])["status"], t["refreshTokenStatus"])

    async def test_update_sets_named_attributes_and_the_scope(self, client: AppClient) -> None:
        body = {
            "attributes": [{"name": "att_n1", "value": "changed"}, {"name": "new", "value": "v"}],
            "scope": "read write",
        }
        status, token = await call(client, "POST", TOKENS + SAMPLE, body)
        assert 200 == status
        assert ([{"name": "att_n1", "value": "changed"}, {"name": "new", "value": "v"}], "read write") == (
            token["attributes"],
            token["scope"],
        )
        assert token["lastModifiedAt"] > SAMPLE_TOKEN["lastModifiedAt"]
        assert (200, token) == await call(client, "GET", TOKENS + SAMPLE)

    async def test_a_generated_load_token_can_be_revoked(self, client: AppClient) -> None:
        assert 204 == (await client.post(f"{TOKENS}load3?action=revoke", headers=AUTH)).status
        assert "revoked" == (await call(client, "GET", TOKENS + "load3"))[1]["status"]
        assert "approved" == (await call(client, "GET", TOKENS + "load4"))[1]["status"]

    @pytest.mark.parametrize("method, path", [("POST", "?action=revoke"), ("POST", ""), ("GET", ""), ("DELETE", "")])
    async def test_unknown_token_is_the_documented_404(self, client: AppClient, method: str, path: str) -> None:
        response = await client.request(
            method, f"{TOKENS}nosuchtoken{path}", json={} if path == "" and method == "POST" else None, headers=AUTH
        )
        assert (404, "application/xml") == (response.status, response.headers["Content-Type"])
        assert (
            b"<Error> <Code>keymanagement.service.invalid_account_name</Code> <Message>Invalid Access Token</Message> <Contexts/> </Error>"
        ) == await response.read()

    async def test_bad_action_and_body(self, client: AppClient) -> None:
        assert (400, error("stub.invalid_action", "Invalid action 'delete'; expected approve or revoke")) == await call(
            client, "POST", f"{TOKENS}{SAMPLE}?action=delete"
        )
        assert (400, error("stub.invalid_request", "scope: expected a string")) == await call(
            client, "POST", TOKENS + SAMPLE, {"scope": 1}
        )
        assert "approved" == (await tokens_of(client))[SAMPLE]["status"]


class TestBulkRevoke:
    async def test_revoke_by_app_is_accepted_then_takes_effect(self, aiohttp_client: AiohttpClient) -> None:
        """202 with the number submitted; the tokens turn revoked stub.revoke_delay later, others untouched."""
        client = await aiohttp_client(make_stub_app(seed(), admin=True, settings=StubSettings(revoke_delay=0.5)))
        made = await make_tokens(client, count=2)
        response = await client.post(f"/v1/o/myorg/oauth2/revoke?app={DEMO_APP_ID}", headers=AUTH)
        assert (202, b"3") == (response.status, await response.read())
        mine = [SAMPLE, *(token["token"] for token in made)]
        held = await tokens_of(client)
        assert {"approved"} == {held[token]["status"] for token in mine}  # not yet: it is asynchronous
        async with asyncio.timeout(POLL_LIMIT):
            while (await call(client, "GET", "/_stub/orgs/myorg", headers={}))[1]["pendingRevocations"]:
                await asyncio.sleep(0.01)
        held = await tokens_of(client)
        assert {"revoked"} == {held[token]["status"] for token in mine}
        assert {"approved"} == {entry["status"] for token, entry in held.items() if token not in mine}
        assert {"approved"} == {held[token]["refreshTokenStatus"] for token in mine}

    async def test_revoke_by_end_user_with_cascade(self, client: AppClient) -> None:
        [alice] = await make_tokens(client, enduser="alice")
        await make_tokens(client, enduser="bob")
        response = await client.post("/v1/o/myorg/oauth2/revoke?enduser=alice&cascade=true", headers=AUTH)
        assert (202, b"1") == (response.status, await response.read())
        async with asyncio.timeout(POLL_LIMIT):
            while (await tokens_of(client))[alice["token"]]["status"] != "revoked":
                await asyncio.sleep(0.01)
        held = await tokens_of(client)
        assert ("revoked", "alice") == (held[alice["token"]]["refreshTokenStatus"], held[alice["token"]]["endUser"])
        assert ["approved"] == [e["status"] for e in held.values() if e["endUser"] == "bob"]

    async def test_refusals(self, client: AppClient) -> None:
        assert (
            400,
            error("keymanagement.service.parameters_missing", "Either app or enduser must be given"),
        ) == await call(client, "POST", "/v1/o/myorg/oauth2/revoke")
        assert (404, error("keymanagement.service.app_id_not_found", "App id nope not found")) == await call(
            client, "POST", "/v1/o/myorg/oauth2/revoke?app=nope"
        )
        assert 0 == (await call(client, "GET", "/_stub/orgs/myorg", headers={}))[1]["pendingRevocations"]


class TestSearch:
    async def test_pages_by_start_and_next(self, client: AppClient) -> None:
        made = [SAMPLE, *(token["token"] for token in await make_tokens(client, count=4))]
        path = f"/v1/o/myorg/oauth2/search?app={DEMO_APP_ID}&limit=2"
        status, first = await call(client, "GET", path)
        assert (
            200,
            {
                "list": made[:2],
                "meta": {"limit": 2, "next": made[2], "query": {"appId": DEMO_APP_ID}, "start": "", "totalResults": 5},
            },
        ) == (status, first)
        _, second = await call(client, "GET", f"{path}&start={made[2]}")
        assert (made[2:4], made[4], made[2]) == (second["list"], second["meta"]["next"], second["meta"]["start"])
        _, last = await call(client, "GET", f"{path}&start={made[4]}")
        assert (made[4:], "") == (last["list"], last["meta"]["next"])
        _, default = await call(client, "GET", f"/v1/o/myorg/oauth2/search?app={DEMO_APP_ID}")
        assert (made, 10) == (default["list"], default["meta"]["limit"])

    async def test_by_end_user(self, client: AppClient) -> None:
        [carol] = await make_tokens(client, enduser="carol")
        await make_tokens(client)
        status, found = await call(client, "GET", "/v1/o/myorg/oauth2/search?enduser=carol")
        assert (200, [carol["token"]], {"endUser": "carol"}) == (status, found["list"], found["meta"]["query"])

    @pytest.mark.parametrize("limit", ["0", "101", "x", "-1"])
    async def test_bad_limit(self, client: AppClient, limit: str) -> None:
        assert (
            400,
            error(
                "keymanagement.service.InvalidValueForLimitParam",
                "Invalid value for limit: expected a whole number from 1 to 100",
            ),
        ) == await call(client, "GET", f"/v1/o/myorg/oauth2/search?app={DEMO_APP_ID}&limit={limit}")

    async def test_missing_parameters_and_unknown_app(self, client: AppClient) -> None:
        assert 400 == (await call(client, "GET", "/v1/o/myorg/oauth2/search"))[0]
        assert (404, error("keymanagement.service.app_id_not_found", "App id nope not found")) == await call(
            client, "GET", "/v1/o/myorg/oauth2/search?app=nope"
        )


class TestAuthorizationCodesAndOAuth1:
    async def test_authorization_code_get_and_delete(self, client: AppClient) -> None:
        path = "/v1/o/myorg/oauth2/authorizationcodes/m9PEEI6I"
        assert (200, CODE) == await call(client, "GET", path)
        assert (200, CODE) == await call(client, "DELETE", path)
        missing = error(
            "keymanagement.service.invalid_request-authorization_code_invalid", "Invalid Authorization Code"
        )
        assert (404, missing) == await call(client, "DELETE", path)

    @pytest.mark.parametrize(
        "kind, token, missing",
        [
            (
                "accesstokens",
                OAUTH1_ACCESS,
                error("keymanagement.service.oauth10_access_token_doesnotexist", "Access Token doesnot exist"),
            ),
            (
                "requesttokens",
                OAUTH1_REQUEST,
                error("keymanagement.service.oauth10_request_token_doesnot_exist", "Request Token doesnot exist"),
            ),
        ],
    )
    async def test_oauth1_tokens(
        self, client: AppClient, kind: str, token: dict[str, Any], missing: dict[str, Any]
    ) -> None:
        path = f"/v1/o/myorg/oauth1/{kind}/{token['token']}"
        assert (200, token) == await call(client, "GET", path)
        response = await client.post(f"{path}?action=revoke", headers=AUTH)
        assert (204, "revoked") == (response.status, (await call(client, "GET", path))[1]["status"])
        status, deleted = await call(client, "DELETE", path)
        assert (200, {**token, "status": "revoked"}) == (status, deleted)
        assert "secret" in deleted  # DELETE answers the secrets, as Apigee does
        for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "?action=approve")):
            assert (404, missing) == await call(client, method, path + suffix)


class TestAdmin:
    async def test_app_tokens_are_shaped_like_apigee_s(self, client: AppClient) -> None:
        [token] = await make_tokens(client, enduser="dave", scope="read", expires_in=60)
        assert [
            "apiProducts",
            "app",
            "appId",
            "appUserId",
            "attributes",
            "clientId",
            "createdAt",
            "createdBy",
            "expiresAt",
            "grantType",
            "issuedAt",
            "lastModifiedAt",
            "lastModifiedBy",
            "refreshCount",
            "refreshToken",
            "scope",
            "status",
            "token",
            "tokenType",
        ] == list(token)
        assert (["sandbox"], "app1", SAMPLE_TOKEN["clientId"], 60_000, "password") == (
            token["apiProducts"],
            token["app"],
            token["clientId"],
            token["expiresAt"] - token["issuedAt"],
            token["grantType"],
        )
        assert (200, token) == await call(client, "GET", TOKENS + token["token"])

    @pytest.mark.parametrize(
        "path, body, status, message",
        [
            (
                f"/_stub/orgs/myorg/apps/{DEMO_APP_ID}/tokens",
                {"count": 0},
                400,
                "count: expected a whole number from 1 to 1000",
            ),
            (
                f"/_stub/orgs/myorg/apps/{DEMO_APP_ID}/tokens",
                {"colour": 1},
                400,
                "colour: unknown field; expected any of count, enduser, scope, expires_in",
            ),
            ("/_stub/orgs/myorg/apps/nope/tokens", {}, 404, "App with id nope does not exist"),
            (f"/_stub/orgs/other/apps/{DEMO_APP_ID}/tokens", {}, 404, "no organisation other"),
        ],
    )
    async def test_app_token_refusals(self, client: AppClient, path: str, body: Any, status: int, message: str) -> None:
        before = await tokens_of(client)
        assert status == (r := await call(client, "POST", path, body, headers={}))[0]
        assert message == r[1]["message"]
        assert before == await tokens_of(client)


async def test_token_flow_over_plain_http(aiohttp_server: AiohttpServer) -> None:
    """Search an app's tokens, revoke and approve one, revoke them all by app: each step over HTTP, state checked after."""
    server = await aiohttp_server(make_stub_app(seed(), admin=True, settings=StubSettings(revoke_delay=0.05)))
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession(base, headers=JSON) as session:
        async with session.post(f"/_stub/orgs/myorg/apps/{DEMO_APP_ID}/tokens", json={"count": 2}) as response:
            made = [SAMPLE, *(token["token"] for token in (await response.json())["tokens"])]
        async with session.get(f"/v1/o/myorg/oauth2/search?app={DEMO_APP_ID}") as response:
            assert (200, made) == (response.status, (await response.json())["list"])
        for action, status in (("revoke", "revoked"), ("approve", "approved")):
            async with session.post(
                f"/v1/organizations/myorg/oauth2/accesstokens/{made[1]}?action={action}"
            ) as response:
                assert 204 == response.status
            async with session.get(f"/v1/organizations/myorg/oauth2/accesstokens/{made[1]}") as response:
                assert status == (await response.json())["status"]
        async with session.post(f"/v1/o/myorg/oauth2/revoke?app={DEMO_APP_ID}&cascade=true") as response:
            assert (202, 3) == (response.status, await response.json())
        async with asyncio.timeout(POLL_LIMIT):
            while True:
                async with session.get("/_stub/orgs/myorg") as response:
                    org = await response.json()
                if not org["pendingRevocations"]:
                    break
                await asyncio.sleep(0.01)
        held = {entry["token"]: entry for entry in org["tokens"]}
        assert {("revoked", "revoked")} == {(held[t]["status"], held[t]["refreshTokenStatus"]) for t in made}
        async with session.get(f"/v1/o/myorg/oauth2/search?app={DEMO_APP_ID}") as response:
            assert made == (await response.json())["list"]  # revoked tokens are still found
