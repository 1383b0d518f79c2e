"""``/healthz``, ``/readyz`` and ``/metrics``: unauthenticated, cheap, for orchestrators and Prometheus.

Probes are logged at debug level only: an orchestrator asks every few seconds, and a line each
would bury the requests that matter (every other request is logged at info).

Liveness says only that the process answers. Readiness says whether a deletion would go through
right now: the audit log takes a write lock (checked on a fresh connection, so a file made
read-only, removed or locked by another process shows at once) and its last commit did not
fail, the upstream accepts a TCP connection, and (``upstream.auth = "oauth2"``) a bearer token is
at hand or can be obtained. Each failing check is named with its reason.

Probes are unauthenticated, so anyone can send many at once: each check runs once at a time,
and every probe that arrives while it runs waits for that same run (see ``SharedCheck``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from aiohttp import web
from yarl import URL

from gateway.audit.store import AuditStore
from gateway.audit.writer import AuditWriter
from gateway.config import ConfigError, ServerConfig
from gateway.fleet.shipper import Shipper
from gateway.listener import GatewayRunner
from gateway.logs import get_logger
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.upstream_auth import OAuthLogin

RECENT_FAILURE = 10.0
"""Seconds a failed audit commit keeps the gateway unready (unless a later one succeeds)."""
CHECK_CACHE = 1.0
"""Seconds a check's result is reused, so frequent (unauthenticated) probes cost one upstream
connection and one audit write lock a second, not one each."""
CHECK_TIMEOUT = 2.0
METRICS_CONNECTIONS = 16
"""The cap of a separate metrics listener (``metrics.port``): Prometheus, and a person or two."""
METRICS_DRAIN = 1.0
"""Seconds a scrape in flight gets on SIGTERM: rendering takes milliseconds, and the gateway's own
drain (``gateway.cli.server.drain_seconds``) has already run."""

Problem = str | None
"""What a check found wrong; ``None`` when all is well."""


class SharedCheck:
    """A check that runs once at a time: callers arriving while it runs share that run's result.

    A cache alone does not stop a stampede: until the first run ends, every caller finds it empty
    and starts a run of its own (300 concurrent probes opened 148 upstream connections).
    """

    def __init__(self, check: Callable[[], Awaitable[Problem]]) -> None:
        self._check = check
        self._last: tuple[float, Problem] | None = None
        self._running: asyncio.Task[Problem] | None = None

    async def result(self, fresh_for: float) -> Problem:
        """The last result if it ended less than ``fresh_for`` seconds ago, else a run's, shared."""
        if self._last is not None and time.monotonic() - self._last[0] < fresh_for:
            return self._last[1]
        if self._running is None:
            self._running = asyncio.create_task(self._run(), name="readiness-check")
        # Shielded: a caller that goes away must not cancel the run the others wait for.
        return await asyncio.shield(self._running)

    async def _run(self) -> Problem:
        try:
            problem = await self._check()
            self._last = (time.monotonic(), problem)
            return problem
        finally:
            self._running = None


@dataclass
class Readiness:
    store: AuditStore
    writer: AuditWriter
    upstream_url: str
    connect_timeout: float
    cache_seconds: float = CHECK_CACHE
    shipper: Shipper | None = None
    """Shown in detail only: a collector that is down never makes the sidecar unready."""
    login: OAuthLogin | None = None
    """With ``upstream.auth = "oauth2"``: the check ``upstream_auth`` says when no token can be had."""
    _upstream: SharedCheck = field(init=False)
    _audit_probe: SharedCheck = field(init=False)
    _login: SharedCheck | None = field(init=False)

    def __post_init__(self) -> None:
        self._upstream = SharedCheck(self._connect_upstream)
        self._audit_probe = SharedCheck(self.store.write_problem)
        self._login = SharedCheck(self._token) if self.login is not None else None

    @property
    def names(self) -> tuple[str, ...]:
        """The checks this gateway runs, in the order ``/readyz`` shows them."""
        return ("audit", "upstream", "upstream_auth") if self._login is not None else ("audit", "upstream")

    async def failing(self) -> dict[str, str]:
        """The checks that fail, each with its reason; empty when ready."""
        checks = [self._audit(), self._upstream.result(self.cache_seconds)]
        if self._login is not None:
            checks.append(self._login.result(self.cache_seconds))
        found = await asyncio.gather(*checks)
        return {name: reason for name, reason in zip(self.names, found, strict=True) if reason is not None}

    async def _audit(self) -> Problem:
        replaced = self.writer.problem()
        if replaced is not None:
            return replaced
        failure = self.writer.last_failure
        if failure is not None and time.monotonic() - failure[0] < RECENT_FAILURE:
            return f"the last audit commit failed: {failure[1]}"
        return await self._audit_probe.result(self.cache_seconds)

    async def _connect_upstream(self) -> Problem:
        url = URL(self.upstream_url)
        host, port = url.host or "", url.port or (443 if url.scheme == "https" else 80)
        try:
            async with asyncio.timeout(min(self.connect_timeout, CHECK_TIMEOUT)):
                _, writer = await asyncio.open_connection(host, port)
            writer.close()
        except TimeoutError:
            return f"no connection to {host}:{port} within {min(self.connect_timeout, CHECK_TIMEOUT)} s"
        except OSError as exc:
            return f"cannot connect to {host}:{port}: {exc.strerror or type(exc).__name__}"
        return None

    async def _token(self) -> Problem:
        """A bearer token at hand, or obtained now (the one renewal the calls would wait for too)."""
        assert self.login is not None
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                return await self.login.problem()
        except TimeoutError:
            return f"no token from the token endpoint within {CHECK_TIMEOUT} s"


METRICS = web.AppKey("metrics", Metrics)
"""Of the separate metrics listener's own application (``serve_metrics``)."""


class Probed(Protocol):
    """What the probes read: the running gateway (``gateway.runtime.Runtime``) has both."""

    readiness: Readiness
    metrics: Metrics


Services = Callable[[web.Request], Probed]


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _logged(handler: Handler) -> Handler:
    """The probe, with its request line at debug level."""

    async def logged(request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await handler(request)
        get_logger().debug(
            "request",
            method=request.method,
            path=request.path,
            client_ip=request.remote,
            status=response.status,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return response

    return logged


def add_routes(app: web.Application, services: Services, *, with_metrics: bool) -> None:
    """The probes, reading the gateway's services through ``services`` (once it has started)."""

    async def readyz(request: web.Request) -> web.Response:
        return await ready(services(request).readiness)

    async def metrics(request: web.Request) -> web.Response:
        return _rendered(services(request).metrics)

    app.router.add_get("/healthz", _logged(healthz), allow_head=True)
    app.router.add_get("/readyz", _logged(readyz), allow_head=True)
    if with_metrics:
        app.router.add_get("/metrics", _logged(metrics), allow_head=True)


@asynccontextmanager
async def serve_metrics(registry: Metrics, settings: ServerConfig, port: int, *, source: str) -> AsyncIterator[None]:
    """``/metrics`` alone on a port of its own (``metrics.port``), e.g. reachable only by Prometheus.

    Held to the same timeouts as the main listener, with a cap of its own: a flood on this port
    must not use up the file descriptors that callers need."""
    host = settings.host
    app = web.Application(handler_args={"keepalive_timeout": settings.keepalive_timeout})
    app[METRICS] = registry
    app.router.add_get("/metrics", _logged(own_metrics), allow_head=True)
    runner = GatewayRunner(
        app,
        dataclasses.replace(settings, max_connections=METRICS_CONNECTIONS),
        access_log=None,
        shutdown_timeout=METRICS_DRAIN,
    )
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ConfigError(
                source, "metrics.port", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        yield
    finally:
        await runner.cleanup()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(readiness: Readiness) -> web.Response:
    failing = await readiness.failing()
    checks = {name: failing.get(name, "ok") for name in readiness.names}
    body: dict[str, object] = {"status": "not_ready" if failing else "ready", "checks": checks}
    if readiness.shipper is not None:
        body["shipping"] = readiness.shipper.status()
    return web.Response(status=503 if failing else 200, body=orjson.dumps(body), content_type="application/json")


async def own_metrics(request: web.Request) -> web.Response:
    return _rendered(request.app[METRICS])


def _rendered(metrics: Metrics) -> web.Response:
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})
