"""Pass-through exactness on the wire, as raw bytes: bodies of any legitimate size and encoding go
up as sent, answers come back as sent (a HEAD's Content-Length, header names in their own case),
and a request aiohttp's parser refuses gets an Apigee-shaped 400 that quotes none of it."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import PASSWORDS, SAMPLE_PATH, make_config, rows
from raw_upstream import raw_upstream
from wire_support import authorization, exchange, parse, request, served

from gateway.logs import flush_logs
from gateway.passwords import hash_password

MIB = 1 << 20
ROLES = ["revoke", "audit", "read", "manage"]
USERS = [
    {
        "name": "myname",
        "password_hash": hash_password(PASSWORDS["myname"], log2_n=10),
        "orgs": ["myorg"],
        "roles": ROLES,
    }
]
IMPORT = "/v1/o/myorg/apis?action=import&name=weather"
OK = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def config(tmp_path: Path, url: str, **upstream: Any) -> Any:
    return make_config(tmp_path, upstream={"url": url, **upstream}, users=USERS)


def body_of(head_and_body: bytes) -> dict[str, Any]:
    answer = parse(head_and_body)
    document: dict[str, Any] = json.loads(answer.body)
    return document


# 1. Bodies of a call passed through: their own bound, generous by default --------------------------


async def test_a_bundle_import_of_several_mib_goes_up_byte_for_byte(tmp_path: Path) -> None:
    """An API proxy bundle (a multi-MB zip) is imported through the gateway as sent, under the
    default upstream.pass_through_max_body_mb (32), far over an audited call's 64 KiB."""
    bundle = os.urandom(5 * MIB)
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            answer = await exchange(
                port, request("POST", IMPORT, b"Content-Type: application/octet-stream", body=bundle)
            )
    assert parse(answer).status_line == b"HTTP/1.1 201 Created"
    assert [bundle] == upstream.bodies
    assert f"\r\nContent-Length: {len(bundle)}\r\n".encode() in upstream.requests[0]


async def test_a_bundle_export_of_several_mib_comes_back_byte_for_byte(tmp_path: Path) -> None:
    """The answer of a call passed through has the same bound: an exported bundle over
    upstream.max_body_mb (1 MiB, the audited answers' bound) reaches the caller whole."""
    bundle = os.urandom(3 * MIB)
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len(bundle)}\r\n\r\n"
    async with raw_upstream(head.encode() + bundle) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            answer = await exchange(port, request("GET", "/v1/o/myorg/apis/weather/revisions/1?format=bundle"))
    assert (b"HTTP/1.1 200 OK", bundle) == (parse(answer).status_line, parse(answer).body)


async def test_a_body_over_pass_through_max_body_mb_is_refused_and_not_forwarded(tmp_path: Path) -> None:
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url, pass_through_max_body_mb=1)) as port:
            under = await exchange(port, request("POST", IMPORT, body=b"z" * MIB))
            over = await exchange(port, request("POST", IMPORT, body=b"z" * (MIB + 1)))
    assert parse(under).status_line == b"HTTP/1.1 201 Created"
    assert parse(over).status_line == b"HTTP/1.1 413 Request Entity Too Large"
    assert {
        "code": "gateway.payload_too_large",
        "message": f"The request body exceeds {MIB} bytes (upstream.pass_through_max_body_mb)",
        "contexts": [],
    } == body_of(over)
    assert [MIB] == [len(body) for body in upstream.bodies]


async def test_a_chunked_body_over_the_bound_is_refused_too(tmp_path: Path) -> None:
    """Without a Content-Length the bound is counted as the body arrives."""
    chunk = b"z" * (256 * 1024)
    chunked = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 5 + b"0\r\n\r\n"
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url, pass_through_max_body_mb=1)) as port:
            over = await exchange(port, request("POST", IMPORT, b"Transfer-Encoding: chunked", body=chunked))
    assert "gateway.payload_too_large" == body_of(over)["code"]
    assert [] == upstream.requests


async def test_an_audited_call_keeps_its_64_kib_bound(tmp_path: Path) -> None:
    """A credential change is small; its bound is not the pass-through's."""
    key_create = "/v1/o/myorg/developers/d@example.com/apps/app1/keys/create"
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            over = await exchange(port, request("POST", key_create, body=b" " * (64 * 1024 + 1)))
    assert {
        "code": "gateway.payload_too_large",
        "message": "The request body exceeds 65536 bytes",
        "contexts": [],
    } == body_of(over)
    assert [] == upstream.requests


# 2. A body goes up as it was sent: never decoded -------------------------------------------------------


async def test_a_gzip_body_goes_up_as_sent_still_labelled_gzip(tmp_path: Path) -> None:
    compressed = gzip.compress(b'{"name": "settings", "entry": [{"name": "a", "value": "1"}]}')
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            answer = await exchange(
                port, request("POST", "/v1/o/myorg/keyvaluemaps", b"Content-Encoding: gzip", body=compressed)
            )
    assert parse(answer).status_line == b"HTTP/1.1 201 Created"
    assert [compressed] == upstream.bodies
    assert b"\r\nContent-Encoding: gzip\r\n" in upstream.requests[0]
    assert f"\r\nContent-Length: {len(compressed)}\r\n".encode() in upstream.requests[0]


@pytest.mark.parametrize("encoding", [b"gzip", b"deflate", b"br", b"x-unknown"])
async def test_a_body_its_encoding_does_not_describe_goes_up_as_sent_never_a_500(
    tmp_path: Path, encoding: bytes
) -> None:
    """What to make of bytes that are not what their Content-Encoding says is the upstream's call."""
    garbage = b"this is not compressed at all"
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            answer = await exchange(
                port,
                request("PUT", "/v1/o/myorg/keyvaluemaps/settings", b"Content-Encoding: " + encoding, body=garbage),
            )
    assert parse(answer).status_line == b"HTTP/1.1 201 Created"
    assert [garbage] == upstream.bodies


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (b"gzip", gzip.compress(json.dumps({"consumerKey": "MyOwnConsumerKey1234567890"}).encode(), mtime=0)),
        (b"br", b"\x1b\x00\x00"),
    ],
    ids=["gzip", "br"],  # the same names in every pytest worker (gzip would stamp the time)
)
async def test_an_audited_key_creation_with_an_encoded_body_is_refused(
    tmp_path: Path, encoding: bytes, body: bytes
) -> None:
    """The gateway records what an audited call asks for (the key it issues, the body) and would
    have to decode the body to do so, while it forwards bodies as sent: 400, recorded as
    rejected, nothing forwarded."""
    key_create = "/v1/o/myorg/developers/d@example.com/apps/app1/keys/create"
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            answer = await exchange(
                port,
                request(
                    "POST", key_create, b"Content-Type: application/json", b"Content-Encoding: " + encoding, body=body
                ),
            )
    assert (b"HTTP/1.1 400 Bad Request", "gateway.bad_request") == (parse(answer).status_line, body_of(answer)["code"])
    assert [] == upstream.requests
    assert [("rejected", "gateway.bad_request")] == [
        (row["outcome"], row["error_code"]) for row in rows(tmp_path / "audit.db")
    ]


# 3. What aiohttp's parser refuses: an Apigee-shaped 400 that quotes nothing ------------------------------

SECRET = "Basic bXluYW1lOm15cGFzcw=="  # myname:mypass, the demo credentials
UNPARSABLE = "The request is not valid HTTP/1.1: its request line, a header or its body's framing is malformed"
MALFORMED = {
    "bad request line": (
        [f"GET /v1/o/myorg HTTP/1.1 Authorization: {SECRET}\r\n\r\n".encode()],
        UNPARSABLE,
    ),
    "bad method": ([f"G(T /v1/o/myorg?token={SECRET} HTTP/1.1\r\n\r\n".encode()], UNPARSABLE),
    "bad header name": (
        [f"GET /v1/o/myorg HTTP/1.1\r\nAuthorization: {SECRET}\r\nX-Bad Name: {SECRET}\r\n\r\n".encode()],
        UNPARSABLE,
    ),
    "oversize header": (
        [f"GET /v1/o/myorg HTTP/1.1\r\nX-Token: {SECRET}{'a' * 20000}\r\n\r\n".encode()],
        "The request line or a header is too long",
    ),
    "oversize request line": (
        [f"GET /v1/o/myorg/{SECRET}{'a' * 9000} HTTP/1.1\r\n\r\n".encode()],
        UNPARSABLE,
    ),
    "bad chunk size": (
        [
            f"POST /v1/o/myorg/kvms HTTP/1.1\r\nAuthorization: {SECRET}\r\nTransfer-Encoding: chunked\r\n\r\n"
            f"{SECRET}\r\nabc\r\n0\r\n\r\n".encode()
        ],
        UNPARSABLE,
    ),
    "bad chunk size, after the head was handled": (
        [
            f"POST /v1/o/myorg/kvms HTTP/1.1\r\nAuthorization: {SECRET}\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
            f"{SECRET}\r\nabc\r\n0\r\n\r\n".encode(),
        ],
        UNPARSABLE,
    ),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
async def test_a_request_the_parser_refuses_gets_an_apigee_400_that_quotes_nothing(
    tmp_path: Path, log_output: io.StringIO, case: str
) -> None:
    parts, message = MALFORMED[case]
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            arrived = asyncio.Event()
            if len(parts) > 1:  # the body's second part once the gateway is reading it
                asyncio.get_running_loop().call_later(0.2, arrived.set)
            answer = await exchange(port, *parts, pause=arrived)
    flush_logs()
    status_line = parse(answer).status_line
    assert status_line.endswith(b" 400 Bad Request")
    assert {"code": "gateway.bad_request", "message": message, "contexts": []} == body_of(answer)
    assert b"application/json" == parse(answer).header(b"Content-Type")
    for secret in (SECRET, "bXluYW1lOm15cGFzcw"):
        assert secret.encode() not in answer
        assert secret not in log_output.getvalue()
    assert [] == upstream.requests


# 4. Answers relayed exactly: a HEAD's length, a 304's, and header names in their own case ------------------


@pytest.mark.parametrize("close", ["fin", "reset"])
async def test_a_caller_gone_mid_body_is_refused_and_recorded_not_a_500(
    tmp_path: Path, log_output: io.StringIO, close: str
) -> None:
    """The body's reader then raises ConnectionResetError, which reached the handler's last
    resort: an error line, a 500 counted, and no record of the audited call, where a body cut
    short by its framing is refused (400) and recorded."""
    head = request("DELETE", SAMPLE_PATH, b"Content-Type: application/json", b"Content-Length: 5")
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + b"{}")
            await writer.drain()
            if close == "reset":
                writer.transport.abort()
            else:
                writer.close()
            async with asyncio.timeout(5):
                while not rows(tmp_path / "audit.db"):  # nothing to await: the record is the sign
                    await asyncio.sleep(0.01)
    flush_logs()
    assert [] == upstream.requests
    assert [("rejected", "gateway.bad_request")] == [
        (row["outcome"], row["error_code"]) for row in rows(tmp_path / "audit.db")
    ]
    assert "request_failed" not in log_output.getvalue()


async def test_a_head_answer_keeps_the_upstreams_content_length(tmp_path: Path) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Type: application/json\r\n"
        b'ETag: "v1"\r\nContent-Length: 1234\r\n\r\n'
    )
    async with raw_upstream(head) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            answer = await exchange(port, request("HEAD", "/v1/o/myorg/developers/d@example.com"))
    assert answer.startswith(head[: -len(b"Content-Length: 1234\r\n\r\n")])
    assert b"1234" == parse(answer).header(b"Content-Length")
    assert b"" == parse(answer).body
    assert upstream.requests[0].startswith(b"HEAD /v1/o/myorg/developers/d@example.com HTTP/1.1\r\n")


async def test_a_304_keeps_the_upstreams_content_length(tmp_path: Path) -> None:
    head = (
        b'HTTP/1.1 304 Not Modified\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nETag: "v1"\r\nContent-Length: 99\r\n\r\n'
    )
    async with raw_upstream(head) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            answer = await exchange(port, request("GET", "/v1/o/myorg/apiproducts", b'If-None-Match: "v1"'))
    assert parse(answer).status_line == b"HTTP/1.1 304 Not Modified"
    assert b"99" == parse(answer).header(b"Content-Length")
    assert b"\r\nIf-None-Match: " + b'"v1"' in upstream.requests[0]


async def test_header_names_keep_their_case_both_ways(tmp_path: Path) -> None:
    """aiohttp respells the names it knows (ETag as Etag, content-type as Content-Type): the
    gateway relays the names as they were sent, up and down."""
    head = (
        b"HTTP/1.1 200 OK\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\ncontent-type: application/json\r\n"
        b'ETag: "v1"\r\nx-ratelimit-limit: 10\r\nContent-Length: 2\r\n\r\n{}'
    )
    async with raw_upstream(head) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            answer = await exchange(
                port, request("GET", "/v1/o/myorg/apiproducts", b"accept: application/json", b"x-request-id: t-1")
            )
    assert [
        (b"Date", b"Tue, 01 Dec 2026 00:00:00 GMT"),
        (b"content-type", b"application/json"),
        (b"ETag", b'"v1"'),
        (b"x-ratelimit-limit", b"10"),
    ] == parse(answer).headers[:4]
    assert b"\r\naccept: application/json\r\n" in upstream.requests[0]
    assert authorization("myname") in upstream.requests[0]


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        (b"Transfer-Encoding : chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n"),
        (b"Content-Length : 2\r\nConnection : close\r\nUpgrade : h2c\r\n", b"{}"),
    ],
    ids=["transfer-encoding", "length-connection-upgrade"],
)
async def test_a_space_before_a_framing_headers_colon_never_reaches_the_caller(
    tmp_path: Path, framing: bytes, body: bytes
) -> None:
    """aiohttp's C parser frames by ``Transfer-Encoding : chunked`` but kept the space in the
    name: the caller got it over a body framed by Content-Length (two framings: a desync, or a
    strict client's refusal). RFC 9112, section 5.1: a proxy removes that space."""
    head = b"HTTP/1.1 200 OK\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Type: application/json\r\n"
    async with raw_upstream(head + framing + b"\r\n" + body) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            answer = parse(await exchange(port, request("GET", "/v1/o/myorg/apiproducts")))
    assert (b"HTTP/1.1 200 OK", b"{}") == (answer.status_line, answer.body)
    assert [b"Date", b"Content-Type", b"X-Request-ID", b"Content-Length", b"Connection"] == [
        name for name, _ in answer.headers
    ]
    assert (b"2", b"close") == (answer.header(b"Content-Length"), answer.header(b"Connection"))


async def test_a_target_no_route_can_take_gets_an_apigee_404(tmp_path: Path) -> None:
    """CONNECT's host:port matches no route: aiohttp answered it in plain text itself."""
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            answer = await exchange(port, request("CONNECT", "apigee.example:443"))
    assert parse(answer).status_line == b"HTTP/1.1 404 Not Found"
    assert {"code": "gateway.not_found", "message": "The gateway does not serve this path", "contexts": []} == (
        body_of(answer)
    )
    assert [] == upstream.requests


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/audit/events", "/audit/events/1"])
async def test_head_of_the_gateways_own_routes_is_their_get_without_the_body(tmp_path: Path, path: str) -> None:
    """HEAD is GET without a body (RFC 9110, 9.3.2): the same status and length, not a 404."""
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            got = parse(await exchange(port, request("GET", path)))
            head = parse(await exchange(port, request("HEAD", path)))
    assert (got.status_line, got.header(b"Content-Type"), b"") == (
        head.status_line,
        head.header(b"Content-Type"),
        head.body,
    )
    if path != "/metrics":  # its counts move between the two calls
        assert got.header(b"Content-Length") == head.header(b"Content-Length")


# Expect: 100-continue: a body is asked for only once the call may send it ------------------------------

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def test_100_continue_comes_once_the_call_may_send_its_body(tmp_path: Path) -> None:
    body = b"z" * 1000
    head = request("POST", IMPORT, b"Expect: 100-continue", f"Content-Length: {len(body)}".encode())
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(head)
                assert CONTINUE == await reader.readexactly(len(CONTINUE))
                writer.write(body)
                answer = await reader.read()
            finally:
                writer.close()
    assert parse(answer).status_line == b"HTTP/1.1 201 Created"
    assert [body] == upstream.bodies


@pytest.mark.parametrize(
    ("user", "length", "code"),
    [("outsider", 10, "gateway.unauthorized"), ("myname", 33 * MIB, "gateway.payload_too_large")],
    ids=["unauthenticated", "over the bound"],
)
async def test_a_call_refused_before_its_body_never_asks_for_it(
    tmp_path: Path, user: str, length: int, code: str
) -> None:
    """The final answer comes without a 100 Continue: the caller never sends the body. (aiohttp
    then waits server.body_timeout for the body all the same, the connection held: 1 s here.)"""
    head = request("POST", IMPORT, b"Expect: 100-continue", f"Content-Length: {length}".encode(), user=user)
    async with raw_upstream(OK) as upstream:
        settings = make_config(tmp_path, upstream=upstream.url, users=USERS, server={"body_timeout": 1})
        async with served(settings) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(head)
                answer = await reader.readuntil(b"\r\n\r\n")
                answer += await reader.readexactly(int(parse(answer).header(b"Content-Length") or 0))
            finally:
                writer.close()
    assert not answer.startswith(b"HTTP/1.1 100")
    assert code == body_of(answer)["code"]
    assert [] == upstream.requests


async def test_an_expectation_other_than_100_continue_is_a_417_quoting_nothing(tmp_path: Path) -> None:
    async with raw_upstream(OK) as upstream:
        async with served(config(tmp_path, upstream.url)) as port:
            answer = await exchange(port, request("POST", IMPORT, b"Expect: token-abc123", body=b"x"))
    assert parse(answer).status_line == b"HTTP/1.1 417 Expectation Failed"
    assert {
        "code": "gateway.expectation_failed",
        "message": "The only expectation understood is 100-continue",
        "contexts": [],
    } == body_of(answer)
    assert b"token-abc123" not in answer
    assert [] == upstream.requests
