"""Wiring: builds the gateway's aiohttp application and the services its request path uses.

Everything with a lifetime (audit store, client session, embedded stub) is opened in one
cleanup context, so tests and ``gateway serve`` start and stop the gateway the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
from functools import partial
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

from aiohttp import encode_basic_auth, web

from gateway.audit.anchor import HeadLogger
from gateway.audit_api import AUDIT_AUTHENTICATOR, AUDIT_STORE
from gateway.audit_api import add_routes as add_audit_routes
from gateway.audit.chain import ChainKey
from gateway.audit.reserve import DiskReserve
from gateway.audit.sqlite import SQLiteAppender, SQLiteAuditStore
from gateway.audit.store import AuditStoreError
from gateway.audit.writer import AuditWriter
from gateway.auth import AUDIT, REVOKE, Authenticator, User
from gateway.config import ALL_ORGS, Config, ConfigError, load_config
from gateway.fleet.shipper import SHIPPING, start_shipping
from gateway.logs import Logger, flush_logs_periodically, get_logger
from gateway.passwords import ScryptHash, hash_password, parse_hash
from gateway.proxy import Upstream, make_session
from gateway.revoke import MAX_REQUEST_BODY, SERVICES, Services, handle
from gateway.stub import Seed, SeedError, demo_seed, load_seed
from gateway.stub.app import serve_stub
from gateway.health import METRICS, READINESS, Readiness, serve_metrics
from gateway.health import add_routes as add_health_routes
from gateway.metrics import Metrics
from gateway.throttle import CheckLimit, LoginThrottle, RefusedAttempts, as_record

CONFIG = web.AppKey("config", Config)
UPSTREAM_URL = web.AppKey("upstream_url", str)
"""The upstream actually used; for the embedded stub, its loopback address."""
STUB_SEED = web.AppKey("stub_seed", Seed)

MAX_HEADER_FIELD = 16 * 1024
"""Large enough that an oversized Authorization header reaches our own 401, not aiohttp's 400."""
PENDING_CHECK = web.AppKey("pending_check", asyncio.Task)
"""The start-up look for intents without an outcome; in the background, as it reads the whole log."""
MIB = 1024 * 1024
REFUSED_LOGINS_EVERY = 1.0
"""Seconds between looks for throttling windows that are over (to audit them)."""
DEMO_HASH_COST = 10
"""Demo accounts have public passwords; a cheap hash keeps start-up instant."""


def build_app(config: Config) -> web.Application:
    server = config.server
    # lingering_time: aiohttp reads (and drops) the rest of a body the gateway answered without
    # reading, so that the caller gets the answer; for no longer than a body is given anyway.
    handler_args = {
        "max_field_size": MAX_HEADER_FIELD, "keepalive_timeout": server.keepalive_timeout, "lingering_time": server.body_timeout,
    }
    app = web.Application(client_max_size=MAX_REQUEST_BODY, handler_args=handler_args)
    app[CONFIG] = config
    app.cleanup_ctx.append(_lifetime)
    add_health_routes(app, with_metrics=not config.metrics.port)
    add_audit_routes(app)
    # [\s\S], not '.': a decoded path may hold a line break (%0A), which '.' would leave to
    # aiohttp's own plain-text 404 instead of the gateway's refusal.
    app.router.add_route("*", r"/{path:[\s\S]*}", handle)
    return app


def stub_seed(config: Config) -> Seed:
    """The embedded or standalone stub's data: ``[stub] seed`` or the demo seed."""
    try:
        seed = load_seed(config.path(config.stub.seed)) if config.stub.seed else demo_seed()
    except SeedError as exc:
        raise ConfigError(config.source, "stub.seed", str(exc)) from None
    return dataclasses.replace(seed, generated=config.stub.generated_tokens)


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    async with AsyncExitStack() as stack:
        seed = stub_seed(config) if config.uses_stub else None
        limits = config.throttle
        throttle = LoginThrottle(limits.max_failures, limits.window_seconds, max_records=limits.max_denied_records)
        checks = CheckLimit(limits.max_concurrent_checks, limits.max_checks_per_second)
        authenticator = Authenticator(await _accounts(config, seed), throttle, checks)
        audit, log = config.audit, get_logger()
        key = ChainKey(config.chain_secret)
        metrics = app[METRICS] = Metrics()
        path = config.database_path
        try:
            store = await SQLiteAuditStore.open(path, key=key, writable=True, busy_timeout=audit.busy_timeout)
            stack.push_async_callback(store.close)
            writer = AuditWriter(
                partial(SQLiteAppender, path, key, busy_timeout=audit.busy_timeout, synchronous=audit.synchronous,
                        max_bytes=audit.max_size_mb * MIB),
                on_commit=HeadLogger(log, every_records=audit.head_log_records, every_seconds=audit.head_log_seconds),
                on_batch=metrics.observe_commit,
            )
            stack.push_async_callback(writer.close)
            await writer.started()
        except AuditStoreError as exc:
            raise ConfigError(config.source, "audit.database", str(exc)) from None
        reserve_problem = await asyncio.to_thread(DiskReserve(path, audit.reserve_mb).ensure)
        if reserve_problem is not None:
            log.warning("audit_reserve_unavailable", reason=reserve_problem,
                        hint="`gateway audit prune` may not work if the disk fills up")
        refusals = asyncio.create_task(_audit_refused_logins(throttle, writer, log), name="throttle-audit")
        stack.push_async_callback(_audit_last_refused_logins, refusals, throttle, writer, log)
        app[AUDIT_STORE], app[AUDIT_AUTHENTICATOR] = store, authenticator
        app[PENDING_CHECK] = asyncio.create_task(_warn_of_pending_intents(store, log, metrics), name="pending-intents")
        stack.callback(app[PENDING_CHECK].cancel)
        if seed is not None:
            app[STUB_SEED] = seed
            app[UPSTREAM_URL] = await stack.enter_async_context(
                serve_stub(seed, admin=config.stub.admin, delay=config.stub.delay)
            )
        else:
            app[UPSTREAM_URL] = config.upstream.url
        upstream = config.upstream
        session = await stack.enter_async_context(
            make_session(
                connect_timeout=upstream.connect_timeout,
                read_timeout=upstream.read_timeout,
                total_timeout=upstream.total_timeout,
                verify_tls=upstream.verify_tls,
                ca_bundle=str(config.path(upstream.ca_bundle)) if upstream.ca_bundle else None,
            )
        )
        service_auth = (
            encode_basic_auth(upstream.service_user, config.service_password) if upstream.auth == "service" else None
        )
        metrics.read_at_scrape("gateway_audit_queue_depth", "Audit records waiting for the next commit.", writer.queue_depth)
        metrics.read_at_scrape("gateway_audit_commits", "Audit transactions committed.", lambda: writer.commits, counter=True)
        metrics.read_at_scrape(
            "gateway_logins_throttled", "Login attempts refused with 429 (too many failures).", lambda: throttle.refused, counter=True
        )
        metrics.read_at_scrape(
            "gateway_logins_busy", "Login attempts refused with 503 (too many password checks).", lambda: checks.refused, counter=True
        )
        app[READINESS] = Readiness(path, writer, app[UPSTREAM_URL], upstream.connect_timeout)
        # Fleet shipping ([ship]): a background task, never on the request path.
        shipper = await stack.enter_async_context(start_shipping(config, log, metrics))
        if shipper is not None:
            app[SHIPPING] = shipper
        if config.metrics.port:
            await stack.enter_async_context(serve_metrics(metrics, config.server, config.metrics.port, source=config.source))
        flusher = asyncio.create_task(flush_logs_periodically(), name="log-flusher")
        stack.callback(flusher.cancel)
        app[SERVICES] = Services(
            authenticator=authenticator,
            audit=writer,
            upstream=Upstream(app[UPSTREAM_URL], session, authorization=service_auth),
            log=log,
            store_raw_tokens=config.audit.store_raw_tokens,
            metrics=metrics,
            body_timeout=config.server.body_timeout,
        )
        yield


async def _warn_of_pending_intents(store: SQLiteAuditStore, log: Logger, metrics: Metrics) -> None:
    """After a crash, intents without an outcome are the calls whose fate is unknown: say so."""
    try:
        pending = await store.pending_without_outcome()
    except AuditStoreError as exc:
        log.warning("pending_intents_unchecked", error=str(exc))
        return
    metrics.pending_intents_at_start.set(len(pending))
    if pending:
        log.warning(
            "pending_intents_without_outcome", count=len(pending), first_id=pending[0].id,
            hint="a previous run stopped between forwarding and recording; run `gateway audit reconcile`",
        )


async def _audit_refused_logins(throttle: LoginThrottle, writer: AuditWriter, log: Logger) -> None:
    """Each throttling window, once over, becomes one audit record of its refused attempts."""
    while True:
        await asyncio.sleep(REFUSED_LOGINS_EVERY)
        await _write_refused(throttle.ended(), writer, log)


async def _audit_last_refused_logins(task: asyncio.Task[None], throttle: LoginThrottle, writer: AuditWriter, log: Logger) -> None:
    task.cancel()
    await _write_refused(throttle.drain(), writer, log)


async def _write_refused(windows: list[RefusedAttempts], writer: AuditWriter, log: Logger) -> None:
    for attempts in windows:
        try:
            await writer.write(as_record(attempts))
        except AuditStoreError as exc:
            log.error("audit_write_failed", stage="throttle", refused_attempts=attempts.count, error=str(exc))
        log.warning("logins_throttled", by=attempts.by, subject=attempts.subject, refused_attempts=attempts.count,
                    window_start=attempts.start, **attempts.extra)


async def reload_users(app: web.Application, path: Path | None) -> None:
    """``[[users]]`` again from the config file (on SIGHUP), so a password change needs no restart.

    Only the users are taken; other keys need a restart. A changed or removed user's verified
    credentials stop working at once (see ``Authenticator.replace``). A file that is not valid
    changes nothing and is one error line naming the file and key.
    """
    log = get_logger()
    try:
        config = load_config(path)
        seed = app.get(STUB_SEED)
        if not config.users and seed is None:
            raise ConfigError(config.source, "users", "no [[users]] declared; the gateway keeps the users it has")
        accounts = await _accounts(config, seed)
    except ConfigError as exc:
        log.error("users_reload_failed", error=str(exc))
        return
    log.info("users_reloaded", count=app[AUDIT_AUTHENTICATOR].replace(accounts))


async def _accounts(config: Config, seed: Seed | None) -> list[tuple[User, ScryptHash]]:
    """``[[users]]``; or, with the embedded stub and no users, the stub's own users as demo accounts."""
    if config.users or seed is None:
        return Authenticator.accounts_from_config(config.users, config.source)
    loop = asyncio.get_running_loop()
    accounts = []
    for name, password in seed.users.items():
        encoded = await loop.run_in_executor(None, partial(hash_password, password, log2_n=DEMO_HASH_COST))
        accounts.append((User(name, frozenset({ALL_ORGS}), frozenset({REVOKE, AUDIT})), parse_hash(encoded)))
    return accounts
