"""The request path of a token deletion, top to bottom:

    caller -> route -> auth -> intent (committed) -> upstream -> outcome (committed) -> reply

Nothing is forwarded before its intent is durable, and no answer leaves before its outcome is.
A crash in between leaves a ``pending`` intent in the audit log, never silence.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from gateway import errors
from gateway.audit.fingerprint import fingerprint, hint, redact_snapshot
from gateway.audit.record import AuditRecord, Outcome, json_text, storable, utc_timestamp
from gateway.audit.store import AuditStoreError
from gateway.audit.writer import AuditWriter
from gateway.auth import REVOKE, AmbiguousCredentials, AuthenticationError, Authenticator, ChecksBusy, Throttled, authorization
from gateway.logs import Logger
from gateway.metrics import Metrics
from gateway.outcome import interpret
from gateway.proxy import REQUEST_ID, PassThrough, Upstream, UpstreamError, unforwardable
from gateway.redact import loggable_target
from gateway.target import BadTarget, TokenTarget, parse_target

MAX_REQUEST_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class Services:
    """What the request path needs, built once at start-up (see ``gateway.app``)."""

    authenticator: Authenticator
    audit: AuditWriter
    upstream: Upstream
    log: Logger
    store_raw_tokens: bool
    metrics: Metrics
    body_timeout: float


SERVICES = web.AppKey("services", Services)


async def handle(request: web.Request) -> web.StreamResponse:
    """Every request that is not for an operational route: token deletions, and refusals."""
    services = request.app[SERVICES]
    exchange = Exchange.begin(request)
    try:
        response = await _handle(request, services, exchange)
    except Exception as exc:
        # The type only: an exception's text may quote the URL, and the URL the token.
        services.log.error("request_failed", **exchange.ids, error=type(exc).__name__)
        response = errors.INTERNAL_ERROR.response()
    response.headers.setdefault(REQUEST_ID, exchange.public_id)
    exchange.log(services.log, response.status)
    services.metrics.count_request(exchange.route, response.status, exchange.outcome)
    return response


async def _handle(request: web.Request, services: Services, exchange: Exchange) -> web.StreamResponse:
    # Route: only the token endpoint is served; its path is checked as it arrived on the wire.
    try:
        target: TokenTarget | None = parse_target(request.raw_path)
        invalid: BadTarget | None = None
    except BadTarget as exc:
        target, invalid = None, exc
    if target is None and invalid is None:
        exchange.route = "other"
        # Masked in the answer too: it may be logged by whatever stands between the caller and us.
        exchange.path = loggable_target(request.raw_path)
        return errors.NOT_FOUND.response(
            f"The gateway only serves DELETE /v1/o/{{org}}/oauth2/accesstokens/{{token}}; not {exchange.path}"
        )
    if request.method != hdrs.METH_DELETE:
        return errors.METHOD_NOT_ALLOWED.response(
            f"{request.method} is not allowed here; the gateway only forwards DELETE",
            headers={hdrs.ALLOW: hdrs.METH_DELETE},
        )
    exchange.identify(target, invalid, keep_raw=services.store_raw_tokens)

    # Auth: who is calling, and may they revoke tokens of this organisation?
    try:
        user = await services.authenticator.authenticate(authorization(request.headers), request.remote)
    except AmbiguousCredentials as exc:
        await _recorded(services, exchange, "refusal", exchange.record(Outcome.REJECTED, error_code=errors.BAD_REQUEST.code))
        return errors.BAD_REQUEST.response(str(exc))
    except Throttled as exc:
        # Counted, and audited once per window by the throttle's summary (see gateway.throttle).
        exchange.actor, exchange.error_code = exc.claimed, errors.TOO_MANY_ATTEMPTS.code
        return errors.too_many_attempts(exc.retry_after)
    except ChecksBusy as exc:
        # Counted in the throttle's summary too: a flood of them must not fill the audit log.
        exchange.actor, exchange.error_code = exc.claimed, errors.LOGIN_BUSY.code
        return errors.login_busy(exc.retry_after)
    except AuthenticationError as exc:
        exchange.actor = exc.claimed
        denied = exchange.record(Outcome.DENIED, error_code=errors.UNAUTHORIZED.code)
        # Past the throttle's allowance of records, only counted (see gateway.throttle).
        if services.authenticator.throttle.may_record():
            await _recorded(services, exchange, "refusal", denied)
        return errors.unauthorized()
    exchange.actor = user.name
    if invalid is not None or target is None:
        await _recorded(services, exchange, "refusal", exchange.record(Outcome.REJECTED, error_code=errors.BAD_REQUEST.code))
        return errors.BAD_REQUEST.response(str(invalid))
    if not user.may(REVOKE, target.org):
        await _recorded(services, exchange, "refusal", exchange.record(Outcome.FORBIDDEN, error_code=errors.FORBIDDEN.code))
        return errors.FORBIDDEN.response(f"User {user.name} may not revoke tokens of organization {target.org}")
    header = unforwardable(request.headers)
    if header is not None:
        await _recorded(services, exchange, "refusal", exchange.record(Outcome.REJECTED, error_code=errors.BAD_REQUEST.code))
        return errors.BAD_REQUEST.response(
            f"Header {header} holds bytes that are not UTF-8; the gateway forwards headers unchanged or not at all"
        )
    try:
        async with asyncio.timeout(services.body_timeout):  # a body sent a byte now and then
            body = await request.read() if request.body_exists else b""
    except web.HTTPRequestEntityTooLarge:
        await _recorded(services, exchange, "refusal", exchange.record(Outcome.REJECTED, error_code=errors.PAYLOAD_TOO_LARGE.code))
        return errors.PAYLOAD_TOO_LARGE.response(f"The request body exceeds {MAX_REQUEST_BODY} bytes")
    except TimeoutError:
        await _recorded(services, exchange, "refusal", exchange.record(Outcome.REJECTED, error_code=errors.REQUEST_TIMEOUT.code))
        late = errors.REQUEST_TIMEOUT.response(f"The request body did not arrive within {services.body_timeout:g} s")
        late.force_close()  # the rest of the body may still come: it must not be read as a next request
        return late

    # Intent: durable before anything reaches the upstream.
    if not await _recorded(services, exchange, "intent", exchange.record(Outcome.PENDING)):
        return errors.AUDIT_UNAVAILABLE.response()

    metrics = services.metrics
    metrics.intents_in_flight.inc()
    try:
        return await _forward_and_record(request, services, exchange, target, body)
    finally:  # cancelled or failed too: the gauge must not drift
        metrics.intents_in_flight.dec()


async def _forward_and_record(
    request: web.Request, services: Services, exchange: Exchange, target: TokenTarget, body: bytes
) -> web.StreamResponse:
    # Upstream: forward once; a DELETE whose fate is unknown is never retried.
    forwarded = time.perf_counter()
    try:
        reply = await services.upstream.forward(request.method, target, request.headers, body, request_id=exchange.public_id)
    except UpstreamError as exc:
        services.metrics.upstream_seconds.observe(time.perf_counter() - forwarded)
        failure = errors.UPSTREAM_TIMEOUT if exc.timeout else errors.UPSTREAM_UNAVAILABLE
        # Once the request may have left, the token may be gone: say so, and do not retry.
        fate = Outcome.UNKNOWN if exc.sent else Outcome.UPSTREAM_ERROR
        if not await _recorded(services, exchange, "outcome", exchange.record(fate, error_code=f"upstream.{exc.kind}")):
            return errors.AUDIT_UNAVAILABLE.response(
                f"{failure.message} ({exc.detail}), and the outcome could not be recorded; "
                "the intent stays pending in the audit log"
            )
        consequence = (
            "; the deletion may or may not have happened upstream, and it was not retried" if exc.sent
            else "; nothing reached the upstream"
        )
        return failure.response(f"{failure.message}: {exc.detail}{consequence}")
    services.metrics.upstream_seconds.observe(time.perf_counter() - forwarded)

    # Outcome: durable before the caller hears anything.
    meaning = interpret(reply)
    snapshot = meaning.snapshot
    stored = _stored_snapshot(snapshot, keep_raw=services.store_raw_tokens)
    outcome = exchange.record(
        meaning.outcome,
        upstream_status=reply.status,
        error_code=exchange.from_upstream(
            "error_code", meaning.error_code if stored is not None or snapshot is None else "upstream.snapshot_unreadable"
        ),
        app=exchange.from_upstream("app", _text(snapshot, "app")),
        client_id=exchange.from_upstream("client_id", _text(snapshot, "clientId")),
        snapshot=stored,
    )
    if not await _recorded(services, exchange, "outcome", outcome):
        return errors.AUDIT_UNAVAILABLE.response(
            f"The upstream answered {reply.status}, but the outcome could not be recorded; "
            "the intent stays pending in the audit log"
        )

    # Reply: the upstream's answer, exactly.
    return PassThrough(reply)


async def _recorded(services: Services, exchange: Exchange, stage: str, record: AuditRecord) -> bool:
    """Write one record; on failure log why and say so. A refusal stands even unrecorded; an
    intent or outcome that is not recorded stops the call (see the callers)."""
    try:
        await services.audit.write(record)
    except AuditStoreError as exc:
        services.log.error("audit_write_failed", **exchange.ids, stage=stage, error=str(exc))
        return False
    return True


def _text(snapshot: dict[str, Any] | None, key: str) -> str | None:
    value = snapshot.get(key) if snapshot else None
    return value if isinstance(value, str) else None


def _stored_snapshot(snapshot: dict[str, Any] | None, *, keep_raw: bool) -> str | None:
    if snapshot is None:
        return None
    try:
        return json_text(redact_snapshot(snapshot, keep_tokens=keep_raw))
    except RecursionError:  # nested deeper than the stack allows: left out, and the record says so
        return None


_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
"""What a caller's X-Request-ID may be to be kept (anything else could forge log fields)."""
_REQUEST_ID_PREFIX = os.urandom(6).hex()
_request_counter = itertools.count(1)


def _new_request_id() -> str:
    """Unique without a syscall per request: a random per-process prefix and a counter."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_counter):010x}"


@dataclass(slots=True)
class Exchange:
    """What is known about one request so far: the source of its audit records and log line."""

    request_id: str
    """The gateway's own id: unique, it pairs the call's intent and outcome in the audit log."""
    started: float
    client_ip: str | None
    method: str
    public_id: str
    """The id the caller and the upstream see: the caller's X-Request-ID if usable, else ``request_id``."""
    ids: dict[str, str]
    """The ids every log line of this request carries."""
    route: str = "token"
    actor: str | None = None
    org: str | None = None
    token_sha256: str | None = None
    token_hint: str | None = None
    token: str | None = None
    outcome: str | None = None
    error_code: str | None = None
    upstream_status: int | None = None
    path: str | None = None
    """Logged for paths other than the token endpoint, masked (see ``gateway.redact``)."""
    escaped: list[str] | None = None
    """Fields whose upstream value was not Unicode text, stored with backslash escapes."""

    @classmethod
    def begin(cls, request: web.Request) -> Exchange:
        own = _new_request_id()
        given = request.headers.get(REQUEST_ID)
        if given is not None and _CALLER_REQUEST_ID.fullmatch(given):
            return cls(own, time.perf_counter(), request.remote, request.method, given,
                       {"request_id": given, "audit_request_id": own})
        return cls(own, time.perf_counter(), request.remote, request.method, own, {"request_id": own})

    def identify(self, target: TokenTarget | None, invalid: BadTarget | None, *, keep_raw: bool) -> None:
        if target is not None:
            self.org = target.org
            self.token_sha256 = fingerprint(target.token)
            self.token_hint = hint(target.token)
            self.token = target.token if keep_raw else None
        elif invalid is not None:
            self.org = invalid.org

    def from_upstream(self, field: str, value: str | None) -> str | None:
        """An upstream's text as the store can keep it; a field that had to be escaped is named
        in the request's log line."""
        if value is None:
            return None
        kept = storable(value)
        if kept is not value:
            self.escaped = [*(self.escaped or ()), field]
        return kept

    def latency_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def record(
        self,
        outcome: Outcome,
        *,
        upstream_status: int | None = None,
        error_code: str | None = None,
        app: str | None = None,
        client_id: str | None = None,
        snapshot: str | None = None,
    ) -> AuditRecord:
        self.outcome, self.error_code, self.upstream_status = outcome.value, error_code, upstream_status
        return AuditRecord(
            request_id=self.request_id,
            time=utc_timestamp(),
            actor=self.actor,
            client_ip=self.client_ip,
            method=self.method,
            org=self.org,
            token_sha256=self.token_sha256,
            token_hint=self.token_hint,
            outcome=outcome.value,
            upstream_status=upstream_status,
            error_code=error_code,
            latency_ms=None if outcome is Outcome.PENDING else self.latency_ms(),
            app=app,
            client_id=client_id,
            snapshot=snapshot,
            token=self.token,
        )

    def log(self, log: Logger, status: int) -> None:
        """The request's one log line: the token appears only as its hint."""
        log.info(
            "request",
            **self.ids,
            method=self.method,
            path=self.path,
            client_ip=self.client_ip,
            actor=self.actor,
            org=self.org,
            token_hint=self.token_hint,
            status=status,
            outcome=self.outcome,
            upstream_status=self.upstream_status,
            error_code=self.error_code,
            latency_ms=self.latency_ms(),
            **({"escaped": self.escaped} if self.escaped else {}),
        )
