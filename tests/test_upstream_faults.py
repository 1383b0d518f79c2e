"""Every way the upstream can fail, rehearsed with the stub's fault injection: the caller gets a
precise 502/504 (or Apigee's own 5xx, passed through), the audit log says what happened and
whether the token may be gone, nothing is retried, and the gateway goes on serving."""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import USERS, AppClient, GatewayFactory, basic, make_config, rows
from pytest_aiohttp import AiohttpClient
from raw_upstream import raw_upstream
from wire_support import exchange, parse, request, served

from gateway.audit.fingerprint import fingerprint
from gateway.stub import demo_seed, make_stub_app

TOKEN_PATH = "/v1/o/myorg/oauth2/accesstokens/{}"


@pytest.fixture
async def stub(aiohttp_client: AiohttpClient) -> AppClient:
    """The real stub with its admin endpoints, for faults and its request journal."""
    return await aiohttp_client(make_stub_app(dataclasses.replace(demo_seed(), generated=50), admin=True))


async def through(tmp_path: Path, gateway: GatewayFactory, stub: AppClient, **upstream: Any) -> AppClient:
    url = str(stub.make_url("")).rstrip("/")
    return await gateway(make_config(tmp_path, upstream={"url": url, **upstream}))


async def deletes_seen(stub: AppClient) -> list[str]:
    journal = await (await stub.get("/_stub/requests")).json()
    return [entry["path"] for entry in journal["requests"] if entry["method"] == "DELETE"]


def last_outcome(tmp_path: Path) -> tuple[str, str | None, int | None]:
    record = rows(tmp_path / "audit.db")[-1]
    return record["outcome"], record["error_code"], record["upstream_status"]


@pytest.mark.parametrize(
    ("fault", "status", "message", "outcome", "cause"),
    [
        (
            {"kind": "empty"},
            502,
            "The upstream could not be reached or gave no valid answer: the upstream closed the connection without answering",
            "unknown",
            "upstream.disconnected",
        ),
        (
            {"kind": "malformed"},
            502,
            "The upstream could not be reached or gave no valid answer: the upstream sent a malformed HTTP response",
            "unknown",
            "upstream.malformed",
        ),
        (
            {"kind": "none", "delay": 1.0},
            504,
            "The upstream did not answer in time: no answer within the read timeout",
            "unknown",
            "upstream.read_timeout",
        ),
    ],
    ids=["empty-response", "malformed-http", "read-timeout"],
)
async def test_a_call_that_left_but_got_no_answer_is_unknown_and_never_retried(
    tmp_path: Path,
    gateway: GatewayFactory,
    stub: AppClient,
    fault: dict[str, Any],
    status: int,
    message: str,
    outcome: str,
    cause: str,
) -> None:
    client = await through(tmp_path, gateway, stub, read_timeout=0.3)
    assert 200 == (await stub.put("/_stub/fault", json={**fault, "times": 1})).status
    response = await client.delete(TOKEN_PATH.format("load1"), headers=basic("myname"))
    assert status == response.status
    assert {
        "code": "gateway.upstream_unavailable",
        "message": message + "; the deletion may or may not have happened upstream, and it was not retried",
        "contexts": [],
    } == await response.json()
    assert (outcome, cause, None) == last_outcome(tmp_path)
    assert [TOKEN_PATH.format("load1")] == await deletes_seen(stub)  # sent once, not twice
    # The fault was for one call: the gateway serves the next one normally.
    assert 200 == (await client.delete(TOKEN_PATH.format("load2"), headers=basic("myname"))).status
    assert ("deleted", None, 200) == last_outcome(tmp_path)


async def test_apigee_5xx_is_passed_through_and_recorded(
    tmp_path: Path, gateway: GatewayFactory, stub: AppClient
) -> None:
    body = '{"code": "messaging.adaptors.http.flow.ServiceUnavailable", "message": "down", "contexts": []}'
    client = await through(tmp_path, gateway, stub)
    await stub.put("/_stub/fault", json={"kind": "status", "status": 503, "body": body, "times": 1})
    response = await client.delete(TOKEN_PATH.format("load1"), headers=basic("myname"))
    assert (503, body.encode()) == (response.status, await response.read())
    assert ("upstream_error", "messaging.adaptors.http.flow.ServiceUnavailable", 503) == last_outcome(tmp_path)


@pytest.fixture
def unanswering_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: connection attempts hang, as to a host that drops SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_connect_timeout_gives_504_and_nothing_was_sent(
    tmp_path: Path, gateway: GatewayFactory, unanswering_port: int
) -> None:
    client = await gateway(
        make_config(tmp_path, upstream={"url": f"http://127.0.0.1:{unanswering_port}", "connect_timeout": 0.2})
    )
    response = await client.delete(TOKEN_PATH.format("load1"), headers=basic("myname"))
    assert 504 == response.status
    assert {
        "code": "gateway.upstream_unavailable",
        "message": "The upstream did not answer in time: no connection within the connect timeout; nothing reached the upstream",
        "contexts": [],
    } == await response.json()
    assert ("upstream_error", "upstream.connect_timeout", None) == last_outcome(tmp_path)


TRICKLED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n" + b" " * 64


async def test_an_upstream_trickling_its_head_is_cut_at_the_total_timeout(
    tmp_path: Path, gateway: GatewayFactory
) -> None:
    """A byte every 0.1 s never trips read_timeout (a wait between reads); total_timeout ends the call."""
    async with raw_upstream(trickled=TRICKLED, every=0.1) as upstream:
        config = make_config(
            tmp_path, upstream={"url": upstream.url, "connect_timeout": 0.5, "read_timeout": 0.5, "total_timeout": 1.0}
        )
        client = await gateway(config)
        response = await client.delete(TOKEN_PATH.format("load1"), headers=basic("myname"))
        assert 504 == response.status
        assert {
            "code": "gateway.upstream_unavailable",
            "message": "The upstream did not answer in time: no complete answer within the total timeout; "
            "the deletion may or may not have happened upstream, and it was not retried",
            "contexts": [],
        } == await response.json()
        assert ("unknown", "upstream.total_timeout", None) == last_outcome(tmp_path)
        assert 1 == len(upstream.requests)  # sent once, not retried


MIB = 1 << 20
JSON_HEAD = b"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"


def answer(status: bytes, body: bytes, *, chunked: bool = False) -> bytes:
    """A raw upstream answer with ``body`` framed by Content-Length, or in one chunk."""
    head = JSON_HEAD.replace(b"{status}", status)
    if chunked:
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def lost(status: int, detail: str, took: str = ", so the deletion took effect upstream") -> dict[str, Any]:
    return {
        "code": "gateway.upstream_answer_lost",
        "message": f"The upstream answered {status}{took}, but its answer could not be passed on: {detail}",
        "contexts": [],
    }


OVER_THE_CAP = f"its body is over {MIB} bytes (upstream.max_body_mb)"


@pytest.mark.parametrize(
    ("reply", "expected", "outcome"),
    [
        (answer(b"200 OK", b" " * (MIB + 1)), lost(200, OVER_THE_CAP), "deleted"),
        (answer(b"200 OK", b" " * (MIB + 1), chunked=True), lost(200, OVER_THE_CAP), "deleted"),
        (answer(b"404 Not Found", b" " * (MIB + 1)), lost(404, OVER_THE_CAP, took=""), "not_found"),
        (answer(b"503 Service Unavailable", b" " * (MIB + 1)), lost(503, OVER_THE_CAP, took=""), "upstream_error"),
    ],
    ids=["200-with-length", "200-chunked", "404", "503"],
)
async def test_an_answer_over_max_body_mb_is_recorded_from_its_status_and_the_caller_told(
    tmp_path: Path, gateway: GatewayFactory, reply: bytes, expected: dict[str, Any], outcome: str
) -> None:
    """The status was read, so the upstream has said what became of the call: the record says it
    (no snapshot), and the 502 says it, instead of "unknown" and "may or may not"."""
    async with raw_upstream(reply) as upstream:
        client = await gateway(make_config(tmp_path, upstream=upstream.url))
        response = await client.delete(TOKEN_PATH.format("load1"), headers=basic("myname"))
        assert (502, expected) == (response.status, await response.json())
        assert 1 == len(upstream.requests)
    record = rows(tmp_path / "audit.db")[-1]
    assert (outcome, "upstream.too_large", int(expected["message"].split()[3].rstrip(",")), None) == (
        record["outcome"],
        record["error_code"],
        record["upstream_status"],
        record["snapshot"],
    )


async def test_a_change_other_than_a_delete_is_recorded_succeeded(tmp_path: Path, gateway: GatewayFactory) -> None:
    """An approval answered 200 with a body over the cap: `succeeded`, as a 2xx of a change always is."""
    async with raw_upstream(answer(b"200 OK", b" " * (MIB + 1))) as upstream:
        client = await gateway(make_config(tmp_path, upstream=upstream.url))
        response = await client.post(TOKEN_PATH.format("load1") + "?action=approve", headers=basic("myname"))
        assert (502, lost(200, OVER_THE_CAP, took=", so the approval took effect upstream")) == (
            response.status,
            await response.json(),
        )
    assert ("succeeded", "upstream.too_large", 200) == last_outcome(tmp_path)


async def test_an_answer_lost_on_a_key_keeps_the_records_app_and_consumer_key(
    tmp_path: Path, gateway: GatewayFactory
) -> None:
    """What the path says (app, consumer key as a fingerprint) is recorded as for any answer, so
    `audit query --client-id` finds the call."""
    path = "/v1/o/myorg/developers/dev@example.com/apps/app1/keys/the-consumer-key?action=revoke"
    async with raw_upstream(answer(b"200 OK", b" " * (MIB + 1))) as upstream:
        client = await gateway(make_config(tmp_path, upstream=upstream.url))
        response = await client.post(path, headers=basic("myname"))
        assert 502 == response.status
    record = rows(tmp_path / "audit.db")[-1]
    assert ("succeeded", "upstream.too_large", "app1", fingerprint("the-consumer-key")) == (
        record["outcome"],
        record["error_code"],
        record["app"],
        record["client_id"],
    )


async def test_max_body_mb_sets_the_cap_and_an_answer_under_it_passes_byte_for_byte(
    tmp_path: Path, gateway: GatewayFactory
) -> None:
    body = b'{"token": "' + b"x" * (MIB + 100) + b'"}'
    async with raw_upstream(answer(b"200 OK", body)) as upstream:
        client = await gateway(make_config(tmp_path, upstream={"url": upstream.url, "max_body_mb": 2}))
        response = await client.delete(TOKEN_PATH.format("load1"), headers=basic("myname"))
        assert (200, body) == (response.status, await response.read())
    assert ("deleted", None, 200) == last_outcome(tmp_path)


async def test_a_pass_through_answer_over_its_cap_is_a_502_that_says_its_status(
    tmp_path: Path, gateway: GatewayFactory
) -> None:
    """A call passed through has its own cap (upstream.pass_through_max_body_mb), named in the 502."""
    over = f"its body is over {MIB} bytes (upstream.pass_through_max_body_mb)"
    async with raw_upstream(answer(b"200 OK", b" " * (MIB + 1))) as upstream:
        reader = {**USERS[0], "roles": ["read"]}
        upstream_table = {"url": upstream.url, "pass_through_max_body_mb": 1}
        client = await gateway(make_config(tmp_path, upstream=upstream_table, users=[reader]))
        response = await client.get("/v1/o/myorg/apps", headers=basic("myname"))
        assert (502, lost(200, over, took=", so the call took effect upstream")) == (
            response.status,
            await response.json(),
        )


async def test_an_answer_cut_off_after_its_status_is_recorded_from_the_status(
    tmp_path: Path, gateway: GatewayFactory, stub: AppClient
) -> None:
    """The stub's reset: a 200 whose body stops short. The deletion happened; the record says so."""
    client = await through(tmp_path, gateway, stub)
    assert 200 == (await stub.put("/_stub/fault", json={"kind": "reset", "times": 1})).status
    response = await client.delete(TOKEN_PATH.format("load1"), headers=basic("myname"))
    assert (502, lost(200, "the upstream's answer was cut off mid-body")) == (response.status, await response.json())
    assert ("deleted", "upstream.incomplete", 200) == last_outcome(tmp_path)
    assert [TOKEN_PATH.format("load1")] == await deletes_seen(stub)  # sent once, not twice


@pytest.mark.parametrize(
    ("every", "detail", "cause"),
    [
        (0.1, "no complete answer within the total timeout", "upstream.total_timeout"),
        (2.0, "the rest of the answer did not come within the read timeout", "upstream.read_timeout"),
    ],
    ids=["trickled-past-total-timeout", "paused-past-read-timeout"],
)
async def test_an_answer_whose_body_comes_too_late_is_recorded_from_its_status(
    tmp_path: Path, gateway: GatewayFactory, every: float, detail: str, cause: str
) -> None:
    sent_at_once = TRICKLED.index(b"\r\n\r\n") + 4
    async with raw_upstream(TRICKLED[:sent_at_once], trickled=TRICKLED[sent_at_once:], every=every) as upstream:
        config = make_config(
            tmp_path, upstream={"url": upstream.url, "connect_timeout": 0.5, "read_timeout": 0.5, "total_timeout": 1.0}
        )
        client = await gateway(config)
        response = await client.delete(TOKEN_PATH.format("load1"), headers=basic("myname"))
        assert (502, lost(200, detail)) == (response.status, await response.json())
        assert ("deleted", cause, 200) == last_outcome(tmp_path)
        assert 1 == len(upstream.requests)  # sent once, not retried


async def test_an_answer_followed_in_its_read_by_bytes_that_are_no_answer_is_passed_on_and_recorded(
    tmp_path: Path,
) -> None:
    """RFC 9112, section 6.3: bytes past an answer are discarded, the answer stands. They came in
    the same read as its head, and the whole read was taken for garbage: 502, recorded unknown."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    async with raw_upstream(reply + b"{}EXTRA") as upstream:
        async with served(make_config(tmp_path, upstream=upstream.url)) as port:
            answer = parse(await exchange(port, request("DELETE", TOKEN_PATH.format("load1"))))
        assert 1 == len(upstream.requests)
    assert (b"HTTP/1.1 200 OK", b"application/json", b"{}") == (
        answer.status_line,
        answer.header(b"Content-Type"),
        answer.body,
    )
    assert ("deleted", None, 200) == last_outcome(tmp_path)


async def test_a_head_whose_chunked_body_breaks_in_the_same_read_is_recorded_from_its_status(tmp_path: Path) -> None:
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nzz\r\n"
    async with raw_upstream(reply) as upstream:
        async with served(make_config(tmp_path, upstream=upstream.url)) as port:
            answer = parse(await exchange(port, request("DELETE", TOKEN_PATH.format("load1"))))
        assert 1 == len(upstream.requests)
    assert b"HTTP/1.1 502 Bad Gateway" == answer.status_line
    assert lost(200, "the upstream's answer was cut off mid-body") == json.loads(answer.body)
    assert ("deleted", "upstream.incomplete", 200) == last_outcome(tmp_path)


@pytest.mark.parametrize(
    "status_line",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade",
        b"HTTP/1.1 099 Early",
        b"HTTP/1.1 600 Beyond",
        b"HTTP/1.1 999 Weird",
    ],
    ids=["101-never-asked-for", "099", "600", "999"],
)
async def test_a_status_http_does_not_have_is_a_malformed_answer_and_the_call_unknown(
    tmp_path: Path, status_line: bytes
) -> None:
    """RFC 9110 has statuses 100 to 599, and a 101 only to a request that asked to switch (the
    gateway forwards no Upgrade): a 101 relayed told the caller its connection had switched
    protocol, and ``099`` went out as a two-digit ``HTTP/1.1 99``. Neither says what became of
    the call, so it is unknown."""
    async with raw_upstream(status_line + b"\r\nContent-Length: 2\r\n\r\n{}") as upstream:
        async with served(make_config(tmp_path, upstream=upstream.url)) as port:
            answer = parse(await exchange(port, request("DELETE", TOKEN_PATH.format("load1"))))
        assert 1 == len(upstream.requests)  # sent once, not retried
    assert b"HTTP/1.1 502 Bad Gateway" == answer.status_line
    assert {
        "code": "gateway.upstream_unavailable",
        "message": "The upstream could not be reached or gave no valid answer: the upstream sent a malformed HTTP "
        "response; the deletion may or may not have happened upstream, and it was not retried",
        "contexts": [],
    } == json.loads(answer.body)
    assert ("unknown", "upstream.malformed", None) == last_outcome(tmp_path)


async def test_refused_calls_never_reach_the_upstream(tmp_path: Path, gateway: GatewayFactory, stub: AppClient) -> None:
    """The stub's journal is the upstream's own word: 401, 403, 400, 404, 405 and 429 forward nothing."""
    client = await through(tmp_path, gateway, stub)
    await client.delete(TOKEN_PATH.format("load1"), headers=basic("myname", "wrong"))
    await client.delete("/v1/o/otherorg/oauth2/accesstokens/load1", headers=basic("myname"))
    await client.delete(TOKEN_PATH.format("bad%2Ftoken"), headers=basic("myname"))
    await client.delete("/v1/o/myorg/apps", headers=basic("myname"))
    await client.get(TOKEN_PATH.format("load1"), headers=basic("myname"))
    assert [] == (await (await stub.get("/_stub/requests")).json())["requests"]
    assert 200 == (await client.delete(TOKEN_PATH.format("load1"), headers=basic("myname"))).status
    assert [TOKEN_PATH.format("load1")] == await deletes_seen(stub)
