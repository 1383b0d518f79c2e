"""An in-memory emulator of Apigee Edge's credential surface: the management API's developers,
companies, apps, keys, products and OAuth tokens, and the login server's token endpoint.

It answers as the upstream documentation says (the documented samples byte for byte), so the
gateway, its tests and its users' own tests can run without an Apigee account. It knows nothing
of the gateway: both talk only HTTP to each other. docs/stub.md lists what it emulates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.stub import management, tokens
from gateway.stub.admin import FAULTS, JOURNAL, add_admin, is_admin
from gateway.stub.errors import error_response
from gateway.stub.faults import answer
from gateway.stub.journal import entry
from gateway.stub.oauth import LOGINS, TOKEN_PATH, token_endpoint
from gateway.stub.seed import Seed
from gateway.stub.settings import StubSettings
from gateway.stub.state import STATE, State
from gateway.stub.store import STORE


def make_stub_app(
    seed: Seed, *, admin: bool = False, delay: float = 0.0, settings: StubSettings | None = None
) -> web.Application:
    """The stub as an aiohttp application, seeded with ``seed``.

    ``admin`` adds the ``/_stub/`` endpoints (request journal, data, faults); ``delay`` holds
    every emulated answer back that many seconds, as a slow Apigee would; ``settings`` chooses
    where Apigee's documentation wavers. Without admin or delay, the request path is exactly the
    plain emulator's, for benchmarks.
    """
    app = web.Application(middlewares=[_rehearsal(admin=admin, delay=delay)] if admin or delay else [])
    state = State(seed, settings or StubSettings())
    app[STATE] = state
    app[STORE] = state.tokens
    app[LOGINS] = state.logins
    app.on_cleanup.append(_cancel_pending)
    if admin:
        add_admin(app)
    tokens.add_routes(app.router)
    management.add_routes(app.router)
    app.router.add_post(TOKEN_PATH, token_endpoint)
    app.router.add_route("*", "/{tail:.*}", unknown_path)
    return app


async def unknown_path(request: web.Request) -> web.Response:
    return error_response(
        request, 404, "stub.unknown_path", f"The stub does not emulate {request.method} {request.path}"
    )


async def _cancel_pending(app: web.Application) -> None:
    app[STATE].pending.cancel()


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


@asynccontextmanager
async def serve_stub(
    seed: Seed,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    admin: bool = False,
    delay: float = 0.0,
    settings: StubSettings | None = None,
) -> AsyncIterator[str]:
    """Run the stub on ``host:port`` (0: any free port) and yield its base URL."""
    runner = web.AppRunner(make_stub_app(seed, admin=admin, delay=delay, settings=settings), access_log=None)
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
