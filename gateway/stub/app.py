"""An in-memory emulator of Apigee Edge's access-token endpoints.

It answers as the upstream documentation says, byte for byte, so the gateway, its tests and its
users' own tests can run without an Apigee account. It knows nothing of the gateway: both talk
only HTTP to each other.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from gateway.basic import MalformedCredentials, parse_basic
from gateway.stub import jackson
from gateway.stub.admin import FAULTS, JOURNAL, add_admin, is_admin
from gateway.stub.errors import error_response
from gateway.stub.faults import answer
from gateway.stub.journal import entry
from gateway.stub.seed import Seed
from gateway.stub.store import STORE, TokenStore

INVALID_TOKEN_CODE = "keymanagement.service.invalid_account_name"
INVALID_TOKEN_MESSAGE = "Invalid Access Token"

TOKEN_ROUTE = "/v1/{alias:o|organizations}/{org}/oauth2/accesstokens/{token}"

USERS = web.AppKey("stub_users", dict)


def make_stub_app(seed: Seed, *, admin: bool = False, delay: float = 0.0) -> web.Application:
    """The stub as an aiohttp application, seeded with ``seed``.

    ``admin`` adds the ``/_stub/`` endpoints (request journal, token creation, faults);
    ``delay`` holds every emulated answer back that many seconds, as a slow Apigee would.
    Without either, the request path is exactly the plain emulator's, for benchmarks.
    """
    app = web.Application(middlewares=[_rehearsal(admin=admin, delay=delay)] if admin or delay else [])
    app[STORE] = TokenStore(seed.orgs, seed.generated)
    app[USERS] = dict(seed.users)
    if admin:
        add_admin(app)
    app.router.add_route("GET", TOKEN_ROUTE, token_resource)
    app.router.add_route("DELETE", TOKEN_ROUTE, token_resource)
    app.router.add_route("*", "/{tail:.*}", unknown_path)
    return app


async def token_resource(request: web.Request) -> web.Response:
    """GET returns a token; DELETE returns it and removes it, as Apigee does."""
    if not _authorized(request):
        return error_response(
            request, 401, "security.unauthorized", "Invalid credentials",
            headers={hdrs.WWW_AUTHENTICATE: 'Basic realm="Apigee stub"'},
        )
    store = request.app[STORE]
    org, token = request.match_info["org"], request.match_info["token"]
    snapshot = store.delete(org, token) if request.method == hdrs.METH_DELETE else store.get(org, token)
    if snapshot is None:
        return error_response(request, 404, INVALID_TOKEN_CODE, INVALID_TOKEN_MESSAGE)
    return web.Response(body=jackson.dumps(snapshot).encode(), content_type="application/json")


async def unknown_path(request: web.Request) -> web.Response:
    return error_response(
        request, 404, "stub.unknown_path", f"The stub does not emulate {request.method} {request.path}"
    )


def _rehearsal(*, admin: bool, delay: float) -> Middleware:
    """Journal each emulated request, then hold it back and apply the fault in force, if any."""

    @web.middleware
    async def rehearse(request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = None
        if admin:
            if is_admin(request):
                return await handler(request)
            request.app[JOURNAL].add(entry(request))
            fault = request.app[FAULTS].take()
        if delay:
            await asyncio.sleep(delay)
        if fault is not None:
            faulted = await answer(request, fault)
            if faulted is not None:
                return faulted
        return await handler(request)

    return rehearse


def _authorized(request: web.Request) -> bool:
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        return False
    try:
        credentials = parse_basic(header)
    except MalformedCredentials:
        return False
    expected = request.app[USERS].get(credentials.user)
    return expected is not None and hmac.compare_digest(expected.encode(), credentials.password.encode())


@asynccontextmanager
async def serve_stub(
    seed: Seed, host: str = "127.0.0.1", port: int = 0, *, admin: bool = False, delay: float = 0.0
) -> AsyncIterator[str]:
    """Run the stub on ``host:port`` (0: any free port) and yield its base URL."""
    runner = web.AppRunner(make_stub_app(seed, admin=admin, delay=delay), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{_url_host(bound_host)}:{bound_port}"
    finally:
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
