"""The audit trail over HTTP: ``GET /audit/events`` and ``GET /audit/events/{id}``.

Basic auth like the token endpoint; the user needs the ``audit`` role and sees only records of
their own organisations. Pages are newest first with a keyset cursor (``next``), so a page
boundary stays put while new records arrive: no duplicates, no gaps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import hdrs, web

from gateway import errors
from gateway.audit.fingerprint import fingerprint
from gateway.audit.formats import as_json
from gateway.audit.query import (
    AuditFilter, decode_cursor, encode_cursor, parse_outcome, parse_sha256, parse_time, positive_int, quoted,
)
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import AuditStoreError
from gateway.auth import AUDIT, AuthenticationError, Authenticator, Throttled, User
from gateway.config import ALL_ORGS

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


def add_routes(app: web.Application) -> None:
    app.router.add_get("/audit/events", list_events, allow_head=False)
    app.router.add_get("/audit/events/{id}", get_event, allow_head=False)


async def list_events(request: web.Request) -> web.Response:
    user = await _auditor(request)
    if isinstance(user, web.Response):
        return user
    values: dict[str, Any] = {}
    for name, text in request.query.items():
        if name not in PARAMETERS:
            return errors.BAD_REQUEST.response(f"Unknown parameter {name}; expected one of {', '.join(PARAMETERS)}")
        field, parse = PARAMETERS[name]
        if field in values:
            return errors.BAD_REQUEST.response(f"Parameter {name} is given twice (or with token/token_sha256 both)")
        try:
            values[field] = parse(text)
        except ValueError as exc:
            return errors.BAD_REQUEST.response(f"Invalid parameter {name}: {exc}")
    requested = values.get("org")
    if requested is not None and not user.may(AUDIT, requested):
        return errors.FORBIDDEN.response(f"User {user.name} may not read the audit trail of organization {requested}")
    limit = values.pop("limit", 100)
    selection = AuditFilter(**values, limit=limit + 1, orgs=_scope(user))
    try:
        records = await request.app[AUDIT_STORE].query(selection)
    except AuditStoreError:
        return errors.AUDIT_UNAVAILABLE.response("The audit log cannot be read right now")
    page = records[:limit]
    more = len(records) > limit
    body = {"events": [as_json(record) for record in page],
            "next": encode_cursor(page[-1].time, page[-1].id) if more and page[-1].id else None}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def get_event(request: web.Request) -> web.Response:
    user = await _auditor(request)
    if isinstance(user, web.Response):
        return user
    text = request.match_info["id"]
    try:
        record_id = positive_int(text)
    except ValueError as exc:
        return errors.BAD_REQUEST.response(f"Invalid record id: {exc}")
    try:
        record = await request.app[AUDIT_STORE].get(record_id)
    except AuditStoreError:
        return errors.AUDIT_UNAVAILABLE.response("The audit log cannot be read right now")
    scope = _scope(user)
    if record is None or (scope is not None and record.org not in scope):
        return errors.NOT_FOUND.response(f"No audit record {record_id} that user {user.name} may read")
    return web.Response(body=orjson.dumps(as_json(record)), content_type="application/json")


async def _auditor(request: web.Request) -> User | web.Response:
    """The calling user if they hold the audit role; otherwise the refusal to send."""
    try:
        user = await request.app[AUDIT_AUTHENTICATOR].authenticate(request.headers.get(hdrs.AUTHORIZATION), request.remote)
    except Throttled as exc:
        return errors.too_many_attempts(exc.retry_after)
    except AuthenticationError:
        return errors.unauthorized()
    if not user.may(AUDIT, None):
        return errors.FORBIDDEN.response(f"User {user.name} may not read the audit trail (role audit)")
    return user


def _scope(user: User) -> frozenset[str] | None:
    return None if ALL_ORGS in user.orgs else user.orgs
