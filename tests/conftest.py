"""Shared test fixtures: real servers on loopback, real SQLite files, the real config loader.

Only fixtures live here; what tests import (demo data, ``make_config``, ``basic``, ``rows``, the
fixtures' types) is in plain modules: ``helpers``, ``audit_support``, ``upstream_samples``,
``threaded_gateway``, ``processes``, ``raw_upstream``, ``fleet_support``, ``npm_clients``.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import structlog
from aiohttp import web
from fleet_support import server_url, with_database
from helpers import AppClient, GatewayFactory, Peer, Seen, client_of
from pytest_aiohttp import AiohttpClient, AiohttpServer
from threaded_gateway import Rig, served_in_thread

from gateway.app import build_app
from gateway.config import Config
from gateway.logs import configure_logging
from gateway.stub import demo_seed, make_stub_app


@pytest.fixture
async def peer(aiohttp_server: AiohttpServer) -> Peer:
    """A stand-in upstream on loopback that records every request (``Peer``)."""
    holder: list[Peer] = []

    async def record(request: web.Request) -> web.StreamResponse:
        me = holder[0]
        me.requests.append(
            Seen(
                request.method,
                request.raw_path,
                dict(request.headers),
                [(name.decode(), value.decode()) for name, value in request.raw_headers],
                await request.read(),
            )
        )
        if me.respond is None:
            return web.Response(status=200, body=b'{"token":"x"}', content_type="application/json")
        return await me.respond(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    server = await aiohttp_server(app)
    holder.append(Peer(server))
    return holder[0]


@pytest.fixture
async def stub_url(aiohttp_server: AiohttpServer) -> str:
    """The real stub with the demo seed, on loopback."""
    server = await aiohttp_server(make_stub_app(demo_seed()))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def gateway(aiohttp_client: AiohttpClient) -> GatewayFactory:
    """Start a real gateway for a config and return a client talking to it over loopback."""

    async def start(config: Config) -> AppClient:
        return await client_of(aiohttp_client, build_app(config), config.server)

    return start


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the gateway logs, as JSON lines (call flush_logs() before reading)."""
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    yield stream
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A gateway in a thread of its own, shared by a module's synchronous (hypothesis) tests."""
    with served_in_thread(tmp_path_factory.mktemp("bad-input")) as served:
        yield served


@pytest.fixture
async def fleet_url() -> AsyncIterator[str]:
    """A fresh, empty database on the test PostgreSQL server, dropped after the test."""
    base = server_url()
    name = f"fleet_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield with_database(base, name)
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()
