"""The request path of an audited call, top to bottom, one named step each:

    route -> authenticate -> check allowed -> read body -> write intent -> forward -> write outcome -> reply

Nothing is forwarded before its intent is durable, and no answer leaves before its outcome is.
A crash in between leaves a ``pending`` intent in the audit log, never silence. Each step
returns what the next one needs, or raises a ``Refusal``; this handler then writes the refusal's
record (when one is due) and logs the request once, from its facts as they finally stand.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from gateway import errors
from gateway.audit import records
from gateway.audit.record import AuditRecord, Outcome
from gateway.audit.store import AuditStoreError
from gateway.auth import User, authenticate
from gateway.call import REQUEST_ID, Call
from gateway.outcome import meaning
from gateway.redact import loggable_target
from gateway.refusal import Refusal
from gateway.route import Routed, route
from gateway.runtime import RUNTIME, Runtime
from gateway.upstream import PassThrough, UpstreamError, UpstreamReply, unforwardable

MAX_REQUEST_BODY = 64 * 1024


async def handle(request: web.Request) -> web.StreamResponse:
    """Every request that is not for an operational route: audited calls, and refusals."""
    runtime = request.app[RUNTIME]
    call = Call.begin(request)
    try:
        response = await _steps(request, runtime, call)
    except Refusal as refusal:
        response = await _refused(runtime, call, refusal)
    except Exception as exc:
        # The type only: an exception's text may quote the URL, and the URL the token.
        runtime.log.error("request_failed", **call.ids, error=type(exc).__name__)
        response = errors.INTERNAL_ERROR.response()
    response.headers.setdefault(REQUEST_ID, call.public_id)
    call.log(runtime.log, response.status)
    runtime.metrics.count_request(call.route, response.status, call.outcome)
    return response


async def _steps(request: web.Request, runtime: Runtime, call: Call) -> web.StreamResponse:
    routed = _route(request, call, keep_raw=runtime.config.audit.store_raw_tokens)
    user = await authenticate(runtime.authenticator, request, call)
    _check_allowed(routed, user, call)
    body = await _read_body(request, runtime, call)
    await _write(runtime, call, "intent", records.intent(call), errors.AUDIT_UNAVAILABLE.response())
    in_flight = runtime.metrics.intents_in_flight
    in_flight.inc()
    try:
        reply = await _forward(request, runtime, routed, body, call)
        await _write_outcome(runtime, call, reply)
    finally:  # cancelled or failed too: the gauge must not drift
        in_flight.dec()
    return PassThrough(reply)


def _route(request: web.Request, call: Call, *, keep_raw: bool) -> Routed:
    """Which operation, on what: read from the path exactly as it arrived on the wire."""
    try:
        routed = route(request.method, request.raw_path)
    except Refusal:
        call.path = loggable_target(request.raw_path)
        raise
    call.route = routed.operation.name
    call.target(routed.org, routed.secret, keep_raw=keep_raw)
    return routed


def _check_allowed(routed: Routed, user: User, call: Call) -> None:
    """A valid target, of an organisation the user may act on with the operation's role."""
    if routed.problem is not None:
        raise _refusal(call, errors.BAD_REQUEST, Outcome.REJECTED, routed.problem)
    if not user.may(routed.operation.role, routed.org):
        raise _refusal(
            call,
            errors.FORBIDDEN,
            Outcome.FORBIDDEN,
            f"User {user.name} may not {routed.operation.verb} of organization {routed.org}",
        )


async def _read_body(request: web.Request, runtime: Runtime, call: Call) -> bytes:
    """What will be forwarded, checked: headers that can go up unchanged, and a body in time."""
    header = unforwardable(request.headers)
    if header is not None:
        raise _refusal(
            call,
            errors.BAD_REQUEST,
            Outcome.REJECTED,
            f"Header {header} holds bytes that are not UTF-8; the gateway forwards headers unchanged or not at all",
        )
    wait = runtime.config.server.body_timeout
    try:
        async with asyncio.timeout(wait):  # a body sent a byte now and then
            return await request.read() if request.body_exists else b""
    except web.HTTPRequestEntityTooLarge:
        raise _refusal(
            call, errors.PAYLOAD_TOO_LARGE, Outcome.REJECTED, f"The request body exceeds {MAX_REQUEST_BODY} bytes"
        ) from None
    except TimeoutError:
        late = _refusal(
            call, errors.REQUEST_TIMEOUT, Outcome.REJECTED, f"The request body did not arrive within {wait:g} s"
        )
        late.response.force_close()  # the rest of the body may still come: it must not be read as a next request
        raise late from None


async def _forward(request: web.Request, runtime: Runtime, routed: Routed, body: bytes, call: Call) -> UpstreamReply:
    """Forward once: a call whose fate is unknown is never retried behind the audit log's back."""
    forwarded = time.perf_counter()
    try:
        return await runtime.upstream.forward(
            request.method, routed.target, request.headers, body, request_id=call.public_id
        )
    except UpstreamError as exc:
        failure = errors.UPSTREAM_TIMEOUT if exc.timeout else errors.UPSTREAM_UNAVAILABLE
        # Once the request may have left, the change may have happened upstream: say so.
        fate = Outcome.UNKNOWN if exc.sent else Outcome.UPSTREAM_ERROR
        consequence = (
            f"; the {routed.operation.effect} may or may not have happened upstream, and it was not retried"
            if exc.sent
            else "; nothing reached the upstream"
        )
        error_code = f"upstream.{exc.kind}"
        call.error_code = error_code
        raise Refusal(
            failure.response(f"{failure.message}: {exc.detail}{consequence}"),
            record=records.outcome(call, fate, error_code=error_code),
            if_unrecorded=errors.AUDIT_UNAVAILABLE.response(
                f"{failure.message} ({exc.detail}), and the outcome could not be recorded; the intent stays pending in the audit log"
            ),
        ) from None
    finally:
        runtime.metrics.upstream_seconds.observe(time.perf_counter() - forwarded)


async def _write_outcome(runtime: Runtime, call: Call, reply: UpstreamReply) -> None:
    """What the answer means, durable before the caller hears anything."""
    read = meaning(reply, keep_raw_tokens=runtime.config.audit.store_raw_tokens)
    call.upstream_status, call.escaped = reply.status, read.escaped
    record = records.outcome(
        call,
        read.outcome,
        upstream_status=reply.status,
        error_code=read.error_code,
        app=read.app,
        client_id=read.client_id,
        snapshot=read.snapshot,
    )
    _settled(call, record)
    await _write(
        runtime,
        call,
        "outcome",
        record,
        errors.AUDIT_UNAVAILABLE.response(
            f"The upstream answered {reply.status}, but the outcome could not be recorded; the intent stays pending in the audit log"
        ),
    )


async def _write(runtime: Runtime, call: Call, stage: str, record: AuditRecord, unrecorded: web.Response) -> None:
    """Write a record the call cannot go on without; if it cannot be, answer ``unrecorded``."""
    if not await _recorded(runtime, call, stage, record):
        raise Refusal(unrecorded)


async def _refused(runtime: Runtime, call: Call, refusal: Refusal) -> web.Response:
    """The refusal's answer, its record written first when one is due (a failed login only
    within the throttle's allowance of records)."""
    record = refusal.record
    if record is None:
        return refusal.response
    _settled(call, record)
    if refusal.limited and not runtime.authenticator.throttle.may_record():
        return refusal.response
    if not await _recorded(runtime, call, "refusal" if refusal.if_unrecorded is None else "outcome", record):
        return refusal.if_unrecorded or refusal.response
    return refusal.response


async def _recorded(runtime: Runtime, call: Call, stage: str, record: AuditRecord) -> bool:
    try:
        await runtime.writer.write(record)
    except AuditStoreError as exc:
        runtime.log.error("audit_write_failed", **call.ids, stage=stage, error=str(exc))
        return False
    return True


def _settled(call: Call, record: AuditRecord) -> None:
    call.outcome, call.error_code = record.outcome, record.error_code


def _refusal(call: Call, error: errors.GatewayError, outcome: Outcome, message: str) -> Refusal:
    call.error_code = error.code
    return Refusal(error.response(message), record=records.refusal(call, outcome, error.code))
