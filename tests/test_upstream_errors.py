"""A dead, slow or failing upstream: a precise 502/504, an 'upstream_error' record, and service goes on."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from aiohttp import web
from helpers import SAMPLE_PATH, GatewayFactory, Peer, basic, make_config, rows


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_dead_upstream_gives_502(tmp_path: Path, gateway: GatewayFactory) -> None:
    client = await gateway(make_config(tmp_path, upstream=f"http://127.0.0.1:{closed_port()}"))
    response = await client.delete(SAMPLE_PATH, headers=basic("myname"))
    assert 502 == response.status
    body = await response.json()
    assert ("gateway.upstream_unavailable", []) == (body["code"], body["contexts"])
    assert body["message"].startswith("The upstream could not be reached or gave no valid answer: cannot connect: ")
    assert body["message"].endswith("; nothing reached the upstream")
    intent, outcome = rows(tmp_path / "audit.db")
    assert ("pending", "upstream_error", "upstream.connect_failed", None) == (
        intent["outcome"],
        outcome["outcome"],
        outcome["error_code"],
        outcome["upstream_status"],
    )


async def test_slow_upstream_gives_504_and_the_gateway_keeps_serving(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/slow"):
            await release.wait()
        return web.Response(body=b'{"token": "fast"}', content_type="application/json")

    peer.respond = stall
    client = await gateway(make_config(tmp_path, upstream={"url": peer.url, "read_timeout": 0.2}))
    try:
        response = await client.delete("/v1/o/myorg/oauth2/accesstokens/slow", headers=basic("myname"))
        assert 504 == response.status
        assert {
            "code": "gateway.upstream_unavailable",
            "message": "The upstream did not answer in time: no answer within the read timeout; "
            "the deletion may or may not have happened upstream, and it was not retried",
            "contexts": [],
        } == await response.json()
        assert 200 == (await client.delete("/v1/o/myorg/oauth2/accesstokens/fast", headers=basic("myname"))).status
    finally:
        release.set()
    outcomes = [(row["outcome"], row["error_code"]) for row in rows(tmp_path / "audit.db")]
    assert [("pending", None), ("unknown", "upstream.read_timeout"), ("pending", None), ("deleted", None)] == outcomes


async def test_upstream_5xx_passes_through_and_is_recorded(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
    body = b'{"code": "messaging.runtime.Unavailable", "message": "down", "contexts": []}'

    async def fail(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, body=body, content_type="application/json", headers={"Retry-After": "7"})

    peer.respond = fail
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.delete(SAMPLE_PATH, headers=basic("myname"))
    assert (503, "7", body) == (response.status, response.headers["Retry-After"], await response.read())
    outcome = rows(tmp_path / "audit.db")[-1]
    assert ("upstream_error", 503, "messaging.runtime.Unavailable") == (
        outcome["outcome"],
        outcome["upstream_status"],
        outcome["error_code"],
    )
