"""Wiring: the gateway's aiohttp application, its routes, and the runtime behind them.

The runtime (``gateway.runtime``) is opened by the application's cleanup context, so tests and
``gateway serve`` start and stop the gateway the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.typedefs import Handler

from gateway import audit_api, errors, health
from gateway.config import Config
from gateway.handler import MAX_REQUEST_BODY, handle
from gateway.runtime import RUNTIME, Runtime

MAX_HEADER_FIELD = 16 * 1024
"""Large enough that an oversized Authorization header reaches our own 401, not aiohttp's 400."""


def build_app(config: Config) -> web.Application:
    server = config.server
    # lingering_time: aiohttp reads (and drops) the rest of a body the gateway answered without
    # reading, so that the caller gets the answer; for no longer than a body is given anyway.
    handler_args = {
        "max_field_size": MAX_HEADER_FIELD,
        "keepalive_timeout": server.keepalive_timeout,
        "lingering_time": server.body_timeout,
        # A body is relayed as it came: one sent gzip goes upstream gzip, labelled so.
        "auto_decompress": False,
    }
    app = web.Application(
        client_max_size=MAX_REQUEST_BODY, handler_args=handler_args, middlewares=[_apigee_shaped_refusals]
    )

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        async with Runtime.open(config) as runtime:
            app[RUNTIME] = runtime
            yield

    app.cleanup_ctx.append(lifetime)
    health.add_routes(app, _runtime, with_metrics=not config.metrics.port)
    audit_api.add_routes(app, _runtime)
    # [\s\S], not '.': a decoded path may hold a line break (%0A), which '.' would leave to
    # aiohttp's own plain-text 404 instead of the gateway's refusal.
    app.router.add_route("*", r"/{path:[\s\S]*}", handle, expect_handler=_expect_later)
    return app


async def _expect_later(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` is answered by the handler once it reads the body (after the call
    is authenticated, allowed and within its bound: ``gateway.handler``), so a refused call's body
    is never sent; aiohttp's own answers it at once. Another expectation: 417, quoting nothing
    (aiohttp's echoes the header)."""
    expected = request.headers.get(hdrs.EXPECT, "")
    if request.version == HttpVersion11 and expected.lower() != "100-continue":
        return errors.EXPECTATION_FAILED.response()
    return None


@web.middleware
async def _apigee_shaped_refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (a target no route can match, such as CONNECT's ``host:port``),
    which it answers in plain text, in Apigee's shape like every refusal of the gateway's."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        known = [error for error in errors.ALL if error.status == exc.status]
        fallback = errors.INTERNAL_ERROR if exc.status >= 500 else errors.BAD_REQUEST
        return (known[0] if known else fallback).response(
            headers={"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        )


def _runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]
