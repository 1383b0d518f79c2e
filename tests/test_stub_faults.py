"""The stub's admin endpoints: a journal of what reached it, new tokens, and upstream failures on demand."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import SAMPLE_PATH, GatewayFactory, basic, make_config
from processes import started
from pytest_aiohttp import AiohttpClient, AiohttpServer
from yarl import URL

from gateway.config import ConfigError
from gateway.runtime import RUNTIME
from gateway.stub import demo_seed, jackson, make_stub_app
from gateway.stub.journal import Journal
from gateway.stub.seed import SAMPLE_TOKEN

AUTH = {"Authorization": aiohttp.encode_basic_auth("myname", "mypass")}
SAMPLE_BODY = jackson.dumps(SAMPLE_TOKEN).encode()
# What aiohttp's client adds by itself, left out so a journal entry shows only what the test sent.
BARE = ("User-Agent", "Accept", "Accept-Encoding")


@pytest.fixture
async def stub(aiohttp_server: AiohttpServer) -> str:
    """The stub with its admin endpoints, on loopback."""
    server = await aiohttp_server(make_stub_app(demo_seed(), admin=True))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client as users have it: plain ClientSession, its retry of idempotent requests included."""
    async with aiohttp.ClientSession(skip_auto_headers=BARE) as client:
        yield client


async def put_fault(session: aiohttp.ClientSession, stub: str, **fault: Any) -> None:
    async with session.put(stub + "/_stub/fault", json=fault) as response:
        assert 200 == response.status, await response.text()


async def journal(session: aiohttp.ClientSession, stub: str) -> list[dict[str, Any]]:
    async with session.get(stub + "/_stub/requests") as response:
        assert 200 == response.status
        requests: list[dict[str, Any]] = (await response.json())["requests"]
        return requests


async def assert_serves_normally(session: aiohttp.ClientSession, stub: str) -> None:
    """The stub answers the next request as if nothing had happened."""
    async with session.get(stub + SAMPLE_PATH, headers=AUTH) as response:
        assert (200, SAMPLE_BODY) == (response.status, await response.read())


def bad_request(message: str) -> dict[str, Any]:
    return {"code": "stub.bad_request", "message": message, "contexts": []}


class TestJournal:
    async def test_records_method_raw_path_and_headers_in_order_with_credentials_redacted(
        self, stub: str, session: aiohttp.ClientSession
    ) -> None:
        """Each request as it arrived: raw path and query, every header in order, Authorization hidden."""
        headers = [("X-First", "1"), ("Authorization", AUTH["Authorization"]), ("X-Twice", "a"), ("X-Twice", "b")]
        async with session.delete(URL(stub + SAMPLE_PATH + "?a=1&b=%2F", encoded=True), headers=headers) as response:
            assert 200 == response.status
        async with session.get(stub + "/v1/o/myorg/environments") as response:
            assert 404 == response.status
        host = stub.removeprefix("http://")
        assert [
            {
                "method": "DELETE",
                "path": SAMPLE_PATH + "?a=1&b=%2F",
                "headers": [
                    ["Host", host],
                    ["X-First", "1"],
                    ["Authorization", "[redacted]"],
                    ["X-Twice", "a"],
                    ["X-Twice", "b"],
                    ["Content-Length", "0"],  # added by aiohttp's client to a DELETE without a body
                ],
            },
            {"method": "GET", "path": "/v1/o/myorg/environments", "headers": [["Host", host]]},
        ] == await journal(session, stub)

    async def test_credentials_never_appear(self, stub: str, session: aiohttp.ClientSession) -> None:
        """Neither the Basic credentials nor the password can be read back from the journal."""
        for name in ("Authorization", "authorization", "Proxy-Authorization"):
            async with session.get(stub + SAMPLE_PATH, headers={name: AUTH["Authorization"]}):
                pass
        async with session.get(stub + "/_stub/requests") as response:
            raw = await response.read()
        assert 3 == len(json.loads(raw)["requests"])
        assert AUTH["Authorization"].split()[1].encode() not in raw
        assert b"mypass" not in raw
        assert 3 == raw.count(b'"[redacted]"')

    async def test_admin_requests_are_not_journaled_and_delete_clears(
        self, stub: str, session: aiohttp.ClientSession
    ) -> None:
        await put_fault(session, stub, kind="none")
        async with session.delete(stub + "/_stub/fault") as response:
            assert 204 == response.status
        assert [] == await journal(session, stub)
        await assert_serves_normally(session, stub)
        assert 1 == len(await journal(session, stub))
        async with session.delete(stub + "/_stub/requests") as response:
            assert (204, b"") == (response.status, await response.read())
        assert [] == await journal(session, stub)

    def test_keeps_only_the_newest_entries(self) -> None:
        """Bounded: the oldest entries fall off first."""
        kept = Journal(size=2)
        for index in range(3):
            kept.add({"index": index})
        assert [{"index": 1}, {"index": 2}] == kept.entries()


async def test_admin_is_off_by_default(aiohttp_client: AiohttpClient) -> None:
    """Without admin=True, /_stub/... is just a path the stub does not emulate."""
    client = await aiohttp_client(make_stub_app(demo_seed()))
    for method, path in (("GET", "/_stub/requests"), ("PUT", "/_stub/fault"), ("POST", "/_stub/tokens")):
        response = await client.request(method, path, json={"kind": "empty"}, headers={"Accept": "application/json"})
        assert 404 == response.status
        assert {
            "code": "stub.unknown_path",
            "message": f"The stub does not emulate {method} {path}",
            "contexts": [],
        } == await response.json()
    assert 200 == (await client.get(SAMPLE_PATH, headers=AUTH)).status


class TestTokenCreation:
    async def test_created_tokens_are_deleted_byte_for_byte_in_the_form_given(
        self, stub: str, session: aiohttp.ClientSession
    ) -> None:
        """Key order and number spelling survive; a new organisation is made on the way."""
        tokens = (
            '[{"zeta": 1.50, "token": "tok-1", "app": "a", "scopes": [], "extra": {"n": null}}, {"token": "tok-2"}]'
        )
        async with session.post(stub + "/_stub/tokens", data=f'{{"org": "acme", "tokens": {tokens}}}') as response:
            assert (201, b'{"created": 2}') == (response.status, await response.read())
            assert "application/json" == response.content_type
        async with session.delete(stub + "/v1/o/acme/oauth2/accesstokens/tok-1", headers=AUTH) as response:
            expected = (
                b'{\n"zeta" : 1.50,\n"token" : "tok-1",\n"app" : "a",\n"scopes" : [ ],\n"extra" : {\n"n" : null\n}\n}'
            )
            assert (200, expected) == (response.status, await response.read())
        async with session.delete(stub + "/v1/o/acme/oauth2/accesstokens/tok-1", headers=AUTH) as response:
            assert 404 == response.status
        async with session.get(stub + "/v1/organizations/acme/oauth2/accesstokens/tok-2", headers=AUTH) as response:
            assert (200, b'{\n"token" : "tok-2"\n}') == (response.status, await response.read())

    async def test_a_deleted_token_can_be_created_again(self, stub: str, session: aiohttp.ClientSession) -> None:
        async with session.delete(stub + SAMPLE_PATH, headers=AUTH) as response:
            assert 200 == response.status
        async with session.post(stub + "/_stub/tokens", json={"org": "myorg", "tokens": [SAMPLE_TOKEN]}) as response:
            assert 201 == response.status
        async with session.delete(stub + SAMPLE_PATH, headers=AUTH) as response:
            assert (200, SAMPLE_BODY) == (response.status, await response.read())

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("{", "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
            (b"\xff", "invalid JSON: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
            ('{"org": "o", "tokens": [{"token": "t", "n": NaN}]}', "invalid JSON: NaN is not valid JSON"),
            ("[]", 'expected a JSON object with "org" and "tokens"'),
            ('{"org": "o", "tokens": [], "user": "x"}', 'user: unknown field; expected "org" and "tokens"'),
            ('{"org": "", "tokens": []}', "org: expected a non-empty organisation name"),
            ('{"org": "o"}', "tokens: expected a list of token objects"),
            ('{"org": "o", "tokens": ["t"]}', "tokens[0]: expected a token object"),
            (
                '{"org": "o", "tokens": [{"token": "t"}, {"app": "x"}]}',
                'tokens[1]: missing "token" (a non-empty string)',
            ),
            ('{"org": "o", "tokens": [{"token": "t"}, {"token": "t"}]}', "tokens[1]: token is listed twice"),
        ],
    )
    async def test_bad_requests_name_the_problem_and_create_nothing(
        self, stub: str, session: aiohttp.ClientSession, body: str | bytes, message: str
    ) -> None:
        async with session.post(stub + "/_stub/tokens", data=body) as response:
            assert (400, "application/json") == (response.status, response.content_type)
            assert bad_request(message) == await response.json()
        async with session.get(stub + "/v1/o/o/oauth2/accesstokens/t", headers=AUTH) as response:
            assert 404 == response.status

    async def test_error_body_is_apigee_shaped_byte_for_byte(self, stub: str, session: aiohttp.ClientSession) -> None:
        async with session.post(stub + "/_stub/tokens", data="[]") as response:
            expected = b'{"code": "stub.bad_request", "message": "expected a JSON object with \\"org\\" and \\"tokens\\"", "contexts": []}'
            assert (400, expected) == (response.status, await response.read())


class TestFaults:
    async def test_status_answers_the_given_status_and_body_and_deletes_nothing(
        self, stub: str, session: aiohttp.ClientSession
    ) -> None:
        await put_fault(session, stub, kind="status", status=503, body='{"fault": "Service Unavailable"}')
        async with session.delete(stub + SAMPLE_PATH, headers=AUTH) as response:
            assert (503, "application/json") == (response.status, response.headers["Content-Type"])
            assert b'{"fault": "Service Unavailable"}' == await response.read()
        await put_fault(
            session,
            stub,
            kind="status",
            status=502,
            body="<html>Bad Gateway</html>",
            content_type="text/html; charset=utf-8",
        )
        async with session.delete(stub + SAMPLE_PATH, headers=AUTH) as response:
            assert (502, "text/html; charset=utf-8") == (response.status, response.headers["Content-Type"])
            assert b"<html>Bad Gateway</html>" == await response.read()
        async with session.delete(stub + "/_stub/fault") as response:
            assert 204 == response.status
        await assert_serves_normally(session, stub)

    async def test_reset_drops_the_connection_mid_body(self, stub: str, session: aiohttp.ClientSession) -> None:
        """Status and headers arrive; the body stops short of its Content-Length."""
        await put_fault(session, stub, kind="reset", times=1)
        async with session.delete(stub + SAMPLE_PATH, headers=AUTH) as response:
            assert (200, "1024") == (response.status, response.headers["Content-Length"])
            with pytest.raises(aiohttp.ClientPayloadError) as error:
                await response.read()
        assert aiohttp.ClientPayloadError is type(error.value)
        assert (
            "Response payload is not completed: <ContentLengthError: 400, message='Not enough data to satisfy "
            "content length header (received 33 of 1024 bytes).'>"
        ) == str(error.value)
        assert 1 == len(await journal(session, stub))
        await assert_serves_normally(session, stub)

    async def test_empty_closes_before_any_byte(self, stub: str, session: aiohttp.ClientSession) -> None:
        """ServerDisconnectedError; the client sent the DELETE twice, as aiohttp retries it once."""
        await put_fault(session, stub, kind="empty")
        with pytest.raises(aiohttp.ServerDisconnectedError) as error:
            await session.delete(stub + SAMPLE_PATH, headers=AUTH)
        assert aiohttp.ServerDisconnectedError is type(error.value)
        assert ["DELETE", "DELETE"] == [seen["method"] for seen in await journal(session, stub)]
        async with session.delete(stub + "/_stub/fault") as response:
            assert 204 == response.status
        await assert_serves_normally(session, stub)

    async def test_aiohttp_retry_hides_a_single_empty_answer_to_an_idempotent_request(
        self, stub: str, session: aiohttp.ClientSession
    ) -> None:
        """With times=1, aiohttp's silent retry gets the real answer; only the journal shows both calls."""
        await put_fault(session, stub, kind="empty", times=1)
        async with session.delete(stub + SAMPLE_PATH, headers=AUTH) as response:
            assert (200, SAMPLE_BODY) == (response.status, await response.read())
        assert [SAMPLE_PATH, SAMPLE_PATH] == [seen["path"] for seen in await journal(session, stub)]
        await put_fault(session, stub, kind="empty", times=1)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(stub + SAMPLE_PATH, headers=AUTH)
        assert 3 == len(await journal(session, stub))

    async def test_malformed_is_not_http(self, stub: str, session: aiohttp.ClientSession) -> None:
        await put_fault(session, stub, kind="malformed", times=1)
        with pytest.raises(aiohttp.ClientResponseError) as error:
            await session.delete(stub + SAMPLE_PATH, headers=AUTH)
        assert aiohttp.ClientResponseError is type(error.value)
        assert (400, "Bad status line:\n  Invalid status code:\n\n  b'HTTP/1.1 abc'\n             ^") == (
            error.value.status,
            error.value.message,
        )
        assert 1 == len(await journal(session, stub))
        await assert_serves_normally(session, stub)

    async def test_broken_connections_log_nothing_and_the_stub_keeps_serving(
        self, stub: str, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
    ) -> None:
        """No traceback and no second response: aiohttp takes each as a client gone away."""
        caplog.set_level(logging.DEBUG)
        for kind in ("reset", "empty", "malformed"):
            await put_fault(session, stub, kind=kind, times=1)
            with pytest.raises(aiohttp.ClientError):
                async with session.post(stub + SAMPLE_PATH, data=b"a body the stub reads first") as response:
                    await response.read()
            await assert_serves_normally(session, stub)
        assert [] == [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]

    async def test_times_counts_down_then_clears(self, stub: str, session: aiohttp.ClientSession) -> None:
        await put_fault(session, stub, kind="status", status=500, times=2)
        for remaining in (2, 1):
            async with session.get(stub + "/_stub/fault") as response:
                assert remaining == (await response.json())["times"]
            async with session.get(stub + SAMPLE_PATH, headers=AUTH) as response:
                assert (500, b"") == (response.status, await response.read())
        async with session.get(stub + "/_stub/fault") as response:
            assert (200, b"null") == (response.status, await response.read())
        await assert_serves_normally(session, stub)

    async def test_get_shows_the_fault_as_it_can_be_put_back(self, stub: str, session: aiohttp.ClientSession) -> None:
        async with session.get(stub + "/_stub/fault") as response:
            assert (200, None) == (response.status, await response.json())
        async with session.put(stub + "/_stub/fault", json={"kind": "reset", "delay": 1}) as response:
            assert {"kind": "reset", "delay": 1.0, "jitter": 0.0, "times": None} == await response.json()
        await put_fault(session, stub, kind="status", status=429, jitter=0.5, times=3)
        async with session.get(stub + "/_stub/fault") as response:
            shown = await response.json()
        expected = {
            "kind": "status",
            "status": 429,
            "body": "",
            "content_type": "application/json",
            "delay": 0.0,
            "jitter": 0.5,
            "times": 3,
        }
        assert expected == shown
        await put_fault(session, stub, **shown)

    async def test_admin_endpoints_are_never_faulted(self, stub: str, session: aiohttp.ClientSession) -> None:
        """Whatever the fault, a test can still read the journal and clear it."""
        await put_fault(session, stub, kind="empty", delay=30)
        assert [] == await journal(session, stub)
        async with session.delete(stub + "/_stub/fault") as response:
            assert 204 == response.status
        await assert_serves_normally(session, stub)

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("nope", "invalid JSON: Expecting value: line 1 column 1 (char 0)"),
            (
                "[1]",
                'expected a JSON object with "kind", "status", "body", "content_type", "delay", "jitter" and "times"',
            ),
            (
                '{"kind": "none", "colour": 1}',
                'colour: unknown field; expected "kind", "status", "body", "content_type", "delay", "jitter" and "times"',
            ),
            ("{}", 'kind: expected one of "none", "status", "reset", "empty" or "malformed"; got null'),
            (
                '{"kind": "explode"}',
                'kind: expected one of "none", "status", "reset", "empty" or "malformed"; got "explode"',
            ),
            ('{"kind": "status"}', 'status: required with kind "status"'),
            ('{"kind": "status", "status": 99}', "status: expected an HTTP status from 200 to 599; got 99"),
            ('{"kind": "status", "status": "503"}', 'status: expected an HTTP status from 200 to 599; got "503"'),
            ('{"kind": "status", "status": 500, "body": {}}', "body: expected a string; got {}"),
            (
                '{"kind": "status", "status": 500, "content_type": ""}',
                'content_type: expected a media type such as "application/json"; got ""',
            ),
            ('{"kind": "reset", "status": 500}', 'status: only with kind "status"'),
            ('{"kind": "none", "delay": -0.5}', "delay: expected a number of seconds, 0 or more; got -0.5"),
            ('{"kind": "none", "delay": 1e999}', "delay: expected a number of seconds, 0 or more; got 1E+999"),
            ('{"kind": "none", "jitter": true}', "jitter: expected a number of seconds, 0 or more; got true"),
            (
                '{"kind": "none", "times": 0}',
                "times: expected a whole number, 1 or more, or null for until cleared; got 0",
            ),
            (
                '{"kind": "none", "times": 1.5}',
                "times: expected a whole number, 1 or more, or null for until cleared; got 1.5",
            ),
        ],
    )
    async def test_bad_fault_is_400_naming_the_field_and_changes_nothing(
        self, stub: str, session: aiohttp.ClientSession, body: str, message: str
    ) -> None:
        async with session.put(stub + "/_stub/fault", data=body) as response:
            assert (400, bad_request(message)) == (response.status, await response.json())
        async with session.get(stub + "/_stub/fault") as response:
            assert b"null" == await response.read()


class TestDelay:
    async def test_fault_delay_outlasts_a_shorter_read_timeout(self, stub: str, session: aiohttp.ClientSession) -> None:
        """A 0.3 s delay against a 0.1 s read timeout; the request after it is prompt again."""
        await put_fault(session, stub, kind="none", delay=0.3, times=1)
        quick = aiohttp.ClientTimeout(sock_read=0.1)
        with pytest.raises(aiohttp.SocketTimeoutError):
            await session.get(stub + SAMPLE_PATH, headers=AUTH, timeout=quick)
        async with session.get(stub + SAMPLE_PATH, headers=AUTH, timeout=quick) as response:
            assert (200, SAMPLE_BODY) == (response.status, await response.read())

    async def test_none_answers_normally_once_the_delay_is_over(
        self, stub: str, session: aiohttp.ClientSession
    ) -> None:
        await put_fault(session, stub, kind="none", delay=0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with session.delete(stub + SAMPLE_PATH, headers=AUTH) as response:
            assert (200, SAMPLE_BODY) == (response.status, await response.read())
        assert loop.time() - started >= 0.2

    async def test_stub_delay_holds_back_emulated_answers_but_not_admin_ones(
        self, aiohttp_server: AiohttpServer
    ) -> None:
        server = await aiohttp_server(make_stub_app(demo_seed(), admin=True, delay=0.3))
        quick = aiohttp.ClientTimeout(sock_read=0.1)
        async with aiohttp.ClientSession(timeout=quick) as session:
            with pytest.raises(aiohttp.SocketTimeoutError):
                await session.get(server.make_url(SAMPLE_PATH), headers=AUTH)
            async with session.get(server.make_url("/_stub/requests")) as response:
                assert 200 == response.status


class TestSettings:
    def test_stub_admin_and_delay_are_checked(self, tmp_path: Path) -> None:
        config = make_config(tmp_path, stub={"admin": True, "delay": 0.25})
        assert (True, 0.25) == (config.stub.admin, config.stub.delay)
        assert (False, 0.0) == (make_config(tmp_path).stub.admin, make_config(tmp_path).stub.delay)
        for table, problem in (
            ({"admin": "yes"}, 'stub.admin: expected true or false, got "yes"'),
            ({"delay": -1}, "stub.delay: expected a number, 0 or more, got -1"),
            ({"delay": float("inf")}, "stub.delay: expected a number, 0 or more, got Infinity"),
        ):
            with pytest.raises(ConfigError) as error:
                make_config(tmp_path, stub=table)
            assert f"{tmp_path / 'test.toml'}: {problem}" == str(error.value)

    async def test_embedded_stub_journal_proves_a_refused_call_never_reached_it(
        self, tmp_path: Path, gateway: GatewayFactory, session: aiohttp.ClientSession
    ) -> None:
        """With stub.admin, the journal of `gateway serve`'s own stub shows exactly what was forwarded."""
        client = await gateway(make_config(tmp_path, stub={"admin": True}))
        upstream = client.app[RUNTIME].upstream_url
        refused = await client.delete(SAMPLE_PATH, headers=basic("myname", "wrong"))
        assert 401 == refused.status
        assert [] == await journal(session, upstream)
        accepted = await client.delete(SAMPLE_PATH, headers=basic("myname"))
        assert (200, SAMPLE_BODY) == (accepted.status, await accepted.read())
        forwarded = await journal(session, upstream)
        assert [("DELETE", SAMPLE_PATH)] == [(seen["method"], seen["path"]) for seen in forwarded]
        assert ["Authorization", "[redacted]"] in forwarded[0]["headers"]

    async def test_cli_flags(self, tmp_path: Path, session: aiohttp.ClientSession) -> None:
        """`gateway stub --admin --delay S` says so in its banner and serves /_stub/."""
        async with started("stub", "--port", "0", "--admin", "--delay", "0.05", cwd=tmp_path) as stub:
            url = stub.url
            assert (
                f"Apigee stub listening on {url} (1 users, 6 tokens); admin endpoints under {url}/_stub/; every answer delayed 0.05 s"
                == stub.banner[-1]
            )
            await assert_serves_normally(session, url)
            assert [SAMPLE_PATH] == [seen["path"] for seen in await journal(session, url)]
            assert 0 == await stub.stop(signal.SIGTERM)
