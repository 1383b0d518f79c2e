"""What many test modules share: the demo data, a config through the real validator, credentials,
audit rows read straight from the SQLite file, and the types of the fixtures in ``conftest.py``.

A plain module, so test modules import it like any other and never import each other or
``conftest.py`` (which holds only fixtures).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from gateway.cli import build_parser
from gateway.config import Config, ServerConfig, build_config
from gateway.listener import GatewayRunner
from gateway.passwords import hash_password

ROOT = Path(__file__).resolve().parents[1]
"""The repository: README.md, pyproject.toml, docs/, deploy/."""

SAMPLE = "taFM3LHUTQAFhL0dIFg81XhRc7vC"
SAMPLE_PATH = f"/v1/o/myorg/oauth2/accesstokens/{SAMPLE}"

# Cheap hashes (scrypt ln=10) so that building a gateway per test stays fast.
PASSWORDS = {"myname": "mypass", "auditor": "auditor-pass", "outsider": "outsider-pass"}
_HASHES = {name: hash_password(password, log2_n=10) for name, password in PASSWORDS.items()}
USERS: list[dict[str, Any]] = [
    {"name": "myname", "password_hash": _HASHES["myname"], "orgs": ["myorg"], "roles": ["revoke", "audit"]},
    {"name": "auditor", "password_hash": _HASHES["auditor"], "orgs": ["*"], "roles": ["audit"]},
    {"name": "outsider", "password_hash": _HASHES["outsider"], "orgs": ["otherorg"], "roles": ["revoke"]},
]


class GatewayTestServer(TestServer):
    """aiohttp's test server serving the gateway as `gateway serve` does: through
    ``GatewayRunner`` (the request path on aiohttp's low-level server, the connection cap and
    the deadlines), over plain HTTP whatever the config's TLS."""

    def __init__(self, app: web.Application, settings: ServerConfig) -> None:
        super().__init__(app)
        self._settings = settings

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return GatewayRunner(self.app, self._settings, **kwargs)


AppClient = TestClient[web.Request, web.Application]
"""A test client of an in-process aiohttp application (what ``aiohttp_client(app)`` returns)."""


async def client_of(aiohttp_client: Any, app: web.Application, settings: ServerConfig) -> AppClient:
    """A client of ``app`` served by ``GatewayTestServer`` (pytest-aiohttp's ``aiohttp_client``)."""
    client: AppClient = await aiohttp_client(GatewayTestServer(app, settings))
    return client


GatewayFactory = Callable[[Config], Awaitable[AppClient]]
"""The ``gateway`` fixture: starts a real gateway for a config."""


def make_config(
    tmp_path: Path,
    *,
    upstream: str | dict[str, Any] = "stub",
    users: list[dict[str, Any]] | None = None,
    environ: dict[str, str] | None = None,
    **sections: Any,
) -> Config:
    """A config through the real validator, with the audit log in ``tmp_path``.

    ``upstream`` is the URL, or the whole ``[upstream]`` table; ``sections`` are the other
    tables (or arrays of tables, such as ``sidecars``) by name.
    """
    data: dict[str, Any] = {
        "upstream": {"url": upstream} if isinstance(upstream, str) else upstream,
        # No disk reserve unless a test asks: it would allocate 16 MiB per gateway.
        "audit": {"database": "audit.db", "reserve_mb": 0, **sections.pop("audit", {})},
        "users": USERS if users is None else users,
        **sections,
    }
    return build_config(data, source=str(tmp_path / "test.toml"), base_dir=tmp_path, environ=environ or {})


def basic(user: str, password: str | None = None) -> dict[str, str]:
    """An Authorization header for a test user (with their own password unless given)."""
    secret = PASSWORDS[user] if password is None else password
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def rows(database: Path, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Audit rows straight from the SQLite file, oldest first."""
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(f"SELECT * FROM audit_events WHERE {where} ORDER BY id", params)]


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (its WAL included), as a cloned host's disk would hold."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()
    src.close()


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


@dataclass
class Seen:
    """One request as the ``peer`` upstream received it."""

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


_P = ParamSpec("_P")
_T = TypeVar("_T")


class GatedExecutor(ThreadPoolExecutor):
    """A standard thread pool whose jobs wait until ``open()``; it counts how many run at once."""

    def __init__(self) -> None:
        super().__init__(8)
        self.submitted = self.running = self.peak = 0
        self._gate = threading.Event()
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        self.submitted += 1

        def gated() -> _T:
            with self._lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            self._loop.call_soon_threadsafe(self._changed.set)
            self._gate.wait()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.running -= 1

        return super().submit(gated)

    def open(self) -> None:
        self._gate.set()

    async def until_running(self, count: int) -> None:
        while self.running < count:
            self._changed.clear()
            await self._changed.wait()


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every runnable command (`gateway audit query`, ...) and its parser."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        groups = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        if not groups:
            found[name] = parser
        for group in groups:
            for child, sub in group.choices.items():
                walk(sub, f"{name} {child}")

    walk(build_parser(), "gateway")
    return found


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings if option.startswith("--")} - {
        "--help"
    }


async def wire_request(
    client: AppClient, method: str, target: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    """One request written on the socket exactly as given (a '#' or any other byte an HTTP client
    would strip or encode goes as it is): the answer's status and body."""
    url = client.make_url("")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    head = [f"{method} {target} HTTP/1.1", f"Host: {url.host}", "Connection: close", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), payload
