"""What every emulated handler shares: who is calling, the organisation, bodies and replies."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from gateway.basic import MalformedCredentials, parse_basic
from gateway.stub.errors import JSON, ApigeeError, error_response
from gateway.stub.model import Attribute, Org, invalid_action, invalid_request
from gateway.stub.oauth import LOGINS
from gateway.stub.render import answer
from gateway.stub.state import STATE, State

UNAUTHORIZED = ("security.unauthorized", "Invalid credentials")
EXPIRED = ("security.access_token_expired", "Access Token expired")
BASIC_CHALLENGE = 'Basic realm="Apigee stub"'
EXPIRED_CHALLENGE = 'Bearer realm="Apigee stub", error="invalid_token", error_description="The access token expired"'


@dataclass
class Call:
    """One emulated request, its caller authenticated."""

    request: web.Request
    state: State
    user: str
    """Who Apigee records as having made or changed what the call touches."""

    def param(self, name: str) -> str:
        return self.request.match_info[name]

    def query(self, name: str) -> str | None:
        return self.request.query.get(name)

    @property
    def org_name(self) -> str:
        return self.param("org")

    def org(self) -> Org:
        return self.state.org(self.org_name)

    def expand(self) -> bool:
        return self.query("expand") == "true"

    def action(self, *expected: str) -> str:
        action = self.query("action")
        if action not in expected:
            raise invalid_action(action, expected)
        return action

    async def body(self) -> dict[str, Any]:
        """The request's JSON object; a missing or other body is the caller's mistake (400)."""
        raw = await self.request.read()
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:  # UnicodeDecodeError included
            raise invalid_request("The body is not valid JSON") from None
        if not isinstance(data, dict):
            raise invalid_request("Expected a JSON object body")
        return data

    def acted(self, entity: dict[str, Any], root: str) -> web.Response:
        """The answer to an ``?action=`` call: 204, or 200 with the changed entity (``stub.action_status``)."""
        if self.state.settings.action_status == 204:
            return web.Response(status=204)
        return answer(self.request, entity, root=root)


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


def emulated(handler: Handler, *, errors: str = JSON) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler that authenticates the caller, then turns ``ApigeeError`` into Apigee's error body.

    ``errors``: the form of errors when the caller's ``Accept`` names neither JSON nor XML.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            call = Call(request, request.app[STATE], authenticate(request))
            return await handler(call)
        except ApigeeError as exc:
            return error_response(request, exc.status, exc.code, exc.message, headers=exc.headers, default=errors)

    return handle


def authenticate(request: web.Request) -> str:
    """The caller's user name, from Basic credentials of a seed user or a live bearer token."""
    headers = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(headers) == 1:
        scheme, _, rest = headers[0].partition(" ")
        if scheme.lower() == "bearer":
            login = request.app[LOGINS].bearer(rest.strip())
            if login is not None:
                if login.expires <= time.time():
                    raise ApigeeError(401, *EXPIRED, headers={hdrs.WWW_AUTHENTICATE: EXPIRED_CHALLENGE})
                return login.user
        else:
            user = _basic_user(request.app[STATE], headers[0])
            if user is not None:
                return user
    raise ApigeeError(401, *UNAUTHORIZED, headers={hdrs.WWW_AUTHENTICATE: BASIC_CHALLENGE})


def _basic_user(state: State, header: str) -> str | None:
    try:
        credentials = parse_basic(header)
    except MalformedCredentials:
        return None
    expected = state.users.get(credentials.user)
    if expected is None or not hmac.compare_digest(expected.encode(), credentials.password.encode()):
        return None
    return credentials.user


# Fields of request bodies ------------------------------------------------------------------------


def text_field(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid_request(f"{name}: required")
        return None
    if not isinstance(value, str) or (required and not value):
        raise invalid_request(f"{name}: expected a {'non-empty ' if required else ''}string")
    return value


def names_field(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise invalid_request(f"{name}: expected a list of names")
    return list(value)


def attributes_field(body: dict[str, Any]) -> list[Attribute] | None:
    value = body.get("attributes")
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"] for item in value
    ):
        raise invalid_request('attributes: expected a list of {"name": ..., "value": ...} objects')
    return [{"name": item["name"], "value": item.get("value", "")} for item in value]


def millis_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_request(f"{name}: expected a whole number of milliseconds (-1: never)")
    return value


def merge_attributes(held: list[Attribute], changes: list[Attribute]) -> None:
    """Set the named attributes, leaving the others as they are (Apigee's update of a token)."""
    for change in changes:
        for attribute in held:
            if attribute.get("name") == change["name"]:
                attribute["value"] = change["value"]
                break
        else:
            held.append(dict(change))
