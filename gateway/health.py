"""``/healthz``, ``/readyz`` and ``/metrics``: unauthenticated, cheap, for orchestrators and Prometheus.

Probes are logged at debug level only: an orchestrator asks every few seconds, and a line each
would bury the requests that matter (every other request is logged at info).

Liveness says only that the process answers. Readiness says whether a deletion would go through
right now: the audit log takes a write lock (checked on a fresh connection, so a file made
read-only, removed or locked by another process shows at once) and its last commit did not
fail, and the upstream accepts a TCP connection. Each failing check is named with its reason.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web
from yarl import URL

from gateway.audit.writer import AuditWriter
from gateway.config import ConfigError
from gateway.logs import get_logger
from gateway.metrics import CONTENT_TYPE, Metrics

RECENT_FAILURE = 10.0
"""Seconds a failed audit commit keeps the gateway unready (unless a later one succeeds)."""
CHECK_CACHE = 1.0
"""Seconds a probe's result is reused, so frequent (unauthenticated) probes cost one upstream
connection and one audit write lock a second, not one each."""
CHECK_TIMEOUT = 2.0


@dataclass
class Readiness:
    database: Path
    writer: AuditWriter
    upstream_url: str
    connect_timeout: float
    cache_seconds: float = CHECK_CACHE
    _upstream: tuple[float, str | None] | None = None
    _audit_probe: tuple[float, str | None] | None = None

    async def failing(self) -> dict[str, str]:
        """The checks that fail, each with its reason; empty when ready."""
        audit, upstream = await asyncio.gather(self._audit(), self._upstream_check())
        return {name: reason for name, reason in (("audit", audit), ("upstream", upstream)) if reason is not None}

    async def _audit(self) -> str | None:
        replaced = self.writer.problem()
        if replaced is not None:
            return replaced
        failure = self.writer.last_failure
        if failure is not None and time.monotonic() - failure[0] < RECENT_FAILURE:
            return f"the last audit commit failed: {failure[1]}"
        now = time.monotonic()
        if self._audit_probe is None or now - self._audit_probe[0] >= self.cache_seconds:
            self._audit_probe = (now, await asyncio.to_thread(_write_lock_problem, self.database))
        return self._audit_probe[1]

    async def _upstream_check(self) -> str | None:
        now = time.monotonic()
        if self._upstream is not None and now - self._upstream[0] < self.cache_seconds:
            return self._upstream[1]
        url = URL(self.upstream_url)
        host, port = url.host or "", url.port or (443 if url.scheme == "https" else 80)
        try:
            async with asyncio.timeout(min(self.connect_timeout, CHECK_TIMEOUT)):
                _, writer = await asyncio.open_connection(host, port)
            writer.close()
            problem = None
        except TimeoutError:
            problem = f"no connection to {host}:{port} within {min(self.connect_timeout, CHECK_TIMEOUT)} s"
        except OSError as exc:
            problem = f"cannot connect to {host}:{port}: {exc.strerror or type(exc).__name__}"
        self._upstream = (time.monotonic(), problem)
        return problem


def _write_lock_problem(database: Path) -> str | None:
    """Take the write lock and change a page on a connection of its own, then roll back.

    Taking the lock alone is not enough: a file that cannot be written (read-only, immutable)
    still grants it, and only a change shows the refusal. Rewriting the schema version with
    its own value is the smallest change, and the rollback leaves the file as it was.
    """
    if not database.is_file():
        return f"{database} does not exist"
    try:
        db = sqlite3.connect(database, timeout=0.2, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.execute(f"PRAGMA user_version = {int(version)}")
            db.execute("ROLLBACK")
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"cannot write to {database}: {exc}"
    return None


READINESS = web.AppKey("readiness", Readiness)
METRICS = web.AppKey("metrics", Metrics)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _logged(handler: Handler) -> Handler:
    """The probe, with its request line at debug level."""

    async def logged(request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await handler(request)
        get_logger().debug(
            "request", method=request.method, path=request.path, client_ip=request.remote, status=response.status,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return response

    return logged


def add_routes(app: web.Application, *, with_metrics: bool) -> None:
    app.router.add_get("/healthz", _logged(healthz), allow_head=True)
    app.router.add_get("/readyz", _logged(readyz), allow_head=True)
    if with_metrics:
        app.router.add_get("/metrics", _logged(metrics), allow_head=False)


@asynccontextmanager
async def serve_metrics(registry: Metrics, host: str, port: int, *, source: str) -> AsyncIterator[None]:
    """``/metrics`` alone on a port of its own (``metrics.port``), e.g. reachable only by Prometheus."""
    app = web.Application()
    app[METRICS] = registry
    app.router.add_get("/metrics", _logged(metrics), allow_head=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ConfigError(source, "metrics.port", f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        yield
    finally:
        await runner.cleanup()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    failing = await request.app[READINESS].failing()
    checks = {name: failing.get(name, "ok") for name in ("audit", "upstream")}
    body = {"status": "not_ready" if failing else "ready", "checks": checks}
    return web.Response(status=503 if failing else 200, body=orjson.dumps(body), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})
