"""The stub's admin endpoints under ``/_stub/``: the request journal, the data, the fault in force.

Off unless asked for (``make_stub_app(seed, admin=True)``, ``gateway stub --admin``,
``stub.admin = true``). They take no credentials, so they belong on a stub only its own tests
can reach. Admin requests are never journaled, delayed or faulted: a test can always clear a
fault it set.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.stub.errors import ApigeeError, json_error
from gateway.stub.faults import FaultError, Faults, parse_fault
from gateway.stub.journal import Journal
from gateway.stub.model import App, Org, now_ms, random_text
from gateway.stub.seed import SeedError, check_tokens, exact_json
from gateway.stub.state import STATE, State
from gateway.stub.store import APPROVED

ADMIN_PREFIX = "/_stub/"
BAD_REQUEST = "stub.bad_request"
NOT_FOUND = "stub.not_found"

JOURNAL = web.AppKey("stub_journal", Journal)
FAULTS = web.AppKey("stub_faults", Faults)


def add_admin(app: web.Application) -> None:
    """Give ``app`` a journal, a fault slot and the routes to drive them."""
    app[JOURNAL] = Journal()
    app[FAULTS] = Faults()
    app.router.add_get(ADMIN_PREFIX + "requests", list_requests)
    app.router.add_delete(ADMIN_PREFIX + "requests", clear_requests)
    app.router.add_post(ADMIN_PREFIX + "tokens", create_tokens)
    app.router.add_get(ADMIN_PREFIX + "orgs/{org}", show_org)
    app.router.add_post(ADMIN_PREFIX + "orgs/{org}/apps/{app_id}/tokens", create_app_tokens)
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
    request.app[STATE].add_tokens(org, tokens)
    return web.json_response({"created": len(tokens)}, status=201)


async def show_org(request: web.Request) -> web.Response:
    """Everything an organisation holds, for tests to check state: secrets included, as stored."""
    state = request.app[STATE]
    name = request.match_info["org"]
    org = state.orgs.get(name)
    if org is None:
        return json_error(404, NOT_FOUND, f"no organisation {name}")
    return web.json_response(org_view(state, org))


async def create_app_tokens(request: web.Request) -> web.Response:
    """Issue access tokens to an app, as its runtime would: ``{"count", "enduser", "scope", "expires_in"}``, all optional.

    Each is shaped as Apigee answers a token (the documented sample's fields, plus ``appId`` and
    ``appUserId`` for the end user), under the app's first approved key. Answers them, whole.
    """
    state = request.app[STATE]
    org = state.orgs.get(request.match_info["org"])
    try:
        if org is None:
            raise ApigeeError(404, NOT_FOUND, f"no organisation {request.match_info['org']}")
        app = org.app_by_id(request.match_info["app_id"])
        options = _parse_app_tokens(await _json_body(request))
    except ApigeeError as exc:
        return json_error(exc.status, NOT_FOUND if exc.status == 404 else BAD_REQUEST, exc.message)
    except (InvalidJSON, SeedError) as exc:
        return _bad_request(str(exc))
    credential = next((c for c in app.credentials if c.status == APPROVED), None)
    if credential is None:
        return _bad_request(f"app {app.app_id} has no approved key to issue tokens under")
    count = options.pop("count")
    products = [ref.name for ref in credential.products]
    made = [app_token(app, credential.consumer_key, products, **options) for _ in range(count)]
    state.add_tokens(org.name, made, key=credential.consumer_key)
    return web.json_response({"tokens": made}, status=201)


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


APP_TOKEN_FIELDS = ("count", "enduser", "scope", "expires_in")


def _parse_app_tokens(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SeedError(f"expected a JSON object with any of {', '.join(APP_TOKEN_FIELDS)}")
    for name in data:
        if name not in APP_TOKEN_FIELDS:
            raise SeedError(f"{name}: unknown field; expected any of {', '.join(APP_TOKEN_FIELDS)}")
    count = data.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_APP_TOKENS:
        raise SeedError(f"count: expected a whole number from 1 to {MAX_APP_TOKENS}")
    for name in ("enduser", "scope"):
        if not isinstance(data.get(name, ""), str):
            raise SeedError(f"{name}: expected a string")
    lifetime = data.get("expires_in", 1800)
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime < 0:
        raise SeedError("expires_in: expected a whole number of seconds, 0 or more")
    return {"count": count, "end_user": data.get("enduser", ""), "scope": data.get("scope", ""), "lifetime": lifetime}


MAX_APP_TOKENS = 1000


def app_token(app: App, key: str, products: list[str], *, end_user: str, scope: str, lifetime: int) -> dict[str, Any]:
    """A new access token of ``app`` under ``key``, in the documented sample's shape and order."""
    issued = now_ms()
    token: dict[str, Any] = {"apiProducts": products, "app": app.name, "appId": app.app_id}
    if end_user:
        token["appUserId"] = end_user
    token.update(
        {
            "attributes": [],
            "clientId": key,
            "createdAt": issued,
            "createdBy": "defaultUser",
            "expiresAt": issued + lifetime * 1000,
            "grantType": "password" if end_user else "client_credentials",
            "issuedAt": issued,
            "lastModifiedAt": issued,
            "lastModifiedBy": "defaultUser",
            "refreshCount": 0,
            "refreshToken": random_text(32),
            "scope": scope,
            "status": APPROVED,
            "token": random_text(28),
            "tokenType": "BearerToken",
        }
    )
    return token


def org_view(state: State, org: Org) -> dict[str, Any]:
    """An organisation as the admin API shows it: entities in full, each token with its links."""
    by_key = org.apps_by_key()

    def owner(entity: Any) -> dict[str, Any]:
        return {**entity.to_json(), "apps": [app.to_json() for app in entity.apps.values()]}

    def token(snapshot: dict[str, Any]) -> dict[str, Any]:
        app = state.app_of(org.name, snapshot, by_key)
        return {
            "token": snapshot.get("token"),
            "status": snapshot.get("status"),
            "appId": None if app is None else app.app_id,
            "endUser": snapshot.get("appUserId"),
            "refreshTokenStatus": state.tokens.refresh_status(org.name, snapshot.get("token", "")),
            "snapshot": snapshot,
        }

    return {
        "organization": org.to_json(),
        "apiproducts": [product.to_json() for product in org.products.values()],
        "developers": [owner(developer) for developer in org.developers.values()],
        "companies": [owner(company) for company in org.companies.values()],
        "tokens": [token(snapshot) for snapshot in state.tokens.tokens(org.name)],
        "authorizationcodes": list(org.authorization_codes.values()),
        "oauth1accesstokens": list(org.oauth1_access_tokens.values()),
        "oauth1requesttokens": list(org.oauth1_request_tokens.values()),
        "oauth1verifiers": list(org.oauth1_verifiers.values()),
        "pendingRevocations": state.pending.count(org.name),
    }


def _bad_request(message: str) -> web.Response:
    return json_error(400, BAD_REQUEST, message)
