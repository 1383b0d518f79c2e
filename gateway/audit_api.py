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
from typing import Any, Protocol

import orjson
from aiohttp import web

from gateway import errors
from gateway.audit.filters import BY_NAME, FilterError, selection
from gateway.audit.fingerprint import fingerprint
from gateway.audit.formats import as_json
from gateway.audit.query import decode_cursor, encode_cursor, parse_sha256, positive_int, quoted
from gateway.audit.records import json_default
from gateway.audit.store import AuditStore, AuditStoreError
from gateway.auth import AUDIT, Authenticator, User, authenticate
from gateway.call import REQUEST_ID, Call
from gateway.config import ALL_ORGS
from gateway.logs import Logger
from gateway.refusal import Refusal

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class AuditServices(Protocol):
    """What the audit API reads: the running gateway (``gateway.runtime.Runtime``) has it all."""

    authenticator: Authenticator
    store: AuditStore
    log: Logger


Services = Callable[[web.Request], AuditServices]


def _limit(text: str) -> int:
    value = positive_int(text)
    if value > MAX_LIMIT:
        raise ValueError(f"{quoted(text)} is over the maximum of {MAX_LIMIT}")
    return value


PAGING: dict[str, Callable[[str], Any]] = {"limit": _limit, "cursor": decode_cursor}
"""The parameters besides the filters (``gateway.audit.filters``)."""
PARAMETERS = (*BY_NAME, *PAGING)
SECRET_PARAMETERS = {"token": "token_sha256", "client_id": "client_id_sha256"}
"""Parameters whose values are secrets (a raw token, a consumer key): logged as fingerprints."""


@dataclass(slots=True)
class AuditRead:
    """One read of the trail: who asked (``call``), what, and how many records they got."""

    call: Call
    route: str
    filters: dict[str, str | None] = field(default_factory=dict)
    """The parameters as given, but secrets only as fingerprints (see ``as_logged``)."""
    record_id: int | None = None
    records: int | None = None

    def refuse(self, error: errors.GatewayError, message: str | None = None) -> Refusal:
        self.call.error_code = error.code
        return Refusal(error.response(message))

    def log(self, log: Logger, status: int) -> None:
        call = self.call
        log.info(
            "audit_read",
            **call.ids,
            client_ip=call.client_ip,
            actor=call.actor,
            path=self.route,
            record_id=self.record_id,
            filters=self.filters,
            records=self.records,
            status=status,
            error_code=call.error_code,
            latency_ms=call.latency_ms(),
        )


def as_logged(parameters: Iterable[tuple[str, str]]) -> dict[str, str | None]:
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


Handler = Callable[[web.Request, AuditServices, AuditRead], Awaitable[web.Response]]


def add_routes(app: web.Application, services: Services) -> None:
    """The API's routes, reading the gateway's services through ``services``."""

    def logged(route: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        """The handler, with the one log line every read gets (and the gateway's own 500 on a bug)."""

        async def read(request: web.Request) -> web.Response:
            running = services(request)
            read = AuditRead(Call.begin(request), route)
            try:
                response = await handler(request, running, read)
            except Refusal as refusal:
                response = refusal.response
            except Exception as exc:
                running.log.error("request_failed", **read.call.ids, error=type(exc).__name__)
                read.call.error_code = errors.INTERNAL_ERROR.code
                response = errors.INTERNAL_ERROR.response()
            response.headers.setdefault(REQUEST_ID, read.call.public_id)
            read.log(running.log, response.status)
            return response

        return read

    app.router.add_get("/audit/events", logged("/audit/events", list_events), allow_head=True)
    app.router.add_get("/audit/events/{id}", logged("/audit/events/{id}", get_event), allow_head=True)


async def list_events(request: web.Request, running: AuditServices, read: AuditRead) -> web.Response:
    read.filters = as_logged(request.query.items())
    user = await auditor(request, running.authenticator, read)
    given, paging, seen = [], {}, set()
    for name, text in request.query.items():
        if name not in PARAMETERS:
            raise read.refuse(errors.BAD_REQUEST, f"Unknown parameter {name}; expected one of {', '.join(PARAMETERS)}")
        if name in seen:
            raise read.refuse(errors.BAD_REQUEST, f"Parameter {name} is given twice")
        seen.add(name)
        try:
            if name in PAGING:
                paging[name] = PAGING[name](text)
            else:
                given.append((BY_NAME[name], BY_NAME[name].parse(text)))
        except ValueError as exc:
            raise read.refuse(errors.BAD_REQUEST, f"Invalid parameter {name}: {exc}") from None
    limit = paging.get("limit", DEFAULT_LIMIT)
    try:
        chosen = selection(given, limit=limit + 1, before=paging.get("cursor"), orgs=scope(user))
    except FilterError as exc:
        raise read.refuse(errors.BAD_REQUEST, f"Parameters that mean the same filter: {exc}") from None
    if chosen.org is not None and not user.may(AUDIT, chosen.org):
        raise forbidden(
            request,
            running.authenticator,
            read,
            user,
            f"User {user.name} may not read the audit trail of organization {chosen.org}",
        )
    try:
        records = await running.store.query(chosen)
    except AuditStoreError:
        raise read.refuse(errors.AUDIT_UNAVAILABLE, "The audit log cannot be read right now") from None
    page = records[:limit]
    more = len(records) > limit
    read.records = len(page)
    body = {
        "events": [as_json(record) for record in page],
        "next": encode_cursor(page[-1].time, page[-1].id) if more and page[-1].id else None,
    }
    return web.Response(body=orjson.dumps(body, default=json_default), content_type="application/json")


async def get_event(request: web.Request, running: AuditServices, read: AuditRead) -> web.Response:
    text = request.match_info["id"]
    try:
        record_id: int | None = positive_int(text)
    except ValueError as exc:
        record_id, invalid = None, str(exc)
    read.record_id = record_id
    user = await auditor(request, running.authenticator, read)
    if record_id is None:
        raise read.refuse(errors.BAD_REQUEST, f"Invalid record id: {invalid}")
    try:
        record = await running.store.get(record_id)
    except AuditStoreError:
        raise read.refuse(errors.AUDIT_UNAVAILABLE, "The audit log cannot be read right now") from None
    orgs = scope(user)
    if record is None or (orgs is not None and record.org not in orgs):
        read.records = 0
        raise read.refuse(errors.NOT_FOUND, f"No audit record {record_id} that user {user.name} may read")
    read.records = 1
    return web.Response(body=orjson.dumps(as_json(record), default=json_default), content_type="application/json")


async def auditor(request: web.BaseRequest, authenticator: Authenticator, read: AuditRead) -> User:
    """The calling user if they hold the audit role; otherwise a Refusal (never audited as a
    record: reads are logged instead, and refusals counted by the throttle)."""
    user = await authenticate(authenticator, request, read.call)
    if not user.may(AUDIT, None):
        raise forbidden(
            request, authenticator, read, user, f"User {user.name} may not read the audit trail (role audit)"
        )
    return user


def forbidden(
    request: web.BaseRequest, authenticator: Authenticator, read: AuditRead, user: User, message: str
) -> Refusal:
    """403, counted toward the throttle as a failure of the address and the user, like a wrong
    password: probing the trail without the right costs the same as guessing."""
    authenticator.throttle.failed(request.remote, user.name)
    return read.refuse(errors.FORBIDDEN, message)


def scope(user: User) -> frozenset[str] | None:
    return None if ALL_ORGS in user.orgs else user.orgs
