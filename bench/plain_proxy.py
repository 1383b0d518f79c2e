"""The baseline: a plain aiohttp proxy forwarding the same call, with no auth, audit or log.

It is what a gateway built the ordinary way looks like: aiohttp's ``web.Application`` and one
pooled ``ClientSession`` (no decompression, no automatic headers, hop-by-hop headers dropped with
the gateway's own ``end_to_end``, never a retry), so the ratios against it say what the
gateway's whole request path costs, the audit and its lean server and client included.

    python bench/plain_proxy.py UPSTREAM_URL PORT
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import hdrs, web
from yarl import URL

from gateway.upstream import end_to_end

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
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=35, connect=5, sock_read=30),
            auto_decompress=False,
            skip_auto_headers=(hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE),
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as client:
            client._retry_connection = False  # as the gateway: a DELETE is sent once
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
