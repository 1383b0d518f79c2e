"""The request path on aiohttp's low-level server: the calls skip the application's router and
middlewares; the operational routes, targets that are not paths and ``Expect: 100-continue``
still go through them, answered as before."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from helpers import SAMPLE_PATH, basic, client_of, make_config
from pytest_aiohttp import AiohttpClient
from raw_upstream import raw_upstream
from wire_support import exchange, parse, request

from gateway.app import build_app

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def test_only_what_is_not_the_request_path_goes_through_the_router(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    routed: list[str] = []

    @web.middleware
    async def seen(request: web.Request, handler: Handler) -> web.StreamResponse:
        """A probe in the router's path: which requests take it."""
        routed.append(f"{request.method} {request.raw_path}")
        return await handler(request)

    async with raw_upstream(OK) as upstream:
        config = make_config(tmp_path, upstream=upstream.url)
        app = build_app(config)
        app.middlewares.append(seen)
        client = await client_of(aiohttp_client, app, config.server)
        assert 200 == (await client.delete(SAMPLE_PATH, headers=basic("myname"))).status
        assert 403 == (await client.get("/v1/nowhere", headers=basic("myname"))).status  # outside any org
        assert 401 == (await client.delete(SAMPLE_PATH)).status
        assert [] == routed
        for path in ("/healthz", "/readyz", "/metrics", "/audit/events"):
            await client.get(path, headers=basic("auditor"))
        assert ["GET /healthz", "GET /readyz", "GET /metrics", "GET /audit/events"] == routed
        routed.clear()
        answer = await exchange(client.server.port or 0, request("CONNECT", "apigee.example:443"))
        assert b"HTTP/1.1 404 Not Found" == parse(answer).status_line
        assert "gateway.not_found" == json.loads(parse(answer).body)["code"]
        assert ["CONNECT apigee.example:443"] == routed


async def test_a_call_expecting_100_continue_gets_it_then_its_answer(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    """curl sends ``Expect: 100-continue`` before a body over 1 KiB and waits for the go-ahead."""
    async with raw_upstream(OK) as upstream:
        config = make_config(tmp_path, upstream=upstream.url)
        client = await client_of(aiohttp_client, build_app(config), config.server)
        reader, writer = await asyncio.open_connection(client.host, client.server.port)
        head, _, body = request("DELETE", SAMPLE_PATH, b"Expect: 100-continue", body=b"{}").partition(b"\r\n\r\n")
        writer.write(head + b"\r\n\r\n")
        assert b"HTTP/1.1 100 Continue\r\n\r\n" == await reader.readuntil(b"\r\n\r\n")
        writer.write(body)
        answer = await reader.read()
        writer.close()
    assert (b"HTTP/1.1 200 OK", b"{}") == (parse(answer).status_line, parse(answer).body)
    assert 1 == len(upstream.requests)
