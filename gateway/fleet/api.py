"""``GET /audit/events`` on the collector: the gateway's query API, across the fleet.

The same filters, roles and organisation scoping as a sidecar's own API (``gateway.audit_api``),
plus ``instance``. Every record carries its ``instance``; one record is
``GET /audit/events/{instance}/{id}`` (ids are only unique within an instance). Pages are newest
first with a keyset cursor over (time, instance, id). Every read is logged (``audit_read``).
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
from aiohttp import web

from gateway import errors
from gateway.audit.filters import FILTERS
from gateway.audit.formats import as_json
from gateway.audit.query import AuditFilter
from gateway.audit.store import AuditStoreError
from gateway.audit_api import PAGING, as_logged
from gateway.auth import AUDIT, AmbiguousCredentials, AuthenticationError, ChecksBusy, Throttled, User, authorization
from gateway.config import ALL_ORGS, INSTANCE_NAME
from gateway.fleet.state import COLLECTOR, Collector
from gateway.fleet.store import Located
from gateway.fleet.values import MAX_ID

MAX_LIMIT = 1000
FLEET_PARAMETERS = {**{item.name: (item.field, item.parse) for item in FILTERS}, "limit": ("limit", PAGING["limit"])}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/audit/events", list_events, allow_head=False)
    app.router.add_get("/audit/events/{instance}/{id}", get_event, allow_head=False)


def encode_cursor(located: Located) -> str:
    raw = f"{located.record.time}|{located.instance}|{located.record.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, str, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        record_time, instance, record_id = raw.split("|")
        if not record_time or not INSTANCE_NAME.fullmatch(instance) or not _is_record_id(record_id):
            raise ValueError
        return record_time, instance, int(record_id)
    except ValueError:
        raise ValueError(f"{text!r} is not a cursor given by a previous page") from None


def _is_record_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) <= MAX_ID


def _instance(text: str) -> str:
    if not INSTANCE_NAME.fullmatch(text):
        raise ValueError(f"{text[:140]!r} is not an instance id")
    return text


async def list_events(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    read = _Read(request, "/audit/events", as_logged(request.query.items()))
    user = await _auditor(request, collector, read)
    if isinstance(user, web.Response):
        return read.done(user)
    values: dict[str, Any] = {}
    instance: str | None = None
    after: tuple[str, str, int] | None = None
    for name, text in request.query.items():
        try:
            if name == "instance":
                if instance is not None:
                    raise _Twice(name)
                instance = _instance(text)
                continue
            if name == "cursor":
                if after is not None:
                    raise _Twice(name)
                after = decode_cursor(text)
                continue
            if name not in FLEET_PARAMETERS:
                expected = ", ".join([*FLEET_PARAMETERS, "instance", "cursor"])
                return read.done(errors.BAD_REQUEST.response(f"Unknown parameter {name}; expected one of {expected}"))
            target, parse = FLEET_PARAMETERS[name]
            if target in values:
                raise _Twice(name)
            values[target] = parse(text)
        except _Twice:
            return read.done(
                errors.BAD_REQUEST.response(f"Parameter {name} is given twice (or with token/token_sha256 both)")
            )
        except ValueError as exc:
            return read.done(errors.BAD_REQUEST.response(f"Invalid parameter {name}: {exc}"))
    requested = values.get("org")
    if requested is not None and not user.may(AUDIT, requested):
        collector.users.throttle.failed(request.remote, user.name)
        return read.done(
            errors.FORBIDDEN.response(f"User {user.name} may not read the audit trail of organization {requested}")
        )
    limit = min(values.pop("limit", 100), MAX_LIMIT)
    selection = AuditFilter(**values, limit=limit + 1, orgs=None if ALL_ORGS in user.orgs else user.orgs)
    try:
        found = await collector.store.scoped(instance).located(selection, after)
    except AuditStoreError:
        return read.done(errors.AUDIT_UNAVAILABLE.response("The fleet store cannot be read right now"))
    page = found[:limit]
    read.records = len(page)
    body = {
        "events": [{"instance": item.instance, **as_json(item.record)} for item in page],
        "next": encode_cursor(page[-1]) if len(found) > limit else None,
    }
    return read.done(web.Response(body=orjson.dumps(body), content_type="application/json"))


async def get_event(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    instance, text = request.match_info["instance"], request.match_info["id"]
    read = _Read(request, "/audit/events/{instance}/{id}", {"instance": instance[:140]})
    user = await _auditor(request, collector, read)
    if isinstance(user, web.Response):
        return read.done(user)
    if not INSTANCE_NAME.fullmatch(instance) or not _is_record_id(text):
        return read.done(errors.BAD_REQUEST.response("Invalid record: expected /audit/events/INSTANCE/ID"))
    try:
        record = await collector.store.scoped(instance).get(int(text))
    except AuditStoreError:
        return read.done(errors.AUDIT_UNAVAILABLE.response("The fleet store cannot be read right now"))
    if record is None or (ALL_ORGS not in user.orgs and record.org not in user.orgs):
        read.records = 0
        return read.done(
            errors.NOT_FOUND.response(f"No audit record {text} of instance {instance} that user {user.name} may read")
        )
    read.records = 1
    return read.done(
        web.Response(body=orjson.dumps({"instance": instance, **as_json(record)}), content_type="application/json")
    )


class _Twice(Exception):
    pass


class _Read:
    """One read of the fleet's trail, logged when answered (an audit of the auditors)."""

    def __init__(self, request: web.Request, route: str, filters: dict[str, str | None]) -> None:
        self.request = request
        self.route = route
        self.filters = filters
        self.actor: str | None = None
        self.records: int | None = None
        self.started = time.perf_counter()

    def done(self, response: web.Response) -> web.Response:
        error_code = None
        if response.status >= 400 and response.body is not None:
            error_code = orjson.loads(bytes(response.body)).get("code")  # type: ignore[arg-type]
        self.request.app[COLLECTOR].log.info(
            "audit_read",
            client_ip=self.request.remote,
            actor=self.actor,
            path=self.route,
            filters=self.filters,
            records=self.records,
            status=response.status,
            error_code=error_code,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 3),
        )
        return response


async def _auditor(request: web.Request, collector: Collector, read: _Read) -> User | web.Response:
    try:
        user = await collector.users.authenticate(authorization(request.headers), request.remote)
    except AmbiguousCredentials as exc:
        return errors.BAD_REQUEST.response(str(exc))
    except Throttled as exc:
        read.actor = exc.claimed
        return errors.too_many_attempts(exc.retry_after)
    except ChecksBusy as exc:
        read.actor = exc.claimed
        return errors.login_busy(exc.retry_after)
    except AuthenticationError as exc:
        read.actor = exc.claimed
        return errors.unauthorized()
    read.actor = user.name
    if not user.may(AUDIT, None):
        collector.users.throttle.failed(request.remote, user.name)
        return errors.FORBIDDEN.response(f"User {user.name} may not read the audit trail (role audit)")
    return user
