"""The audit trail over HTTP: ``GET /audit/events`` and ``GET /audit/events/{id}``.

Basic auth like the token endpoint; the user needs the ``audit`` role and sees only records of
their own organisations. Pages are newest first with a keyset cursor (``next``), so a page
boundary stays put while new records arrive: no duplicates, no gaps.

Reading the trail leaves a trail of its own, an audit of the auditors: every read, granted or
refused, is one ``audit_read`` log line saying who asked what (the filters, a raw token only as
its fingerprint) and how many records they got. Refusals (401, 403) count toward the login
throttle like refused deletions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from gateway import errors
from gateway.audit.fingerprint import fingerprint
from gateway.audit.formats import as_json
from gateway.audit.query import (
    AuditFilter, decode_cursor, encode_cursor, parse_outcome, parse_sha256, parse_time, positive_int, quoted,
)
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import AuditStoreError
from gateway.auth import AUDIT, AmbiguousCredentials, AuthenticationError, Authenticator, ChecksBusy, Throttled, User, authorization
from gateway.config import ALL_ORGS
from gateway.proxy import REQUEST_ID
from gateway.revoke import SERVICES, Exchange

MAX_LIMIT = 1000
AUDIT_AUTHENTICATOR = web.AppKey("audit_authenticator", Authenticator)
AUDIT_STORE = web.AppKey("audit_store", SQLiteAuditStore)


def _limit(text: str) -> int:
    value = positive_int(text)
    if value > MAX_LIMIT:
        raise ValueError(f"{quoted(text)} is over the maximum of {MAX_LIMIT}")
    return value


PARAMETERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "org": ("org", str),
    "token": ("token_sha256", fingerprint),
    "token_sha256": ("token_sha256", parse_sha256),
    "actor": ("actor", str),
    "app": ("app", str),
    "client_id": ("client_id", str),
    "outcome": ("outcome", parse_outcome),
    "since": ("since", parse_time),
    "until": ("until", parse_time),
    "limit": ("limit", _limit),
    "cursor": ("before", decode_cursor),
}
"""Query parameter -> (AuditFilter field, parser that raises ValueError with the reason)."""


@dataclass(slots=True)
class AuditRead:
    """One read of the trail: who asked (``exchange``), what, and how many records they got."""

    exchange: Exchange
    route: str
    filters: dict[str, str | None] = field(default_factory=dict)
    """The parameters as given, but secrets only as fingerprints (see ``_as_logged``)."""
    record_id: int | None = None
    records: int | None = None

    def refuse(self, error: errors.GatewayError, message: str | None = None) -> web.Response:
        self.exchange.error_code = error.code
        return error.response(message)

    def log(self, request: web.Request, status: int) -> None:
        exchange = self.exchange
        request.app[SERVICES].log.info(
            "audit_read", **exchange.ids, client_ip=exchange.client_ip, actor=exchange.actor, path=self.route,
            record_id=self.record_id, filters=self.filters, records=self.records, status=status,
            error_code=exchange.error_code, latency_ms=exchange.latency_ms(),
        )


Handler = Callable[[web.Request, AuditRead], Awaitable[web.Response]]


def _logged(route: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler, with the one log line every read gets (and the gateway's own 500 on a bug)."""

    async def logged(request: web.Request) -> web.Response:
        read = AuditRead(Exchange.begin(request), route)
        try:
            response = await handler(request, read)
        except Exception as exc:
            request.app[SERVICES].log.error("request_failed", **read.exchange.ids, error=type(exc).__name__)
            response = read.refuse(errors.INTERNAL_ERROR)
        response.headers.setdefault(REQUEST_ID, read.exchange.public_id)
        read.log(request, response.status)
        return response

    return logged


SECRET_PARAMETERS = {"token": "token_sha256", "client_id": "client_id_sha256"}
"""Parameters whose values are secrets (a raw token, a consumer key): logged as fingerprints."""


def _as_logged(parameters: Iterable[tuple[str, str]]) -> dict[str, str | None]:
    """The filters of a read, for its log line. A secret appears only as its fingerprint; a
    value that may be one by mistake (an unknown parameter's, a token_sha256 that is not a
    fingerprint) is left out, its name kept with ``None``."""
    logged: dict[str, str | None] = {}
    for name, text in parameters:
        if name in SECRET_PARAMETERS:
            logged[SECRET_PARAMETERS[name]] = fingerprint(text)
        elif name == "token_sha256":
            try:
                logged[name] = parse_sha256(text)
            except ValueError:
                logged[name] = None
        else:
            logged[name] = text if name in PARAMETERS else None
    return logged


def add_routes(app: web.Application) -> None:
    app.router.add_get("/audit/events", _logged("/audit/events", list_events), allow_head=False)
    app.router.add_get("/audit/events/{id}", _logged("/audit/events/{id}", get_event), allow_head=False)


async def list_events(request: web.Request, read: AuditRead) -> web.Response:
    read.filters = _as_logged(request.query.items())
    user = await _auditor(request, read)
    if isinstance(user, web.Response):
        return user
    values: dict[str, Any] = {}
    for name, text in request.query.items():
        if name not in PARAMETERS:
            return read.refuse(errors.BAD_REQUEST, f"Unknown parameter {name}; expected one of {', '.join(PARAMETERS)}")
        target, parse = PARAMETERS[name]
        if target in values:
            return read.refuse(errors.BAD_REQUEST, f"Parameter {name} is given twice (or with token/token_sha256 both)")
        try:
            values[target] = parse(text)
        except ValueError as exc:
            return read.refuse(errors.BAD_REQUEST, f"Invalid parameter {name}: {exc}")
    requested = values.get("org")
    if requested is not None and not user.may(AUDIT, requested):
        return _forbidden(request, read, user, f"User {user.name} may not read the audit trail of organization {requested}")
    limit = values.pop("limit", 100)
    selection = AuditFilter(**values, limit=limit + 1, orgs=_scope(user))
    try:
        records = await request.app[AUDIT_STORE].query(selection)
    except AuditStoreError:
        return read.refuse(errors.AUDIT_UNAVAILABLE, "The audit log cannot be read right now")
    page = records[:limit]
    more = len(records) > limit
    read.records = len(page)
    body = {"events": [as_json(record) for record in page],
            "next": encode_cursor(page[-1].time, page[-1].id) if more and page[-1].id else None}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def get_event(request: web.Request, read: AuditRead) -> web.Response:
    text = request.match_info["id"]
    try:
        record_id: int | None = positive_int(text)
    except ValueError as exc:
        record_id, invalid = None, str(exc)
    read.record_id = record_id
    user = await _auditor(request, read)
    if isinstance(user, web.Response):
        return user
    if record_id is None:
        return read.refuse(errors.BAD_REQUEST, f"Invalid record id: {invalid}")
    try:
        record = await request.app[AUDIT_STORE].get(record_id)
    except AuditStoreError:
        return read.refuse(errors.AUDIT_UNAVAILABLE, "The audit log cannot be read right now")
    scope = _scope(user)
    if record is None or (scope is not None and record.org not in scope):
        read.records = 0
        return read.refuse(errors.NOT_FOUND, f"No audit record {record_id} that user {user.name} may read")
    read.records = 1
    return web.Response(body=orjson.dumps(as_json(record)), content_type="application/json")


async def _auditor(request: web.Request, read: AuditRead) -> User | web.Response:
    """The calling user if they hold the audit role; otherwise the refusal to send."""
    try:
        user = await request.app[AUDIT_AUTHENTICATOR].authenticate(authorization(request.headers), request.remote)
    except AmbiguousCredentials as exc:
        return errors.BAD_REQUEST.response(str(exc))
    except Throttled as exc:
        read.exchange.actor, read.exchange.error_code = exc.claimed, errors.TOO_MANY_ATTEMPTS.code
        return errors.too_many_attempts(exc.retry_after)
    except ChecksBusy as exc:
        read.exchange.actor, read.exchange.error_code = exc.claimed, errors.LOGIN_BUSY.code
        return errors.login_busy(exc.retry_after)
    except AuthenticationError as exc:  # counted toward the throttle by the authenticator
        read.exchange.actor, read.exchange.error_code = exc.claimed, errors.UNAUTHORIZED.code
        return errors.unauthorized()
    read.exchange.actor = user.name
    if not user.may(AUDIT, None):
        return _forbidden(request, read, user, f"User {user.name} may not read the audit trail (role audit)")
    return user


def _forbidden(request: web.Request, read: AuditRead, user: User, message: str) -> web.Response:
    """403, counted toward the throttle as a failure of the address and the user, like a wrong
    password: probing the trail without the right costs the same as guessing."""
    request.app[AUDIT_AUTHENTICATOR].throttle.failed(request.remote, user.name)
    return read.refuse(errors.FORBIDDEN, message)


def _scope(user: User) -> frozenset[str] | None:
    return None if ALL_ORGS in user.orgs else user.orgs
