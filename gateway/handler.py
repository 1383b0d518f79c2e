"""The request path of every call, top to bottom, one named step each:

    route -> authenticate -> check allowed -> read body -> authorize upstream -> read first
          -> write intent -> forward -> write outcome -> reply

An audited call (``gateway.operations``) is never forwarded before its intent is durable, and no
answer leaves before its outcome is; a crash in between leaves a ``pending`` intent in the audit
log, never silence. A call that is only passed through skips the three audit steps (with
``audit.reads``, a read gets one record after its answer). Each step returns what the next one
needs, or raises a ``Refusal``; this handler then writes the refusal's record (when one is due)
and logs the request once, from its facts as they finally stand.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from aiohttp import HttpVersion11, hdrs, web
from multidict import CIMultiDict

from gateway import errors
from gateway.audit import records
from gateway.audit.fingerprint import fingerprint, hint, redact_snapshot
from gateway.audit.record import AuditRecord, Outcome
from gateway.audit.records import json_text
from gateway.audit.store import AuditStoreError
from gateway.auth import GLOBAL, User, authenticate, authorization
from gateway.call import REQUEST_ID, Call
from gateway.operations import PASS_THROUGH_READ, READ_RESOURCE_TYPE
from gateway.outcome import Meaning, meaning, number_in, outcome_for_status, outcome_of, pre_image
from gateway.redact import loggable_target, one_spelling
from gateway.refusal import Refusal
from gateway.route import OVERRIDE_HEADERS, READ_PARAMETERS, READS, Routed, route
from gateway.runtime import Runtime
from gateway.upstream import PassThrough, UpstreamReply, received, unforwardable
from gateway.upstream_client import BodyLimit, UpstreamError

MAX_REQUEST_BODY = 64 * 1024
"""The largest body of an audited call (aiohttp's ``client_max_size``, set by ``gateway.app``);
a call passed through has ``upstream.pass_through_max_body_mb``."""
MAX_ENUMERATED = 10_000
"""Tokens of a bulk revocation listed in its intent; past it the list says it is incomplete."""
MAX_PAGES = 200
"""Pages of ``/oauth2/search`` asked for one bulk revocation (twice what 10,000 tokens take)."""
SEARCH_PAGE = 100
"""Tokens asked for per page of ``/oauth2/search``: Apigee's most (``oauth_max_search_limit``);
a larger limit is refused (400 ``InvalidValueForLimitParam``) and the list would be lost."""


async def handle(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    """Every request that is not for an operational route: Apigee calls, and refusals."""
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
    routed = _route(request, runtime, call)
    user = await authenticate(runtime.authenticator, request, call)
    _check_allowed(routed, user, call)
    body = await _read_body(request, runtime, routed, call)
    if not routed.operation.audited:
        return await _pass_through(request, runtime, routed, body, call)
    await _authorize_upstream(runtime, call)
    hidden = _hidden(runtime, routed, body)
    _note_body(runtime, call, body, hidden)
    before = await _read_first(request, runtime, routed, call, hidden)
    intent = records.intent(call, before.snapshot if before else None)
    await _write(runtime, call, "intent", intent, errors.AUDIT_UNAVAILABLE.response())
    in_flight = runtime.metrics.intents_in_flight
    in_flight.inc()
    try:
        reply = await _forward(request, runtime, routed, body, call, before)
        await _write_outcome(runtime, routed, call, reply, hidden, before)
    finally:  # cancelled or failed too: the gauge must not drift
        in_flight.dec()
    return PassThrough(reply)


def _route(request: web.Request, runtime: Runtime, call: Call) -> Routed:
    """Which operation, on what: read from the path exactly as it arrived on the wire."""
    try:
        override = next((name for name in OVERRIDE_HEADERS if name in request.headers), None)
        routed = route(
            request.method, request.raw_path, pass_through=runtime.config.upstream.pass_through, override=override
        )
    except Refusal:
        call.path = loggable_target(request.raw_path)
        raise
    operation = routed.operation
    call.route = operation.name
    if operation.audited:
        call.action, call.resource_type, call.resource = operation.action, operation.resource_type, routed.resource
        kept: dict[str, object] = {name: routed.query[name] for name in operation.params if name in routed.query}
        call.params = kept or None
        tokens = operation.resource_type.endswith("token")
        call.target(routed.org, routed.secret, keep_raw=tokens and runtime.config.audit.store_raw_tokens)
    else:
        call.path = loggable_target(routed.target)
        call.resource = one_spelling(call.path)
        call.org = routed.org
    return routed


def _check_allowed(routed: Routed, user: User, call: Call) -> None:
    """A valid target, of an organisation the user may act on with the operation's role (and,
    outside any organisation, the role ``global``)."""
    operation = routed.operation
    if routed.problem is not None:  # recorded even when passed through: it may be a way around the audit
        raise _refusal(call, errors.BAD_REQUEST, Outcome.REJECTED, routed.problem)
    if routed.org is None and not user.may(GLOBAL, None):
        raise _refusal(
            call,
            errors.FORBIDDEN,
            Outcome.FORBIDDEN,
            f"User {user.name} may not call paths outside an organization (role {GLOBAL})",
            recorded=operation.audited,
        )
    if not user.may(operation.role, routed.org):
        where = f"of organization {routed.org}" if routed.org is not None else "outside an organization"
        raise _refusal(
            call,
            errors.FORBIDDEN,
            Outcome.FORBIDDEN,
            f"User {user.name} may not {operation.verb} {where} (role {operation.role})",
            recorded=operation.audited,
        )


async def _read_body(request: web.Request, runtime: Runtime, routed: Routed, call: Call) -> bytes:
    """What will be forwarded, checked: headers that can go up unchanged, and a body in time,
    within its bound, exactly as it came (still content-encoded: ``gateway.app`` turns aiohttp's
    decompression off). A credential the body supplies (a consumer key at creation) is
    fingerprinted like one in a path, from a decoded private copy."""
    header = unforwardable(request.headers)
    if header is not None:
        raise _refusal(
            call,
            errors.BAD_REQUEST,
            Outcome.REJECTED,
            f"Header {header} holds bytes that are not UTF-8; the gateway forwards headers unchanged or not at all",
        )
    wait = runtime.config.server.body_timeout
    audited = routed.operation.audited
    limit = MAX_REQUEST_BODY if audited else _pass_through_limit(runtime).size
    try:
        async with asyncio.timeout(wait):  # a body sent a byte now and then
            body = await _body(request, limit)
    except web.HTTPRequestEntityTooLarge:
        bound = "" if audited else " (upstream.pass_through_max_body_mb)"
        raise _refusal(
            call, errors.PAYLOAD_TOO_LARGE, Outcome.REJECTED, f"The request body exceeds {limit} bytes{bound}"
        ) from None
    except web.RequestPayloadError:  # cut short, or its chunked framing broken: nothing can follow it
        malformed = _refusal(
            call,
            errors.BAD_REQUEST,
            Outcome.REJECTED,
            "The request body's framing (Content-Length or chunked encoding) is malformed",
        )
        malformed.response.force_close()
        raise malformed from None
    except ConnectionResetError:  # the caller went away mid-body: refused like a body cut short, not a 500
        gone = _refusal(
            call,
            errors.BAD_REQUEST,
            Outcome.REJECTED,
            "The request body was cut short: the connection closed before it was whole",
        )
        gone.response.force_close()
        raise gone from None
    except TimeoutError:
        late = _refusal(
            call, errors.REQUEST_TIMEOUT, Outcome.REJECTED, f"The request body did not arrive within {wait:g} s"
        )
        late.response.force_close()  # the rest of the body may still come: it must not be read as a next request
        raise late from None
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if routed.operation.audited and body and encoding != "identity":
        raise _refusal(
            call,
            errors.BAD_REQUEST,
            Outcome.REJECTED,
            f"A request body with Content-Encoding {encoding[:40]!r}: the gateway records what an audited call "
            "asks for, and cannot read it; send it unencoded",
        )
    if request.method not in READS and request.content_type == "application/x-www-form-urlencoded":
        # A servlet reads a form body's fields as query parameters: "action=revoke" there is ?action=revoke.
        given = next((name for name, _ in parse_qsl(body.decode("latin-1")) if name.lower() in READ_PARAMETERS), None)
        if given is not None:
            raise _refusal(
                call,
                errors.BAD_REQUEST,
                Outcome.REJECTED,
                f"Parameter {given[:40]!r} in a form body: an upstream may read it as a query parameter; "
                "send it in the query, or send a JSON body",
            )
    field = routed.operation.body_secret
    if field is not None:  # the body is unencoded: an encoded one was refused above
        secret = _body_field(body, field)
        if secret is not None:
            call.token_sha256, call.token_hint = fingerprint(secret), hint(secret)
    return body


async def _body(request: web.Request, limit: int) -> bytes:
    """The body as received, over ``limit`` bytes refused (HTTPRequestEntityTooLarge). A caller
    waiting for ``100 Continue`` (``gateway.app`` leaves it to this step) is told to send it now."""
    if not request.body_exists:
        return b""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    if request.version == HttpVersion11 and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own does: the answer's head is still to come
    return await request.clone(client_max_size=limit).read()


def _pass_through_limit(runtime: Runtime) -> BodyLimit:
    """The bound of a body passed through, request or answer (``upstream.pass_through_max_body_mb``)."""
    return BodyLimit(runtime.config.upstream.pass_through_max_body_mb << 20, "upstream.pass_through_max_body_mb")


async def _authorize_upstream(runtime: Runtime, call: Call) -> None:
    """The gateway's own upstream credentials (``upstream.auth = "oauth2"``: a bearer token)
    in hand before anything is read or written for the call: one that cannot be forwarded
    leaves no intent behind. The token endpoint's failure is logged where it happens."""
    try:
        await runtime.upstream.authorize()
    except UpstreamError as exc:
        failure = errors.UPSTREAM_TIMEOUT if exc.timeout else errors.UPSTREAM_UNAVAILABLE
        call.error_code = f"upstream.{exc.kind}"
        raise Refusal(failure.response(f"{failure.message}: {exc.detail}; nothing was forwarded")) from None


def _hidden(runtime: Runtime, routed: Routed, body: bytes) -> frozenset[str]:
    """The credential the call acts on (in its path, or its body), to be redacted wherever it
    appears in a snapshot, whatever the field holding it is called; not a token kept in clear
    by ``audit.store_raw_tokens``."""
    operation = routed.operation
    if operation.resource_type.endswith("token") and runtime.config.audit.store_raw_tokens:
        return frozenset()
    secret = routed.secret
    if operation.body_secret is not None:
        secret = _body_field(body, operation.body_secret)
    return frozenset() if secret is None else frozenset({secret})


def _note_body(runtime: Runtime, call: Call, body: bytes, hidden: frozenset[str]) -> None:
    """The request's JSON body, secrets redacted, in the records' ``params.body``: an update's
    body may carry what it changes of a credential (a ``status``, products, a new key), and the
    trail must say what was asked, not only what the answer shows."""
    document = _json_document(body)
    if isinstance(document, dict):
        keep = runtime.config.audit.store_raw_tokens
        call.note("body", redact_snapshot(document, keep_tokens=keep, values=hidden))


async def _read_first(
    request: web.Request, runtime: Runtime, routed: Routed, call: Call, hidden: frozenset[str]
) -> Meaning | None:
    """What the call is about to change, read before it (for the intent's snapshot): the
    resource, when the call's answer will not carry it (the 204 of an action), or the tokens a
    bulk revocation will cut. A read that fails never blocks the call; the record says so."""
    operation = routed.operation
    if operation.enumerate_tokens:
        return await _tokens_to_revoke(request, runtime, routed, call)
    if operation.pre_image is None:
        return None
    try:
        reply = await _read_upstream(request, runtime, routed.below_org(operation.pre_image), call)
    except UpstreamError as exc:
        call.note("pre_image", f"missing: {exc.detail}")
        return None
    read = pre_image(reply, keep_raw_tokens=runtime.config.audit.store_raw_tokens, hidden=hidden)
    if read is None:
        call.note("pre_image", f"missing: the upstream answered {reply.status} to reading the resource first")
    return read


async def _tokens_to_revoke(request: web.Request, runtime: Runtime, routed: Routed, call: Call) -> Meaning | None:
    """The tokens a bulk revocation will cut, as fingerprints and hints, listed page by page
    with Apigee's token search: its own answer (202) gives only their number. The listing is
    bounded (tokens, pages, ``upstream.enumeration_timeout``) and stops at a page that does not
    advance, so that an upstream answering endless or repeated pages cannot hold the call: the
    list then says it is incomplete, and why, and the revocation is still forwarded."""
    selection = {name: routed.query[name] for name in ("app", "enduser") if name in routed.query}
    tokens: dict[str, dict[str, str]] = {}
    starts: set[str] = set()
    start: str | None = None
    wait = runtime.config.upstream.enumeration_timeout
    try:
        async with asyncio.timeout(wait):
            for _ in range(MAX_PAGES):
                query = urlencode({**selection, "limit": SEARCH_PAGE, **({"start": start} if start else {})})
                try:
                    reply = await _read_upstream(request, runtime, routed.below_org(f"oauth2/search?{query}"), call)
                except UpstreamError as exc:
                    call.note("pre_image", f"missing: listing the tokens failed: {exc.detail}")
                    return None
                page = _json(reply) if reply.status == 200 else None
                found = page.get("list") if isinstance(page, dict) else None
                if not isinstance(found, list):
                    call.note("pre_image", f"missing: the upstream answered {reply.status} to listing the tokens")
                    return None
                new = {token: None for token in found if isinstance(token, str) and token not in tokens}
                tokens.update({token: {"sha256": fingerprint(token), "hint": hint(token)} for token in new})
                meta = page.get("meta") if isinstance(page, dict) else None
                following = meta.get("next") if isinstance(meta, dict) else None
                if not following or not found:
                    return _listed(tokens, None)
                if len(tokens) >= MAX_ENUMERATED:
                    return _listed(tokens, f"more than {MAX_ENUMERATED} tokens")
                start = str(following)
                if not new or start in starts:
                    return _listed(tokens, "the upstream repeated a page")
                starts.add(start)
    except TimeoutError:
        return _listed(tokens, f"the listing took more than {wait:g} s (upstream.enumeration_timeout)")
    return _listed(tokens, f"more than {MAX_PAGES} pages")


def _listed(tokens: dict[str, dict[str, str]], truncated: str | None) -> Meaning:
    """The tokens a bulk revocation will cut, as the intent's snapshot; ``truncated``: why the
    list stopped short of the end (None: it is complete)."""
    listing: dict[str, object] = {"tokens": list(tokens.values())[:MAX_ENUMERATED], "complete": truncated is None}
    if truncated is not None:
        listing["truncated"] = truncated
    return Meaning(Outcome.SUCCEEDED, None, None, None, json_text(listing))


async def _read_upstream(request: web.Request, runtime: Runtime, target: str, call: Call) -> UpstreamReply:
    """A GET the gateway makes for the call, with the call's credentials (or the service's)."""
    headers: CIMultiDict[str] = CIMultiDict({hdrs.ACCEPT: "application/json"})
    credentials = authorization(request.headers)
    if credentials is not None:
        headers[hdrs.AUTHORIZATION] = credentials
    return await runtime.upstream.forward(hdrs.METH_GET, target, headers, b"", request_id=call.public_id)


async def _forward(
    request: web.Request, runtime: Runtime, routed: Routed, body: bytes, call: Call, before: Meaning | None = None
) -> UpstreamReply:
    """Forward once: a call whose fate is unknown is never retried behind the audit log's back.
    Its headers go as they came, names in their own case; a call passed through may bring back
    an answer as large as it may send (an API proxy bundle exported)."""
    forwarded = time.perf_counter()
    limit = None if routed.operation.audited else _pass_through_limit(runtime)
    try:
        return await runtime.upstream.forward(
            request.method,
            routed.target,
            received(request.raw_headers),
            body,
            request_id=call.public_id,
            max_body=limit,
        )
    except UpstreamError as exc:
        if exc.status is not None:
            raise _answer_lost(routed, call, exc, exc.status, before) from None
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
            record=records.outcome(call, fate, error_code=error_code) if routed.operation.audited else None,
            if_unrecorded=errors.AUDIT_UNAVAILABLE.response(
                f"{failure.message} ({exc.detail}), and the outcome could not be recorded; the intent stays pending in the audit log"
            ),
        ) from None
    finally:
        runtime.metrics.upstream_seconds.observe(time.perf_counter() - forwarded)


def _answer_lost(routed: Routed, call: Call, exc: UpstreamError, status: int, before: Meaning | None) -> Refusal:
    """The upstream answered (its status was read) but its answer cannot reach the caller: too
    large, cut off, late, or with a head that cannot be passed on. The status says what became
    of the call, so the record says it too (without a snapshot), and so does the 502."""
    operation = routed.operation
    outcome = outcome_of(status, deletes=operation.method == "DELETE")
    error_code = f"upstream.{exc.kind}"
    call.upstream_status, call.error_code = status, error_code
    took = f", so the {operation.effect} took effect upstream" if 200 <= status < 300 else ""
    lost = f"its answer could not be passed on: {exc.detail}"
    app, client_id = _app_and_key(routed, call, None, None, before)
    return Refusal(
        errors.UPSTREAM_ANSWER_LOST.response(f"The upstream answered {status}{took}, but {lost}"),
        record=records.outcome(
            call, outcome, upstream_status=status, error_code=error_code, app=app, client_id=client_id
        )
        if operation.audited
        else None,
        if_unrecorded=errors.AUDIT_UNAVAILABLE.response(
            f"The upstream answered {status}, but {lost}; and the outcome could not be recorded: "
            "the intent stays pending in the audit log"
        ),
    )


def _app_and_key(
    routed: Routed, call: Call, app: str | None, client_id: str | None, before: Meaning | None
) -> tuple[str | None, str | None]:
    """The record's ``app`` and ``client_id``: what the answer names (``app``, ``client_id``),
    else the pre-image, else the path; and the consumer key the call acts on, fingerprinted,
    whenever its path or body names one. So a query by either finds every call on them."""
    if before is not None:
        app, client_id = app or before.app, client_id or before.client_id
    operation = routed.operation
    if operation.secret == "key" or operation.body_secret == "consumerKey":
        client_id = call.token_sha256
    return app or routed.values.get("app"), client_id


async def _write_outcome(
    runtime: Runtime,
    routed: Routed,
    call: Call,
    reply: UpstreamReply,
    hidden: frozenset[str] = frozenset(),
    before: Meaning | None = None,
) -> None:
    """What the answer means, durable before the caller hears anything. An answer that carries no
    resource (the 204 of an action) leaves the app and consumer key to the pre-image, so that a
    query by either finds the call."""
    operation = routed.operation
    read = meaning(
        reply,
        keep_raw_tokens=runtime.config.audit.store_raw_tokens,
        deletes=operation.method == "DELETE",
        carries_resource=not operation.enumerate_tokens,
        hidden=hidden,
    )
    call.upstream_status = reply.status
    call.escaped = tuple(dict.fromkeys(read.escaped + (before.escaped if before else ())))
    if operation.enumerate_tokens and (submitted := number_in(reply)) is not None:
        call.note("submitted", submitted)
    app, client_id = _app_and_key(routed, call, read.app, read.client_id, before if read.snapshot is None else None)
    record = records.outcome(
        call,
        read.outcome,
        upstream_status=reply.status,
        error_code=read.error_code,
        app=app,
        client_id=client_id,
        snapshot=read.snapshot,
    )
    await _write_answered(
        runtime, call, record, "the outcome could not be recorded; the intent stays pending in the audit log"
    )


async def _pass_through(
    request: web.Request, runtime: Runtime, routed: Routed, body: bytes, call: Call
) -> web.StreamResponse:
    """A call the gateway does not audit: forwarded as exactly as an audited one, and logged.
    With ``audit.reads``, a read is recorded once answered (who read what, the path masked)."""
    read = routed.operation.role == "read"
    recorded = read and runtime.config.audit.reads
    if recorded:
        call.action, call.resource_type = PASS_THROUGH_READ.action, READ_RESOURCE_TYPE
        of = routed.read_of
        if of is not None:  # a credential: named and fingerprinted as a write on it would be
            call.resource_type, call.resource = of.resource_type, routed.resource
            keep_raw = of.resource_type.endswith("token") and runtime.config.audit.store_raw_tokens
            call.target(routed.org, routed.secret, keep_raw=keep_raw)
    reply = await _forward(request, runtime, routed, body, call)
    call.upstream_status = reply.status
    if recorded:
        outcome = outcome_for_status(reply.status)
        record = records.read(call, Outcome.SUCCEEDED if outcome is Outcome.DELETED else outcome, reply.status, None)
        await _write_answered(runtime, call, record, "the read could not be recorded (audit.reads)")
    return PassThrough(reply)


async def _write(runtime: Runtime, call: Call, stage: str, record: AuditRecord, unrecorded: web.Response) -> None:
    """Write a record the call cannot go on without; if it cannot be, answer ``unrecorded``."""
    if not await _recorded(runtime, call, stage, record):
        raise Refusal(unrecorded)


async def _write_answered(runtime: Runtime, call: Call, record: AuditRecord, unrecorded: str) -> None:
    """Write what the upstream's answer was; if it cannot be, the caller hears that it went
    through upstream but was not recorded (``unrecorded`` says what), never the answer itself."""
    _settled(call, record)
    message = f"The upstream answered {call.upstream_status}, but {unrecorded}"
    await _write(runtime, call, "outcome", record, errors.AUDIT_UNAVAILABLE.response(message))


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


def _refusal(
    call: Call, error: errors.GatewayError, outcome: Outcome, message: str, *, recorded: bool = True
) -> Refusal:
    """A refusal of the gateway's own, recorded unless it is of a call only passed through
    (whose reads and writes are logged, not audited)."""
    call.error_code = error.code
    return Refusal(error.response(message), record=records.refusal(call, outcome, error.code) if recorded else None)


def _json(reply: UpstreamReply) -> Any:
    try:
        return orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return None


def _json_document(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def _body_field(body: bytes, name: str) -> str | None:
    document = _json_document(body)
    value = document.get(name) if isinstance(document, dict) else None
    return value if isinstance(value, str) and value else None
