"""The local Apigee stub answers exactly as the upstream documentation shows."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from helpers import SAMPLE, SAMPLE_PATH
from pytest_aiohttp import AiohttpClient
from upstream_samples import JSON_404, XML_404, documented_sample

from gateway.stub import SeedError, demo_seed, jackson, load_seed, make_stub_app
from gateway.stub.seed import SAMPLE_TOKEN, generated_token

AUTH = {"Authorization": aiohttp.encode_basic_auth("myname", "mypass")}


class TestJackson:
    def test_sample_token_prints_exactly_as_documented(self) -> None:
        """The printer reproduces the documentation's sample byte for byte."""
        assert documented_sample() == jackson.dumps(SAMPLE_TOKEN).encode()

    def test_empty_containers_and_scalars(self) -> None:
        """Empty containers, decimals and non-ASCII text print as Jackson prints them."""
        value = {"a": [], "b": {}, "c": Decimal("1.50"), "d": None, "e": True, "f": "é"}
        assert '{\n"a" : [ ],\n"b" : { },\n"c" : 1.50,\n"d" : null,\n"e" : true,\n"f" : "é"\n}' == jackson.dumps(value)


async def test_delete_returns_documented_sample_then_404(aiohttp_client: AiohttpClient) -> None:
    """Deleting the sample token answers the documented body, and a second delete the 404."""
    client = await aiohttp_client(make_stub_app(demo_seed()))
    first = await client.delete(SAMPLE_PATH, headers=AUTH)
    assert 200 == first.status
    assert "application/json" == first.headers["Content-Type"]
    assert jackson.dumps(SAMPLE_TOKEN).encode() == await first.read()
    second = await client.delete(SAMPLE_PATH, headers=AUTH)
    assert 404 == second.status
    assert "application/xml" == second.headers["Content-Type"]
    assert XML_404 == await second.read()


async def test_404_as_json_when_accepted(aiohttp_client: AiohttpClient) -> None:
    """With Accept: application/json the same error comes in Apigee's JSON shape."""
    client = await aiohttp_client(make_stub_app(demo_seed()))
    response = await client.delete(
        "/v1/o/myorg/oauth2/accesstokens/nosuchtoken", headers={**AUTH, "Accept": "application/json"}
    )
    assert 404 == response.status
    assert "application/json" == response.headers["Content-Type"]
    assert JSON_404 == await response.read()


async def test_organizations_alias_and_get_does_not_delete(aiohttp_client: AiohttpClient) -> None:
    """GET returns a token without deleting it; /v1/organizations/ is the same resource."""
    client = await aiohttp_client(make_stub_app(demo_seed()))
    alias = f"/v1/organizations/myorg/oauth2/accesstokens/{SAMPLE}"
    for _ in range(2):
        got = await client.get(alias, headers=AUTH)
        assert 200 == got.status
        assert SAMPLE == json.loads(await got.read())["token"]
    assert 200 == (await client.delete(alias, headers=AUTH)).status
    assert 404 == (await client.get(SAMPLE_PATH, headers=AUTH)).status


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + "bXluYW1lOndyb25n"},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic !!"},
    ],
    ids=["missing", "wrong-password", "other-scheme", "bad-base64"],
)
async def test_wrong_or_missing_credentials_get_401(aiohttp_client: AiohttpClient, headers: dict[str, str]) -> None:
    """Without valid credentials nothing is revealed or deleted."""
    client = await aiohttp_client(make_stub_app(demo_seed()))
    response = await client.delete(SAMPLE_PATH, headers=headers)
    assert 401 == response.status
    assert 'Basic realm="Apigee stub"' == response.headers["WWW-Authenticate"]
    assert 200 == (await client.get(SAMPLE_PATH, headers=AUTH)).status


async def test_unknown_path_is_404(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_stub_app(demo_seed()))
    response = await client.get("/v1/o/myorg/environments", headers={**AUTH, "Accept": "application/json"})
    assert 404 == response.status
    assert {
        "code": "stub.unknown_path",
        "message": "The stub does not emulate GET /v1/o/myorg/environments",
        "contexts": [],
    } == await response.json()


async def test_generated_load_tokens(aiohttp_client: AiohttpClient) -> None:
    """load0 ... load<N-1> exist in every seeded org until deleted; nothing outside that range does."""
    seed = dataclasses.replace(demo_seed(), generated=1000)
    client = await aiohttp_client(make_stub_app(seed))
    path = "/v1/o/myorg/oauth2/accesstokens/"
    got = await client.get(path + "load999", headers=AUTH)
    assert (200, "load999", "load-test") == (got.status, (await got.json())["token"], (await got.json())["app"])
    assert 200 == (await client.delete(path + "load7", headers=AUTH)).status
    for missing in ("load7", "load1000", "load07", "load", "loadx", "load-1"):
        assert 404 == (await client.delete(path + missing, headers=AUTH)).status, missing
    assert 404 == (await client.get("/v1/o/otherorg/oauth2/accesstokens/load1", headers=AUTH)).status
    assert 200 == (await client.delete(path + SAMPLE, headers=AUTH)).status


DEV = '{"email": "d@example.com", "firstName": "D", "lastName": "E", "userName": "d"}'


def org_with_key(key_fields: str, tokens: str = "[]") -> str:
    """A seed whose one developer's one app holds key K with ``key_fields``."""
    app = '{"name": "a", "credentials": [{"consumerKey": "K", ' + key_fields + "}]}"
    return (
        '{"users": {"a": "b"}, "orgs": {"o": {"developers": ['
        + DEV[:-1]
        + ', "apps": ['
        + app
        + ']}], "tokens": '
        + tokens
        + "}}}"
    )


class TestSeed:
    def test_demo_seed_holds_the_sample_and_generated_tokens(self) -> None:
        """The demo data: myname/mypass, org myorg, the documented token first."""
        seed = demo_seed()
        assert {"myname": "mypass"} == seed.users
        assert SAMPLE_TOKEN == seed.orgs["myorg"][0]
        assert [generated_token(i) for i in range(5)] == seed.orgs["myorg"][1:]

    def test_generated_tokens_are_stable_and_distinct(self) -> None:
        tokens = [generated_token(i)["token"] for i in range(1000)]
        assert tokens == [generated_token(i)["token"] for i in range(1000)]
        assert 1000 == len(set(tokens))

    async def test_seed_file_tokens_come_back_in_the_form_given(
        self, tmp_path: Path, aiohttp_client: AiohttpClient
    ) -> None:
        """Key order and number spelling survive the round trip through a seed file."""
        seed_file = tmp_path / "seed.json"
        seed_file.write_text(
            '{"users": {"ops": "s3cret"}, "orgs": {"acme": [{"zeta": 1.50, "token": "tok-1", "app": "a"}]}}'
        )
        client = await aiohttp_client(make_stub_app(load_seed(seed_file)))
        response = await client.delete(
            "/v1/o/acme/oauth2/accesstokens/tok-1",
            headers={"Authorization": aiohttp.encode_basic_auth("ops", "s3cret")},
        )
        assert b'{\n"zeta" : 1.50,\n"token" : "tok-1",\n"app" : "a"\n}' == await response.read()

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("{", "invalid JSON"),
            ("[]", 'expected a JSON object with "users" and "orgs"'),
            ('{"users": {}}', "users: expected an object of user name to password"),
            ('{"users": {"a": "b"}, "tokens": []}', "tokens: unknown key"),
            ('{"users": {"a": "b"}, "orgs": {"o": [{"app": "x"}]}}', 'orgs.o[0]: missing "token"'),
            (
                '{"users": {"a": "b"}, "orgs": {"o": [{"token": "t"}, {"token": "t"}]}}',
                "orgs.o[1]: token is listed twice",
            ),
            ('{"users": {"a": "b"}, "orgs": {"o": 1}}', "orgs.o: expected a list of token objects"),
            (
                '{"users": {"a": "b"}, "orgs": {"o": {"colour": []}}}',
                "orgs.o.colour: unknown field; expected apiproducts, developers, companies",
            ),
            (
                '{"users": {"a": "b"}, "orgs": {"o": {"developers": [{"email": "x"}]}}}',
                'orgs.o.developers[0]: missing "firstName"',
            ),
            (
                '{"users": {"a": "b"}, "orgs": {"o": {"developers": ['
                + DEV
                + ", "
                + DEV.replace("d@example.com", "D@Example.COM")
                + "]}}}",
                "orgs.o.developers[1].email: listed twice",
            ),
            (
                '{"users": {"a": "b"}, "orgs": {"o": {"developers": [' + DEV[:-1] + ', "status": "gone"}]}}}',
                "orgs.o.developers[0].status: expected active or inactive",
            ),
            (
                '{"users": {"a": "b"}, "orgs": {"o": {"companies": [{"name": "c", "apps": [{"name": "a"}, {"name": "a"}]}]}}}',
                "orgs.o.companies[0].apps[1].name: listed twice",
            ),
            (
                org_with_key('"apiProducts": ["p9"]'),
                "orgs.o.developers[0].apps[0].credentials[0].apiProducts[0]: no such product in",
            ),
            (
                org_with_key('"tokens": [{"token": "t", "clientId": "OTHER"}]'),
                "orgs.o.developers[0].apps[0].credentials[0].tokens[0].clientId: differs from the consumerKey",
            ),
            (
                org_with_key('"tokens": [{"app": "x"}]'),
                'orgs.o.developers[0].apps[0].credentials[0].tokens[0]: missing "token"',
            ),
            (
                org_with_key('"tokens": [{"token": "t"}]', tokens='[{"token": "t"}]'),
                "orgs.o.tokens[0]: token is listed twice",
            ),
            (
                org_with_key('"attributes": [{"name": "n"}]'),
                'orgs.o.developers[0].apps[0].credentials[0].attributes[0]: missing "value"',
            ),
            (
                '{"users": {"a": "b"}, "orgs": {"o": {"developers": ['
                + DEV[:-1]
                + ', "apps": [{"name": "a", "credentials": [{"consumerKey": "K"}]}, {"name": "b", "credentials": [{"consumerKey": "K"}]}]}]}}}',
                "orgs.o.developers[0].apps[1].credentials[0].consumerKey: listed twice in the organisation",
            ),
        ],
    )
    def test_bad_seed_files_name_the_entry(self, tmp_path: Path, content: str, message: str) -> None:
        seed_file = tmp_path / "seed.json"
        seed_file.write_text(content)
        with pytest.raises(SeedError) as error:
            load_seed(seed_file)
        assert str(error.value).startswith(f"{seed_file}: ")
        assert message in str(error.value)

    def test_missing_seed_file(self, tmp_path: Path) -> None:
        with pytest.raises(SeedError, match="cannot read: No such file or directory"):
            load_seed(tmp_path / "absent.json")
