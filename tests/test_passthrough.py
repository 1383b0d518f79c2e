"""The caller receives the upstream's answer exactly: status, body bytes and end-to-end headers."""

from __future__ import annotations

import gzip
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

from conftest import SAMPLE, SAMPLE_PATH, GatewayFactory, Peer, basic, make_config, rows
from test_stub import JSON_404, XML_404, documented_sample


async def test_documented_sample_then_documented_404_through_the_gateway(tmp_path: Path, gateway: GatewayFactory) -> None:
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
        "/v1/organizations/myorg/oauth2/accesstokens/unknownToken", headers={**basic("myname"), "Accept": "application/json"}
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
                    via_gateway.status, via_gateway.headers["Content-Type"], await via_gateway.read()
                )


async def test_arbitrary_status_headers_and_encoded_body_pass_through(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
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
        headers={**basic("myname"), "Accept": "application/json", "X-Custom": "kept", "Connection": "keep-alive, X-Hop", "X-Hop": "dropped"},
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )
    [seen] = peer.requests
    assert ("DELETE", target) == (seen.method, seen.path_qs)
    assert basic("myname")["Authorization"] == seen.headers["Authorization"]
    assert "kept" == seen.headers["X-Custom"]
    assert "application/json" == seen.headers["Accept"]
    sent = {name.lower() for name, _ in seen.raw_headers}
    assert not sent & {"x-hop", "user-agent", "accept-encoding", "content-type"}


async def test_service_mode_replaces_the_callers_credentials(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
    """With auth = "service" the upstream sees the gateway's account, never the caller's password."""
    config = make_config(
        tmp_path,
        upstream={"url": peer.url, "auth": "service", "service_user": "svc@example.com", "service_password_env": "SVC_PW"},
        environ={"SVC_PW": "service-secret"},
    )
    client = await gateway(config)
    await client.delete(SAMPLE_PATH, headers=basic("myname"))
    [seen] = peer.requests
    assert aiohttp.encode_basic_auth("svc@example.com", "service-secret") == seen.headers["Authorization"]
    assert "myname" == rows(tmp_path / "audit.db")[-1]["actor"]
