"""The baseline: a plain aiohttp proxy forwarding the same call, with no auth, audit or log.

It shares the gateway's forwarding mechanics (one pooled session, no decompression, hop-by-hop
headers dropped), so the difference between the two is what auditing costs.

    python bench/plain_proxy.py UPSTREAM_URL PORT
"""

from __future__ import annotations

import sys

from aiohttp import web
from yarl import URL

from gateway.upstream import end_to_end, make_session

DROP_REQUEST = frozenset({"host", "content-length"})
DROP_RESPONSE = frozenset({"content-length"})


def make_app(upstream: str) -> web.Application:
    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with request.app["session"].request(
            request.method,
            URL(upstream + request.raw_path, encoded=True),
            headers=end_to_end(request.headers, DROP_REQUEST),
            data=body or None,
        ) as response:
            content = await response.read()
            return web.Response(
                status=response.status,
                reason=response.reason,
                body=content,
                headers=end_to_end(response.headers, DROP_RESPONSE),
            )

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        async with make_session(
            connect_timeout=5, read_timeout=30, total_timeout=35, verify_tls=True, ca_bundle=None
        ) as client:
            app["session"] = client
            yield

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{path:.*}", forward)
    return app


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        uvloop = None
    web.run_app(
        make_app(sys.argv[1]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop() if uvloop else None,
    )
