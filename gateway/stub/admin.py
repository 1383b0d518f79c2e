"""The stub's admin endpoints under ``/_stub/``: the request journal, new tokens, the fault in force.

Off unless asked for (``make_stub_app(seed, admin=True)``, ``gateway stub --admin``,
``stub.admin = true``). They take no credentials, so they belong on a stub only its own tests
can reach. Admin requests are never journaled, delayed or faulted: a test can always clear a
fault it set.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.stub.errors import json_error
from gateway.stub.faults import FaultError, Faults, parse_fault
from gateway.stub.journal import Journal
from gateway.stub.seed import SeedError, check_tokens, exact_json
from gateway.stub.store import STORE

ADMIN_PREFIX = "/_stub/"
BAD_REQUEST = "stub.bad_request"

JOURNAL = web.AppKey("stub_journal", Journal)
FAULTS = web.AppKey("stub_faults", Faults)


def add_admin(app: web.Application) -> None:
    """Give ``app`` a journal, a fault slot and the routes to drive them."""
    app[JOURNAL] = Journal()
    app[FAULTS] = Faults()
    app.router.add_get(ADMIN_PREFIX + "requests", list_requests)
    app.router.add_delete(ADMIN_PREFIX + "requests", clear_requests)
    app.router.add_post(ADMIN_PREFIX + "tokens", create_tokens)
    app.router.add_get(ADMIN_PREFIX + "fault", show_fault)
    app.router.add_put(ADMIN_PREFIX + "fault", set_fault)
    app.router.add_delete(ADMIN_PREFIX + "fault", clear_fault)


def is_admin(request: web.Request) -> bool:
    return request.path.startswith(ADMIN_PREFIX)


async def list_requests(request: web.Request) -> web.Response:
    """The journal, oldest first."""
    return web.json_response({"requests": request.app[JOURNAL].entries()})


async def clear_requests(request: web.Request) -> web.Response:
    request.app[JOURNAL].clear()
    return web.Response(status=204)


async def create_tokens(request: web.Request) -> web.Response:
    """Add tokens to an organisation, kept as given: ``{"org": ..., "tokens": [...]}``."""
    try:
        org, tokens = _parse_creation(await _json_body(request))
    except (InvalidJSON, SeedError) as exc:
        return _bad_request(str(exc))
    request.app[STORE].add(org, tokens)
    return web.json_response({"created": len(tokens)}, status=201)


async def show_fault(request: web.Request) -> web.Response:
    """The fault in force (``times`` counts the requests it still has to hit), or null."""
    fault = request.app[FAULTS].current
    return web.json_response(None if fault is None else fault.to_json())


async def set_fault(request: web.Request) -> web.Response:
    """Replace the fault in force; answers it as GET would."""
    try:
        fault = parse_fault(await _json_body(request))
    except (InvalidJSON, FaultError) as exc:
        return _bad_request(str(exc))
    request.app[FAULTS].current = fault
    return web.json_response(fault.to_json())


async def clear_fault(request: web.Request) -> web.Response:
    request.app[FAULTS].current = None
    return web.Response(status=204)


class InvalidJSON(Exception):
    """A request body that is not JSON."""


async def _json_body(request: web.Request) -> Any:
    try:
        return exact_json(await request.read())
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidJSON(f"invalid JSON: {exc}") from None


def _parse_creation(data: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(data, dict):
        raise SeedError('expected a JSON object with "org" and "tokens"')
    for name in data:
        if name not in ("org", "tokens"):
            raise SeedError(f'{name}: unknown field; expected "org" and "tokens"')
    org = data.get("org")
    if not isinstance(org, str) or not org:
        raise SeedError("org: expected a non-empty organisation name")
    return org, check_tokens(data.get("tokens"), "tokens")


def _bad_request(message: str) -> web.Response:
    return json_error(400, BAD_REQUEST, message)
