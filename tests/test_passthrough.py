"""The caller receives the upstream's answer exactly: status, body bytes and end-to-end headers."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from helpers import SAMPLE, SAMPLE_PATH, AppClient, GatewayFactory, Peer, basic, make_config, rows
from multidict import CIMultiDict
from raw_upstream import raw_upstream
from upstream_samples import JSON_404, XML_404, documented_sample
from yarl import URL

from gateway.upstream import UpstreamReply, relay_problem


async def test_documented_sample_then_documented_404_through_the_gateway(
    tmp_path: Path, gateway: GatewayFactory
) -> None:
    """The README's curl, twice, against the embedded stub: the documented 200, then the 404."""
    client = await gateway(make_config(tmp_path))
    first = await client.delete(SAMPLE_PATH, headers=basic("myname"))
    assert (200, "application/json") == (first.status, first.headers["Content-Type"])
    assert documented_sample() == await first.read()
    second = await client.delete(SAMPLE_PATH, headers=basic("myname"))
    assert (404, "application/xml") == (second.status, second.headers["Content-Type"])
    assert XML_404 == await second.read()


async def test_json_404_passes_through(tmp_path: Path, gateway: GatewayFactory) -> None:
    client = await gateway(make_config(tmp_path))
    response = await client.delete(
        "/v1/organizations/myorg/oauth2/accesstokens/unknownToken",
        headers={**basic("myname"), "Accept": "application/json"},
    )
    assert (404, "application/json") == (response.status, response.headers["Content-Type"])
    assert JSON_404 == await response.read()


async def test_gateway_and_stub_answer_the_same_bytes(tmp_path: Path, gateway: GatewayFactory, stub_url: str) -> None:
    """Through the gateway or straight to the stub, a caller sees the same status, type and body."""
    client = await gateway(make_config(tmp_path))
    token_path = "/v1/o/myorg/oauth2/accesstokens/"
    async with aiohttp.ClientSession() as direct:
        for token in ("xBe5Wbb4PcJ5ZqdbGYpu6UDmYQmA", "nope"):
            via_gateway = await client.delete(token_path + token, headers=basic("myname"))
            async with direct.delete(stub_url + token_path + token, headers=basic("myname")) as straight:
                assert (straight.status, straight.headers["Content-Type"], await straight.read()) == (
                    via_gateway.status,
                    via_gateway.headers["Content-Type"],
                    await via_gateway.read(),
                )


async def test_arbitrary_status_headers_and_encoded_body_pass_through(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    """Status, reason, repeated headers and compressed bytes arrive untouched; hop-by-hop headers do not."""
    compressed = gzip.compress(b'{"code": "x", "message": "teapot"}')

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=418, reason="I'm A Teapot", body=compressed)
        response.headers.add("Content-Type", "application/vnd.apigee+json; charset=utf-8")
        response.headers.add("Content-Encoding", "gzip")
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/")
        response.headers.add("X-Apigee-Trace", "one")
        response.headers.add("X-Apigee-Trace", "two")
        response.headers.add("Cache-Control", "no-store")
        response.headers.add("Connection", "X-Internal-Hop")
        response.headers.add("X-Internal-Hop", "secret-hop")
        response.headers.add("Keep-Alive", "timeout=5")
        response.headers.add("Upgrade", "h2c")
        return response

    peer.respond = answer
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.delete(SAMPLE_PATH, headers=basic("myname"), auto_decompress=False)
    assert (418, "I'm A Teapot") == (response.status, response.reason)
    assert compressed == await response.read()
    assert "application/vnd.apigee+json; charset=utf-8" == response.headers["Content-Type"]
    assert "gzip" == response.headers["Content-Encoding"]
    assert ["a=1; Path=/", "b=2; Path=/"] == response.headers.getall("Set-Cookie")
    assert ["one", "two"] == response.headers.getall("X-Apigee-Trace")
    assert "no-store" == response.headers["Cache-Control"]
    assert str(len(compressed)) == response.headers["Content-Length"]
    for hop in ("X-Internal-Hop", "Keep-Alive", "Upgrade"):
        assert hop not in response.headers
    # The snapshot reader decompressed a private copy to find the error code.
    assert ["pending", "rejected"] == [row["outcome"] for row in rows(tmp_path / "audit.db")]
    assert "x" == rows(tmp_path / "audit.db")[1]["error_code"]


async def test_chunked_upstream_body_is_reframed(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
    """A chunked upstream answer reaches the caller whole, with a Content-Length of its own."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b'{"token": ', b'"abc", "app": ', b'"chunky"}'):
            await response.write(part)
        await response.write_eof()
        return response

    peer.respond = answer
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.delete(SAMPLE_PATH, headers=basic("myname"))
    assert b'{"token": "abc", "app": "chunky"}' == await response.read()
    assert "Transfer-Encoding" not in response.headers
    assert "33" == response.headers["Content-Length"]
    assert "chunky" == rows(tmp_path / "audit.db")[-1]["app"]


async def test_204_has_no_body(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204, headers={"X-Deleted": "yes"})

    peer.respond = answer
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.delete(SAMPLE_PATH, headers=basic("myname"))
    assert (204, "yes", b"") == (response.status, response.headers["X-Deleted"], await response.read())
    assert "Content-Length" not in response.headers
    assert "deleted" == rows(tmp_path / "audit.db")[-1]["outcome"]


async def test_request_is_forwarded_as_sent(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
    """Path, query and the caller's end-to-end headers go upstream; the client adds nothing of its own."""
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    target = f"/v1/organizations/myorg/oauth2/accesstokens/{SAMPLE}?reason=rotation&x=%2F"
    await client.session.delete(
        URL(str(client.make_url("")).rstrip("/") + target, encoded=True),
        headers={
            **basic("myname"),
            "Accept": "application/json",
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped",
        },
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )
    [seen] = peer.requests
    assert ("DELETE", target) == (seen.method, seen.path_qs)
    assert basic("myname")["Authorization"] == seen.headers["Authorization"]
    assert "kept" == seen.headers["X-Custom"]
    assert "application/json" == seen.headers["Accept"]
    sent = {name.lower() for name, _ in seen.raw_headers}
    assert not sent & {"x-hop", "user-agent", "accept-encoding", "content-type"}


async def test_service_mode_replaces_the_callers_credentials(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    """With auth = "service" the upstream sees the gateway's account, never the caller's password."""
    config = make_config(
        tmp_path,
        upstream={
            "url": peer.url,
            "auth": "service",
            "service_user": "svc@example.com",
            "service_password_env": "SVC_PW",
        },
        environ={"SVC_PW": "service-secret"},
    )
    client = await gateway(config)
    await client.delete(SAMPLE_PATH, headers=basic("myname"))
    [seen] = peer.requests
    assert aiohttp.encode_basic_auth("svc@example.com", "service-secret") == seen.headers["Authorization"]
    assert "myname" == rows(tmp_path / "audit.db")[-1]["actor"]


async def exchange_raw(client: AppClient, request: bytes) -> bytes:
    """Send raw bytes to the gateway and read its whole answer (the request asks it to close)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request)
    try:
        return await reader.read()
    finally:
        writer.close()


def raw_delete(*headers: bytes) -> bytes:
    authorization = f"Authorization: {basic('myname')['Authorization']}".encode()
    head = [
        f"DELETE {SAMPLE_PATH} HTTP/1.1".encode(),
        b"Host: gateway",
        authorization,
        b"X-Request-ID: trace-1",
        *headers,
        b"Connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n"


UPSTREAM_HEAD = (
    b"HTTP/1.1 200 OK\xe9 d\xff\r\n"
    b"Date: Tue, 01 Dec 2026 00:00:00 GMT\r\n"
    b"X-Obs-Text: caf\xe9 \x80\xff end\r\n"
    b"X-Utf8: caf\xc3\xa9\r\n"
    b"x-lower-Case: v\r\n"
    b"Set-Cookie: a=\xe9; Path=/\r\n"
    b"Set-Cookie: b=2\r\n"
)
BODY = b'{"token": "abc"}'


async def test_the_answer_is_byte_for_byte_the_upstreams(tmp_path: Path, gateway: GatewayFactory) -> None:
    """Reason phrase and header bytes that are not UTF-8, name case, order, repeats, and no Content-Type:
    all as the upstream sent them. Only the framing, the Connection and the request id are the gateway's."""
    async with raw_upstream(UPSTREAM_HEAD + b"Content-Length: 16\r\n\r\n" + BODY) as upstream:
        client = await gateway(make_config(tmp_path, upstream=upstream.url))
        answer = await exchange_raw(client, raw_delete())
    expected = UPSTREAM_HEAD + b"X-Request-ID: trace-1\r\nContent-Length: 16\r\nConnection: close\r\n\r\n" + BODY
    assert expected == answer
    assert "deleted" == rows(tmp_path / "audit.db")[-1]["outcome"]


async def test_of_its_own_the_gateway_adds_only_a_missing_date(tmp_path: Path, gateway: GatewayFactory) -> None:
    """No Content-Type and no Server are invented; a Date is, as RFC 9110 (6.6.1) asks of a proxy."""
    async with raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n" + BODY) as upstream:
        client = await gateway(make_config(tmp_path, upstream=upstream.url))
        answer = await exchange_raw(client, raw_delete())
    head, body = answer.split(b"\r\n\r\n", 1)
    assert BODY == body
    lines = head.split(b"\r\n")
    assert re.fullmatch(rb"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", lines[3])
    assert [b"HTTP/1.1 200 OK", b"X-Request-ID: trace-1", b"Content-Length: 16", b"Connection: close"] == lines[
        :3
    ] + lines[4:]


async def test_request_headers_go_upstream_as_sent_or_not_at_all(tmp_path: Path, gateway: GatewayFactory) -> None:
    """UTF-8 goes through byte for byte; bytes that are not UTF-8 (which aiohttp's client would drop)
    make the call a 400, audited as rejected, and nothing is forwarded."""
    async with raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n" + BODY) as upstream:
        client = await gateway(make_config(tmp_path, upstream=upstream.url))
        assert (await exchange_raw(client, raw_delete(b"X-Note: caf\xc3\xa9"))).startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nX-Note: caf\xc3\xa9\r\n" in upstream.requests[0]
        refused = await exchange_raw(client, raw_delete(b"X-Note: caf\xe9"))
    assert refused.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert refused.endswith(
        b'{"code": "gateway.bad_request", "message": "Header X-Note holds bytes that are not UTF-8; '
        b'the gateway forwards headers unchanged or not at all", "contexts": []}'
    )
    assert 1 == len(upstream.requests)
    assert ("rejected", "myname", "gateway.bad_request") == tuple(
        rows(tmp_path / "audit.db")[-1][key] for key in ("outcome", "actor", "error_code")
    )


CONTROLS = [bytes([c]) for c in (*range(0x01, 0x09), *range(0x0B, 0x0D), *range(0x0E, 0x20), 0x7F)]
"""Every control an upstream can put in a header value or its reason phrase and aiohttp's client
accepts: all but NUL, CR and LF (and tab, which is plain whitespace)."""


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: f"0x{c[0]:02x}")
async def test_control_characters_in_the_upstreams_head_are_relayed_byte_for_byte(
    tmp_path: Path, gateway: GatewayFactory, control: bytes
) -> None:
    """VT, FF, DEL and the other controls cannot break a head (only CR, LF and NUL can): they reach
    the caller as sent, in a header value and in the reason phrase, after the outcome was recorded."""
    head = b"HTTP/1.1 200 O" + control + b"K\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nX-Note: a" + control + b"b\r\n"
    async with raw_upstream(head + b"Content-Length: 16\r\n\r\n" + BODY) as upstream:
        client = await gateway(make_config(tmp_path, upstream=upstream.url))
        answer = await exchange_raw(client, raw_delete())
    assert head + b"X-Request-ID: trace-1\r\nContent-Length: 16\r\nConnection: close\r\n\r\n" + BODY == answer
    assert ("deleted", 200) == tuple(rows(tmp_path / "audit.db")[-1][key] for key in ("outcome", "upstream_status"))


async def test_an_answer_whose_head_cannot_be_relayed_gets_a_502_that_says_what_happened(
    tmp_path: Path, gateway: GatewayFactory
) -> None:
    """A NUL in the reason phrase (aiohttp's client takes it; no caller's parser would): decided
    before the outcome is written, so the caller is told the deletion took effect, never dropped."""
    async with raw_upstream(b"HTTP/1.1 200 O\x00K\r\nContent-Length: 16\r\n\r\n" + BODY) as upstream:
        client = await gateway(make_config(tmp_path, upstream=upstream.url))
        answer = await exchange_raw(client, raw_delete())
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert {
        "code": "gateway.upstream_answer_lost",
        "message": "The upstream answered 200, so the deletion took effect upstream, but its answer could not be "
        "passed on: its reason phrase holds a CR, LF or NUL",
        "contexts": [],
    } == json.loads(body)
    record = rows(tmp_path / "audit.db")[-1]
    assert ("deleted", 200, "upstream.unrelayable", None) == (
        record["outcome"],
        record["upstream_status"],
        record["error_code"],
        record["snapshot"],
    )


def test_only_cr_lf_and_nul_make_a_head_unrelayable() -> None:
    """The rule itself, for what aiohttp's client never yields (a CR, LF or NUL in a header)."""
    for bad in ("\r", "\n", "\x00"):
        assert relay_problem(UpstreamReply(200, "OK", CIMultiDict({"X-A": f"a{bad}b"}), b"")) is not None
        assert relay_problem(UpstreamReply(200, f"O{bad}K", CIMultiDict(), b"")) is not None
    controls = "".join(chr(c) for c in (*range(0x01, 0x0A), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)) + "\udc80\udcff"
    assert None is relay_problem(UpstreamReply(200, controls, CIMultiDict({"X-A": controls}), b""))
