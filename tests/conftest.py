"""Shared test fixtures: real servers on loopback, real SQLite files, the real config loader."""

from __future__ import annotations

import base64
import io
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_app
from gateway.config import Config, build_config
from gateway.logs import configure_logging
from gateway.passwords import hash_password
from gateway.stub import demo_seed, make_stub_app

SAMPLE = "taFM3LHUTQAFhL0dIFg81XhRc7vC"
SAMPLE_PATH = f"/v1/o/myorg/oauth2/accesstokens/{SAMPLE}"

# Cheap hashes (scrypt ln=10) so that building a gateway per test stays fast.
PASSWORDS = {"myname": "mypass", "auditor": "auditor-pass", "outsider": "outsider-pass"}
_HASHES = {name: hash_password(password, log2_n=10) for name, password in PASSWORDS.items()}
USERS = [
    {"name": "myname", "password_hash": _HASHES["myname"], "orgs": ["myorg"], "roles": ["revoke", "audit"]},
    {"name": "auditor", "password_hash": _HASHES["auditor"], "orgs": ["*"], "roles": ["audit"]},
    {"name": "outsider", "password_hash": _HASHES["outsider"], "orgs": ["otherorg"], "roles": ["revoke"]},
]


def make_config(
    tmp_path: Path,
    *,
    upstream: str | dict[str, Any] = "stub",
    users: list[dict[str, Any]] | None = None,
    environ: dict[str, str] | None = None,
    **sections: dict[str, Any],
) -> Config:
    """A config through the real validator, with the audit log in ``tmp_path``.

    ``upstream`` is the URL, or the whole ``[upstream]`` table.
    """
    data: dict[str, Any] = {
        "upstream": {"url": upstream} if isinstance(upstream, str) else upstream,
        # No disk reserve unless a test asks: it would allocate 16 MiB per gateway.
        "audit": {"database": "audit.db", "reserve_mb": 0, **sections.pop("audit", {})},
        "users": USERS if users is None else users,
        **sections,
    }
    return build_config(data, source=str(tmp_path / "test.toml"), base_dir=tmp_path, environ=environ or {})


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Peer:
    """A stand-in upstream that records every request and answers as the test tells it."""

    server: TestServer
    requests: list[Seen] = field(default_factory=list)
    respond: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def peer(aiohttp_server: Any) -> Peer:
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
async def stub_url(aiohttp_server: Any) -> str:
    """The real stub with the demo seed, on loopback."""
    server = await aiohttp_server(make_stub_app(demo_seed()))
    return str(server.make_url("")).rstrip("/")


GatewayFactory = Callable[[Config], Awaitable[TestClient]]


@pytest.fixture
def gateway(aiohttp_client: Any) -> GatewayFactory:
    """Start a real gateway for a config and return a client talking to it over loopback."""

    async def start(config: Config) -> TestClient:
        return await aiohttp_client(build_app(config))

    return start


def rows(database: Path, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Audit rows straight from the SQLite file, oldest first."""
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(f"SELECT * FROM audit_events WHERE {where} ORDER BY id", params)]


@contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """Hold SQLite's write lock from another connection, as a long-running writer would."""
    db = sqlite3.connect(database, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


def basic(user: str, password: str | None = None) -> dict[str, str]:
    """An Authorization header for a test user (with their own password unless given)."""
    secret = PASSWORDS[user] if password is None else password
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the gateway logs, as JSON lines (call flush_logs() before reading)."""
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    yield stream
    structlog.reset_defaults()
