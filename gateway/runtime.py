"""The running gateway: every service its requests use, opened in order and closed in reverse.

One object, under one application key, so a route finds everything in one place and a test or
``gateway serve`` starts and stops the gateway the same way. It opens in three phases:

    the audit log      the store, the recorder process that commits for every request, the reserve
    the upstream       the embedded stub (the default) or Apigee, and the one upstream client
    background tasks   throttle summaries, the pending-intent check, log flushing, a separate
                       metrics port, fleet shipping
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from aiohttp import web

from gateway import __version__
from gateway.audit.anchor import HeadLogger
from gateway.audit.backends import open_store
from gateway.audit.chain import ChainKey
from gateway.audit.reserve import RESERVE_HEADROOM, DiskReserve
from gateway.audit.store import AuditStore, AuditStoreError
from gateway.audit.writer import AuditWriter, RecorderSpec
from gateway.auth import AUDIT, REVOKE, Authenticator, User
from gateway.config import ALL_ORGS, DEFAULTS_SOURCE, Config, ConfigError, load_config
from gateway.fleet.shipper import Shipper, start_shipping
from gateway.health import Readiness, serve_metrics
from gateway.logs import Logger, flush_logs_periodically, get_logger
from gateway.metrics import Metrics
from gateway.passwords import ScryptHash, hash_password, parse_hash
from gateway.stub import Seed, SeedError, demo_seed, load_seed
from gateway.stub.app import serve_stub
from gateway.stub.seed import DEMO_ORG, DEMO_PASSWORD, DEMO_USER, SAMPLE_TOKEN
from gateway.stub.settings import StubSettings
from gateway.throttle import CheckLimit, LoginThrottle, RefusedAttempts, as_record
from gateway.upstream import Credentials, Upstream, make_session
from gateway.upstream_auth import OAuthLogin, ServiceAccount, login_settings
from gateway.upstream_client import BodyLimit, UpstreamClient

MIB = 1024 * 1024
RESERVE_EVERY = 30.0
"""Seconds between looks at the disk reserve (``audit.reserve_mb``)."""
REFUSED_LOGINS_EVERY = 1.0
"""Seconds between looks for throttling windows that are over (to audit them)."""
DEMO_HASH_COST = 10
"""Demo accounts have public passwords; a cheap hash keeps start-up instant."""


@dataclass
class Runtime:
    config: Config
    log: Logger
    metrics: Metrics
    authenticator: Authenticator
    store: AuditStore
    """Reads the audit log (the HTTP query API, the start-up check)."""
    writer: AuditWriter
    """The request path's only way to write the audit log."""
    upstream: Upstream
    upstream_url: str
    """The upstream actually used; for the embedded stub, its loopback address."""
    readiness: Readiness
    stub_seed: Seed | None = None
    shipper: Shipper | None = None
    pending_check: asyncio.Task[None] | None = None
    """The start-up look for intents without an outcome; in the background, as it reads the whole log."""

    @classmethod
    @asynccontextmanager
    async def open(cls, config: Config) -> AsyncIterator[Runtime]:
        async with AsyncExitStack() as stack:
            log, metrics = get_logger(), Metrics()
            seed = stub_seed(config) if config.uses_stub else None
            authenticator = _authenticator(config, await _accounts(config, seed))
            store, writer = await _open_audit(stack, config, log, metrics)
            upstream_url, upstream = await _start_upstream(stack, config, seed, log)
            runtime = cls(
                config,
                log,
                metrics,
                authenticator,
                store,
                writer,
                upstream,
                upstream_url,
                Readiness(
                    store,
                    writer,
                    upstream_url,
                    config.upstream.connect_timeout,
                    login=upstream.credentials if isinstance(upstream.credentials, OAuthLogin) else None,
                ),
                seed,
            )
            await runtime._start_background(stack)
            yield runtime

    async def _start_background(self, stack: AsyncExitStack) -> None:
        config, log, metrics, throttle = self.config, self.log, self.metrics, self.authenticator.throttle
        refusals = asyncio.create_task(_audit_refused_logins(throttle, self.writer, log), name="throttle-audit")
        stack.push_async_callback(_audit_last_refused_logins, refusals, throttle, self.writer, log)
        self.pending_check = asyncio.create_task(
            _warn_of_pending_intents(self.store, log, metrics), name="pending-intents"
        )
        stack.callback(self.pending_check.cancel)
        checks = self.authenticator.checks
        metrics.read_at_scrape(
            "gateway_audit_queue_depth", "Audit records waiting for the next commit.", self.writer.queue_depth
        )
        metrics.read_at_scrape(
            "gateway_audit_commits", "Audit transactions committed.", lambda: self.writer.commits, counter=True
        )
        metrics.read_at_scrape(
            "gateway_logins_throttled",
            "Login attempts refused with 429 (too many failures).",
            lambda: throttle.refused,
            counter=True,
        )
        metrics.read_at_scrape(
            "gateway_logins_busy",
            "Login attempts refused with 503 (too many password checks).",
            lambda: checks.refused if checks is not None else 0,
            counter=True,
        )
        login = self.readiness.login
        metrics.read_at_scrape(
            "gateway_upstream_token_requests",
            'Requests to the token endpoint (upstream.auth = "oauth2"), both grants.',
            lambda: login.token_requests if login is not None else 0,
            counter=True,
        )
        if config.metrics.port:
            await stack.enter_async_context(
                serve_metrics(metrics, config.server, config.metrics.port, source=config.source)
            )
        flusher = asyncio.create_task(flush_logs_periodically(), name="log-flusher")
        stack.callback(flusher.cancel)
        # Fleet shipping ([ship]): a background task, never on the request path.
        self.shipper = self.readiness.shipper = await stack.enter_async_context(start_shipping(config, log, metrics))

    def banner(self, base: str) -> str:
        """What a newcomer needs, ending with the line that says the gateway is ready."""
        config = self.config
        if config.uses_stub:
            upstream = f"embedded Apigee stub at {self.upstream_url}"
        else:
            upstream = f"{self.upstream_url} (auth: {config.upstream.auth})"
        lines = [
            f"apigee-audit-gateway {__version__}",
            f"  upstream:  {upstream}",
            f"  audit log: {config.database_path}",
        ]
        seed = self.stub_seed
        if seed is not None and not config.users and _holds_sample(seed):
            query = "gateway audit query" + ("" if config.source == DEFAULTS_SOURCE else f" --config {config.source}")
            lines += [
                f"Demo mode: user {DEMO_USER} / {DEMO_PASSWORD}, organisation {DEMO_ORG}. Try:",
                f"  curl -u {DEMO_USER}:{DEMO_PASSWORD} -X DELETE {base}/v1/o/{DEMO_ORG}/oauth2/accesstokens/{SAMPLE_TOKEN['token']}",
                f"  {query}",
            ]
        lines.append(f"Listening on {base} (Ctrl-C to stop)")
        return "\n".join(lines)

    async def reload_users(self, path: Path | None) -> None:
        """``[[users]]`` again from the config file (on SIGHUP), so a password change needs no restart.

        Only the users are taken; other keys need a restart. A changed or removed user's verified
        credentials stop working at once (see ``Authenticator.replace``). A file that is not valid
        changes nothing and is one error line naming the file and key.
        """
        try:
            config = load_config(path)
            if not config.users and self.stub_seed is None:
                raise ConfigError(config.source, "users", "no [[users]] declared; the gateway keeps the users it has")
            accounts = await _accounts(config, self.stub_seed)
        except ConfigError as exc:
            self.log.error("users_reload_failed", error=str(exc))
            return
        self.log.info("users_reloaded", count=self.authenticator.replace(accounts))


RUNTIME = web.AppKey("runtime", Runtime)


def stub_seed(config: Config) -> Seed:
    """The embedded or standalone stub's data: ``[stub] seed`` or the demo seed."""
    try:
        seed = load_seed(config.path(config.stub.seed)) if config.stub.seed else demo_seed()
    except SeedError as exc:
        raise ConfigError(config.source, "stub.seed", str(exc)) from None
    return dataclasses.replace(seed, generated=config.stub.generated_tokens)


def stub_settings(config: Config) -> StubSettings:
    stub = config.stub
    return StubSettings(
        action_status=stub.action_status, revoke_delay=stub.revoke_delay, token_lifetime=stub.token_lifetime
    )


def _authenticator(config: Config, accounts: list[tuple[User, ScryptHash]]) -> Authenticator:
    limits = config.throttle
    throttle = LoginThrottle(limits.max_failures, limits.window_seconds, max_records=limits.max_denied_records)
    return Authenticator(accounts, throttle, CheckLimit(limits.max_concurrent_checks, limits.max_checks_per_second))


async def _open_audit(
    stack: AsyncExitStack, config: Config, log: Logger, metrics: Metrics
) -> tuple[AuditStore, AuditWriter]:
    """The audit log, opened (created or upgraded) and its recorder process started: the gateway
    does not start at all when its log cannot be written."""
    audit = config.audit
    try:
        store = await open_store(
            config.database_path,
            key=ChainKey(config.chain_secret),
            writable=True,
            create=True,
            busy_timeout=audit.busy_timeout,
        )
        stack.push_async_callback(store.close)
        spec = RecorderSpec(
            config.database_path,
            ChainKey(config.chain_secret),
            busy_timeout=audit.busy_timeout,
            synchronous=audit.synchronous,
            max_bytes=audit.max_size_mb * MIB,
        )
        writer = AuditWriter(
            spec,
            on_commit=HeadLogger(log, every_records=audit.head_log_records, every_seconds=audit.head_log_seconds),
            on_batch=metrics.observe_commit,
            log=log,
        )
        stack.push_async_callback(writer.close)
        await writer.started()
    except AuditStoreError as exc:
        raise ConfigError(config.source, "audit.database", str(exc)) from None
    reserve = DiskReserve(config.database_path, audit.reserve_mb)
    missing = await _ensure_reserve(reserve, log, None)  # in place before the first call is taken
    keeper = asyncio.create_task(_keep_reserve(reserve, log, missing), name="disk-reserve")
    stack.callback(keeper.cancel)
    return store, writer


async def _keep_reserve(reserve: DiskReserve, log: Logger, missing: str | None) -> None:
    """Hold the disk reserve back, and take it again once a prune (or anything else) has freed
    room for it: without it, a prune on a full disk has no room to work in."""
    while True:
        await asyncio.sleep(RESERVE_EVERY)
        missing = await _ensure_reserve(reserve, log, missing)


async def _ensure_reserve(reserve: DiskReserve, log: Logger, missing: str | None) -> str | None:
    """The reserve in place if it can be; logged when that changes (unavailable, and why; back)."""
    problem = await asyncio.to_thread(reserve.ensure, headroom=RESERVE_HEADROOM)
    if problem is not None and missing is None:
        log.warning(
            "audit_reserve_unavailable", reason=problem, hint="`gateway audit prune` may not work if the disk fills up"
        )
    elif problem is None and missing is not None:
        log.info("audit_reserve_restored", path=str(reserve.path))
    return problem


async def _start_upstream(
    stack: AsyncExitStack, config: Config, seed: Seed | None, log: Logger
) -> tuple[str, Upstream]:
    """The upstream's address (the embedded stub's, started here) and the client that calls it."""
    if seed is not None:
        url = await stack.enter_async_context(
            serve_stub(seed, admin=config.stub.admin, delay=config.stub.delay, settings=stub_settings(config))
        )
    else:
        url = config.upstream.url
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
    credentials = _credentials(config, url, session, log)
    return url, Upstream(
        url, session, credentials=credentials, max_body=BodyLimit(upstream.max_body_mb << 20, "upstream.max_body_mb")
    )


def _credentials(config: Config, url: str, session: UpstreamClient, log: Logger) -> Credentials | None:
    """What replaces the caller's credentials upstream (``upstream.auth``); None: nothing does."""
    upstream = config.upstream
    if upstream.auth == "service":
        return ServiceAccount(upstream.service_user, config.service_password)
    if upstream.auth != "oauth2":
        return None
    return OAuthLogin(login_settings(config, url), session, log)


async def _warn_of_pending_intents(store: AuditStore, log: Logger, metrics: Metrics) -> None:
    """After a crash, intents without an outcome are the calls whose fate is unknown: say so."""
    try:
        pending = await store.pending_without_outcome()
    except AuditStoreError as exc:
        log.warning("pending_intents_unchecked", error=str(exc))
        return
    metrics.pending_intents_at_start.set(len(pending))
    if pending:
        log.warning(
            "pending_intents_without_outcome",
            count=len(pending),
            first_id=pending[0].id,
            hint="a previous run stopped between forwarding and recording; run `gateway audit reconcile`",
        )


async def _audit_refused_logins(throttle: LoginThrottle, writer: AuditWriter, log: Logger) -> None:
    """Each throttling window, once over, becomes one audit record of its refused attempts."""
    while True:
        await asyncio.sleep(REFUSED_LOGINS_EVERY)
        await _write_refused(throttle.ended(), writer, log)


async def _audit_last_refused_logins(
    task: asyncio.Task[None], throttle: LoginThrottle, writer: AuditWriter, log: Logger
) -> None:
    task.cancel()
    await _write_refused(throttle.drain(), writer, log)


async def _write_refused(windows: list[RefusedAttempts], writer: AuditWriter, log: Logger) -> None:
    for attempts in windows:
        try:
            await writer.write(as_record(attempts))
        except AuditStoreError as exc:
            log.error("audit_write_failed", stage="throttle", refused_attempts=attempts.count, error=str(exc))
        log.warning(
            "logins_throttled",
            by=attempts.by,
            subject=attempts.subject,
            refused_attempts=attempts.count,
            window_start=attempts.start,
            **attempts.extra,
        )


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


def _holds_sample(seed: Seed) -> bool:
    return any(token.get("token") == SAMPLE_TOKEN["token"] for token in seed.orgs.get(DEMO_ORG, []))
