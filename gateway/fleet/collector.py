"""``gateway collect``: receives every sidecar's audit records and keeps them in the fleet store.

Each sidecar authenticates with its own credential (``[[sidecars]]``: instance id and password
hash) and may ship only as that instance: a batch for another instance is refused (403) and
flagged. Batches are checked and written by ``gateway.fleet.ingest``; the answer is the new
high-water mark. The same process serves ``GET /audit/events`` across the fleet for
``[[users]]`` with the ``audit`` role (``gateway.fleet.api``), and ``/healthz``, ``/readyz``,
``/metrics``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from gateway import errors
from gateway.audit.chain import ChainKey
from gateway.audit.store import AuditStoreError
from gateway.auth import AmbiguousCredentials, AuthenticationError, Authenticator, User, authorization
from gateway.config import Config, ConfigError
from gateway.fleet import api, protocol
from gateway.fleet.ingest import Batch, Ingest, Mark, Refused, parse_batch
from gateway.fleet.schema import SCHEMA_VERSION
from gateway.fleet.state import COLLECTOR, Collector
from gateway.fleet.store import FleetStore, connect_pool, describe, migrate
from gateway.logs import flush_logs_periodically, get_logger
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.passwords import parse_hash

SHIP = "ship"
"""The one role of a sidecar's account: shipping as itself."""
CONFIG = web.AppKey("collector_config", Config)
_INSTANCE_ID = r"{instance:[A-Za-z0-9._-]{1,128}}"


def build_collector_app(config: Config) -> web.Application:
    if not config.collector.database_url:
        raise ConfigError(config.source, "collector.database_url", "required by `gateway collect`")
    max_body = config.collector.max_body_mb * 1024 * 1024
    app = web.Application(client_max_size=max_body, handler_args={"keepalive_timeout": config.server.keepalive_timeout})
    app[CONFIG] = config
    app.cleanup_ctx.append(_lifetime)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(f"{protocol.BASE}/{_INSTANCE_ID}", _sidecar_route(get_mark))
    app.router.add_post(f"{protocol.BASE}/{_INSTANCE_ID}/records", _sidecar_route(post_records))
    api.add_routes(app)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    settings = config.collector
    log = get_logger()
    sidecars = Authenticator(_sidecar_accounts(config))
    users = Authenticator(Authenticator.accounts_from_config(config.users, config.source))
    keys = sidecar_keys(config)
    try:
        pool = await connect_pool(settings.database_url, password=config.collector_password, size=settings.pool_size)
    except AuditStoreError as exc:
        raise ConfigError(config.source, "collector.database_url", str(exc)) from None
    try:
        try:
            before = await migrate(pool, settings.database_url)
        except AuditStoreError as exc:
            raise ConfigError(config.source, "collector.database_url", str(exc)) from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConfigError(
                config.source, "collector.database_url", f"cannot create or migrate the fleet store: {exc}"
            ) from None
        if before != SCHEMA_VERSION:
            log.info(
                "fleet_store_migrated",
                database=describe(settings.database_url),
                from_version=before,
                to_version=SCHEMA_VERSION,
            )
        store = FleetStore(pool, settings.database_url, owns_pool=False)
        collector = Collector(
            store,
            Ingest(pool, keys, retries=settings.serialization_retries),
            sidecars,
            users,
            Metrics(),
            log,
            settings.max_batch,
        )
        app[COLLECTOR] = collector
        flusher = asyncio.create_task(flush_logs_periodically(), name="log-flusher")
        try:
            yield
        finally:
            flusher.cancel()
    finally:
        await pool.close()


def _sidecar_accounts(config: Config) -> list[tuple[User, Any]]:
    accounts = []
    for index, sidecar in enumerate(config.sidecars):
        try:
            password = parse_hash(sidecar.password_hash)
        except ValueError as exc:
            raise ConfigError(config.source, f"sidecars[{index}].password_hash", str(exc)) from None
        accounts.append((User(sidecar.instance, frozenset(), frozenset({SHIP})), password))
    return accounts


def sidecar_keys(config: Config) -> dict[str, ChainKey]:
    """The chain keys of keyed sidecars (read with the config, from the environment or files)."""
    return {instance: ChainKey(secret) for instance, secret in config.sidecar_secrets.items()}


SidecarHandler = Callable[[web.Request, Collector, str], Awaitable[web.Response]]


def _sidecar_route(handler: SidecarHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Authenticate the sidecar and hold it to its own instance; log one line per request."""

    async def route(request: web.Request) -> web.Response:
        collector = request.app[COLLECTOR]
        started = time.perf_counter()
        instance = request.match_info["instance"]
        sidecar: str | None = None
        try:
            try:
                user = await collector.sidecars.authenticate(authorization(request.headers), request.remote)
            except AmbiguousCredentials as exc:
                response = protocol.BAD_BATCH.response(str(exc))
            except AuthenticationError:
                response = protocol.UNAUTHORIZED.response(headers={"WWW-Authenticate": errors.REALM})
            else:
                sidecar = user.name
                if sidecar != instance:
                    refused = Refused(
                        protocol.WRONG_INSTANCE, f"Sidecar {sidecar} may ship only as itself, not as {instance}"
                    )
                    await _flag(collector, instance, refused, request, sidecar)
                    response = refused.error.response(refused.message)
                else:
                    response = await handler(request, collector, instance)
        except Exception as exc:
            collector.log.error("collector_request_failed", instance=instance, error=type(exc).__name__)
            response = errors.INTERNAL_ERROR.response()
        collector.log.info(
            "fleet_request",
            method=request.method,
            path=request.path,
            instance=instance,
            sidecar=sidecar,
            client_ip=request.remote,
            status=response.status,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return response

    return route


async def get_mark(request: web.Request, collector: Collector, instance: str) -> web.Response:
    try:
        head = await collector.ingest.mark(instance)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        collector.log.error("fleet_store_failed", instance=instance, error=type(exc).__name__)
        return protocol.STORE_UNAVAILABLE.response()
    return _json({"instance": instance, "mark": head.id, "hash": head.hash, "schema_version": SCHEMA_VERSION})


async def post_records(request: web.Request, collector: Collector, instance: str) -> web.Response:
    started = time.perf_counter()
    try:
        batch = parse_batch(await request.read(), collector.max_batch)
        mark = await collector.ingest.write(instance, batch)
    except web.HTTPRequestEntityTooLarge:
        collector.batches.labels(protocol.BATCH_TOO_LARGE.code).inc()
        return protocol.BATCH_TOO_LARGE.response(f"The batch's body is over {request.app._client_max_size} bytes")
    except Refused as refused:
        await _flag(collector, instance, refused, request, instance)
        return refused.error.response(refused.message)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        collector.batches.labels(protocol.STORE_UNAVAILABLE.code).inc()
        collector.log.error(
            "fleet_store_failed", instance=instance, error=type(exc).__name__, detail=str(exc).splitlines()[0][:200]
        )
        return protocol.STORE_UNAVAILABLE.response()
    collector.seconds.observe(time.perf_counter() - started)
    collector.batches.labels("ok").inc()
    collector.records.inc(mark.accepted)
    collector.duplicates.inc(mark.duplicates)
    _log_batch(collector, instance, batch, mark)
    return _json(
        {
            "instance": instance,
            "mark": mark.head.id,
            "hash": mark.head.hash,
            "accepted": mark.accepted,
            "duplicates": mark.duplicates,
        }
    )


def _log_batch(collector: Collector, instance: str, batch: Batch, mark: Mark) -> None:
    collector.log.info(
        "fleet_batch",
        instance=instance,
        first_id=batch.rows[0][0],
        last_id=batch.rows[-1][0],
        accepted=mark.accepted,
        duplicates=mark.duplicates,
        mark=mark.head.id,
    )


async def _flag(
    collector: Collector, instance: str, refused: Refused, request: web.Request, sidecar: str | None
) -> None:
    """A refusal is counted and logged; a chain or identity problem is also kept in the store."""
    collector.batches.labels(refused.error.code).inc()
    log = collector.log.warning if refused.flag else collector.log.info
    log(
        "fleet_batch_refused",
        instance=instance,
        sidecar=sidecar,
        code=refused.error.code,
        flag=refused.flag,
        record_id=refused.record_id,
        reason=refused.message,
        client_ip=request.remote,
    )
    try:
        await collector.ingest.flag(instance, refused, request.remote)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        collector.log.error("fleet_flag_failed", instance=instance, error=type(exc).__name__)


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problem = await request.app[COLLECTOR].ready.result(1.0)
    body = {"status": "not_ready" if problem else "ready", "checks": {"store": problem or "ok"}}
    return _json(body, 503 if problem else 200)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[COLLECTOR].metrics.render(), headers={"Content-Type": CONTENT_TYPE})
