"""An in-memory emulator of Apigee Edge's access-token endpoints.

It answers as the upstream documentation says, byte for byte, so the gateway, its tests and its
users' own tests can run without an Apigee account. It knows nothing of the gateway: both talk
only HTTP to each other.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import hdrs, web

from gateway.basic import MalformedCredentials, parse_basic
from gateway.stub import jackson
from gateway.stub.seed import LOAD_PREFIX, Seed, load_token

INVALID_TOKEN_CODE = "keymanagement.service.invalid_account_name"
INVALID_TOKEN_MESSAGE = "Invalid Access Token"

TOKEN_ROUTE = "/v1/{alias:o|organizations}/{org}/oauth2/accesstokens/{token}"


class TokenStore:
    """Tokens per organisation, each kept as given so it is returned in the same form.

    Besides the seeded tokens, each organisation may hold ``generated`` load-test tokens named
    ``load0``, ``load1``, ...: made on first use, so millions cost memory only once deleted.
    """

    def __init__(self, orgs: dict[str, list[dict[str, Any]]], generated: int = 0) -> None:
        self._orgs: dict[str, dict[str, dict[str, Any]]] = {}
        self._generated = generated
        self._deleted_generated: dict[str, set[int]] = {}
        for org, tokens in orgs.items():
            self.add(org, tokens)

    def add(self, org: str, tokens: Iterable[dict[str, Any]]) -> None:
        known = self._orgs.setdefault(org, {})
        for token in tokens:
            known[token["token"]] = token

    def get(self, org: str, token: str) -> dict[str, Any] | None:
        seeded = self._orgs.get(org, {}).get(token)
        if seeded is not None:
            return seeded
        index = self._generated_index(org, token)
        return None if index is None else load_token(token)

    def delete(self, org: str, token: str) -> dict[str, Any] | None:
        seeded = self._orgs.get(org, {}).pop(token, None)
        if seeded is not None:
            return seeded
        index = self._generated_index(org, token)
        if index is None:
            return None
        self._deleted_generated.setdefault(org, set()).add(index)
        return load_token(token)

    def _generated_index(self, org: str, token: str) -> int | None:
        """The index of a live generated token, or None."""
        digits = token.removeprefix(LOAD_PREFIX)
        if not self._generated or org not in self._orgs or digits == token or not digits.isdigit():
            return None
        index = int(digits)
        if str(index) != digits or index >= self._generated or index in self._deleted_generated.get(org, ()):
            return None
        return index


STORE = web.AppKey("stub_store", TokenStore)
USERS = web.AppKey("stub_users", dict)


def make_stub_app(seed: Seed) -> web.Application:
    """The stub as an aiohttp application, seeded with ``seed``."""
    app = web.Application()
    app[STORE] = TokenStore(seed.orgs, seed.generated)
    app[USERS] = dict(seed.users)
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


def error_response(
    request: web.Request, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """Apigee's error shape: XML by default, JSON when the caller accepts it."""
    if "application/json" in request.headers.get(hdrs.ACCEPT, ""):
        body = json.dumps({"code": code, "message": message, "contexts": []})
        content_type = "application/json"
    else:
        body = f"<Error> <Code>{escape(code)}</Code> <Message>{escape(message)}</Message> <Contexts/> </Error>"
        content_type = "application/xml"
    return web.Response(status=status, body=body.encode(), content_type=content_type, headers=headers)


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
async def serve_stub(seed: Seed, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run the stub on ``host:port`` (0: any free port) and yield its base URL."""
    runner = web.AppRunner(make_stub_app(seed), access_log=None)
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
